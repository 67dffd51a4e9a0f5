"""``eegsine train diffusion``: flags map 1:1 onto :class:`DiffusionTrainConfig`.

``--preset`` starts from a named one.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from eegsine.bench.pipeline.presets import PRESETS
from eegsine.bench.speed.timing import diffusion_speed
from eegsine.config import add_config_args, config_from_args
from eegsine.training.configs import DiffusionTrainConfig


def kwargs_from_args(ns: argparse.Namespace) -> dict:
    """The command line as :func:`~eegsine.training.diffusion.train_diffusion`'s keyword arguments."""
    base = PRESETS["diffusion"][ns.preset] if ns.preset else None
    return {"cfg": config_from_args(DiffusionTrainConfig, ns, base=base), "run_dir": Path(ns.run),
            "speed_probe": diffusion_speed}


def _run(ns: argparse.Namespace) -> int:
    from eegsine.training.diffusion import train_diffusion

    m = train_diffusion(**kwargs_from_args(ns))
    summary = {"run": ns.run, "model": str(Path(ns.run) / "model"), "mode": m["mode"], "params": m["params"],
               "seconds_per_epoch": m["seconds_per_epoch"],
               "final_loss": m["history"][-1]["loss"] if m["history"] else None,
               "speed": m.get("speed"), "joint": m.get("joint")}
    print(json.dumps(summary, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("diffusion", help="train the EEG-conditioned latent diffusion model (VAE, then UNet)",
                              description="Stage A trains the VAE on the stimulus images, stage B the cross-attention "
                              "UNet on the frozen aligned encoder's tokens (--mode full|lora|joint). Writes RUN/model "
                              "(EEGDiffusion.from_pretrained), RUN/grids/epoch_XXX.png and strip.png, metrics.json; "
                              "rerun to resume. Data-parallel with `accelerate launch -m eegsine train diffusion ...`.")
    p.add_argument("--run", required=True, help="output run folder (resumes if it holds a checkpoint)")
    p.add_argument("--preset", choices=PRESETS["diffusion"], default=None,
                   help="named settings; other flags override them")
    add_config_args(p, DiffusionTrainConfig)
    p.set_defaults(func=_run)
