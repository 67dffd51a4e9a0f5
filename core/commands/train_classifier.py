"""``eegsine train classifier``: flags map 1:1 onto :class:`ClassifierTrainConfig`; ``--preset`` trains both heads."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from eegsine.bench.pipeline.presets import PRESETS
from eegsine.config import add_config_args, config_from_args
from eegsine.errors import UserError
from eegsine.training.configs import ClassifierTrainConfig


def heads_from_args(ns: argparse.Namespace) -> dict[str, tuple[Path, ClassifierTrainConfig]]:
    """The heads the command line trains: name -> (run folder, config). ``--preset``: the preset's heads (flags
    override both) into RUN/<head>; else one model into RUN."""
    run = Path(ns.run)
    if not ns.preset:
        return {"model": (run, config_from_args(ClassifierTrainConfig, ns))}
    heads = {name: (run / name, config_from_args(ClassifierTrainConfig, ns, base=cfg))
             for name, cfg in PRESETS["classifier"][ns.preset].items() if not ns.heads or name in ns.heads}
    if not heads:
        raise UserError(f"--heads {ns.heads}: preset {ns.preset!r} has heads standard, sine")
    return heads


def _run(ns: argparse.Namespace) -> int:
    from eegsine.training.classifier import train_classifiers

    summary = train_classifiers(heads_from_args(ns), init_probe=ns.init_probe)
    if not summary:  # another process of accelerate launch: the main one prints
        return 0
    for head in summary.values():
        if "init_probe" in head:
            print(f"init probe: {head.pop('init_probe')}")
    print(json.dumps(summary, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("classifier",
                              help="train a standard or sine-bounded classifier (natural / FGSM-RS / PGD)",
                              description="Adversarially train a classifier. With --preset, trains both heads into "
                              "RUN/standard and RUN/sine; other flags override the preset's values.")
    p.add_argument("--run", required=True, help="output run folder (resumes if it holds a checkpoint)")
    p.add_argument("--preset", choices=PRESETS["classifier"], default=None,
                   help="named settings for both heads (paper-cifar10: PreAct-ResNet-18, PGD-10 at eps 8/255)")
    p.add_argument("--heads", nargs="*", choices=["standard", "sine"], default=None,
                   help="with --preset: train only these heads (e.g. to run them as two processes)")
    p.add_argument("--init-probe", action=argparse.BooleanOptionalAction, default=True,
                   help="for sine heads: also plot gradient norms at init for the siren/poster/default inits")
    add_config_args(p, ClassifierTrainConfig)
    p.set_defaults(func=_run)
