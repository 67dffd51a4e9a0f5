"""EEG-conditioned latent diffusion: diffusers VAE + cross-attention UNet + EEG tokens.

Stage two of the EEG->image system (docs/design.md). The pieces are diffusers' own:

* ``AutoencoderKL`` maps images in [-1, 1] (B, C, H, W) to latents (B, c, H/f, W/f); it is
  trained in-project on the image set (``eegsine.training.diffusion`` stage A) or read from
  a user's local Stable Diffusion folder (``pretrained_vae``, ``from_pretrained(...,
  local_files_only=True)``, nothing downloaded).
* ``UNet2DConditionModel`` predicts the noise of a latent; its cross-attention reads EEG
  tokens: the frozen aligned encoder's embedding (B, emb_dim) through
  :class:`~eegsine.models.eeg_encoder.EEGTokenMapper` -> (B, n_tokens, cross_attention_dim).
* Classifier-free guidance: during training a fraction ``cond_dropout`` of the samples sees
  a learned null token sequence (``null_tokens``, (n_tokens, cross_attention_dim)) instead
  of its EEG tokens; at sampling ``eps = eps_null + g (eps_eeg - eps_null)``. The null tokens
  are what an export bundle stores as ``uncond_tokens``.
* Schedulers: DDPM noise for training, DDIM (eta 0) and DPM-Solver++ (multistep) for sampling.

Hand-written: only the glue (config, token/null switch, the guided sampling loop, file
layout); diffusers' pipelines assume a text encoder and tokenizer, and the loop is 20 lines.

A saved model folder (:func:`save_diffusion`) holds ``config.json`` (:class:`DiffusionConfig`),
``vae/`` and ``unet/`` (diffusers ``save_pretrained``, safetensors), ``cond.safetensors``
(token mapper + null tokens), ``scheduler/`` (the DDIM config the runtime reads) and
``encoder/`` (the frozen EEG encoder, so a model folder generates from raw EEG on its own).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from eegsine.errors import UserError
from eegsine.io import load_weights, save_weights
from eegsine.models import module_device
from eegsine.models.configs import DiffusionConfig
from eegsine.models.eeg_encoder import EEGEncoder, EEGTokenMapper, load_encoder, save_encoder

COND_FILE = "cond.safetensors"
SAMPLERS = ("ddim", "dpm++")


# -- builders -----------------------------------------------------------------------------------
def _local_folder(path: str, sub: str, what: str) -> Path:
    """``path`` itself or ``path/sub`` (Stable Diffusion layout), whichever holds a config.json."""
    p = Path(path).expanduser()
    for cand in (p / sub, p):
        if (cand / "config.json").exists():
            return cand
    raise UserError(f"{what}={path}: no config.json in {p} or {p / sub} (expected a diffusers save_pretrained folder)")


def build_vae(cfg: DiffusionConfig):
    from diffusers import AutoencoderKL

    if cfg.pretrained_vae:
        return AutoencoderKL.from_pretrained(str(_local_folder(cfg.pretrained_vae, "vae", "pretrained_vae")),
                                             local_files_only=True)
    n = len(cfg.vae_channels)
    return AutoencoderKL(in_channels=cfg.image_channels, out_channels=cfg.image_channels,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         block_out_channels=tuple(cfg.vae_channels), layers_per_block=cfg.vae_layers,
                         latent_channels=cfg.latent_channels, norm_num_groups=cfg.vae_norm_groups,
                         sample_size=cfg.image_size, scaling_factor=cfg.scaling_factor or 1.0,
                         mid_block_add_attention=cfg.vae_mid_attention)


def build_unet(cfg: DiffusionConfig):
    from diffusers import UNet2DConditionModel

    if cfg.pretrained_unet:
        return UNet2DConditionModel.from_pretrained(str(_local_folder(cfg.pretrained_unet, "unet", "pretrained_unet")),
                                                    local_files_only=True)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.unet_cross_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.unet_cross_attention))
    return UNet2DConditionModel(sample_size=cfg.latent_size, in_channels=cfg.latent_channels,
                                out_channels=cfg.latent_channels, down_block_types=down, up_block_types=up,
                                block_out_channels=tuple(cfg.unet_channels), layers_per_block=cfg.unet_layers,
                                cross_attention_dim=cfg.cross_attention_dim, attention_head_dim=cfg.attention_head_dim,
                                norm_num_groups=cfg.unet_norm_groups)


def fit_to_pretrained(cfg: DiffusionConfig, vae, unet) -> DiffusionConfig:
    """Record the sizes a local pretrained VAE/UNet actually has; refuse pairs that cannot work together."""
    vc, uc = vae.config, unet.config
    if uc.in_channels != vc.latent_channels:
        raise UserError(f"UNet in_channels={uc.in_channels} but the VAE has latent_channels={vc.latent_channels}")
    cad = uc.cross_attention_dim
    if not isinstance(cad, int):
        raise UserError(f"UNet cross_attention_dim={cad!r}: only a single int is supported")
    changes: dict[str, Any] = {"cross_attention_dim": cad, "latent_channels": int(vc.latent_channels)}
    if cfg.pretrained_vae:
        changes.update(vae_channels=list(vc.block_out_channels), vae_layers=int(vc.layers_per_block),
                       vae_norm_groups=int(vc.norm_num_groups), scaling_factor=float(cfg.scaling_factor or vc.scaling_factor))
    if cfg.pretrained_unet:
        changes.update(unet_channels=list(uc.block_out_channels), unet_norm_groups=int(uc.norm_num_groups),
                       unet_layers=int(uc.layers_per_block) if isinstance(uc.layers_per_block, int) else cfg.unet_layers,
                       unet_cross_attention=["CrossAttn" in b for b in uc.down_block_types])
    return cfg.replace(**changes)


class EEGDiffusion(nn.Module):
    """VAE + UNet + EEG token mapper + learned null tokens (+ the frozen encoder, when attached)."""

    def __init__(self, cfg: DiffusionConfig, vae=None, unet=None, encoder: EEGEncoder | None = None):
        super().__init__()
        if cfg.emb_dim < 1:
            raise UserError("DiffusionConfig.emb_dim must be set (the EEG encoder's emb_dim) before building the model")
        self.cfg = cfg
        self.vae = vae if vae is not None else build_vae(cfg)
        self.unet = unet if unet is not None else build_unet(cfg)
        self.mapper = EEGTokenMapper(cfg.emb_dim, cfg.n_tokens, cfg.cross_attention_dim, cfg.mapper_hidden or None)
        # start the null tokens where the mapper's LayerNorm puts real tokens (zero mean, unit scale)
        self.null_tokens = nn.Parameter(torch.randn(cfg.n_tokens, cfg.cross_attention_dim))
        self.encoder = encoder

    # -- images <-> latents -------------------------------------------------------------------
    def to_model_space(self, images: torch.Tensor) -> torch.Tensor:
        """Native images (B, C, h, w) in [0, 1] -> (B, C_vae, S, S) in [-1, 1]."""
        cfg = self.cfg
        if images.shape[-1] != cfg.image_size:
            if cfg.resize == "pad":
                p = cfg.image_size - images.shape[-1]
                images = F.pad(images, (p // 2, p - p // 2, p // 2, p - p // 2))
            else:
                images = F.interpolate(images, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
        c = self.vae.config.in_channels
        if images.shape[1] != c:
            images = images.expand(-1, c, -1, -1) if images.shape[1] == 1 else images.mean(1, keepdim=True)
        return images * 2.0 - 1.0

    def to_native(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_vae, S, S) in [-1, 1] -> native images (B, image_channels, h, w) in [0, 1]."""
        cfg = self.cfg
        x = (x / 2 + 0.5).clamp(0.0, 1.0)
        if x.shape[1] != cfg.image_channels:
            x = x.mean(1, keepdim=True) if cfg.image_channels == 1 else x.expand(-1, cfg.image_channels, -1, -1)
        if cfg.native_size != cfg.image_size:
            if cfg.resize == "pad":
                p = (cfg.image_size - cfg.native_size) // 2
                x = x[..., p:p + cfg.native_size, p:p + cfg.native_size]
            else:
                x = F.interpolate(x, size=(cfg.native_size, cfg.native_size), mode="bilinear", align_corners=False)
        return x.contiguous()

    @property
    def scaling_factor(self) -> float:
        return float(self.cfg.scaling_factor or self.vae.config.scaling_factor)

    def encode_images(self, images: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Native images (B, C, h, w) in [0, 1] -> scaled latents (B, c, s, s)."""
        dist = self.vae.encode(self.to_model_space(images)).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return z * self.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, c, s, s) -> native images in [0, 1]."""
        return self.to_native(self.vae.decode(latents / self.scaling_factor).sample)

    # -- conditioning -----------------------------------------------------------------------------
    def tokens(self, emb: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """(B, emb_dim) -> (B, n_tokens, cross_attention_dim); rows with ``drop`` get the null tokens."""
        tok = self.mapper(emb)
        if drop is not None:
            # torch.where keeps null_tokens in the graph even when nothing is dropped (DDP needs every grad)
            tok = torch.where(drop[:, None, None], self.null_tokens.expand_as(tok), tok)
        return tok

    def uncond_tokens(self, n: int) -> torch.Tensor:
        return self.null_tokens.unsqueeze(0).expand(n, -1, -1)

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, emb: torch.Tensor | None, drop: torch.Tensor | None = None,
                eeg: torch.Tensor | None = None) -> torch.Tensor:
        """Training: noisy latents (B, c, s, s), timesteps (B,), embeddings (B, emb_dim) -> prediction (B, c, s, s).

        ``eeg`` (B, n_chans, n_times) instead of ``emb`` runs the attached encoder inside the forward
        (joint training, where the encoder gets gradients).
        """
        if emb is None:
            if eeg is None or self.encoder is None:
                raise UserError("EEGDiffusion.forward needs emb, or eeg with an attached encoder")
            emb = self.encoder(eeg)
        return self.unet(noisy, t, encoder_hidden_states=self.tokens(emb, drop), return_dict=False)[0]

    @torch.no_grad()
    def embed(self, eeg: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise UserError("this diffusion model has no EEG encoder attached (load it with load_diffusion)")
        return self.encoder(eeg.to(module_device(self.encoder)))

    # -- sampling ---------------------------------------------------------------------------------
    def make_scheduler(self, sampler: str | None = None):
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        sampler = sampler or self.cfg.sampler
        sc = self.cfg.scheduler_config()
        if sampler == "ddim":
            return DDIMScheduler(**sc)
        if sampler == "dpm++":
            sc = {k: v for k, v in sc.items() if k not in ("clip_sample", "set_alpha_to_one", "clip_sample_range")}
            return DPMSolverMultistepScheduler(**sc, algorithm_type="dpmsolver++", solver_order=2)
        raise UserError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")

    def initial_latents(self, n: int, seed: int, offset: int = 0) -> torch.Tensor:
        """(n, c, s, s) standard normal; sample i depends only on (seed, offset + i), not on the batch."""
        shape = (self.unet.config.in_channels, self.cfg.latent_size, self.cfg.latent_size)
        out = [torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + offset + i)) for i in range(n)]
        return torch.stack(out) if out else torch.zeros((0,) + shape)

    @torch.no_grad()
    def sample(self, emb: torch.Tensor, steps: int | None = None, guidance: float | None = None,
               sampler: str | None = None, seed: int = 0, latents: torch.Tensor | None = None,
               progress: bool = False) -> torch.Tensor:
        """EEG embeddings (B, emb_dim) -> images (B, image_channels, native, native) in [0, 1]."""
        steps, g = self.cfg.sampling(steps, guidance)
        device = module_device(self.unet)
        sched = self.make_scheduler(sampler)
        sched.set_timesteps(steps)
        n = len(emb)
        x = (self.initial_latents(n, seed) if latents is None else latents.clone()).to(device) * sched.init_noise_sigma
        tok = self.tokens(emb.to(device))
        if g != 1.0:
            tok = torch.cat([self.uncond_tokens(n), tok])        # (2B, n_tokens, d): null half first
        ts = sched.timesteps
        if progress:
            from tqdm.auto import tqdm

            ts = tqdm(ts, desc=f"{sampler or self.cfg.sampler} x{steps}", leave=False)
        for t in ts:
            inp = sched.scale_model_input(torch.cat([x, x]) if g != 1.0 else x, t)
            eps = self.unet(inp, t, encoder_hidden_states=tok, return_dict=False)[0]
            if g != 1.0:
                u, c = eps.chunk(2)
                eps = u + g * (c - u)
            x = sched.step(eps, t, x, return_dict=False)[0]
        return self.decode_latents(x)

    @torch.no_grad()
    def generate(self, eeg: torch.Tensor, **kw) -> torch.Tensor:
        """Raw EEG (B, n_chans, n_times) -> images, through the attached encoder."""
        return self.sample(self.embed(eeg), **kw)


