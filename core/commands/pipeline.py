"""`eegsine pipeline`: the main job (what `make demo` runs)."""
from __future__ import annotations

import argparse

from eegsine.config import add_config_args, config_from_args
from eegsine.bench.pipeline.config import STAGE_NAMES, PipelineConfig
from eegsine.bench.pipeline.run import run_pipeline


def _run(ns: argparse.Namespace) -> int:
    cfg = config_from_args(PipelineConfig, ns)
    run_pipeline(cfg)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pipeline", help="run the main job end to end (resumable: finished stages are skipped)",
        description="Stages: " + " -> ".join(STAGE_NAMES) + ". Each stage is skipped when its record in "
        "OUT/.stages/ exists, so a killed pipeline resumes; --force STAGE re-runs one.")
    add_config_args(p, PipelineConfig)
    p.set_defaults(func=_run)
