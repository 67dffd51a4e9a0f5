"""EEG-conditioned latent diffusion: diffusers VAE + cross-attention UNet + EEG tokens, as a ``DiffusionPipeline``.

Stage two of the EEG->image system (docs/design.md). The pieces are diffusers' own:

* ``AutoencoderKL`` maps images in [-1, 1] (B, C, H, W) to latents (B, c, H/f, W/f); it is
  trained in-project on the image set (``eegsine.training.diffusion`` stage A) or read from
  a user's local Stable Diffusion folder (``pretrained_vae``, ``from_pretrained(...,
  local_files_only=True)``, nothing downloaded), checked first by :mod:`eegsine.models.local_folders`.
* ``UNet2DConditionModel`` predicts the noise of a latent; its cross-attention reads EEG
  tokens: the frozen aligned encoder's embedding (B, emb_dim) through :class:`EEGConditioner`
  (:class:`~eegsine.models.eeg_encoder.EEGTokenMapper` + null tokens) -> (B, n_tokens, cross_attention_dim).
* Classifier-free guidance: during training a fraction ``cond_dropout`` of the samples sees
  a learned null token sequence (``null_tokens``, (n_tokens, cross_attention_dim)) instead
  of its EEG tokens; at sampling ``eps = eps_null + g (eps_eeg - eps_null)``. The null tokens
  are what an export bundle stores as ``uncond_tokens``.
* Schedulers: DDPM noise for training, DDIM (eta 0) and DPM-Solver++ (multistep) for sampling.

Two classes hold the same modules (no copies):

* :class:`EEGDiffusionPipeline` (diffusers ``DiffusionPipeline``, like ``DDIMPipeline``) is the model that is saved,
  loaded and deployed. Its ``__call__`` is the one torch guided-sampling loop; diffusers' ``callback_on_step_end``
  sees every step (the export's UNet calibration records its inputs through it). It follows the model protocol
  (:mod:`eegsine.models.protocol`): ``cfg``, ``provenance``, ``save_pretrained`` / ``from_pretrained`` (local folders
  only), ``export_modules``.
* :class:`EEGDiffusion` (``nn.Module``) is what the trainer optimises (DDP, EMA, LoRA), with the attribute and
  parameter names its checkpoints use; :meth:`EEGDiffusion.pipeline` samples through the pipeline.

A model folder (:meth:`EEGDiffusionPipeline.save_pretrained`) is a diffusers pipeline folder plus eegsine's files::

    model_index.json   diffusers' index; its diffusion_config is config.json's, so diffusers' loader alone
                       builds a pipeline that samples (from embeddings: the EEG encoder is not a component)
    pipeline.py        imports EEGDiffusionPipeline: DiffusionPipeline.from_pretrained(folder,
                       custom_pipeline=folder, trust_remote_code=True), diffusers' way to an out-of-tree class
    vae/ unet/         AutoencoderKL, UNet2DConditionModel (diffusers save_pretrained, safetensors)
    scheduler/         DDIMScheduler config (the sampler the export and the runtime use)
    token_mapper/      EEGConditioner: token mapper + null tokens (a diffusers ModelMixin)
    eeg_encoder/       the frozen EEG encoder's protocol folder (with preprocessing.json), when one is attached
    provenance.json    :class:`~eegsine.models.protocol.Provenance`
    config.json        :class:`DiffusionConfig` (kind eeg-diffusion), written last: marks the folder complete

The EEG encoder is an attribute of the pipeline, not a registered diffusers component: diffusers'
``DiffusionPipeline.to`` / ``.device`` / ``.dtype`` read ``.device`` and ``.dtype`` of every registered
``nn.Module`` (an :class:`~eegsine.models.eeg_encoder.EEGEncoder` has neither) and ``save_pretrained`` drops, with a
warning, a component without a diffusers or transformers base class. ``save_pretrained`` / ``from_pretrained`` /
``to`` therefore handle it through the eegsine protocol.

Hand-written: only the glue (config, token/null switch, the guided sampling loop, file layout); diffusers' own
conditional pipelines assume a text encoder and tokenizer.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL, ConfigMixin, DiffusionPipeline, UNet2DConditionModel
# keep ModelMixin a name of this module: diffusers picks token_mapper's loader by looking the loadable base classes
# up by name in the module model_index.json names (pipeline_loading_utils.get_class_obj_and_candidates)
from diffusers import ModelMixin, SchedulerMixin
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.configuration_utils import register_to_config
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from diffusers.utils import logging as diffusers_logging

from eegsine.runs.checkpoint import load_state_into
from eegsine.config import CONFIG_FILE
from eegsine.errors import UserError
from eegsine.models import module_device, n_params  # noqa: F401 - n_params re-exported
from eegsine.models.configs import DiffusionConfig
from eegsine.models.eeg_encoder import EEGEncoder, EEGTokenMapper
from eegsine.models.local_folders import check_diffusers_folder, check_sd_pair, load_error
from eegsine.models.protocol import MODEL_DIR, PROVENANCE_FILE, Provenance, read_provenance
from eegsine.runtime import noise
from eegsine.runtime.contracts import DEFAULT_OPSET, eeg_encoder_contract, unet_contract, vae_decoder_contract

SAMPLERS = ("ddim", "dpm++")
INDEX_FILE = "model_index.json"   # diffusers' pipeline index
# diffusers' custom-pipeline file: DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder,
# trust_remote_code=True) imports the pipeline class from it (diffusers looks `_class_name` up in its own namespace,
# which holds no out-of-tree pipeline); eegsine's own from_pretrained never executes it
PIPELINE_FILE = "pipeline.py"
PIPELINE_SHIM = ('"""Written by eegsine\'s save_pretrained: diffusers\' DiffusionPipeline.from_pretrained(folder, '
                 'custom_pipeline=folder,\ntrust_remote_code=True) loads this folder with the class it imports."""\n'
                 "from eegsine.models.diffusion import EEGDiffusionPipeline  # noqa: F401\n")