def build_diffusion(cfg: DiffusionConfig, encoder: EEGEncoder | None = None) -> tuple[EEGDiffusion, DiffusionConfig]:
    """Build (or read local pretrained) VAE and UNet; returns the model and the config with the real sizes."""
    if encoder is not None:
        if cfg.emb_dim and cfg.emb_dim != encoder.cfg.emb_dim:
            raise UserError(f"DiffusionConfig.emb_dim={cfg.emb_dim} but the encoder gives {encoder.cfg.emb_dim}")
        cfg = cfg.replace(emb_dim=encoder.cfg.emb_dim)
    vae, unet = build_vae(cfg), build_unet(cfg)
    if cfg.pretrained_vae or cfg.pretrained_unet:
        cfg = fit_to_pretrained(cfg, vae, unet)
    return EEGDiffusion(cfg, vae, unet, encoder), cfg


def n_params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def model_sizes(model: EEGDiffusion) -> dict[str, int]:
    return {"vae": n_params(model.vae), "vae_decoder": n_params(model.vae.decoder) + n_params(model.vae.post_quant_conv),
            "unet": n_params(model.unet), "mapper": n_params(model.mapper) + model.null_tokens.numel(),
            "encoder": n_params(model.encoder)}


# -- files --------------------------------------------------------------------------------------
def save_diffusion(directory: str | Path, model: EEGDiffusion, cfg: DiffusionConfig | None = None) -> Path:
    """Write the model folder (see module docstring); the config is written last (it marks completeness)."""
    directory = Path(directory)
    cfg = cfg or model.cfg
    cfg = cfg.replace(scaling_factor=model.scaling_factor)
    directory.mkdir(parents=True, exist_ok=True)
    model.vae.register_to_config(scaling_factor=model.scaling_factor)
    model.vae.save_pretrained(str(directory / "vae"), safe_serialization=True)
    model.unet.save_pretrained(str(directory / "unet"), safe_serialization=True)
    state = {f"mapper.{k}": v for k, v in model.mapper.state_dict().items()}
    state["null_tokens"] = model.null_tokens.detach()
    save_weights(directory / COND_FILE, state)
    model.make_scheduler("ddim").save_pretrained(str(directory / "scheduler"))
    if model.encoder is not None:
        save_encoder(directory / "encoder", model.encoder)
    cfg.save(directory)
    return directory


