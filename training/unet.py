"""Stage B of EEG->image: the cross-attention UNet (and token mapper + null tokens) on DDPM noise.

The VAE is frozen; its latent posterior of every stimulus is computed once. What conditions the
UNet comes from a *conditioning* object: :class:`FrozenEncoder` (modes ``full`` and ``lora``: the
aligned encoder's embeddings, computed once) or :class:`~eegsine.training.joint.JointAblation`
(mode ``joint``: a fresh encoder trained through the diffusion loss). Both answer the same calls:

  ``img_table``, ``param_groups(model, cfg)``, ``train_mode(model)``, ``predict(net, noisy, t, drop,
  rows, im, use_img)``, ``after_backward(model)``, ``end_epoch(model, rec, progress, epoch, steps)``,
  ``log_suffix(rec)``, ``finish(metrics, progress, run_dir, plot, n_classes)``.

Each epoch writes a fixed-seed sample grid (``grids/epoch_XXX.png``) and a resumable checkpoint;
``grids/strip.png`` puts the epochs side by side. Under Accelerate every process draws the same
global batch (indices, noise, timesteps, dropout) from the epoch's seed and takes its own slice,
so N processes follow the 1-process run up to float round-off.

Hand-written: the loop (diffusers ships training *scripts*, not a library function); the
scheduler, EMA and LoRA are diffusers' and peft's, DDP Accelerate's.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from eegsine.progress import tqdm

from eegsine.data import EEGSet
from eegsine.errors import UserError
from eegsine.models import module_device
from eegsine.models.diffusion import EEGDiffusion
from eegsine.runs.plots import save_grid, save_strip
from eegsine.training.configs import DiffusionTrainConfig
from eegsine.training.loop import Checkpoint, diffusers_warmup_cosine, fused_adamw, seeded_generator
from eegsine.training.losses import denoising_loss
from eegsine.training.vae import latent_posterior

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def set_trainable(cfg: DiffusionTrainConfig, model: EEGDiffusion, train_encoder: bool, logger) -> None:
    """requires_grad per mode (the VAE never, the encoder in joint mode only); LoRA adapters via peft; diffusers'
    gradient checkpointing of the UNet when asked (non-reentrant ``torch.utils.checkpoint``, so the adapters of
    a frozen UNet still get their gradients)."""
    if cfg.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    model.vae.requires_grad_(False)
    if model.encoder is not None:
        model.encoder.requires_grad_(train_encoder)
    if cfg.mode == "lora":
        from peft import LoraConfig

        model.unet.requires_grad_(False)
        model.unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, init_lora_weights="gaussian",
                                          target_modules=LORA_TARGETS))
        n_lora = sum(p.numel() for n, p in model.unet.named_parameters() if "lora" in n)
        logger.info(f"LoRA rank {cfg.lora_rank} on {LORA_TARGETS}: {n_lora} trainable UNet parameters "
                    f"of {sum(p.numel() for p in model.unet.parameters())}")
    logger.info(f"UNet attention: {', '.join(sorted(attention_kernels(model.unet)))}; gradient checkpointing "
                f"{'on' if cfg.gradient_checkpointing else 'off'}; optimizer {cfg.optimizer}; mixed precision "
                f"{cfg.mixed_precision}")


def attention_kernels(unet) -> set[str]:
    """The attention processors of a diffusers UNet: ``AttnProcessor2_0`` is PyTorch's SDPA (flash /
    memory-efficient kernels on CUDA), diffusers' default since torch 2."""
    return {type(p).__name__ for p in unet.attn_processors.values()}


def optimizer_class(name: str) -> Callable[..., torch.optim.Optimizer]:
    """``adamw``: torch's AdamW, fused (:func:`~eegsine.training.loop.fused_adamw`); ``adamw8bit``: bitsandbytes'
    AdamW8bit (a one-line error when it does not import)."""
    if name == "adamw":
        return fused_adamw
    try:
        import bitsandbytes
    except ImportError as e:
        raise UserError(f"--optimizer adamw8bit needs the bitsandbytes package ({e}); install it on a CUDA machine "
                        "(pip install bitsandbytes) or use --optimizer adamw") from None
    return bitsandbytes.optim.AdamW8bit


