"""``eegsine train domain-net``: a diffusion run's image feature network, trained ahead of (or beside) the run.

The same flags as `eegsine train diffusion` (--preset and the DiffusionTrainConfig flags; only the data
fields are read): the domain CNN that `generate --evaluate` and the export's INT8 generation gate score
images with is trained into RUN/domain-cnn-<images> now instead of on first use. `eegsine pipeline` runs
it beside the diffusion training.
"""
from __future__ import annotations

import argparse
import json

from eegsine.bench.pipeline.presets import PRESETS
from eegsine.config import add_config_args
from eegsine.io import run_logger
from eegsine.commands import train_diffusion
from eegsine.training.configs import DiffusionTrainConfig


def kwargs_from_args(ns: argparse.Namespace) -> dict:
    """The command line as :func:`~eegsine.training.generate.train_domain_net`'s keyword arguments (the config
    as ``eegsine train diffusion`` builds it)."""
    kw = train_diffusion.kwargs_from_args(ns)
    return {"cfg": kw["cfg"], "run": kw["run_dir"]}


def _run(ns: argparse.Namespace) -> int:
    from eegsine.training.generate import train_domain_net

    kw = kwargs_from_args(ns)
    out = train_domain_net(**kw, logger=run_logger(kw["run"]))
    print(json.dumps(out, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("domain-net", help="train a diffusion run's image feature network (domain CNN) ahead",
                              description=__doc__.split("\n\n")[1])
    p.add_argument("--run", required=True, help="the diffusion run folder (RUN/domain-cnn-<images> is written)")
    p.add_argument("--preset", choices=PRESETS["diffusion"], default=None,
                   help="the diffusion preset whose data it reads; other flags override it")
    add_config_args(p, DiffusionTrainConfig)
    p.set_defaults(func=_run)
