"""The models' config dataclasses, torch-free: ``--help`` and config checks never import torch.

Each model module re-exports its config (``from eegsine.models.classifier import ClassifierConfig``
still works); the model code that reads them is in ``classifier.py``, ``eeg_encoder.py``,
``image_encoder.py`` and ``diffusion.py`` beside this file.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from eegsine.config import Config
from eegsine.errors import UserError


@dataclasses.dataclass
class ClassifierConfig(Config):
    KIND = "classifier"
    VERSION = 1

    arch: Literal["small_cnn", "preact_resnet18", "wong_mnist"] = dataclasses.field(default="small_cnn", metadata={
        "help": "body: small_cnn (TRADES' SmallCNN, for MNIST-sized images), "
                "preact_resnet18 (PreAct-ResNet-18, CIFAR-10) or wong_mnist (Wong et al. 2020's MNIST CNN)"})
    in_channels: int = dataclasses.field(default=1, metadata={
        "help": "image channels (training takes it from the data set)"})
    image_size: int = dataclasses.field(default=28, metadata={
        "help": "side of the square input images, px (training takes it from the data set)"})
    n_classes: int = dataclasses.field(default=10, metadata={
        "help": "number of classes (training takes it from the data set)"})
    head: Literal["linear", "sine"] = dataclasses.field(default="linear", metadata={
        "help": "last layer: linear logits, or sine: amplitude * sin(omega * (W x + b))"})
    omega: float = dataclasses.field(default=1.0, metadata={"help": "sine head: frequency inside sin"})
    amplitude: float = dataclasses.field(default=1.0, metadata={
        "help": "sine head: logits lie in [-amplitude, amplitude]"})
    init: Literal["siren", "poster", "default"] = dataclasses.field(default="default", metadata={
        "help": "head weight initialisation: siren U(+-sqrt(6/fan_in)/omega), poster U(+-poster_p/(6 fan_in)), "
                "default nn.Linear's"})
    poster_p: float = dataclasses.field(default=1.0, metadata={"help": "poster init: the p of U(+-p/(6 fan_in))"})
    fc_width: int = dataclasses.field(default=200, metadata={
        "help": "small_cnn: width of the two fully-connected layers"})
    base_width: int = dataclasses.field(default=64, metadata={
        "help": "preact_resnet18: channels of the first stage (64 in the paper)"})
    mean: list[float] = dataclasses.field(default_factory=lambda: [0.0], metadata={
        "help": "normalisation inside the model, subtracted from [0, 1] inputs: one value or one per channel"})
    std: list[float] = dataclasses.field(default_factory=lambda: [1.0], metadata={
        "help": "normalisation inside the model, divides after the mean: one value or one per channel"})

    def validate(self) -> None:
        for name in ("in_channels", "image_size", "fc_width", "base_width"):
            if getattr(self, name) < 1:
                raise UserError(f"ClassifierConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_classes < 2:
            raise UserError(f"ClassifierConfig.n_classes: must be >= 2, got {self.n_classes}")
        if self.omega <= 0 or self.amplitude <= 0 or self.poster_p <= 0:
            raise UserError("ClassifierConfig.omega/amplitude/poster_p: must be > 0")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) not in (1, self.in_channels):
                raise UserError(f"ClassifierConfig.{name}: needs 1 or in_channels={self.in_channels} values, "
                                f"got {len(v)}")
        if any(s <= 0 for s in self.std):
            raise UserError(f"ClassifierConfig.std: must be > 0, got {self.std}")
        if self.arch == "wong_mnist" and self.image_size % 4:
            raise UserError(f"ClassifierConfig.image_size: wong_mnist needs a multiple of 4 px, got {self.image_size}")
        if self.arch == "small_cnn" and self.image_size < 8:
            raise UserError(f"ClassifierConfig.image_size: small_cnn needs >= 8 px, got {self.image_size}")


@dataclasses.dataclass
class EEGEncoderConfig(Config):
    """Input geometry and size of an EEG encoder (``n_chans``/``n_times`` 0 = take from the data)."""

    KIND = "eeg-encoder"
    VERSION = 1

    arch: Literal["transformer", "lstm", "eegnet", "spatial", "eegnet-v4", "shallow-convnet", "eeg-conformer",
                  "minirocket"] = dataclasses.field(default="transformer", metadata={
        "help": "transformer (spatial conv, temporal conv, patch tokens, attention), lstm, eegnet, spatial "
                "(spatial filters first, then window means: an ERP read-out), or a published decoder with its "
                "class layer stripped: eegnet-v4 (EEGNet-8,2), shallow-convnet (ShallowFBCSPNet), eeg-conformer, "
                "minirocket (aeon's MiniRocket features fitted on the training trials + a trained projection)"})
    n_chans: int = dataclasses.field(default=0, metadata={"help": "EEG channels of the input (0: from the data)"})
    n_times: int = dataclasses.field(default=0, metadata={"help": "samples per trial (0: from the data)"})
    sfreq: float = dataclasses.field(default=0.0, metadata={
        "help": "sampling rate of the input, Hz (0: from the data)"})
    emb_dim: int = dataclasses.field(default=128, metadata={"help": "size of the L2-normalised EEG embedding"})
    d_model: int = dataclasses.field(default=64, metadata={"help": "transformer width / LSTM hidden size"})
    n_layers: int = dataclasses.field(default=2, metadata={"help": "transformer blocks / LSTM layers"})
    n_heads: int = dataclasses.field(default=4, metadata={"help": "transformer: attention heads (divides d_model)"})
    patch: int = dataclasses.field(default=8, metadata={
        "help": "time downsampling into tokens (transformer, lstm) / window of the means in samples (spatial)"})
    kernel: int = dataclasses.field(default=25, metadata={"help": "temporal conv kernel in samples"})
    n_filters: int = dataclasses.field(default=8, metadata={"help": "EEGNet / eegnet-v4 F1 (temporal filters)"})
    depth_mult: int = dataclasses.field(default=2, metadata={
        "help": "EEGNet / eegnet-v4 D (spatial filters per temporal filter)"})
    dropout: float = dataclasses.field(default=0.1, metadata={"help": "dropout probability while training, in [0, 1)"})
    center: Literal["channel", "trial", "detrend"] = dataclasses.field(default="channel", metadata={
        "help": "subtract each channel's mean (channel), one mean per trial (trial: keeps slow potentials "
                "such as the readiness potential, which lives in channel offsets), or each channel's "
                "least-squares line (detrend: removes electrode offset and drift)"})

    def validate(self) -> None:
        for name in ("n_chans", "n_times"):
            if getattr(self, name) < 0:
                raise UserError(f"EEGEncoderConfig.{name} must be >= 0 (0 = from the data), got {getattr(self, name)}")
        for name in ("emb_dim", "d_model", "n_layers", "n_heads", "patch", "kernel", "n_filters", "depth_mult"):
            if getattr(self, name) < 1:
                raise UserError(f"EEGEncoderConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.sfreq < 0:
            raise UserError(f"EEGEncoderConfig.sfreq must be >= 0, got {self.sfreq}")
        if self.arch == "transformer" and self.d_model % self.n_heads:
            raise UserError(f"EEGEncoderConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"EEGEncoderConfig.dropout must be in [0, 1), got {self.dropout}")

    def fit_to(self, n_chans: int, n_times: int, sfreq: float, what: str = "data") -> "EEGEncoderConfig":
        """Fill 0 fields from the data; a non-zero field that differs is an error."""
        for name, have in (("n_chans", n_chans), ("n_times", n_times)):
            want = getattr(self, name)
            if want and want != have:
                raise UserError(f"EEGEncoderConfig.{name}={want} but {what} has {name}={have}")
        return self.replace(n_chans=n_chans, n_times=n_times, sfreq=float(sfreq) if not self.sfreq else self.sfreq)


@dataclasses.dataclass
class ImageEncoderConfig(Config):
    KIND = "image-encoder"
    VERSION = 1

    source: Literal["cnn", "hf"] = dataclasses.field(default="cnn", metadata={
        "help": "cnn: a small CNN trained here on the stimulus images; hf: a local Hugging Face model (hf_path)"})
    in_chans: int = dataclasses.field(default=1, metadata={
        "help": "image channels (training takes it from the images)"})
    image_size: int = dataclasses.field(default=28, metadata={
        "help": "side of the square images, px (training takes it from the images)"})
    emb_dim: int = dataclasses.field(default=128, metadata={"help": "size of the L2-normalised image embedding"})
    width: int = dataclasses.field(default=32, metadata={"help": "cnn: channels of the first conv (then w, 2w, 4w)"})
    n_classes: int = dataclasses.field(default=10, metadata={
        "help": "classes of the cosine classifier the cnn is trained with (training takes it from the images)"})
    hf_path: str = dataclasses.field(default="", metadata={"help": "local Hugging Face model folder (source=hf)",
                                                           "metavar": "DIR"})

    def validate(self) -> None:
        for name in ("in_chans", "image_size", "emb_dim", "width", "n_classes"):
            if getattr(self, name) < 1:
                raise UserError(f"ImageEncoderConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.source == "hf" and not self.hf_path:
            raise UserError("ImageEncoderConfig.hf_path: source='hf' needs a local model folder")


@dataclasses.dataclass
class DiffusionConfig(Config):
    """Sizes of the VAE, the UNet and the EEG conditioning, plus noise/sampling settings."""

    KIND = "eeg-diffusion"
    VERSION = 1

    # images
    image_size: int = dataclasses.field(default=32, metadata={"help": "side of the square image the VAE sees"})
    image_channels: int = dataclasses.field(default=1, metadata={"help": "channels of the image set (1 or 3)"})
    native_size: int = dataclasses.field(default=28, metadata={"help": "side of the image set's images"})
    resize: Literal["pad", "resize"] = dataclasses.field(default="pad", metadata={
        "help": "native -> image_size: zero-pad around (MNIST 28 -> 32) or bilinear resize"})
    # VAE (AutoencoderKL); downsampling factor 2^(len(vae_channels)-1)
    vae_channels: list[int] = dataclasses.field(default_factory=lambda: [32, 64, 64], metadata={
        "help": "VAE block widths, one per resolution; n levels downsample by 2^(n-1)"})
    vae_layers: int = dataclasses.field(default=1, metadata={"help": "VAE ResNet layers per block"})
    latent_channels: int = dataclasses.field(default=4, metadata={"help": "channels of the VAE latent"})
    vae_norm_groups: int = dataclasses.field(default=8, metadata={
        "help": "VAE GroupNorm groups (divides every vae_channels entry)"})
    vae_mid_attention: bool = dataclasses.field(default=False, metadata={
        "help": "self-attention in the VAE's middle block"})
    scaling_factor: float = dataclasses.field(default=0.0, metadata={
        "help": "latent scale (0: measured as 1/std of the training latents after stage A)"})
    # UNet2DConditionModel
    unet_channels: list[int] = dataclasses.field(default_factory=lambda: [64, 128], metadata={
        "help": "UNet block widths, one per resolution level"})
    unet_cross_attention: list[bool] = dataclasses.field(default_factory=lambda: [True, True], metadata={
        "help": "per resolution level: CrossAttn block (True) or plain ResNet block (False)"})
    unet_layers: int = dataclasses.field(default=1, metadata={"help": "UNet ResNet layers per block"})
    unet_norm_groups: int = dataclasses.field(default=8, metadata={
        "help": "UNet GroupNorm groups (divides every unet_channels entry)"})
    attention_head_dim: int = dataclasses.field(default=8, metadata={"help": "UNet attention: channels per head"})
    cross_attention_dim: int = dataclasses.field(default=64, metadata={
        "help": "width of the EEG tokens the UNet's cross-attention reads"})
    # EEG conditioning
    emb_dim: int = dataclasses.field(default=0, metadata={"help": "EEG embedding size (0: from the encoder)"})
    n_tokens: int = dataclasses.field(default=4, metadata={
        "help": "EEG tokens the token mapper makes from one embedding (also the null tokens' length)"})
    mapper_hidden: int = dataclasses.field(default=0, metadata={"help": "token mapper MLP width (0: automatic)"})
    cond_dropout: float = dataclasses.field(default=0.1, metadata={"help": "training: P(null tokens) for CFG"})
    # noise schedule (DDPM training) and sampling
    num_train_timesteps: int = dataclasses.field(default=1000, metadata={"help": "DDPM noise levels of training"})
    # scaled_linear (Stable Diffusion's): squaredcos_cap_v2 ends at alpha_bar[999] = 2.4e-9, so with
    # epsilon prediction DDIM's first step multiplies any UNet error ~20,000x (INT8 image SQNR -0.9 dB
    # on the tiny run); scaled_linear ends at 4.7e-3 (~15x).
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = dataclasses.field(
        default="scaled_linear", metadata={"help": "noise schedule (diffusers' names)"})
    beta_start: float = dataclasses.field(default=0.00085, metadata={"help": "noise variance at the first timestep"})
    beta_end: float = dataclasses.field(default=0.012, metadata={"help": "noise variance at the last timestep"})
    prediction_type: Literal["epsilon", "v_prediction"] = dataclasses.field(default="epsilon", metadata={
        "help": "what the UNet predicts: the noise (epsilon) or v"})
    sampler: Literal["ddim", "dpm++"] = dataclasses.field(default="ddim", metadata={
        "help": "default sampler: DDIM (eta 0) or DPM-Solver++ (multistep)"})
    sample_steps: int = dataclasses.field(default=25, metadata={"help": "default sampler steps"})
    guidance: float = dataclasses.field(default=2.0, metadata={"help": "classifier-free guidance scale (1: off)"})
    # local pretrained folders (Stable Diffusion layout: <dir>/vae, <dir>/unet, or the model folder itself)
    pretrained_vae: str = dataclasses.field(default="", metadata={"help": "local AutoencoderKL folder (no download)",
                                                                  "metavar": "DIR"})
    pretrained_unet: str = dataclasses.field(default="", metadata={"help": "local UNet2DConditionModel folder",
                                                                   "metavar": "DIR"})

    def validate(self) -> None:
        for name in ("image_size", "image_channels", "native_size", "vae_layers", "latent_channels", "vae_norm_groups",
                     "unet_layers", "unet_norm_groups", "attention_head_dim", "cross_attention_dim", "n_tokens",
                     "num_train_timesteps", "sample_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"DiffusionConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.vae_channels or not self.unet_channels:
            raise UserError("DiffusionConfig.vae_channels / unet_channels must not be empty")
        if len(self.unet_cross_attention) != len(self.unet_channels):
            raise UserError(f"DiffusionConfig.unet_cross_attention has {len(self.unet_cross_attention)} entries for "
                            f"{len(self.unet_channels)} unet_channels levels")
        for name, groups in (("vae_channels", self.vae_norm_groups), ("unet_channels", self.unet_norm_groups)):
            bad = [c for c in getattr(self, name) if c % groups]
            if bad:
                raise UserError(f"DiffusionConfig.{name}: {bad[0]} is not divisible by the norm groups ({groups})")
        f = 2 ** (len(self.vae_channels) - 1)
        if self.image_size % f or self.latent_size % 2 ** (len(self.unet_channels) - 1):
            raise UserError(f"DiffusionConfig.image_size={self.image_size}: must be divisible by the VAE factor {f} "
                            f"and give latents divisible by 2^{len(self.unet_channels) - 1} for the UNet")
        if self.resize == "pad" and self.native_size > self.image_size:
            raise UserError(f"DiffusionConfig: resize='pad' needs native_size ({self.native_size}) <= image_size "
                            f"({self.image_size}); use resize='resize'")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise UserError(f"DiffusionConfig.cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if self.guidance < 0 or self.scaling_factor < 0 or self.emb_dim < 0 or self.mapper_hidden < 0:
            raise UserError("DiffusionConfig: guidance, scaling_factor, emb_dim, mapper_hidden must be >= 0")
        if self.sample_steps > self.num_train_timesteps:
            raise UserError(f"DiffusionConfig.sample_steps ({self.sample_steps}) must be <= num_train_timesteps "
                            f"({self.num_train_timesteps})")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise UserError("DiffusionConfig: need 0 < beta_start < beta_end < 1, "
                            f"got {self.beta_start}, {self.beta_end}")

    def sampling(self, steps: int | None = None, guidance: float | None = None) -> tuple[int, float]:
        """The (steps, guidance) a sampler runs with: ``None`` takes this config's. ``steps=0`` is an
        error, not the default; more steps than ``num_train_timesteps`` have no timesteps to run."""
        n = self.sample_steps if steps is None else steps
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.num_train_timesteps:
            raise UserError(f"steps={steps!r}: must be an int in [1, {self.num_train_timesteps}] "
                            "(the model's num_train_timesteps)")
        g = self.guidance if guidance is None else guidance
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or g < 0:
            raise UserError(f"guidance={guidance!r}: must be a finite number >= 0 (1: off)")
        return n, float(g)

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_factor

    def scheduler_config(self) -> dict[str, Any]:
        """diffusers scheduler config shared by DDPM (training), DDIM and DPM-Solver++ (sampling)."""
        return {"num_train_timesteps": self.num_train_timesteps, "beta_schedule": self.beta_schedule,
                "beta_start": self.beta_start, "beta_end": self.beta_end, "prediction_type": self.prediction_type,
                # latents are not bounded to [-1, 1]: no x0 clipping; "trailing" starts DDIM at t=T-1 (pure noise)
                "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 0, "timestep_spacing": "trailing"}



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
