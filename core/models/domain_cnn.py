"""The domain feature network: a small CNN classifier of the image set, used only for image metrics.

No Inception-v3 or AlexNet weights exist offline (docs/design.md), so :mod:`eegsine.image_metrics`
computes FID / IS / LPIPS-style distances on this network's features and names them ``*_domain``.
It follows the model protocol (:mod:`eegsine.models.protocol`); its config carries its own short
training recipe (:func:`eegsine.image_metrics.train_domain_cnn`).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from eegsine.config import Config
from eegsine.errors import UserError
from eegsine.models.protocol import PretrainedModel


@dataclasses.dataclass
class DomainCNNConfig(Config):
    """A small CNN classifier of the image set, used only as a metric feature network."""

    KIND = "domain-cnn"
    VERSION = 1

    dataset: str = ""
    in_chans: int = 1
    image_size: int = 28
    n_classes: int = 10
    width: int = 32
    feat_dim: int = 64
    epochs: int = 3
    lr: float = 2e-3
    batch_size: int = 128
    max_train: int = dataclasses.field(default=20000, metadata={"help": "train on at most this many images"})
    min_steps: int = dataclasses.field(default=600, metadata={"help": "more epochs on small image sets (digits)"})
    seed: int = 0

    def validate(self) -> None:
        for name in ("in_chans", "image_size", "n_classes", "width", "feat_dim", "epochs", "batch_size", "max_train"):
            if getattr(self, name) < 1:
                raise UserError(f"DomainCNNConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"DomainCNNConfig.lr must be > 0, got {self.lr}")
        if self.min_steps < 0:
            raise UserError(f"DomainCNNConfig.min_steps must be >= 0, got {self.min_steps}")


class DomainCNN(PretrainedModel, nn.Module):
    """3 conv stages (w, 2w, 4w; each conv-BN-ReLU x2 + max-pool) -> global mean -> feat_dim -> classes."""

    config_class = DomainCNNConfig

    def __init__(self, cfg: DomainCNNConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        chans = [cfg.in_chans, w, 2 * w, 4 * w]

        def stage(a: int, b: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(),
                                 nn.Conv2d(b, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU())

        self.stages = nn.ModuleList(stage(chans[i], chans[i + 1]) for i in range(3))
        self.fc = nn.Linear(4 * w, cfg.feat_dim)
        self.head = nn.Linear(cfg.feat_dim, cfg.n_classes)
        self.num_features = cfg.feat_dim  # torchmetrics reads this for a custom FID feature extractor

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) in [0, 1] -> each stage's activation (before pooling), for lpips_domain."""
        h = (x - 0.5) / 0.5
        out = []
        for i, st in enumerate(self.stages):
            h = st(h)
            out.append(h)
            if min(h.shape[-2:]) >= 2 and i < 2:
                h = F.max_pool2d(h, 2)
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, feat_dim)
        return F.relu(self.fc(self.layers(x)[-1].mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, n_classes)
        return self.head(self.features(x))


class FeatureExtractor(nn.Module):
    """The domain CNN's penultimate features as a module (torchmetrics' custom ``feature=``)."""

    def __init__(self, net: DomainCNN):
        super().__init__()
        self.net = net
        self.num_features = net.cfg.feat_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


__all__ = ["DomainCNNConfig", "DomainCNN", "FeatureExtractor"]