# -- conditioning ----------------------------------------------------------------------------------
class FrozenEncoder:
    """Modes full and lora: the aligned encoder stays frozen; the UNet reads its precomputed embeddings.

    ``img_table`` (M, emb_dim), when ``image_cond_frac > 0``: stage one's image embedding of each
    stimulus, which that share of training examples reads instead of the trial's EEG embedding.
    """

    def __init__(self, emb_table: torch.Tensor, img_table: torch.Tensor | None = None):
        self.emb_table, self.img_table = emb_table, img_table   # (N, emb_dim), (M, emb_dim)

    def param_groups(self, model: EEGDiffusion, cfg: DiffusionTrainConfig) -> list[dict]:
        return []

    def train_mode(self, model: EEGDiffusion) -> None:
        if model.encoder is not None:
            model.encoder.eval()

    def predict(self, net, noisy: torch.Tensor, t: torch.Tensor, drop: torch.Tensor, rows: np.ndarray,
                im: torch.Tensor, use_img: torch.Tensor | None) -> torch.Tensor:
        emb = self.emb_table[torch.from_numpy(rows).to(noisy.device)]                     # (n, emb_dim)
        if use_img is not None:
            emb = torch.where(use_img[:, None], self.img_table[im], emb)
        return net(noisy, t, emb, drop)

    def after_backward(self, model: EEGDiffusion) -> None:
        pass

    def end_epoch(self, model: EEGDiffusion, rec: dict, progress: dict, epoch: int, steps: int) -> None:
        pass

    def log_suffix(self, rec: dict) -> str:
        return ""

    def finish(self, metrics: dict, progress: dict, run_dir: Path, plot: bool, n_classes: int) -> None:
        pass


class DenoisingBatches:
    """The DDPM loss of a batch of trial rows: latents drawn from each stimulus's frozen VAE posterior.

    The whole global batch's randomness (timesteps, noise, latent draw, condition dropout, and the
    image-condition choice when the conditioning has an ``img_table``) is drawn from ``g`` on every
    process, then sliced: the same result for any number of processes.
    """

    def __init__(self, model: EEGDiffusion, lat_mu: torch.Tensor, lat_sd: torch.Tensor, image_of: torch.Tensor,
                 cond, image_cond_frac: float, rank: int, per: int, device: torch.device):
        from diffusers import DDPMScheduler

        skip = ("set_alpha_to_one", "steps_offset")
        self.ddpm = DDPMScheduler(**{k: v for k, v in model.cfg.scheduler_config().items() if k not in skip})
        self.mcfg, self.image_of = model.cfg, image_of     # image_of (N,): each trial's stimulus
        self.lat_mu, self.lat_sd = lat_mu, lat_sd          # (M, c, s, s) scaled posterior mean and std
        self.cond, self.image_cond_frac, self.rank, self.per, self.device = cond, image_cond_frac, rank, per, device

    def __call__(self, net, rows: np.ndarray, g: torch.Generator, train: bool) -> torch.Tensor:
        n, mcfg, dev = len(rows), self.mcfg, self.device
        t = torch.randint(0, mcfg.num_train_timesteps, (n,), generator=g)
        noise = torch.randn((n,) + tuple(self.lat_mu.shape[1:]), generator=g)
        eps_lat = torch.randn((n,) + tuple(self.lat_mu.shape[1:]), generator=g)
        drop = torch.rand(n, generator=g) < (mcfg.cond_dropout if train else 0.0)
        # drawn only when used, so runs without it keep their random stream
        use_img = (torch.rand(n, generator=g) < self.image_cond_frac
                   if self.cond.img_table is not None and train else None)
        sl = slice(self.rank * self.per, (self.rank + 1) * self.per) if train else slice(None)
        rows, t, drop = rows[sl], t[sl].to(dev), drop[sl].to(dev)
        noise, eps_lat = noise[sl].to(dev), eps_lat[sl].to(dev)
        use_img = use_img[sl].to(dev) if use_img is not None else None
        im = self.image_of[rows].to(dev)
        z0 = self.lat_mu[im] + self.lat_sd[im] * eps_lat
        return denoising_loss(self.ddpm, lambda noisy: self.cond.predict(net, noisy, t, drop, rows, im, use_img),
                              z0, noise, t, mcfg.prediction_type)


