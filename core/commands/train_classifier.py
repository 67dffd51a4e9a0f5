"""``eegsine train classifier``: flags map 1:1 onto :class:`ClassifierTrainConfig`; ``--preset`` trains both heads."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from eegsine.config import add_config_args, config_from_args
from eegsine.errors import UserError
from eegsine.io import update_metrics
from eegsine.training.configs import CLASSIFIER_PRESETS, ClassifierTrainConfig


def _run(ns: argparse.Namespace) -> int:
    from eegsine.training.classifier import ClassifierTrainConfig, classifier_preset, init_gradient_probe, load_split, \
        train_classifier

    run = Path(ns.run)
    if ns.preset:
        jobs = {name: config_from_args(ClassifierTrainConfig, ns, base=cfg)
                for name, cfg in classifier_preset(ns.preset).items() if not ns.heads or name in ns.heads}
        if not jobs:
            raise UserError(f"--heads {ns.heads}: preset {ns.preset!r} has heads standard, sine")
        targets = {name: run / name for name in jobs}
    else:
        jobs = {"model": config_from_args(ClassifierTrainConfig, ns)}
        targets = {"model": run}
    summary = {}
    for name, cfg in jobs.items():
        m = train_classifier(cfg, targets[name])
        summary[name] = {"run": str(targets[name]), "best_val": m["best"],
                         "test_clean_accuracy": m["test_clean_accuracy"], "train_wall_s": m["train_wall_s"],
                         "catastrophic_overfitting": bool(m["catastrophic_overfitting"])}
        if ns.init_probe and cfg.model.head == "sine":
            data = load_split(cfg)
            from eegsine.training.classifier import resolve_model_config
            mcfg = resolve_model_config(cfg, data).model
            probe = init_gradient_probe(mcfg, data["train_x"][:320], data["train_y"][:320], targets[name])
            update_metrics(targets[name], "init_probe", probe)
            print(f"init probe: {targets[name] / 'init_probe.png'}")
    print(json.dumps(summary, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("classifier",
                              help="train a standard or sine-bounded classifier (natural / FGSM-RS / PGD)",
                              description="Adversarially train a classifier. With --preset, trains both heads into "
                              "RUN/standard and RUN/sine; other flags override the preset's values.")
    p.add_argument("--run", required=True, help="output run folder (resumes if it holds a checkpoint)")
    p.add_argument("--preset", choices=CLASSIFIER_PRESETS, default=None,
                   help="named settings for both heads (paper-cifar10: PreAct-ResNet-18, PGD-10 at eps 8/255)")
    p.add_argument("--heads", nargs="*", choices=["standard", "sine"], default=None,
                   help="with --preset: train only these heads (e.g. to run them as two processes)")
    p.add_argument("--init-probe", action=argparse.BooleanOptionalAction, default=True,
                   help="for sine heads: also plot gradient norms at init for the siren/poster/default inits")
    add_config_args(p, ClassifierTrainConfig)
    p.set_defaults(func=_run)
