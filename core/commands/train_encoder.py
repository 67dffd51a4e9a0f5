"""`eegsine train encoder`: flags map 1:1 onto EncoderTrainConfig (nested: --encoder-*, --image-encoder-*)."""
from __future__ import annotations

import argparse
from pathlib import Path

from eegsine.bench.pipeline.presets import PRESETS
from eegsine.config import add_config_args, config_from_args
from eegsine.training.configs import EncoderTrainConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "encoder", help="align an EEG encoder to image embeddings (stage one of EEG->image)",
        description="Train an EEG encoder with N-way K-shot prototypical + EEG<->image InfoNCE (+ optional "
                    "classification) losses, choose the epoch on validation, evaluate on test with the shuffled-label "
                    "and class-only controls. Rerunning on the same --run folder resumes. Runs under Accelerate: "
                    "`accelerate launch -m eegsine train encoder ...` scales it to several GPUs unchanged.")
    p.add_argument("--run", required=True, help="run folder (config.json, encoder/, metrics.json, plots, checkpoint)")
    p.add_argument("--preset", choices=PRESETS["encoder"], default=None,
                   help="start from a named config (flags override it); without one, an existing run's config.json")
    add_config_args(p, EncoderTrainConfig)
    p.set_defaults(func=_run)


def kwargs_from_args(ns: argparse.Namespace) -> dict:
    """The command line as :func:`~eegsine.training.encoder.train_encoder`'s keyword arguments: the config
    starts from ``--preset``, else from the run's own config.json, else the defaults; flags override it."""
    run = Path(ns.run)
    if ns.preset:
        base = PRESETS["encoder"][ns.preset]
    elif (run / "config.json").exists():
        base = EncoderTrainConfig.load(run)
    else:
        base = None
    return {"cfg": config_from_args(EncoderTrainConfig, ns, base), "run_dir": run}


def _run(ns: argparse.Namespace) -> int:
    from eegsine.training.encoder import train_encoder

    kwargs = kwargs_from_args(ns)
    run = kwargs["run_dir"]
    m = train_encoder(**kwargs)
    seen = m["seen"]
    print(f"{m['data']['name']}: test {seen['n_trials']} trials (seen classes), chance {seen['chance_top1']:.3f}")
    for name in ("aligned", "shuffled_labels", "class_only"):
        if name in seen:
            r = seen[name]
            ret = f", retrieval top1 {r['retrieval']['top1']:.3f}" if "retrieval" in r else ""
            head = f", head top1 {r['cls_head_top1']:.3f}" if "cls_head_top1" in r else ""
            print(f"  {name:16s} k-means {r['kmeans_acc']:.3f}, linear probe {r['linear_probe_top1']:.3f}{ret}{head}")
    if "bandpower_logreg" in seen:
        print(f"  {'bandpower_logreg':16s} top1 {seen['bandpower_logreg']['top1']:.3f}")
    print(f"run folder: {run}")
    return 0
