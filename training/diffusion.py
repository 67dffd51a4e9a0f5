"""Stage two of EEG->image: latent diffusion conditioned on the aligned EEG encoder (``eegsine train diffusion``).

:func:`train_diffusion` runs the stages in one run folder:

* stage one is read from ``--encoder-run`` (or trained here, into ``RUN/stage1``, with
  ``--encoder-preset`` when none is given);
* stage A (:mod:`eegsine.training.vae`) trains the ``AutoencoderKL`` on the train-split stimulus
  images and measures the latent scale, unless a local pretrained VAE or ``init_from`` gives one;
* stage B (:mod:`eegsine.training.unet`) trains the UNet (and the token mapper + null tokens)
  on DDPM noise. Modes:

  - ``full``: every UNet weight (the source's method; use a small ``lr`` on a pretrained UNet);
  - ``lora``: peft LoRA on the attention projections (to_q, to_k, to_v, to_out.0) of a trained
    base UNet (``init_from`` or ``model.pretrained_unet``), the source's future work;
  - ``joint``: the ablation of :mod:`eegsine.training.joint`, a fresh encoder trained *through*
    the diffusion loss together with the UNet (the two-stage claim, measured; ``joint.png``).

Each epoch writes a fixed-seed sample grid and a resumable checkpoint; the final model is
``RUN/model`` (``EEGDiffusion.save_pretrained``: a diffusers pipeline folder). Runs under
Accelerate: ``accelerate launch -m eegsine train diffusion ...`` is data-parallel
(tests/test_diffusion.py checks 2 gloo processes against 1).
Sampling speed (``speed``) is measured by the command, with :mod:`eegsine.bench.speed.timing`, through
the ``speed_probe`` argument (this layer does not import bench).

Hand-written: the orchestration; the loops are in the modules above, the models, schedulers, EMA,
LoRA and DDP are diffusers', peft's and Accelerate's.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from eegsine.data import EEGSet
from eegsine.runs.checkpoint import save_weights
from eegsine.errors import UserError
from eegsine.io import update_metrics
from eegsine.models.diffusion import EEGDiffusion, build_diffusion, check_pretrained, model_sizes
from eegsine.models.eeg_encoder import EEGEncoder, embed
from eegsine.models.image_encoder import ImageEncoder, embed_images
from eegsine.models.protocol import MODEL_DIR  # RUN/model: the run's deployable model
from eegsine.runs.plots import save_grid, save_strip  # noqa: F401 - re-exported
from eegsine.runs.folder import RunFolder
from eegsine.training.configs import DIFFUSION_PRESETS as PRESETS, DiffusionTrainConfig, diffusion_preset
from eegsine.training.joint import JointAblation, fresh_encoder, retrieval_top1  # noqa: F401 - re-exported
from eegsine.training.loop import accelerator, open_run, start_log
from eegsine.training.unet import (LORA_TARGETS, FrozenEncoder, optimizer_class, pick_grid_trials,  # noqa: F401
                                   set_trainable, train_unet)
from eegsine.training.vae import VAE_DIR, stage_a, train_vae  # noqa: F401 - re-exported
from eegsine.training.encoder import IMAGE_ENCODER_DIR, encoder_preset, load_data, run_provenance, train_encoder

SpeedProbe = Callable[[EEGDiffusion, torch.device], dict]  # (trained model, device) -> sampling speed record


# -- stage one: the aligned encoder ------------------------------------------------------------------
def encoder_folder(cfg: DiffusionTrainConfig, run_dir: Path) -> Path:
    """Where stage one's encoder is (or will be): RUN/stage1/model, ENCODER_RUN/model or ENCODER_RUN itself."""
    if not cfg.encoder_run:
        return run_dir / "stage1" / MODEL_DIR
    p = Path(cfg.encoder_run)
    return p / MODEL_DIR if (p / MODEL_DIR / "config.json").exists() else p


