"""Stage A of EEG->image: the VAE the latent diffusion model works in (``eegsine train diffusion``, first part).

Trains the diffusers ``AutoencoderKL`` on the train-split stimulus images (L1 + KL, see
:func:`eegsine.training.losses.vae_loss`) and measures the latent scale (1 / std of the training
latents), unless a local pretrained VAE or ``init_from`` supplies one. Resumable per epoch
(``RUN/vae_ckpt``); the result is ``RUN/vae`` (``save_pretrained``) with ``stats.json``.

Hand-written: the epoch loop (diffusers ships training *scripts*, not a library function); the
model is diffusers', the learning-rate schedule diffusers' cosine with warm-up.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from eegsine.progress import tqdm

from eegsine.io import write_json
from eegsine.models.diffusion import EEGDiffusion
from eegsine.training.configs import DiffusionTrainConfig
from eegsine.training.loop import Checkpoint, batched, diffusers_warmup_cosine, fused_adamw, seeded_generator
from eegsine.training.losses import vae_loss

VAE_DIR = "vae"


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def latent_posterior(model: EEGDiffusion, images: np.ndarray,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Native images (M, C, h, w) in [0, 1] -> the VAE posterior's (mean, std), each (M, c, s, s), unscaled."""
    model.vae.eval()
    post = batched(lambda x: model.vae.encode(model.to_model_space(x.to(device))).latent_dist, torch.from_numpy(images))
    return torch.cat([p.mean for p in post]), torch.cat([p.std for p in post])


def stage_a(cfg: DiffusionTrainConfig, model: EEGDiffusion, images: np.ndarray, test_images: np.ndarray, run_dir: Path,
            logger, acc) -> dict[str, Any]:
    """Give ``model`` its VAE: the pretrained one, ``init_from``'s, or one trained here; -> the VAE's stats.

    Under Accelerate only the main process trains; the others wait and read the saved VAE.
    """
    if model.cfg.pretrained_vae:
        return {"pretrained": model.cfg.pretrained_vae, "scaling_factor": model.scaling_factor}
    if cfg.init_from:
        base = EEGDiffusion.from_pretrained(cfg.init_from)
        model.vae = base.vae
        return {"init_from": cfg.init_from, "scaling_factor": base.scaling_factor}
    if acc.is_main_process:
        train_vae(cfg, model, images, test_images, run_dir, logger, acc.device)
    acc.wait_for_everyone()
    return train_vae(cfg, model, images, test_images, run_dir, logger, acc.device)


def train_vae(cfg: DiffusionTrainConfig, model: EEGDiffusion, images: np.ndarray, test_images: np.ndarray,
              run_dir: Path, logger, device: torch.device | None = None) -> dict[str, Any]:
    """Train ``model.vae`` on ``images`` (N, C, h, w) in [0, 1] on ``device`` (default: CUDA when present); set the
    latent scale; save run/vae."""
    from diffusers import AutoencoderKL

    vae_dir = run_dir / VAE_DIR
    if (vae_dir / "config.json").exists():
        model.vae = AutoencoderKL.from_pretrained(str(vae_dir), local_files_only=True)
        logger.info(f"stage A: VAE reloaded from {vae_dir}")
        return json.loads((vae_dir / "stats.json").read_text()) if (vae_dir / "stats.json").exists() else {}
    device = device or _device()
    vae = model.vae.to(device).train()
    opt = fused_adamw(vae.parameters(), lr=cfg.vae_lr, weight_decay=1e-4)
    ckpt = Checkpoint(run_dir / "vae_ckpt", {"vae": vae}, {"opt": opt})
    progress = ckpt.resume({"epoch": 0, "seconds": []}, logger, "stage A", "epoch", cfg.vae_epochs)
    x_all = torch.from_numpy(images)
    steps = max(1, len(images) // cfg.vae_batch_size)
    total = steps * cfg.vae_epochs
    factor = diffusers_warmup_cosine(min(cfg.warmup_steps, total // 10), total)
    for epoch in range(progress["epoch"], cfg.vae_epochs):
        t0 = time.perf_counter()
        loss = _vae_epoch(cfg, model, opt, x_all, epoch, steps, factor, device)
        progress["seconds"].append(time.perf_counter() - t0)
        progress["epoch"] = epoch + 1
        ckpt.save(progress)
        logger.info(f"stage A: VAE epoch {epoch + 1}/{cfg.vae_epochs} loss {loss:.4f} "
                    f"({progress['seconds'][-1]:.1f} s)")
    stats = _vae_stats(cfg, model, images, test_images, device, progress["seconds"])
    model.vae.save_pretrained(str(vae_dir), safe_serialization=True)
    write_json(vae_dir / "stats.json", stats)
    logger.info(f"stage A done: latent scale {stats['scaling_factor']:.4f}, test reconstruction MSE "
                f"{stats['test_recon_mse']:.5f} on {stats['n_test_images']}")
    return stats


def _vae_epoch(cfg: DiffusionTrainConfig, model: EEGDiffusion, opt, x_all: torch.Tensor, epoch: int, steps: int,
               factor, device: torch.device) -> float:
    """One pass over the stimulus images in a seeded order; -> mean loss."""
    g = seeded_generator(cfg.seed, epoch, 1)
    perm = torch.randperm(len(x_all), generator=g)
    tot = 0.0
    bar = tqdm(range(steps), desc=f"VAE epoch {epoch + 1}/{cfg.vae_epochs}", leave=False)
    for s in bar:
        for grp in opt.param_groups:
            grp["lr"] = cfg.vae_lr * factor(epoch * steps + s)
        x = model.to_model_space(x_all[perm[s * cfg.vae_batch_size:(s + 1) * cfg.vae_batch_size]].to(device))
        loss = vae_loss(model.vae, x, g, cfg.vae_kl_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.vae.parameters(), 1.0)
        opt.step()
        tot += loss.item()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return tot / steps


@torch.no_grad()
def _vae_stats(cfg: DiffusionTrainConfig, model: EEGDiffusion, images: np.ndarray, test_images: np.ndarray,
               device: torch.device, seconds: list[float]) -> dict[str, Any]:
    """Set the latent scale (1 / std of the training latents' means) and score test-image reconstruction."""
    vae = model.vae
    mu, _ = latent_posterior(model, images, device)
    scale = float(1.0 / mu.std()) if not cfg.model.scaling_factor else cfg.model.scaling_factor
    xt = torch.from_numpy(test_images[:512]).to(device)
    rec = model.to_native(vae.decode(vae.encode(model.to_model_space(xt)).latent_dist.mean).sample) if len(xt) else xt
    mse = float(F.mse_loss(rec, xt)) if len(xt) else float("nan")
    vae.register_to_config(scaling_factor=scale)
    return {"epochs": cfg.vae_epochs, "n_images": int(len(images)), "scaling_factor": scale,
            "test_recon_mse": mse, "n_test_images": int(min(512, len(test_images))),
            "seconds_per_epoch": float(np.mean(seconds)) if seconds else 0.0}
