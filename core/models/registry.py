"""Every model kind eegsine saves, by its ``config.json`` kind (torch-free: classes are imported on use).

``load_pretrained(folder)`` reads any model folder (or a run folder's ``model/``) through its kind;
``tests/test_models_registry.py`` runs every entry's ``examples`` through save/load, export and ORT
parity (braindecode's completeness test), with its known exceptions commented there.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from eegsine.config import Config
from eegsine.errors import UserError
from eegsine.models import configs
from eegsine.models.configs import (ClassifierConfig, DiffusionConfig, DomainCNNConfig, EEGEncoderConfig,
                                    ImageEncoderConfig)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    kind: str
    config: Callable[[], type[Config]]  # the config class (lazy: DomainCNNConfig lives beside its model)
    cls: str                            # "module:Class" of the model (imports torch)
    deploys: tuple[str, ...]            # the export contracts its export_modules() returns
    examples: Callable[[], list[Config]]  # small configs the completeness test builds
    summary: str

    def model_class(self) -> Any:
        module, name = self.cls.split(":")
        return getattr(importlib.import_module(module), name)


def _configs(name: str) -> Callable[[], type[Config]]:
    def get() -> type[Config]:
        return getattr(configs, name)
    return get


def _classifier_examples() -> list[Config]:
    return [ClassifierConfig(image_size=8, fc_width=16), ClassifierConfig(image_size=8, head="sine", init="siren"),
            ClassifierConfig(arch="preact_resnet18", in_channels=3, image_size=8, base_width=4, head="sine")]


def _encoder_examples() -> list[Config]:
    base = EEGEncoderConfig(n_chans=4, n_times=64, sfreq=128.0, emb_dim=8, d_model=16, n_layers=1, n_heads=2)
    # minirocket is not here: it runs only once fitted on trials (its round trip: tests/test_backbones.py)
    return [base.replace(arch=a) for a in ("transformer", "lstm", "eegnet", "eegnet-v4", "shallow-convnet",
                                           "eeg-conformer")] + [
        base.replace(arch="spatial", patch=8, kernel=5, center="detrend")]


def _image_encoder_examples() -> list[Config]:
    return [ImageEncoderConfig(image_size=8, emb_dim=8, width=4)]


def _domain_examples() -> list[Config]:
    return [DomainCNNConfig(image_size=8, width=4)]


def _diffusion_examples() -> list[Config]:
    base = DiffusionConfig(image_size=8, native_size=8, vae_channels=[8, 16], vae_norm_groups=4, unet_channels=[8, 16],
                           unet_norm_groups=4, attention_head_dim=4, cross_attention_dim=8, n_tokens=2, emb_dim=8,
                           sample_steps=2, num_train_timesteps=100, scaling_factor=0.8)
    return [base, base.replace(native_size=6, resize="resize", unet_cross_attention=[True, False])]


def _domain_config() -> type[Config]:
    return DomainCNNConfig


REGISTRY: dict[str, ModelEntry] = {e.kind: e for e in [
    ModelEntry("classifier", _configs("ClassifierConfig"), "eegsine.models.classifier:Classifier", ("classifier",),
               _classifier_examples, "image classifier, linear or sine-bounded head (small_cnn, preact_resnet18)"),
    ModelEntry("eeg-encoder", _configs("EEGEncoderConfig"), "eegsine.models.eeg_encoder:EEGEncoder", (),
               _encoder_examples, "EEG encoder (transformer, lstm, eegnet, spatial) -> unit embedding; deployed inside "
                                  "eeg-diffusion's eeg_encoder contract (with its token mapper)"),
    ModelEntry("image-encoder", _configs("ImageEncoderConfig"), "eegsine.models.image_encoder:ImageEncoder", (),
               _image_encoder_examples, "image side of the encoder alignment (training only)"),
    ModelEntry("eeg-diffusion", _configs("DiffusionConfig"), "eegsine.models.diffusion:EEGDiffusionPipeline",
               ("eeg_encoder", "unet", "vae_decoder"), _diffusion_examples,
               "EEG-conditioned latent diffusion: a diffusers pipeline (VAE, UNet, DDIM, token mapper + null tokens) "
               "with its EEG encoder"),
    ModelEntry("domain-cnn", _domain_config, "eegsine.models.domain_cnn:DomainCNN", (),
               _domain_examples, "feature network of the fid/is/lpips_domain metrics (evaluation only)"),
]}


def get_entry(kind: str, where: str = "model") -> ModelEntry:
    if kind not in REGISTRY:
        raise UserError(f"{where}: unknown model kind {kind!r} (known: {', '.join(REGISTRY)})")
    return REGISTRY[kind]


__all__ = ["REGISTRY", "ModelEntry", "get_entry"]