def load_diffusion(directory: str | Path, device: str | torch.device = "cpu") -> tuple[EEGDiffusion, DiffusionConfig]:
    """Read what :func:`save_diffusion` wrote (no network); returns the model in eval mode and its config."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    directory = Path(directory)
    cfg = DiffusionConfig.load(directory)
    for sub in ("vae", "unet"):
        if not (directory / sub / "config.json").exists():
            raise UserError(f"{directory / sub}: missing (not a complete eegsine diffusion model folder)")
    vae = AutoencoderKL.from_pretrained(str(directory / "vae"), local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(str(directory / "unet"), local_files_only=True)
    encoder = load_encoder(directory / "encoder")[0] if (directory / "encoder" / "config.json").exists() else None
    model = EEGDiffusion(cfg, vae, unet, encoder)
    state = load_weights(directory / COND_FILE)
    with torch.no_grad():
        model.null_tokens.copy_(state.pop("null_tokens"))
    try:
        model.mapper.load_state_dict({k[len("mapper."):]: v for k, v in state.items()})
    except RuntimeError as e:
        raise UserError(f"{directory / COND_FILE}: does not fit the token mapper ({str(e).splitlines()[0][:200]})") from None
    return model.to(device).eval().requires_grad_(False), cfg


__all__ = ["DiffusionConfig", "EEGDiffusion", "build_vae", "build_unet", "build_diffusion", "fit_to_pretrained",
           "save_diffusion", "load_diffusion", "model_sizes", "n_params", "SAMPLERS"]