def resolve_encoder(cfg: DiffusionTrainConfig, run_dir: Path, ds: EEGSet, logger) -> EEGEncoder:
    folder = encoder_folder(cfg, run_dir)
    if not cfg.encoder_run:
        ecfg = encoder_preset(cfg.encoder_preset).replace(data=cfg.data, data_root=cfg.data_root,
                                                          image_set=cfg.image_set, data_options=list(cfg.data_options),
                                                          device=cfg.device, mixed_precision=cfg.mixed_precision)
        stage1 = folder.parent
        if not (folder / "config.json").exists() or not (stage1 / "metrics.json").exists():
            logger.info(f"no --encoder-run: training stage one ({cfg.encoder_preset} preset) in {stage1}")
            train_encoder(ecfg, stage1, data=ds)
    elif not (folder / "config.json").exists():
        p = Path(cfg.encoder_run)
        raise UserError(f"encoder_run={cfg.encoder_run}: no encoder config.json in {p} or {p / MODEL_DIR}")
    enc = EEGEncoder.from_pretrained(folder)
    ecfg = enc.cfg
    if (ecfg.n_chans, ecfg.n_times) != (ds.n_chans, ds.n_times):
        raise UserError(f"encoder in {folder} expects {ecfg.n_chans} ch x {ecfg.n_times} samples but {ds.name} has "
                        f"{ds.n_chans} x {ds.n_times}; set --data-options to match the encoder run")
    return enc


def train_diffusion(cfg: DiffusionTrainConfig, run_dir: str | Path, data: EEGSet | None = None,
                    encoder: EEGEncoder | None = None, speed_probe: SpeedProbe | None = None) -> dict[str, Any]:
    """Train (or resume) stages A and B in ``run_dir``; return the metrics written under ``diffusion``.

    The folder follows :class:`~eegsine.runs.folder.RunFolder`'s protocol: the main process
    locks it and writes config.json once data, encoder and model are ready. With ``cfg.speed``,
    ``speed_probe(model, device)`` (the command passes :func:`eegsine.bench.speed.timing.diffusion_speed`)
    times the final model into ``metrics["speed"]``.
    """
    if cfg.mode == "lora" and not cfg.init_from and not cfg.model.pretrained_unet:  # before stage A, not after it
        raise UserError("mode=lora adapts a trained UNet: set --init-from RUN/model or --model-pretrained-unet DIR")
    check_pretrained(cfg.model)  # a malformed local Stable Diffusion folder: before stage one, not after it
    optimizer_class(cfg.optimizer)  # a missing bitsandbytes, too
    acc = accelerator(cfg.device, cfg.mixed_precision)
    with open_run(run_dir, cfg, lock=acc.is_main_process) as run:
        return _train(cfg, run, acc, data, encoder, speed_probe)


def _load(cfg: DiffusionTrainConfig, data: EEGSet | None, n_processes: int) -> EEGSet:
    if data is None:
        data = load_data(cfg)  # type: ignore[arg-type]  (reads data, data_root, image_set, data_options)
    ds = data.check()
    if ds.images is None:
        raise UserError(f"{ds.name}: has no stimulus images; the diffusion model needs image-paired EEG")
    if len(ds.split("val")) == 0:
        raise UserError(f"{ds.name}: empty validation split (grids and joint-mode scores use it)")
    if cfg.batch_size % n_processes:
        raise UserError(f"batch_size={cfg.batch_size} must be divisible by the {n_processes} processes")
    return ds


def _train(cfg: DiffusionTrainConfig, run: RunFolder, acc, data: EEGSet | None, encoder: EEGEncoder | None,
           speed_probe: SpeedProbe | None) -> dict[str, Any]:
    run_dir = run.path
    logger = start_log(run)
    t_start = time.perf_counter()
    ds = _load(cfg, data, acc.num_processes)
    aligned = encoder if encoder is not None else resolve_encoder(cfg, run_dir, ds, logger)
    joint = cfg.mode == "joint"
    # the data decides the native geometry; a 3-channel pretrained VAE sees grey images repeated (to_model_space)
    mcfg = cfg.model.replace(native_size=int(ds.images.shape[-1]), image_channels=int(ds.images.shape[1]))
    enc = fresh_encoder(aligned, cfg.seed) if joint else aligned
    torch.manual_seed(cfg.seed)
    model, mcfg = build_diffusion(mcfg, enc)
    device = acc.device
    if acc.is_main_process:
        run.write_config(cfg)  # only now: an attempt that fails on a bad flag must not block the retry
    train_imgs, test_imgs = _stimuli(ds, ds.split("train")), _stimuli(ds, ds.split("test"))
    vae_stats = stage_a(cfg, model, ds.images[train_imgs], ds.images[test_imgs], run_dir, logger, acc)
    mcfg = mcfg.replace(scaling_factor=float(model.vae.config.scaling_factor))
    model.cfg = mcfg
    _init_from(cfg, model)
    set_trainable(cfg, model, joint, logger)
    model.to(device)
    cond = JointAblation(aligned, ds, cfg.seed, device) if joint else _frozen(cfg, model, ds, run_dir, device)
    progress = train_unet(cfg, model, ds, cond, run_dir, logger, acc)
    metrics: dict[str, Any] = {
        "mode": cfg.mode, "data": ds.name, "n_train_trials": int(len(ds.split("train"))),
        "n_train_images": int(len(train_imgs)), "vae": vae_stats, "history": progress["history"],
        "params": model_sizes(model),
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in progress["history"]])) if progress["history"]
        else 0.0, "processes": acc.num_processes, "device": str(device)}
    if acc.is_main_process:
        _save_model(cfg, model, mcfg, run_dir, metrics)
        cond.finish(metrics, progress, run_dir, cfg.plot, ds.n_outputs)
        if cfg.speed and speed_probe is not None:
            metrics["speed"] = speed_probe(model, device)
        metrics["wall_s"] = time.perf_counter() - t_start
        update_metrics(run_dir, "diffusion", metrics)
        logger.info(f"stage B done in {metrics['wall_s']:.1f} s; model in {run_dir / MODEL_DIR}")
    acc.wait_for_everyone()
    return metrics


