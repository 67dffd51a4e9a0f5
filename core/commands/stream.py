"""``eegsine stream``: decide per stimulus marker on a live EEG stream or a recording (numpy + onnxruntime).

The work is :func:`eegsine.runtime.stream.run_stream`; this module maps the command line onto
:class:`~eegsine.runtime.stream.StreamConfig` and prints warnings and the summary to stderr.

``--source synthetic[:N]`` is the board-free live demo: N trials (default 60) of the synthetic-vep set made at
the bundle's channels (by name), rate and epoch, streamed at real time (``--speed``/``--fast`` as for ``file:``),
markers = class index + 1 (add ``--marker-labels`` for accuracy where the bundle's classes are the digits').
"""
from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from eegsine.config import add_config_args, config_from_args
from eegsine.data.recording import recording_like
from eegsine.errors import UserError
from eegsine.runtime import Bundle
from eegsine.runtime.preprocessing import PreprocessingSpec
from eegsine.runtime.stream import StreamConfig, render_summary, run_stream

SYNTHETIC = "synthetic"
SYNTHETIC_TRIALS = 60


def synthetic_source(cfg: StreamConfig, folder: Path) -> StreamConfig:
    """``cfg`` with ``--source synthetic[:N]`` replaced by a ``file:`` recording sized to the bundle, in ``folder``."""
    _, _, count = cfg.source.partition(":")
    try:
        n = int(count) if count else SYNTHETIC_TRIALS
    except ValueError:
        raise UserError(f"--source {cfg.source}: expected synthetic or synthetic:N (N trials)") from None
    if not 1 <= n <= 100000:
        raise UserError(f"--source {cfg.source}: N must be 1..100000 trials, got {n}")
    entry = Bundle(cfg.bundle, verify=False).manifest["models"].get("eeg_encoder", {})
    if "preprocessing" not in entry:
        raise UserError(f"{cfg.bundle}: no EEG encoder with a preprocessing spec: --source synthetic makes trials "
                        "at an EEG bundle's channels, rate and epoch")
    spec = PreprocessingSpec.from_dict(entry["preprocessing"])
    path = recording_like(spec, folder / "synthetic.fif", n)
    print(f"eegsine stream: synthetic source: {n} synthetic-vep trials at {spec.n_chans} ch x {spec.n_times} samples "
          f"@ {spec.sfreq:g} Hz ({path})", file=sys.stderr)
    return cfg.replace(source=f"file:{path}")


def add_arguments(p: Any) -> None:
    add_config_args(p, StreamConfig, skip=("threads",))
    for action in p._actions:  # the command line's one extra source, made here (it needs the data layer)
        if action.dest == "source":
            extra = f" | {SYNTHETIC}[:N] (no board: N trials made at the bundle's geometry, real time)"
            head, sep, tail = action.help.partition(" (default")
            action.help = head + extra + sep + tail


def config_from_ns(ns: Any) -> StreamConfig:
    """The command line as a :class:`StreamConfig`; its thread count is ``eegsine --threads``."""
    cfg = config_from_args(StreamConfig, ns)
    threads = getattr(ns, "threads", None)
    if threads:
        cfg = cfg.replace(threads=int(threads))
    return cfg


def run(ns: Any) -> int:
    cfg = config_from_ns(ns)
    with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="eegsine-stream-") as tmp:
        warnings.simplefilter("always")
        warnings.showwarning = lambda m, *a, **k: print(f"eegsine stream: warning: {m}", file=sys.stderr)  # type: ignore[assignment]
        if cfg.source == SYNTHETIC or cfg.source.startswith(SYNTHETIC + ":"):
            cfg = synthetic_source(cfg, Path(tmp))
        summary = run_stream(cfg)
    print(render_summary(summary), file=sys.stderr)
    return 0
