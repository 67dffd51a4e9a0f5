"""Image classifiers with a standard linear head or a sine-bounded head.

The sine head (:func:`make_sine_head`): ``out = amplitude * sin(omega * (W x + b))`` -- logits bounded
by ``amplitude``; it is :class:`eegsine.kernels.sine_head.SineHead`, whose dispatch runs the fused
Triton kernel on CUDA and the torch reference elsewhere.

Three bodies:

* ``small_cnn`` -- the MNIST adversarial-training CNN of TRADES / MMA (Zhang et al. 2019,
  "SmallCNN"): conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-head, 3x3 convs without
  padding (28 -> 4x4x64 = 1024 features). Two deviations, both for CPU adversarial
  training: no dropout (it makes PGD on the training model stochastic), and 3x3 convs get
  padding 1 when the input is smaller than 16 px (8x8 digits would otherwise vanish).
* ``wong_mnist`` -- the MNIST CNN of Wong, Rice & Kolter 2020 ("Fast is better than free",
  locuslab/fast_adversarial, ``MNIST/mnist_net.py``): conv16 4x4/2 - conv32 4x4/2 (padding 1,
  28 -> 7x7x32 = 1568 features) - fc100 - head, ReLU after each; no pooling, no dropout.
* ``preact_resnet18`` -- PreAct-ResNet-18 (He et al. 2016) as used by Rice et al. 2020 for
  CIFAR-10 adversarial training; ``base_width`` (64 in the paper) is configurable so tests
  can build a narrow one.

Normalisation (``mean``/``std``) lives inside the model: inputs are always in [0, 1]. Input
validation lives in :func:`check_images` (called by the CLI and evaluation), not in
``forward``, so the exported graph stays clean.

Hand-written: the models are ~150 lines and torchvision (which has neither) does not import here.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from eegsine.errors import UserError
from eegsine.kernels.sine_head import SineHead
from eegsine.models.configs import ClassifierConfig
from eegsine.models.protocol import PretrainedModel
from eegsine.runtime.contracts import DEFAULT_OPSET, classifier_contract


# -- heads ----------------------------------------------------------------------------------
def init_head_weight(weight: torch.Tensor, mode: str, omega: float = 1.0, poster_p: float = 1.0) -> None:
    """Re-initialise a (n_out, fan_in) head weight in place (``default`` leaves nn.Linear's)."""
    fan_in = weight.shape[1]
    with torch.no_grad():
        if mode == "siren":
            bound = math.sqrt(6.0 / fan_in) / omega
            weight.uniform_(-bound, bound)
        elif mode == "poster":
            bound = poster_p / (6.0 * fan_in)
            weight.uniform_(-bound, bound)
        elif mode != "default":
            raise UserError(f"unknown head init {mode!r} (siren, poster, default)")


def make_sine_head(in_features: int, out_features: int, omega: float = 1.0, amplitude: float = 1.0,
                   init: str = "siren", poster_p: float = 1.0) -> SineHead:
    """``amplitude * sin(omega * (x @ W.T + b))``; (B, in_features) -> (B, n_classes): the kernels module's
    :class:`~eegsine.kernels.sine_head.SineHead` (Triton on CUDA, the torch reference elsewhere) with this
    classifier's weight init. Bias keeps nn.Linear's default init in every mode (SIREN's reference code
    re-initialises only the weight, and the source's formula names only the weight)."""
    head = SineHead(in_features, out_features, omega=omega, amplitude=amplitude)  # nn.Linear's default init
    init_head_weight(head.weight, init, omega, poster_p)
    return head


def make_head(cfg: ClassifierConfig, in_features: int) -> nn.Module:
    if cfg.head == "sine":
        return make_sine_head(in_features, cfg.n_classes, cfg.omega, cfg.amplitude, cfg.init, cfg.poster_p)
    head = nn.Linear(in_features, cfg.n_classes)
    init_head_weight(head.weight, cfg.init, cfg.omega, cfg.poster_p)
    return head


# -- bodies ---------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """TRADES' SmallCNN body: (B, C, H, W) -> (B, fc_width)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        pad = 1 if cfg.image_size < 16 else 0
        c = cfg.in_channels
        self.convs = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=pad), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=pad), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
        )
        with torch.no_grad():
            n_flat = self.convs(torch.zeros(1, c, cfg.image_size, cfg.image_size)).numel()
        if n_flat == 0:
            raise UserError(f"ClassifierConfig.image_size: {cfg.image_size} px is too small for small_cnn")
        self.fcs = nn.Sequential(nn.Flatten(), nn.Linear(n_flat, cfg.fc_width), nn.ReLU(),
                                 nn.Linear(cfg.fc_width, cfg.fc_width), nn.ReLU())
        self.out_features = cfg.fc_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fcs(self.convs(x))  # (B, fc_width)


