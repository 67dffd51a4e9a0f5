"""`eegsine report RUN`: (re)build the self-contained HTML + markdown report of a pipeline folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from eegsine.errors import UserError


def _run(ns: argparse.Namespace) -> int:
    from eegsine.bench.pipeline import PipelineConfig, main_commands
    from eegsine.bench.report import build_report

    root = Path(ns.run)
    if not root.is_dir():
        raise UserError(f"{root}: not a pipeline folder (does not exist)")
    cfg_path = root / "pipeline_config.json"
    commands = main_commands(PipelineConfig.load(root, "pipeline_config.json")) if cfg_path.exists() else []
    paths = build_report(root, commands)
    print(f"report: {paths['html']} and {paths['md']}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="build report.html (self-contained) + report.md for a pipeline folder")
    p.add_argument("run", help="pipeline output folder, e.g. runs/tiny")
    p.set_defaults(func=_run)