ENCODER_DIR = "eeg_encoder"


# -- builders -----------------------------------------------------------------------------------
def _local_folder(path: str, sub: str, what: str) -> Path:
    """``path`` itself or ``path/sub`` (Stable Diffusion layout), whichever holds a config.json."""
    p = Path(path).expanduser()
    for cand in (p / sub, p):
        if (cand / "config.json").exists():
            return cand
    raise UserError(f"{what}={path}: no config.json in {p} or {p / sub} (expected a diffusers save_pretrained folder)")


def _pretrained(cls: type, path: str, sub: str, what: str) -> Any:
    """A user's local diffusers folder of ``cls``: checked (:mod:`eegsine.models.local_folders`), then read."""
    folder = _local_folder(path, sub, what)
    check_diffusers_folder(folder, cls)
    try:
        return cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as e:  # what the checks did not foresee
        raise load_error(folder, e) from None


def check_pretrained(cfg: DiffusionConfig) -> None:
    """Check ``cfg``'s local pretrained VAE/UNet folders, and that they pair, before any is read or trained."""
    vae = unet = None
    if cfg.pretrained_vae:
        vae = check_diffusers_folder(_local_folder(cfg.pretrained_vae, "vae", "pretrained_vae"), AutoencoderKL)
    if cfg.pretrained_unet:
        folder = _local_folder(cfg.pretrained_unet, "unet", "pretrained_unet")
        unet = check_diffusers_folder(folder, UNet2DConditionModel)
        if vae is not None:
            check_sd_pair(vae, unet, folder)


def build_vae(cfg: DiffusionConfig) -> AutoencoderKL:
    if cfg.pretrained_vae:
        return _pretrained(AutoencoderKL, cfg.pretrained_vae, "vae", "pretrained_vae")
    n = len(cfg.vae_channels)
    return AutoencoderKL(in_channels=cfg.image_channels, out_channels=cfg.image_channels,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         block_out_channels=tuple(cfg.vae_channels), layers_per_block=cfg.vae_layers,
                         latent_channels=cfg.latent_channels, norm_num_groups=cfg.vae_norm_groups,
                         sample_size=cfg.image_size, scaling_factor=cfg.scaling_factor or 1.0,
                         mid_block_add_attention=cfg.vae_mid_attention)


def build_unet(cfg: DiffusionConfig) -> UNet2DConditionModel:
    if cfg.pretrained_unet:
        return _pretrained(UNet2DConditionModel, cfg.pretrained_unet, "unet", "pretrained_unet")
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
                       vae_norm_groups=int(vc.norm_num_groups),
                       scaling_factor=float(cfg.scaling_factor or vc.scaling_factor))
    if cfg.pretrained_unet:
        changes.update(unet_channels=list(uc.block_out_channels), unet_norm_groups=int(uc.norm_num_groups),
                       unet_layers=(int(uc.layers_per_block) if isinstance(uc.layers_per_block, int)
                                    else cfg.unet_layers),
                       unet_cross_attention=["CrossAttn" in b for b in uc.down_block_types])
    return cfg.replace(**changes)


