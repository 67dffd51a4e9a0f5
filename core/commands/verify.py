"""``eegsine verify BUNDLE`` and ``eegsine-verify BUNDLE``: re-prove an INT8 bundle on this machine.

Its own small parser for ``eegsine-verify`` (numpy + onnxruntime only: a device's install); the work is
:func:`eegsine.runtime.verify.verify_on_device`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from eegsine import __version__
from eegsine.config import add_config_args, check_threads, config_from_args, help_text
from eegsine.errors import UserError, install_hint
from eegsine.runtime import verify
from eegsine.runtime.records import RECORDS
from eegsine.runtime.backends import BACKENDS
from eegsine.runtime.verify import DeviceVerifyConfig, render, render_tune, tune_on_device, verify_on_device



def add_arguments(p: argparse.ArgumentParser, threads_flag: bool = True) -> None:
    """The command's arguments (``eegsine verify`` has the global ``--threads`` already)."""
    p.add_argument("bundle", metavar="BUNDLE", help="bundle folder written by eegsine-export --int8")
    if threads_flag:
        p.add_argument("--threads", type=int, default=None,
                       help="ONNX Runtime intra-op threads (default: ORT's choice)")
    p.add_argument("--no-record", action="store_true", help="print the figures without appending to verifications.json")
    p.add_argument("--backend", choices=list(BACKENDS), default=None,
                   help="run the golden-set gates with this backend; the record proves files for it only "
                        "(default: ort; with --tune: every backend installed here)")
    p.add_argument("--tune", action="store_true",
                   help="verify with every backend here, then time each model file's (backend, precision, threads "
                        "1..usable CPUs; --threads: that count only) at batch 1 and record the fastest combination "
                        "that passed its gates: the runtime's default on this host (ISA class + CPU model)")
    add_config_args(p, DeviceVerifyConfig)


def run(ns: argparse.Namespace) -> int:
    threads = getattr(ns, "threads", None)
    if threads is not None:
        threads = check_threads(threads, "--threads")
    cfg = config_from_args(DeviceVerifyConfig, ns)
    if ns.tune:
        verified, tuned = tune_on_device(ns.bundle, cfg, backends=[ns.backend] if ns.backend else None,
                                         threads=[threads] if threads else None, append=not ns.no_record,
                                         log=lambda s: None)
        print("\n\n".join(render(r) for r in verified.values()) + "\n\n" + render_tune(tuned))
        if not ns.no_record:
            print(f"records appended ({len(verified)} verification(s) and the tuning): {Path(ns.bundle) / RECORDS}")
        return 0 if tuned["passed"] else 1
    record = verify_on_device(ns.bundle, cfg, threads=threads, append=not ns.no_record, log=lambda s: None,
                              backend=ns.backend or "ort")
    print(render(record))
    if not ns.no_record:
        print(f"record appended: {Path(ns.bundle) / RECORDS}")
    return 0 if record["passed"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``eegsine-verify``: its own small parser, so nothing beyond numpy + onnxruntime is imported."""
    p = argparse.ArgumentParser(prog="eegsine-verify", description=help_text(verify.__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)

    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    add_arguments(p)
    ns = p.parse_args(argv)
    try:
        return run(ns)
    except UserError as e:
        if ns.debug:
            raise
        print(f"eegsine-verify: error: {' '.join(str(e).split())}", file=sys.stderr)
        return e.exit_code
    except ImportError as e:  # onnxruntime: the base install is numpy only
        if ns.debug or install_hint(e.name or "") is None:
            raise
        print(f"eegsine-verify: error: {e.name} is not installed; {install_hint(e.name)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
