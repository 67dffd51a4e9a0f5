"""Train the in-project CNN image encoder (``eegsine.models.image_encoder``) with cross-entropy.

It sees only the stimulus images of the EEG *train* split (and only the classes the EEG
encoder trains on), so neither validation/test stimuli nor held-out classes leak into the
image space the EEG is aligned to. Light augmentation (random 0-2 pixel shifts) because
a stimulus set is small (synthetic-vep shows tens to hundreds of images per class).
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from eegsine.progress import tqdm

from eegsine.errors import UserError
from eegsine.models.image_encoder import CNNImageEncoder, ImageEncoderConfig


def _shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=g))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def train_image_encoder(images: np.ndarray, labels: np.ndarray, cfg: ImageEncoderConfig, epochs: int = 8,
                        lr: float = 2e-3, batch_size: int = 64, seed: int = 0, min_steps: int = 60,
                        logger: logging.Logger | None = None) -> tuple[CNNImageEncoder, dict]:
    """Train on (M, C, H, W) images in [0, 1] with labels in [0, cfg.n_classes); returns (model, stats).

    Runs ``max(epochs, enough epochs for min_steps optimizer steps)`` epochs, so a stimulus
    set of a few hundred images still gets a converged encoder.
    """
    if cfg.source != "cnn":
        raise UserError("train_image_encoder: only source='cnn' is trained in-project")
    if len(images) == 0:
        raise UserError("train_image_encoder: no training images")
    if labels.min() < 0 or labels.max() >= cfg.n_classes:
        raise UserError(f"train_image_encoder: labels outside [0, {cfg.n_classes})")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = CNNImageEncoder(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    x = torch.as_tensor(images, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.int64)
    steps_per_epoch = max(1, -(-len(x) // batch_size))
    epochs = max(epochs, -(-min_steps // steps_per_epoch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    model.train()
    correct = seen = 0
    for epoch in tqdm(range(epochs), desc="image encoder", leave=False):
        perm = torch.randperm(len(x), generator=g)
        correct = seen = 0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs 2+
            logits = model.logits(model(_shift(x[idx], g)))
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += int((logits.argmax(1) == y[idx]).sum())
            seen += len(idx)
    stats = {"epochs": epochs, "n_images": int(len(x)), "train_top1_last_epoch": correct / max(seen, 1)}
    if logger:
        logger.info(f"image encoder: CNN width {cfg.width}, emb {cfg.emb_dim}, {len(x)} train stimuli, "
                    f"{epochs} epochs, train top-1 (last epoch) {stats['train_top1_last_epoch']:.3f}")
    return model.eval(), stats
