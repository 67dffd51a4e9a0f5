"""Image encoders the EEG embedding is aligned to.

Default (``source="cnn"``): a small CNN trained in-project on the stimulus images that the
EEG train split shows (see ``eegsine.training.image_encoder``): four 3x3 conv layers
(widths w, w, 2w, 4w, two 2x max-pools), global average pool, a linear projection to
``emb_dim`` and an L2 norm. It is trained with cross-entropy through a *cosine* classifier
(logits = 10 * cos(z, w_c)), so classes are separated by angle, the geometry the EEG side is
aligned in. No pretrained image network exists offline (docs/design.md), hence in-project.

Optional (``source="hf"``): any Hugging Face image model in a local folder (CLIP's vision
tower with projection when the folder holds a CLIP model, else the model's pooled output),
loaded with ``local_files_only=True``: never a download.

Every encoder maps images (B, C, H, W) in [0, 1] to (B, emb_dim) unit vectors.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from eegsine.errors import UserError
from eegsine.models import module_device
from eegsine.models.configs import ImageEncoderConfig
from eegsine.models.local_folders import CLIP_TYPES, check_hf_vision_folder, load_error
from eegsine.models.protocol import PretrainedModel
COSINE_SCALE = 10.0  # fixed logit scale of the cosine classifier: 10 reaches >97% train acc on MNIST in 2 epochs


def _check_images(x: torch.Tensor, in_chans: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise UserError(f"image encoder: expected (batch, {in_chans}, H, W) images, got {tuple(x.shape)}")


class ImageEncoder(PretrainedModel, nn.Module):
    """Base of the two sources; ``from_config`` picks one. An HF model's weights stay in its own folder."""

    config_class = ImageEncoderConfig

    @classmethod
    def from_config(cls, cfg: ImageEncoderConfig) -> "ImageEncoder":
        return CNNImageEncoder(cfg) if cfg.source == "cnn" else HFImageEncoder(cfg)


class CNNImageEncoder(ImageEncoder):
    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

        self.net = nn.Sequential(
            *block(cfg.in_chans, w), *block(w, w), nn.MaxPool2d(2),   # (B, w, H/2, W/2)
            *block(w, 2 * w), nn.MaxPool2d(2),                         # (B, 2w, H/4, W/4)
            *block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 4w)
        )
        self.proj = nn.Linear(4 * w, cfg.emb_dim)
        self.class_weight = nn.Parameter(torch.randn(cfg.n_classes, cfg.emb_dim) * 0.1)  # cosine classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, emb_dim)
        _check_images(x, self.cfg.in_chans)
        return F.normalize(self.proj(self.net((x - 0.5) / 0.5)), dim=-1)

    def logits(self, z: torch.Tensor) -> torch.Tensor:  # (B, emb_dim) -> (B, n_classes)
        return COSINE_SCALE * z @ F.normalize(self.class_weight, dim=-1).T


class HFImageEncoder(ImageEncoder):
    """A local Hugging Face vision model; grayscale is repeated to RGB and resized to its input size."""

    saves_weights = False  # config.json names the user's folder (hf_path); its weights stay there

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        import transformers

        path = Path(cfg.hf_path)
        if not (path / "config.json").exists():
            raise UserError(f"{path}: not a local Hugging Face model folder (no config.json)")
        check_hf_vision_folder(path)  # config, weights and their shapes, before transformers reads them
        try:
            hf_cfg = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
            if hf_cfg.model_type in CLIP_TYPES:
                self.model = transformers.CLIPVisionModelWithProjection.from_pretrained(
                    path, local_files_only=True, use_safetensors=True)
                self.kind = "clip"
            else:
                self.model = transformers.AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
                self.kind = "auto"
        except (OSError, ValueError, RuntimeError, TypeError, KeyError) as e:  # what the checks did not foresee
            raise load_error(path, e) from None
        vcfg = getattr(hf_cfg, "vision_config", hf_cfg)
        self.model.eval().requires_grad_(False)
        self.size = int(getattr(vcfg, "image_size", 224))
        self.in_chans = int(getattr(vcfg, "num_channels", 3))
        try:
            proc = transformers.AutoImageProcessor.from_pretrained(path, local_files_only=True)
            mean, std = proc.image_mean, proc.image_std
        except (OSError, ValueError):  # no preprocessor_config.json: CLIP's published statistics
            mean, std = [0.4815, 0.4578, 0.4082], [0.2686, 0.2613, 0.2758]
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.cfg = cfg

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise UserError(f"image encoder: expected (batch, C, H, W) images, got {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            x = x.mean(dim=1, keepdim=True).expand(-1, self.in_chans, -1, -1)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        out = self.model(pixel_values=(x - self.mean) / self.std)
        if self.kind == "clip":
            z = out.image_embeds
        else:
            z = out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state.mean(1)
            z = z.flatten(1)
        return F.normalize(z, dim=-1)

    def emb_dim(self) -> int:
        return int(self.forward(torch.zeros(1, self.in_chans, 8, 8)).shape[1])


def build_image_encoder(cfg: ImageEncoderConfig) -> ImageEncoder:
    return ImageEncoder.from_config(cfg)


@torch.no_grad()
def embed_images(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(M, C, H, W) in [0, 1] -> (M, emb_dim) float32 unit vectors, eval mode."""
    was = model.training
    model.eval()
    x, dev = torch.as_tensor(images, dtype=torch.float32), module_device(model)
    out = [model(x[i:i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(out).numpy().astype(np.float32)
