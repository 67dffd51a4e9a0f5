"""The domain feature network: a small CNN classifier of the image set, used only for image metrics.

No Inception-v3 or AlexNet weights exist offline (docs/design.md), so :mod:`eegsine.metrics.images`
computes FID / IS / LPIPS-style distances on this network's features and names them ``*_domain``.
It follows the model protocol (:mod:`eegsine.models.protocol`); its config carries its own short
training recipe (:func:`eegsine.metrics.images.train_domain_cnn`).
"""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F

from eegsine.models.configs import DomainCNNConfig  # noqa: F401 (re-exported)
from eegsine.models.protocol import PretrainedModel


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
