"""`eegsine bench` (alias `eegsine-bench`): every model on every backend present, ratios vs torch eager.

Point it at a pipeline folder (`--pipeline runs/tiny`) or at explicit runs and a bundle.
Flags map 1:1 onto :class:`~eegsine.bench.speed.bench.BenchConfig`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from eegsine.config import add_config_args, config_from_args, help_text
from eegsine.errors import UserError
from eegsine.bench.speed.bench import BenchConfig, render_markdown, run_bench
from eegsine.bench.speed.cases import build_cases


def _run(ns: argparse.Namespace) -> int:
    cfg = config_from_args(BenchConfig, ns)  # --threads included (eegsine --threads N fills it when not given)
    bundle, clf, eeg = (Path(p) if p else None for p in (ns.bundle, ns.classifier, ns.eeg_run))
    if ns.pipeline:
        root = Path(ns.pipeline)
        if not root.is_dir():
            raise UserError(f"{root}: pipeline folder does not exist")
        # what the pipeline made: an EEG-only run (--preset paper --stages encoder ...) has no classifier
        bundle = bundle or root / "bundle"
        clf = clf or (root / "classifier" / "sine" if (root / "classifier" / "sine").exists() else None)
        eeg = eeg or (root / "diffusion" if (root / "diffusion").exists() else None)
    for what, p in (("bundle", bundle), ("classifier run", clf), ("EEG run", eeg)):
        if p is not None and not p.exists():
            raise UserError(f"{p}: {what} does not exist")
    out = Path(ns.out or (Path(ns.pipeline) / "bench" if ns.pipeline else "bench-results"))
    cases, extra = build_cases(cfg, out / "models", bundle, clf, eeg)
    result = run_bench(cases, cfg, out, extra_rows=extra)
    print()
    print(render_markdown(result["rows"], result["meta"]))
    for t in result["targets"]:
        print(f"target {'met   ' if t['met'] else 'MISSED'} {t['target']}: {t['measured']}")
    print(f"\nwritten: {', '.join(result['paths'].values())}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="benchmark every model on every backend present (ratios vs torch eager)",
                              description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", metavar="DIR",
                   help="pipeline folder (uses DIR/bundle and those of DIR/classifier/sine, DIR/diffusion it has)")
    p.add_argument("--bundle", metavar="DIR", help="export bundle (eegsine export)")
    p.add_argument("--classifier", metavar="RUN", help="classifier run folder")
    p.add_argument("--eeg-run", metavar="RUN", help="EEG->image diffusion run folder")
    p.add_argument("--out", metavar="DIR", help="output folder (default: DIR/bench for --pipeline, else bench-results)")
    add_config_args(p, BenchConfig)
    p.set_defaults(func=_run)