class _EMAState:
    """EMAModel's shadow weights as a state_dict of tensors (what eegsine.runs.checkpoint checkpoints hold)."""

    def __init__(self, ema):
        self.ema = ema

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"shadow.{i}": p for i, p in enumerate(self.ema.shadow_params)}
        out["optimization_step"] = torch.tensor(self.ema.optimization_step)
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for i, p in enumerate(self.ema.shadow_params):
            p.data.copy_(state[f"shadow.{i}"])
        self.ema.optimization_step = int(state["optimization_step"])


# -- the loop -------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _StageB:
    """What the epochs of stage B share."""

    cfg: DiffusionTrainConfig
    model: EEGDiffusion
    net: Any                   # the model as Accelerate prepared it (DDP-wrapped under accelerate launch)
    opt: Any
    ema: Any
    trainable: list[torch.nn.Parameter]
    batches: DenoisingBatches
    cond: Any
    acc: Any
    ckpt: Checkpoint
    ds: EEGSet
    run_dir: Path
    logger: Any
    steps: int
    factor: Callable[[int], float] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.factor = diffusers_warmup_cosine(self.cfg.warmup_steps, self.steps * self.cfg.epochs)


def _optimizer(cfg: DiffusionTrainConfig, model: EEGDiffusion, cond) -> tuple[list, torch.optim.Optimizer, Any]:
    """(trainable parameters, AdamW over them at cfg.lr (+ the conditioning's own groups), EMA or None)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("encoder.")],
               "lr": cfg.lr}] + cond.param_groups(model, cfg)
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = optimizer_class(cfg.optimizer)(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = None
    if cfg.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(trainable, decay=cfg.ema_decay)
    return trainable, opt, ema


def train_unet(cfg: DiffusionTrainConfig, model: EEGDiffusion, ds: EEGSet, cond, run_dir: Path, logger, acc) -> dict:
    """Train (or resume) stage B in ``run_dir``; -> its progress. The model ends with its final weights (EMA if on)."""
    device = acc.device
    lat_mu, lat_sd = latent_posterior(model, ds.images, device)
    batches = DenoisingBatches(model, lat_mu * model.scaling_factor, lat_sd * model.scaling_factor,
                               torch.from_numpy(ds.image), cond, cfg.image_cond_frac, acc.process_index,
                               cfg.batch_size // acc.num_processes, device)
    trainable, opt, ema = _optimizer(cfg, model, cond)
    train_idx, val_idx = ds.split("train"), ds.split("val")
    modules: dict[str, Any] = {"model": model} if ema is None else {"model": model, "ema": _EMAState(ema)}
    ckpt = Checkpoint(run_dir / "ckpt", modules, {"opt": opt})
    progress = ckpt.resume({"epoch": 0, "history": [], "grad_log": [], "grid_first": []}, logger, "stage B", "epoch",
                           cfg.epochs)
    net, opt = acc.prepare(model, opt)
    if ema is not None:
        ema.to(device)
    st = _StageB(cfg, model, net, opt, ema, trainable, batches, cond, acc, ckpt, ds, run_dir, logger,
                 cfg.steps_per_epoch or max(1, len(train_idx) // cfg.batch_size))
    grid_idx = pick_grid_trials(ds, val_idx, cfg.grid_trials, cfg.seed)
    val_loss_idx = np.random.default_rng(cfg.seed + 5).permutation(val_idx)[:256]
    for epoch in range(progress["epoch"], cfg.epochs):
        rec = _unet_epoch(st, epoch)
        _end_epoch(st, epoch, rec, progress, grid_idx, val_loss_idx)
    if ema is not None:
        ema.copy_to(trainable)
    model.eval()
    return progress


def _unet_epoch(st: _StageB, epoch: int) -> dict:
    """One epoch of steps; -> its record (mean loss of the global batches, time, steps)."""
    cfg, model, acc = st.cfg, st.model, st.acc
    model.train()
    model.vae.eval()
    st.cond.train_mode(model)
    t0 = time.perf_counter()
    g = seeded_generator(cfg.seed, epoch, 2)
    train_idx = st.ds.split("train")
    order = np.concatenate([np.random.default_rng([cfg.seed, epoch]).permutation(train_idx)
                            for _ in range(math.ceil(st.steps * cfg.batch_size / len(train_idx)))])
    tot = 0.0
    bar = tqdm(range(st.steps), desc=f"{cfg.mode} epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not acc.is_local_main_process)
    for s in bar:
        for grp in st.opt.param_groups:
            grp["lr"] = grp["base_lr"] * st.factor(epoch * st.steps + s)
        loss = st.batches(st.net, order[s * cfg.batch_size:(s + 1) * cfg.batch_size], g, True)
        st.opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        st.cond.after_backward(model)
        if cfg.grad_clip > 0:
            acc.clip_grad_norm_(st.trainable, cfg.grad_clip)
        st.opt.step()
        if st.ema is not None:
            st.ema.step(st.trainable)
        tot += float(acc.reduce(loss.detach(), reduction="mean"))  # global batch's loss on every process
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return {"epoch": epoch + 1, "loss": tot / st.steps, "seconds": time.perf_counter() - t0, "steps": st.steps}


def _end_epoch(st: _StageB, epoch: int, rec: dict, progress: dict, grid_idx: np.ndarray,
               val_loss_idx: np.ndarray) -> None:
    """Validation loss, the conditioning's scores and the sample grid (EMA weights if on), then the checkpoint."""
    cfg, model, ema, acc = st.cfg, st.model, st.ema, st.acc
    if ema is not None:
        ema.store(st.trainable)
        ema.copy_to(st.trainable)
    model.eval()
    with torch.no_grad():
        rec["val_loss"] = float(st.batches(model, val_loss_idx, seeded_generator(cfg.seed, 99), False))
    st.cond.end_epoch(model, rec, progress, epoch, st.steps)
    if acc.is_main_process:
        first = _epoch_grid(model, st.ds, grid_idx, cfg, st.run_dir, epoch + 1)
        progress["grid_first"].append(first.tolist())
        save_strip(st.run_dir / "grids", [np.asarray(f, np.float32) for f in progress["grid_first"]],
                   st.ds.images[st.ds.image[grid_idx]])
    if ema is not None:
        ema.restore(st.trainable)
    progress["history"].append(rec)
    progress["epoch"] = epoch + 1
    if acc.is_main_process:
        st.ckpt.save(progress)
        st.logger.info(f"stage B ({cfg.mode}) epoch {epoch + 1}/{cfg.epochs}: loss {rec['loss']:.4f} "
                       f"val {rec['val_loss']:.4f} ({rec['seconds']:.1f} s)" + st.cond.log_suffix(rec))
    acc.wait_for_everyone()


