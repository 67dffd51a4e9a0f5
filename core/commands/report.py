"""`eegsine report RUN`: (re)build the self-contained HTML + markdown report of a pipeline folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from eegsine.errors import UserError
from eegsine.bench.pipeline.config import PipelineConfig
from eegsine.bench.pipeline.stages import main_commands
from eegsine.bench.report.build import build_report


def _run(ns: argparse.Namespace) -> int:
    root = Path(ns.run)
    if not root.is_dir():
        raise UserError(f"{root}: not a pipeline folder (does not exist)")
    # the commands: those pipeline.json recorded as run (build_report reads them); else the config's
    commands = None
    if not (root / "pipeline.json").exists() and (root / "pipeline_config.json").exists():
        commands = main_commands(PipelineConfig.load(root, "pipeline_config.json"))
    paths = build_report(root, commands, out=ns.out)
    size = paths["html"].stat().st_size
    print(f"report: {paths['html']} ({size / 1e6:.2f} MB) and {paths['md']}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="build report.html (self-contained, summary card first, < 1 MB) + "
                                             "report.md for a pipeline folder")
    p.add_argument("run", help="pipeline output folder, e.g. runs/tiny")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write report.html, report.md and report_figures/ here instead of into RUN")
    p.set_defaults(func=_run)
