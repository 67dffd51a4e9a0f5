"""``eegsine stream``: decide per stimulus marker on a live EEG stream or a recording (numpy + onnxruntime).

The work is :func:`eegsine.runtime.stream.run_stream`; this module maps the command line onto
:class:`~eegsine.runtime.stream.StreamConfig` and prints warnings and the summary to stderr.
"""
from __future__ import annotations

import sys
import warnings
from typing import Any

from eegsine.config import add_config_args, config_from_args
from eegsine.runtime.stream import StreamConfig, render_summary, run_stream



# -- CLI (registered by eegsine.commands.main like `verify`: nothing heavy is imported until it runs) ---------------
def add_arguments(p: Any) -> None:
    add_config_args(p, StreamConfig, skip=("threads",))


def run(ns: Any) -> int:
    cfg = config_from_args(StreamConfig, ns)
    threads = getattr(ns, "threads", None)
    if threads:
        cfg = cfg.replace(threads=int(threads))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda m, *a, **k: print(f"eegsine stream: warning: {m}", file=sys.stderr)  # type: ignore[assignment]
        summary = run_stream(cfg)
    print(render_summary(summary), file=sys.stderr)
    return 0