def make_scheduler(cfg: DiffusionConfig, sampler: str | None = None) -> SchedulerMixin:
    """A fresh scheduler of ``cfg``'s noise schedule: ``ddim`` (eta 0) or ``dpm++`` (default ``cfg.sampler``)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    sampler = sampler or cfg.sampler
    sc = cfg.scheduler_config()
    if sampler == "ddim":
        return DDIMScheduler(**sc)
    if sampler == "dpm++":
        sc = {k: v for k, v in sc.items() if k not in ("clip_sample", "set_alpha_to_one", "clip_sample_range")}
        return DPMSolverMultistepScheduler(**sc, algorithm_type="dpmsolver++", solver_order=2)
    raise UserError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


def initial_latents(n: int, seed: int | np.random.Generator, shape: tuple[int, ...], offset: int = 0) -> torch.Tensor:
    """(n, *shape) standard normal; sample i depends only on (seed, offset + i), not on the batch. Drawn by the
    torch-free runtime's :func:`eegsine.runtime.noise.initial_latents`, so a seed gives the runtime's latents."""
    return torch.from_numpy(noise.initial_latents(n, shape, seed, offset))


# -- images <-> model space -----------------------------------------------------------------------
def to_model_space(images: torch.Tensor, cfg: DiffusionConfig, channels: int) -> torch.Tensor:
    """Native images (B, C, h, w) in [0, 1] -> (B, channels, S, S) in [-1, 1] (S = ``cfg.image_size``)."""
    if images.shape[-1] != cfg.image_size:
        if cfg.resize == "pad":
            p = cfg.image_size - images.shape[-1]
            images = F.pad(images, (p // 2, p - p // 2, p // 2, p - p // 2))
        else:
            images = F.interpolate(images, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
    if images.shape[1] != channels:
        images = images.expand(-1, channels, -1, -1) if images.shape[1] == 1 else images.mean(1, keepdim=True)
    return images * 2.0 - 1.0


def to_native(x: torch.Tensor, cfg: DiffusionConfig) -> torch.Tensor:
    """(B, C_vae, S, S) in [-1, 1] -> native images (B, image_channels, native_size, native_size) in [0, 1]."""
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


# -- the token_mapper component ---------------------------------------------------------------------
class EEGConditioner(ModelMixin, ConfigMixin):
    """The pipeline's ``token_mapper``: embeddings (B, emb_dim) -> tokens (B, n_tokens, cross_attention_dim),
    and the learned null tokens (n_tokens, cross_attention_dim) of classifier-free guidance.

    A diffusers ``ModelMixin`` so that ``DiffusionPipeline`` saves and loads it itself (``token_mapper/``).
    """

    @register_to_config
    def __init__(self, emb_dim: int, n_tokens: int, cross_attention_dim: int, hidden: int | None = None):
        super().__init__()
        self.mapper = EEGTokenMapper(emb_dim, n_tokens, cross_attention_dim, hidden)
        # start the null tokens where the mapper's LayerNorm puts real tokens (zero mean, unit scale)
        self.null_tokens = nn.Parameter(torch.randn(n_tokens, cross_attention_dim))

    def forward(self, emb: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """(B, emb_dim) -> (B, n_tokens, cross_attention_dim); rows with ``drop`` (B,) get the null tokens."""
        tok = self.mapper(emb)
        if drop is not None:
            # torch.where keeps null_tokens in the graph even when nothing is dropped (DDP needs every grad)
            tok = torch.where(drop[:, None, None], self.null_tokens.expand_as(tok), tok)
        return tok

    def uncond(self, n: int) -> torch.Tensor:
        return self.null_tokens.unsqueeze(0).expand(n, -1, -1)   # (n, n_tokens, d)

    def check_fits(self, cfg: DiffusionConfig, where: str) -> None:
        c = self.config
        got, want = (c.emb_dim, c.n_tokens, c.cross_attention_dim), (cfg.emb_dim, cfg.n_tokens, cfg.cross_attention_dim)
        if got != want:
            raise UserError(f"{where}: the token mapper has (emb_dim, n_tokens, cross_attention_dim)={got}, "
                            f"the DiffusionConfig {want}")


# -- contract-shaped modules (export/onnx_export.py holds equivalents for the bench; see export_modules) ----------
class EEGToTokens(nn.Module):
    """encoder + token mapper as one graph: eeg (B, C, T) -> tokens (B, n_tokens, d), embedding (B, emb)."""

    def __init__(self, encoder: nn.Module, mapper: nn.Module):
        super().__init__()
        self.encoder, self.mapper = encoder, mapper

    def forward(self, eeg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(eeg)          # (B, emb_dim), unit norm
        return self.mapper(z), z       # (B, n_tokens, d), (B, emb_dim)


class UNetForExport(nn.Module):
    """diffusers UNet2DConditionModel with positional inputs and a tensor output."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.unet(latents, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


