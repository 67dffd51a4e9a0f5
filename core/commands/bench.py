"""`eegsine bench` (alias `eegsine-bench`): every model on every backend present, ratios vs torch eager.

Point it at a pipeline folder (`--pipeline runs/tiny`) or at explicit runs and a bundle.
Flags map 1:1 onto :class:`~eegsine.bench.speed.bench.BenchConfig`.
"""
from __future__ import annotations

import argparse

from eegsine.config import add_config_args, config_from_args, help_text
from eegsine.bench.speed.bench import BenchConfig, render_markdown
from eegsine.bench.speed.cases import bench_folders, build_cases


def kwargs_from_args(ns: argparse.Namespace) -> dict:
    """The command line as :func:`~eegsine.bench.speed.cases.bench_folders`' keyword arguments."""
    # --threads included (eegsine --threads N fills it when not given)
    return {"cfg": config_from_args(BenchConfig, ns), "out": ns.out, "pipeline": ns.pipeline, "bundle": ns.bundle,
            "classifier": ns.classifier, "eeg_run": ns.eeg_run}


def _run(ns: argparse.Namespace) -> int:
    # build_cases looked up here at call time: tests stand in for it through this module
    result = bench_folders(**kwargs_from_args(ns), build=build_cases)
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