def _frozen(cfg: DiffusionTrainConfig, model: EEGDiffusion, ds: EEGSet, run_dir: Path,
            device: torch.device) -> FrozenEncoder:
    """Modes full / lora: the aligned encoder's embedding of every trial (+ stage one's image embeddings), once."""
    emb_table = torch.from_numpy(embed(model.encoder, ds.x)).to(device)                           # (N, emb_dim)
    img_table = (image_embeddings(image_encoder_folder(cfg, run_dir), ds.images, model.encoder.cfg.emb_dim).to(device)
                 if cfg.image_cond_frac > 0 else None)                                              # (M, emb_dim)
    return FrozenEncoder(emb_table, img_table)


def _save_model(cfg: DiffusionTrainConfig, model: EEGDiffusion, mcfg, run_dir: Path, metrics: dict) -> None:
    """RUN/model, with LoRA fused into the UNet so every consumer sees a plain UNet2DConditionModel."""
    if cfg.mode == "lora":
        from peft.utils import get_peft_model_state_dict

        lora_state = get_peft_model_state_dict(model.unet)
        model.unet.fuse_lora()
        model.unet.unload_lora()
        metrics["lora_params"] = int(sum(v.numel() for v in lora_state.values()))

    model.cfg = mcfg
    model.save_pretrained(run_dir / MODEL_DIR, run_provenance(cfg, image_cond_frac=cfg.image_cond_frac,
                                                              image_encoder=model.encoder.provenance.image_encoder))
    if cfg.mode == "lora":
        save_weights(run_dir / MODEL_DIR / "unet_lora.safetensors", lora_state)


def _stimuli(ds: EEGSet, rows: np.ndarray) -> np.ndarray:
    img = np.unique(ds.image[rows])
    return img[img >= 0]


def _init_from(cfg: DiffusionTrainConfig, model: EEGDiffusion) -> None:
    if not cfg.init_from:
        return
    base = EEGDiffusion.from_pretrained(cfg.init_from)
    for name in ("unet", "mapper"):
        getattr(model, name).load_state_dict(getattr(base, name).state_dict())
    with torch.no_grad():
        model.null_tokens.copy_(base.null_tokens)


def image_encoder_folder(cfg: DiffusionTrainConfig, run_dir: Path) -> Path:
    """Stage one's image encoder: ``image_encoder/`` of the encoder run (beside its ``encoder/``)."""
    return encoder_folder(cfg, run_dir).parent / IMAGE_ENCODER_DIR


def image_embeddings(folder: Path, images: np.ndarray, emb_dim: int) -> torch.Tensor:
    """(M, emb_dim) embeddings of the stimulus images by stage one's image encoder (image_cond_frac > 0)."""
    if not (folder / "config.json").exists():
        raise UserError(f"image_cond_frac > 0 needs stage one's image encoder; none at {folder}")
    model = ImageEncoder.from_pretrained(folder)
    z = torch.from_numpy(embed_images(model, images))
    if z.shape[1] != emb_dim:
        raise UserError(f"{folder}: image embeddings have {z.shape[1]} dims, the EEG encoder {emb_dim}")
    return z


__all__ = ["DiffusionTrainConfig", "diffusion_preset", "PRESETS", "train_diffusion", "train_vae", "save_grid",
           "retrieval_top1", "pick_grid_trials", "resolve_encoder", "image_encoder_folder", "LORA_TARGETS"]