class LatentDecoder(nn.Module):
    """Scaled latents (B, c, s, s) -> native images (B, image_channels, native, native) in [0, 1]: un-scaling,
    VAE decode, [-1, 1] -> [0, 1], crop/resize to the image set's size, channel mapping."""

    def __init__(self, vae: nn.Module, cfg: DiffusionConfig, scaling_factor: float):
        super().__init__()
        self.vae, self.cfg, self.scaling_factor = vae, cfg, float(scaling_factor)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return to_native(self.vae.decode(latents / self.scaling_factor).sample, self.cfg)


# -- the pipeline -------------------------------------------------------------------------------------
def diffusion_folder(path: str | Path) -> Path:
    """``path`` itself or its ``model/`` (a run folder), whichever holds a diffusion model folder."""
    path = Path(path)
    for d in (path, path / MODEL_DIR):
        if (d / CONFIG_FILE).exists() and ((d / INDEX_FILE).exists() or (d / "unet").is_dir()):
            return d
    if not path.exists():
        raise UserError(f"{path}: no such folder")
    raise UserError(f"{path}: not an eegsine diffusion model folder (no config.json with {INDEX_FILE} here or in "
                    f"{MODEL_DIR}/)")


class EEGDiffusionPipeline(DiffusionPipeline):
    """EEG (or EEG embeddings) -> images: token mapper -> guided sampling over the UNet -> VAE decoder.

    Components (diffusers): ``vae``, ``unet``, ``scheduler``, ``token_mapper``; attributes: ``eeg_encoder``
    (optional, see the module docstring), ``cfg`` (:class:`DiffusionConfig`), ``provenance``.
    """

    model_cpu_offload_seq = "token_mapper->unet->vae"
    _callback_tensor_inputs = ["latents", "latent_model_input", "encoder_hidden_states", "noise_pred"]

    def __init__(self, vae: AutoencoderKL, unet: UNet2DConditionModel, scheduler: SchedulerMixin,
                 token_mapper: EEGConditioner, eeg_encoder: EEGEncoder | None = None,
                 diffusion_config: DiffusionConfig | dict | None = None):
        super().__init__()
        if diffusion_config is None:
            raise UserError("EEGDiffusionPipeline: needs diffusion_config (the model's DiffusionConfig)")
        cfg = (diffusion_config if isinstance(diffusion_config, DiffusionConfig)
               else DiffusionConfig.from_dict(diffusion_config))  # diffusers' loader passes model_index.json's dict
        token_mapper.check_fits(cfg, "EEGDiffusionPipeline")
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler, token_mapper=token_mapper)
        self.register_to_config(diffusion_config=cfg.to_dict())
        self.cfg = cfg
        self.eeg_encoder = eeg_encoder
        self.provenance = Provenance()  # replaced, never mutated

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def scaling_factor(self) -> float:
        return float(self.cfg.scaling_factor or self.vae.config.scaling_factor)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (int(self.unet.config.in_channels), self.cfg.latent_size, self.cfg.latent_size)

    def initial_latents(self, n: int, seed: int | np.random.Generator, offset: int = 0) -> torch.Tensor:
        """(n, c, s, s) standard normal; sample i depends only on (seed, offset + i), not on the batch."""
        return initial_latents(n, seed, self.latent_shape, offset)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, c, s, s) -> native images in [0, 1]."""
        return to_native(self.vae.decode(latents / self.scaling_factor).sample, self.cfg)

    @torch.no_grad()
    def embed(self, eeg: torch.Tensor) -> torch.Tensor:
        """Raw EEG (B, n_chans, n_times) -> (B, emb_dim) through the attached encoder."""
        if self.eeg_encoder is None:
            raise UserError("this diffusion model has no EEG encoder attached (eeg_encoder); pass embeddings instead")
        return self.eeg_encoder(torch.as_tensor(eeg, dtype=torch.float32).to(module_device(self.eeg_encoder)))

    def with_sampler(self, sampler: str | None = None) -> "EEGDiffusionPipeline":
        """A pipeline sharing every module with this one, with a fresh ``ddim`` / ``dpm++`` scheduler."""
        pipe = type(self)(vae=self.vae, unet=self.unet, scheduler=make_scheduler(self.cfg, sampler),
                          token_mapper=self.token_mapper, eeg_encoder=self.eeg_encoder, diffusion_config=self.cfg)
        pipe.provenance = self.provenance
        pipe.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        return pipe

    def to(self, *args, **kwargs) -> "EEGDiffusionPipeline":
        super().to(*args, **kwargs)
        if self.eeg_encoder is not None:  # not a diffusers component (module docstring): moved here
            self.eeg_encoder.to(self.device)
        return self

    # -- the guided sampling loop -------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, eeg: torch.Tensor | None = None, embeddings: torch.Tensor | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None, seed: int | None = None,
                 generator: torch.Generator | list[torch.Generator] | int | np.random.Generator | None = None,
                 latents: torch.Tensor | None = None,
                 output_type: str = "pt", return_dict: bool = True,
                 callback_on_step_end: Callable[..., dict] | PipelineCallback | MultiPipelineCallbacks | None = None,
                 callback_on_step_end_tensor_inputs: list[str] | tuple[str, ...] = ("latents",)):
        """EEG (B, n_chans, n_times) or embeddings (B, emb_dim) -> images (B, image_channels, native, native) in [0, 1].

        Steps and guidance default to ``cfg``'s (``guidance_scale`` 1 runs the conditional branch only). The
        trajectory starts from ``latents`` (B, c, s, s); else a ``torch.Generator`` draws them (diffusers' way);
        else an int ``generator`` or ``seed`` (default 0), or a ``numpy.random.Generator``, through
        :func:`eegsine.runtime.noise.initial_latents`: sample i from ``(seed, i)``, independent of its batch, the
        latents the torch-free runtime (:class:`eegsine.runtime.EEGToImage`) draws for the same seed.
        ``callback_on_step_end(pipe, i, t, tensors)`` runs after every scheduler step (diffusers' convention) with
        the tensors named in ``callback_on_step_end_tensor_inputs`` (of ``_callback_tensor_inputs``: the stepped
        ``latents`` (B, ...), the UNet's inputs ``latent_model_input`` and ``encoder_hidden_states`` (2B, ...
        under guidance, null half first) and the guided ``noise_pred``); a ``latents`` it returns replaces the
        trajectory's. ``output_type``: ``pt``, ``np`` or ``latent`` (the final scaled latents; no VAE decode).
        """
        steps, g = self.cfg.sampling(num_inference_steps, guidance_scale)
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise UserError(f"callback_on_step_end_tensor_inputs: {bad[0]!r} is not one of "
                            f"{self._callback_tensor_inputs}")
        if output_type not in ("pt", "np", "latent"):
            raise UserError(f"output_type must be pt, np or latent, got {output_type!r}")
        if (eeg is None) == (embeddings is None):
            raise UserError("EEGDiffusionPipeline: give exactly one of eeg= or embeddings=")
        emb = self.embed(eeg) if eeg is not None else embeddings
        device = self._execution_device
        tok = self.token_mapper(emb.to(device=device, dtype=self.token_mapper.dtype))   # (B, n_tokens, d)
        n = len(tok)
        if g != 1.0:
            tok = torch.cat([self.token_mapper.uncond(n), tok])                          # (2B, n_tokens, d)
        sched = self.scheduler
        sched.set_timesteps(steps)
        if generator is not None and seed is not None:
            raise UserError("give one of generator= or seed=, not both")
        if latents is None:
            if isinstance(generator, (torch.Generator, list)):
                from diffusers.utils.torch_utils import randn_tensor

                latents = randn_tensor((n,) + self.latent_shape, generator=generator, device=device)
            else:
                latents = self.initial_latents(n, generator if generator is not None else (0 if seed is None else seed))
        x = latents.to(device=device, dtype=self.unet.dtype) * sched.init_noise_sigma    # (B, c, s, s)
        for i, t in enumerate(self.progress_bar(sched.timesteps)):
            latent_model_input = sched.scale_model_input(torch.cat([x, x]) if g != 1.0 else x, t)
            noise_pred = self.unet(latent_model_input, t, encoder_hidden_states=tok, return_dict=False)[0]
            if g != 1.0:
                u, c = noise_pred.chunk(2)
                noise_pred = u + g * (c - u)
            x = sched.step(noise_pred, t, x, return_dict=False)[0]
            if callback_on_step_end is not None:
                named = {"latents": x, "latent_model_input": latent_model_input, "encoder_hidden_states": tok,
                         "noise_pred": noise_pred}
                out = callback_on_step_end(self, i, t, {k: named[k] for k in callback_on_step_end_tensor_inputs})
                x = (out or {}).pop("latents", x)
        images = x if output_type == "latent" else self.decode_latents(x)
        if output_type == "np":
            images = images.cpu().numpy()
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    # -- the model protocol --------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: DiffusionConfig, encoder: EEGEncoder | None = None) -> "EEGDiffusionPipeline":
        """New weights (or local pretrained VAE/UNet) for ``config``; ``encoder`` attached when given."""
        return build_diffusion(config, encoder)[0].pipeline("ddim")

    def save_pretrained(self, save_directory: str | Path, provenance: Provenance | None = None, **kwargs) -> Path:
        """Write the model folder (module docstring); ``provenance`` (default: the pipeline's own) is kept on it.

        ``kwargs`` go to diffusers' ``DiffusionPipeline.save_pretrained`` (safetensors by default)."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        if provenance is not None:
            self.provenance = provenance
        s = self.scaling_factor
        self.cfg = self.cfg.replace(scaling_factor=s)
        self.vae.register_to_config(scaling_factor=s)
        self.register_to_config(diffusion_config=self.cfg.to_dict())
        super().save_pretrained(str(directory), **{"safe_serialization": True, **kwargs})
        (directory / PIPELINE_FILE).write_text(PIPELINE_SHIM)
        enc = directory / ENCODER_DIR
        if self.eeg_encoder is not None:
            self.eeg_encoder.save_pretrained(enc)
        elif enc.exists():  # left by an earlier save: would be read back as this model's encoder
            shutil.rmtree(enc)
        self.provenance.save(directory, PROVENANCE_FILE)
        self.cfg.save(directory)  # last: marks the folder complete
        return directory

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, device: str | torch.device = "cpu",
                        **kwargs) -> "EEGDiffusionPipeline":
        """Read a model folder (or a run folder's ``model/``; never a hub id) -> the pipeline on ``device``.

        ``kwargs`` go to diffusers' ``DiffusionPipeline.from_pretrained`` (``local_files_only`` is always True)."""
        directory = diffusion_folder(pretrained_model_name_or_path)
        cfg = DiffusionConfig.load(directory)
        for rel in (INDEX_FILE, "vae/config.json", "unet/config.json", "token_mapper/config.json",
                    f"token_mapper/{SAFETENSORS_WEIGHTS_NAME}", "scheduler/scheduler_config.json"):
            if not (directory / rel).exists():
                older = (" (it has cond.safetensors: written by an earlier eegsine; retrain it)"
                         if (directory / "cond.safetensors").exists() else "")
                raise UserError(f"{directory / rel}: missing (not a complete eegsine diffusion model folder){older}")
        # encoder, then token mapper, each built with its weight init before its weights load (diffusers' own
        # loader skips the init): the draws from torch's global RNG of every earlier eegsine load, so what runs
        # after a load, such as a LoRA adapter's init after --init-from, stays what it was
        enc_dir = directory / ENCODER_DIR
        encoder = EEGEncoder.from_pretrained(enc_dir) if (enc_dir / CONFIG_FILE).exists() else None
        token_mapper = EEGConditioner.from_config(EEGConditioner.load_config(str(directory / "token_mapper"))).eval()
        token_mapper.check_fits(cfg, str(directory))
        load_state_into(token_mapper, directory / "token_mapper" / SAFETENSORS_WEIGHTS_NAME)
        kwargs["local_files_only"] = True
        bars = diffusers_logging.is_progress_bar_enabled()
        diffusers_logging.disable_progress_bar()  # its "Loading pipeline components" bar would break one-line errors
        try:
            pipe = super().from_pretrained(str(directory), token_mapper=token_mapper, eeg_encoder=encoder,
                                           diffusion_config=cfg, **kwargs)
        finally:
            if bars:
                diffusers_logging.enable_progress_bar()
        if pipe.token_mapper.dtype != pipe.unet.dtype:  # passed in, so not cast by a dtype= given to diffusers
            pipe.token_mapper.to(pipe.unet.dtype)
        pipe.provenance = read_provenance(directory)
        return pipe.to(device)

    def export_modules(self, max_batch: int = 16, opset: int | None = None) -> dict[str, tuple[Any, nn.Module]]:
        """name -> (contract, contract-shaped module): ``eeg_encoder`` (encoder + token mapper; only with an encoder
        attached), ``unet`` (its batch is 2 x ``max_batch``: guidance) and ``vae_decoder`` (-> native images)."""
        cfg, tm, op = self.cfg, self.token_mapper.config, opset or DEFAULT_OPSET
        lat_c, lat_s, _ = self.latent_shape
        out: dict[str, tuple[Any, nn.Module]] = {}
        if self.eeg_encoder is not None:
            ec = self.eeg_encoder.cfg
            out["eeg_encoder"] = (eeg_encoder_contract(ec.n_chans, ec.n_times, tm.emb_dim, tm.n_tokens,
                                                       tm.cross_attention_dim, max_batch=max_batch, opset=op),
                                  EEGToTokens(self.eeg_encoder, self.token_mapper.mapper))
        out["unet"] = (unet_contract(lat_c, lat_s, tm.n_tokens, tm.cross_attention_dim, max_batch=max_batch,
                                     num_train_timesteps=cfg.num_train_timesteps, opset=op), UNetForExport(self.unet))
        out["vae_decoder"] = (vae_decoder_contract(lat_c, lat_s, cfg.image_channels, cfg.native_size,
                                                   self.scaling_factor, max_batch=max_batch, opset=op),
                              LatentDecoder(self.vae, cfg, self.scaling_factor))
        return out


# -- the training module ---------------------------------------------------------------------------------
class EEGDiffusion(nn.Module):
    """VAE + UNet + EEG token mapper + learned null tokens (+ the frozen encoder, when attached).

    ``mapper`` and ``null_tokens`` are the parameters of :attr:`token_mapper` (the pipeline's component),
    registered here under the names the trainer's checkpoints, optimiser groups and EMA use.
    """

    provenance: Provenance = Provenance()  # replaced, never mutated

    def __init__(self, cfg: DiffusionConfig, vae=None, unet=None, encoder: EEGEncoder | None = None,
                 token_mapper: EEGConditioner | None = None):
        super().__init__()
        if cfg.emb_dim < 1:
            raise UserError("DiffusionConfig.emb_dim must be set (the EEG encoder's emb_dim) before building the model")
        self.cfg = cfg
        self.vae = vae if vae is not None else build_vae(cfg)
        self.unet = unet if unet is not None else build_unet(cfg)
        if token_mapper is None:
            token_mapper = EEGConditioner(cfg.emb_dim, cfg.n_tokens, cfg.cross_attention_dim, cfg.mapper_hidden or None)
        token_mapper.check_fits(cfg, "EEGDiffusion")
        self.mapper = token_mapper.mapper
        self.null_tokens = token_mapper.null_tokens
        self.encoder = encoder
        # not a submodule: checkpoints, DDP and EMA see each parameter once, under the names above
        object.__setattr__(self, "_token_mapper", token_mapper)

    @property
    def token_mapper(self) -> EEGConditioner:
        """The pipeline's ``token_mapper``: ``mapper`` and ``null_tokens`` themselves (not copies)."""
        tm = self.__dict__["_token_mapper"]
        if tm.mapper is not self.mapper:            # reassigned (e.g. a load that swaps parameters)
            tm.mapper = self.mapper
        if tm.null_tokens is not self.null_tokens:
            tm.null_tokens = self.null_tokens
        tm.training = self.mapper.training
        return tm

    def pipeline(self, sampler: str | None = None) -> EEGDiffusionPipeline:
        """The sampling pipeline over this model's modules (shared, not copied); a fresh ``sampler`` scheduler
        (default ``cfg.sampler``); no progress bar (``set_progress_bar_config`` turns it on)."""
        pipe = EEGDiffusionPipeline(vae=self.vae, unet=self.unet, scheduler=make_scheduler(self.cfg, sampler),
                                    token_mapper=self.token_mapper, eeg_encoder=self.encoder, diffusion_config=self.cfg)
        pipe.provenance = self.provenance
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @classmethod
    def from_pipeline(cls, pipe: EEGDiffusionPipeline) -> "EEGDiffusion":
        model = cls(pipe.cfg, pipe.vae, pipe.unet, pipe.eeg_encoder, token_mapper=pipe.token_mapper)
        model.provenance = pipe.provenance
        return model

    def save_pretrained(self, directory: str | Path, provenance: Provenance | None = None) -> Path:
        """The pipeline's model folder (DDIM scheduler, whatever ``cfg.sampler``: the runtime's sampler)."""
        if provenance is not None:
            self.provenance = provenance
        return self.pipeline("ddim").save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "EEGDiffusion":
        return cls.from_pipeline(EEGDiffusionPipeline.from_pretrained(directory, device)).eval()

    # -- images <-> latents -------------------------------------------------------------------
    def to_model_space(self, images: torch.Tensor) -> torch.Tensor:
        """Native images (B, C, h, w) in [0, 1] -> (B, C_vae, S, S) in [-1, 1]."""
        return to_model_space(images, self.cfg, self.vae.config.in_channels)

    def to_native(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_vae, S, S) in [-1, 1] -> native images (B, image_channels, h, w) in [0, 1]."""
        return to_native(x, self.cfg)

    @property
    def scaling_factor(self) -> float:
        return float(self.cfg.scaling_factor or self.vae.config.scaling_factor)

    def encode_images(self, images: torch.Tensor, sample: bool = True,
                      generator: torch.Generator | None = None) -> torch.Tensor:
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
        return self.token_mapper(emb, drop)

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
            raise UserError("this diffusion model has no EEG encoder attached "
                            "(load it with EEGDiffusion.from_pretrained)")
        return self.encoder(eeg.to(module_device(self.encoder)))

    # -- sampling (through the pipeline) -----------------------------------------------------------------
    def make_scheduler(self, sampler: str | None = None):
        return make_scheduler(self.cfg, sampler)

    def initial_latents(self, n: int, seed: int, offset: int = 0) -> torch.Tensor:
        """(n, c, s, s) standard normal; sample i depends only on (seed, offset + i), not on the batch."""
        s = self.cfg.latent_size
        return initial_latents(n, seed, (self.unet.config.in_channels, s, s), offset)

    @torch.no_grad()
    def sample(self, emb: torch.Tensor, steps: int | None = None, guidance: float | None = None,
               sampler: str | None = None, seed: int = 0, latents: torch.Tensor | None = None,
               progress: bool = False) -> torch.Tensor:
        """EEG embeddings (B, emb_dim) -> images (B, image_channels, native, native) in [0, 1]."""
        steps, g = self.cfg.sampling(steps, guidance)
        pipe = self.pipeline(sampler)
        pipe.set_progress_bar_config(desc=f"{sampler or self.cfg.sampler} x{steps}", leave=False, disable=not progress)
        return pipe(embeddings=emb, num_inference_steps=steps, guidance_scale=g, seed=seed, latents=latents,
                    return_dict=False)[0]

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
    check_pretrained(cfg)
    vae, unet = build_vae(cfg), build_unet(cfg)
    if cfg.pretrained_vae or cfg.pretrained_unet:
        cfg = fit_to_pretrained(cfg, vae, unet)
    return EEGDiffusion(cfg, vae, unet, encoder), cfg


def model_sizes(model: EEGDiffusion) -> dict[str, int]:
    return {"vae": n_params(model.vae),
            "vae_decoder": n_params(model.vae.decoder) + n_params(model.vae.post_quant_conv),
            "unet": n_params(model.unet), "mapper": n_params(model.mapper) + model.null_tokens.numel(),
            "encoder": n_params(model.encoder)}


__all__ = ["DiffusionConfig", "EEGDiffusion", "EEGDiffusionPipeline", "EEGConditioner", "EEGToTokens", "UNetForExport",
           "LatentDecoder", "build_vae", "build_unet", "build_diffusion", "check_pretrained", "fit_to_pretrained",
           "make_scheduler", "initial_latents", "to_model_space", "to_native", "diffusion_folder",
           "model_sizes", "n_params", "SAMPLERS", "INDEX_FILE", "ENCODER_DIR"]