class WongMNIST(nn.Module):
    """Wong et al. 2020's MNIST body (their ``mnist_net`` without its last Linear): (B, C, H, W) -> (B, 100)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        side = cfg.image_size // 4  # two stride-2 4x4 convs with padding 1 halve the side twice
        self.convs = nn.Sequential(nn.Conv2d(cfg.in_channels, 16, 4, stride=2, padding=1), nn.ReLU(),
                                   nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU())
        self.fcs = nn.Sequential(nn.Flatten(), nn.Linear(32 * side * side, 100), nn.ReLU())
        self.out_features = 100

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fcs(self.convs(x))  # (B, 100)


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride, bias=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """PreAct-ResNet-18 body: (B, C, 32, 32) -> (B, 8 * base_width)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        w = cfg.base_width
        self.conv1 = nn.Conv2d(cfg.in_channels, w, 3, 1, 1, bias=False)
        layers, c_in = [], w
        for i, c_out in enumerate((w, 2 * w, 4 * w, 8 * w)):
            for j in range(2):
                layers.append(PreActBlock(c_in, c_out, 2 if (j == 0 and i > 0) else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(c_in)
        self.out_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 8w)


# -- classifier -------------------------------------------------------------------------------
class Classifier(PretrainedModel, nn.Module):
    """normalise -> body -> head. Input (B, C, H, W) in [0, 1]; output logits (B, n_classes)."""

    config_class = ClassifierConfig

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.in_channels
        mean = torch.tensor(cfg.mean if len(cfg.mean) == c else cfg.mean * c, dtype=torch.float32)
        std = torch.tensor(cfg.std if len(cfg.std) == c else cfg.std * c, dtype=torch.float32)
        self.register_buffer("mean", mean.view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, c, 1, 1), persistent=False)
        self.body = {"small_cnn": SmallCNN, "wong_mnist": WongMNIST, "preact_resnet18": PreActResNet18}[cfg.arch](cfg)
        self.head = make_head(cfg, self.body.out_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)  # (B, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, n_classes)

    def export_modules(self, max_batch: int = 256, opset: int | None = None) -> dict[str, tuple[Any, nn.Module]]:
        c = self.cfg
        return {"classifier": (classifier_contract(c.in_channels, c.image_size, c.n_classes, max_batch=max_batch,
                                                   opset=opset or DEFAULT_OPSET), self)}


def build_classifier(cfg: ClassifierConfig) -> Classifier:
    return Classifier(cfg)


def check_images(x: torch.Tensor, y: torch.Tensor | None, cfg: ClassifierConfig, what: str = "images") -> None:
    """Raise a one-line UserError unless ``x`` is (N, C, H, W) in [0, 1] fitting ``cfg`` and ``y`` in range."""
    shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise UserError(f"{what}: model expects (N, {shape[0]}, {shape[1]}, {shape[2]}) images, got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise UserError(f"{what}: images must be floating point in [0, 1], got {x.dtype}")
    if not torch.isfinite(x).all():
        raise UserError(f"{what}: images contain NaN or inf")
    if len(x) and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise UserError(f"{what}: images must lie in [0, 1], got range [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    if y is not None:
        if y.ndim != 1 or len(y) != len(x):
            raise UserError(f"{what}: need one label per image, got labels of shape {tuple(y.shape)} "
                            f"for {len(x)} images")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= cfg.n_classes):
            raise UserError(f"{what}: labels must lie in [0, {cfg.n_classes}), got [{int(y.min())}, {int(y.max())}]")