# -- sample grids ------------------------------------------------------------------------------------
def pick_grid_trials(ds: EEGSet, split: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` trials of ``split``, cycling through the classes (fixed for the whole run)."""
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(split[ds.y[split] == c]).tolist() for c in np.unique(ds.y[split])]
    out: list[int] = []
    while len(out) < n and any(by_class):
        for lst in by_class:
            if lst and len(out) < n:
                out.append(lst.pop())
    return np.array(out, dtype=np.int64)


@torch.no_grad()
def _epoch_grid(model: EEGDiffusion, ds: EEGSet, grid_idx: np.ndarray, cfg: DiffusionTrainConfig, run_dir: Path,
                epoch: int) -> np.ndarray:
    """Fixed seeds: sample j of trial i always starts from the same noise. Returns each trial's first sample."""
    dev = module_device(model.unet)
    emb = model.encoder.eval()(torch.from_numpy(ds.x[grid_idx]).to(dev)) if model.encoder is not None else None
    T, S = len(grid_idx), cfg.grid_samples
    rep = emb.repeat_interleave(S, 0)
    lat = model.initial_latents(T * S, cfg.seed)
    imgs = model.sample(rep, latents=lat).cpu().numpy()
    imgs = imgs.reshape((T, S) + imgs.shape[1:])                    # (T, S, C, H, W)
    save_grid(run_dir / "grids" / f"epoch_{epoch:03d}.png", imgs, ds.images[ds.image[grid_idx]],
              title=f"epoch {epoch}: {S} samples per validation trial, ground truth right")
    return imgs[:, 0]
