"""Stage two of EEG->image: latent diffusion conditioned on the aligned EEG encoder (``eegsine train diffusion``).

* Stage A trains the ``AutoencoderKL`` on the train-split stimulus images (L1 + KL; SD's
  LPIPS/GAN terms need pretrained networks that do not exist offline) and measures the
  latent scale (1 / std of the training latents), unless a local pretrained VAE is given.
* Stage B trains the UNet (and the token mapper + null tokens) on DDPM noise with the
  encoder frozen; its embeddings are computed once. Modes:

  - ``full``: every UNet weight (the source's method; use a small ``lr`` on a pretrained UNet);
  - ``lora``: peft LoRA on the attention projections (to_q, to_k, to_v, to_out.0) of a trained
    base UNet (``init_from`` or ``model.pretrained_unet``), the source's future work;
  - ``joint``: a fresh encoder trained *through* the diffusion loss together with the UNet,
    logging the gradient norm reaching the encoder vs the UNet and the encoder's 1-NN
    retrieval accuracy each epoch (the two-stage claim, measured; ``joint.png``).

Each epoch writes a fixed-seed sample grid (``grids/epoch_XXX.png``: ``grid_samples`` samples
per validation trial, ground truth rightmost) and a resumable checkpoint; ``grids/strip.png``
puts the epochs side by side. Runs under Accelerate: ``accelerate launch -m eegsine train
diffusion ...`` is data-parallel. Every process draws the same global batch (indices, noise,
timesteps, dropout) from the epoch's seed and takes its own slice, so N processes follow the
1-process run up to float round-off (tests/test_diffusion.py checks 2 gloo processes).

Hand-written: the loop (diffusers ships training *scripts*, not a library function); the
models, schedulers, EMA, LoRA and DDP are diffusers', peft's and Accelerate's.
"""
from __future__ import annotations

import json
import math
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from eegsine.checkpoint import load_checkpoint, save_checkpoint
from eegsine.data import EEGSet
from eegsine.errors import UserError
from eegsine.io import load_weights, run_logger, save_weights, update_metrics
from eegsine.models import module_device
from eegsine.models.diffusion import EEGDiffusion, build_diffusion, load_diffusion, model_sizes, save_diffusion
from eegsine.models.eeg_encoder import EEGEncoder, build_encoder, load_encoder
from eegsine.models.image_encoder import embed_images, load_image_encoder
from eegsine.run_folder import RunFolder
from eegsine.training.configs import DIFFUSION_PRESETS as PRESETS
from eegsine.training.configs import DiffusionTrainConfig, diffusion_preset

MODEL_DIR = "model"
VAE_DIR = "vae"
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


# -- stage one: the aligned encoder ------------------------------------------------------------------
def encoder_folder(cfg: DiffusionTrainConfig, run_dir: Path) -> Path:
    """Where stage one's encoder is (or will be): RUN/stage1/encoder, ENCODER_RUN/encoder or ENCODER_RUN."""
    if not cfg.encoder_run:
        return run_dir / "stage1" / "encoder"
    p = Path(cfg.encoder_run)
    return p / "encoder" if (p / "encoder" / "config.json").exists() else p


def resolve_encoder(cfg: DiffusionTrainConfig, run_dir: Path, ds: EEGSet, logger) -> EEGEncoder:
    folder = encoder_folder(cfg, run_dir)
    if not cfg.encoder_run:
        from eegsine.training.encoder import encoder_preset, train_encoder

        ecfg = encoder_preset(cfg.encoder_preset).replace(data=cfg.data, data_root=cfg.data_root,
                                                          image_set=cfg.image_set, data_options=list(cfg.data_options))
        stage1 = folder.parent
        if not (folder / "config.json").exists() or not (stage1 / "metrics.json").exists():
            logger.info(f"no --encoder-run: training stage one ({cfg.encoder_preset} preset) in {stage1}")
            train_encoder(ecfg, stage1, data=ds)
    elif not (folder / "config.json").exists():
        p = Path(cfg.encoder_run)
        raise UserError(f"encoder_run={cfg.encoder_run}: no encoder config.json in {p} or {p / 'encoder'}")
    enc, ecfg = load_encoder(folder)
    if (ecfg.n_chans, ecfg.n_times) != (ds.n_chans, ds.n_times):
        raise UserError(f"encoder in {folder} expects {ecfg.n_chans} ch x {ecfg.n_times} samples but {ds.name} has "
                        f"{ds.n_chans} x {ds.n_times}; set --data-options to match the encoder run")
    return enc


# -- helpers --------------------------------------------------------------------------------------
def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _gen(*seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(seed)).generate_state(1)[0]))


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


class _EMAState:
    """EMAModel's shadow weights as a state_dict of tensors (what eegsine.checkpoint checkpoints hold)."""

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


def _stimuli(ds: EEGSet, rows: np.ndarray) -> np.ndarray:
    img = np.unique(ds.image[rows])
    return img[img >= 0]


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


def save_grid(path: Path, samples: np.ndarray, truth: np.ndarray | None, title: str = "") -> Path:
    """samples (T, S, C, H, W), truth (T, C, H, W) or None -> PNG: a row per trial, ground truth rightmost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T, S = samples.shape[:2]
    K = S + (truth is not None)
    fig, axes = plt.subplots(T, K, figsize=(0.9 * K, 0.9 * T + 0.4), squeeze=False)
    for i in range(T):
        for j in range(K):
            im = (samples[i, j] if j < S else truth[i]).transpose(1, 2, 0)
            ax = axes[i, j]
            ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title("truth" if j == S else f"s{j}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    from eegsine.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path


def save_strip(grid_dir: Path, epochs_samples: list[np.ndarray], truth: np.ndarray) -> Path:
    """Rows = epochs (each grid trial's first sample), last row = ground truth: shows where quality jumps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [np.asarray(e) for e in epochs_samples] + [truth]
    E, T = len(rows), len(truth)
    fig, axes = plt.subplots(E, T, figsize=(0.7 * T + 0.5, 0.7 * E + 0.2), squeeze=False)
    for e, row in enumerate(rows):
        for j in range(T):
            im = row[j].transpose(1, 2, 0)
            ax = axes[e, j]
            ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        axes[e, 0].set_ylabel("truth" if e == E - 1 else f"ep {e + 1}", fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.2)
    from eegsine.io import atomic_path

    path = grid_dir / "strip.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path


def retrieval_top1(z_query: np.ndarray, y_query: np.ndarray, z_gallery: np.ndarray, y_gallery: np.ndarray) -> float:
    """1-NN EEG->EEG retrieval: the nearest gallery trial (cosine) has the query's class."""
    zq = z_query / (np.linalg.norm(z_query, axis=1, keepdims=True) + 1e-8)
    zg = z_gallery / (np.linalg.norm(z_gallery, axis=1, keepdims=True) + 1e-8)
    return float((y_gallery[np.argmax(zq @ zg.T, axis=1)] == y_query).mean())


@torch.no_grad()
def _embed_all(enc: EEGEncoder, x: np.ndarray, device: torch.device, batch: int = 256) -> torch.Tensor:
    was = enc.training
    enc.eval()
    out = torch.cat([enc(torch.from_numpy(x[i:i + batch]).to(device)) for i in range(0, len(x), batch)])
    enc.train(was)
    return out


# -- stage A: the VAE -----------------------------------------------------------------------------
def train_vae(cfg: DiffusionTrainConfig, model: EEGDiffusion, images: np.ndarray, test_images: np.ndarray,
              run_dir: Path, logger) -> dict[str, Any]:
    """Train ``model.vae`` on ``images`` (N, C, h, w) in [0, 1]; set the latent scale; save run/vae."""
    from diffusers import AutoencoderKL

    vae_dir = run_dir / VAE_DIR
    if (vae_dir / "config.json").exists():
        model.vae = AutoencoderKL.from_pretrained(str(vae_dir), local_files_only=True)
        logger.info(f"stage A: VAE reloaded from {vae_dir}")
        return json.loads((vae_dir / "stats.json").read_text()) if (vae_dir / "stats.json").exists() else {}
    device = _device()
    vae = model.vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=1e-4)
    progress = load_checkpoint(run_dir / "vae_ckpt", {"vae": vae}, {"opt": opt}) or {"epoch": 0, "seconds": []}
    x_all = torch.from_numpy(images)
    steps = max(1, len(images) // cfg.vae_batch_size)
    total = steps * cfg.vae_epochs
    for epoch in range(progress["epoch"], cfg.vae_epochs):
        t0 = time.perf_counter()
        g = _gen(cfg.seed, epoch, 1)
        perm = torch.randperm(len(images), generator=g)
        tot = 0.0
        bar = tqdm(range(steps), desc=f"VAE epoch {epoch + 1}/{cfg.vae_epochs}", leave=False)
        for s in bar:
            for grp in opt.param_groups:
                grp["lr"] = cfg.vae_lr * _lr_factor(epoch * steps + s, total, min(cfg.warmup_steps, total // 10))
            x = model.to_model_space(x_all[perm[s * cfg.vae_batch_size:(s + 1) * cfg.vae_batch_size]].to(device))
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(device)
            rec = vae.decode(z).sample
            loss = F.l1_loss(rec, x) + cfg.vae_kl_weight * post.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            tot += loss.item()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        progress["seconds"].append(time.perf_counter() - t0)
        progress["epoch"] = epoch + 1
        save_checkpoint(run_dir / "vae_ckpt", {"vae": vae}, {"opt": opt}, progress)
        logger.info(f"stage A: VAE epoch {epoch + 1}/{cfg.vae_epochs} loss {tot / steps:.4f} "
                    f"({progress['seconds'][-1]:.1f} s)")
    vae.eval()
    with torch.no_grad():
        mu = torch.cat([vae.encode(model.to_model_space(x_all[i:i + 256].to(device))).latent_dist.mean
                        for i in range(0, len(x_all), 256)])
        scale = float(1.0 / mu.std()) if not cfg.model.scaling_factor else cfg.model.scaling_factor
        xt = torch.from_numpy(test_images[:512]).to(device)
        rec = model.to_native(vae.decode(vae.encode(model.to_model_space(xt)).latent_dist.mean).sample) if len(xt) else xt
        mse = float(F.mse_loss(rec, xt)) if len(xt) else float("nan")
    vae.register_to_config(scaling_factor=scale)
    stats = {"epochs": cfg.vae_epochs, "n_images": int(len(images)), "scaling_factor": scale,
             "test_recon_mse": mse, "n_test_images": int(min(512, len(test_images))),
             "seconds_per_epoch": float(np.mean(progress["seconds"])) if progress["seconds"] else 0.0}
    vae.save_pretrained(str(vae_dir), safe_serialization=True)
    from eegsine.io import write_json

    write_json(vae_dir / "stats.json", stats)
    logger.info(f"stage A done: latent scale {scale:.4f}, test reconstruction MSE {mse:.5f} on {stats['n_test_images']}")
    return stats


# -- stage B --------------------------------------------------------------------------------------
def _setup_mode(cfg: DiffusionTrainConfig, model: EEGDiffusion, logger) -> None:
    """requires_grad per mode; LoRA adapters via peft."""
    model.vae.requires_grad_(False)
    if model.encoder is not None:
        model.encoder.requires_grad_(cfg.mode == "joint")
    if cfg.mode == "lora":
        from peft import LoraConfig

        model.unet.requires_grad_(False)
        model.unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, init_lora_weights="gaussian",
                                          target_modules=LORA_TARGETS))
        n_lora = sum(p.numel() for n, p in model.unet.named_parameters() if "lora" in n)
        logger.info(f"LoRA rank {cfg.lora_rank} on {LORA_TARGETS}: {n_lora} trainable UNet parameters "
                    f"of {sum(p.numel() for p in model.unet.parameters())}")


def _init_from(cfg: DiffusionTrainConfig, model: EEGDiffusion) -> None:
    if not cfg.init_from:
        return
    base, _ = load_diffusion(cfg.init_from)
    for name in ("unet", "mapper"):
        getattr(model, name).load_state_dict(getattr(base, name).state_dict())
    with torch.no_grad():
        model.null_tokens.copy_(base.null_tokens)


def image_encoder_folder(cfg: DiffusionTrainConfig, run_dir: Path) -> Path:
    """Stage one's image encoder: ``image_encoder/`` of the encoder run (beside its ``encoder/``)."""
    from eegsine.training.encoder import IMAGE_ENCODER_DIR

    return encoder_folder(cfg, run_dir).parent / IMAGE_ENCODER_DIR


def image_embeddings(folder: Path, images: np.ndarray, emb_dim: int) -> torch.Tensor:
    """(M, emb_dim) embeddings of the stimulus images by stage one's image encoder (image_cond_frac > 0)."""
    if not (folder / "config.json").exists():
        raise UserError(f"image_cond_frac > 0 needs stage one's image encoder; none at {folder}")
    model, _ = load_image_encoder(folder)
    z = torch.from_numpy(embed_images(model, images))
    if z.shape[1] != emb_dim:
        raise UserError(f"{folder}: image embeddings have {z.shape[1]} dims, the EEG encoder {emb_dim}")
    return z


def train_diffusion(cfg: DiffusionTrainConfig, run_dir: str | Path, data: EEGSet | None = None,
                    encoder: EEGEncoder | None = None) -> dict[str, Any]:
    """Train (or resume) stages A and B in ``run_dir``; return the metrics written under ``diffusion``.

    The folder follows :class:`~eegsine.run_folder.RunFolder`'s protocol: the main process
    locks it and writes config.json once data, encoder and model are ready.
    """
    from accelerate import Accelerator

    if cfg.mode == "lora" and not cfg.init_from and not cfg.model.pretrained_unet:  # before stage A, not after it
        raise UserError("mode=lora adapts a trained UNet: set --init-from RUN/model or --model-pretrained-unet DIR")
    acc = Accelerator(cpu=not torch.cuda.is_available())
    with RunFolder(run_dir, lock=acc.is_main_process) as run:
        run.check_config(cfg)  # before stage one and the data: a mismatch should not wait for them
        return _train(cfg, run, acc, data, encoder)


def _train(cfg: DiffusionTrainConfig, run: RunFolder, acc, data: EEGSet | None,
           encoder: EEGEncoder | None) -> dict[str, Any]:
    run_dir = run.path
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = run_logger(run_dir)
    run.log_notes(logger)
    t_start = time.perf_counter()
    if data is None:
        from eegsine.training.encoder import load_data

        data = load_data(cfg)  # type: ignore[arg-type]  (reads data, data_root, image_set, data_options)
    ds = data.check()
    if ds.images is None:
        raise UserError(f"{ds.name}: has no stimulus images; the diffusion model needs image-paired EEG")
    train_idx, val_idx = ds.split("train"), ds.split("val")
    if len(val_idx) == 0:
        raise UserError(f"{ds.name}: empty validation split (grids and joint-mode scores use it)")
    if cfg.batch_size % acc.num_processes:
        raise UserError(f"batch_size={cfg.batch_size} must be divisible by the {acc.num_processes} processes")
    enc = encoder if encoder is not None else resolve_encoder(cfg, run_dir, ds, logger)
    aligned = enc
    if cfg.mode == "joint":
        torch.manual_seed(cfg.seed)
        enc = build_encoder(aligned.cfg)  # fresh: does the diffusion loss alone make it discriminative?
    # the data decides the native geometry; a 3-channel pretrained VAE sees grey images repeated (to_model_space)
    mcfg = cfg.model.replace(native_size=int(ds.images.shape[-1]), image_channels=int(ds.images.shape[1]))
    torch.manual_seed(cfg.seed)
    model, mcfg = build_diffusion(mcfg, enc)
    device = acc.device
    if acc.is_main_process:
        run.write_config(cfg)  # only now: an attempt that fails on a bad flag must not block the retry

    # stage A (only the main process trains; the others wait and read the saved VAE)
    train_imgs, test_imgs = _stimuli(ds, train_idx), _stimuli(ds, ds.split("test"))
    if mcfg.pretrained_vae:
        vae_stats = {"pretrained": mcfg.pretrained_vae, "scaling_factor": model.scaling_factor}
    elif cfg.init_from:
        base, _ = load_diffusion(cfg.init_from)
        model.vae = base.vae
        vae_stats = {"init_from": cfg.init_from, "scaling_factor": base.scaling_factor}
    else:
        if acc.is_main_process:
            train_vae(cfg, model, ds.images[train_imgs], ds.images[test_imgs], run_dir, logger)
        acc.wait_for_everyone()
        vae_stats = train_vae(cfg, model, ds.images[train_imgs], ds.images[test_imgs], run_dir, logger)
    mcfg = mcfg.replace(scaling_factor=float(model.vae.config.scaling_factor))
    model.cfg = mcfg
    _init_from(cfg, model)
    _setup_mode(cfg, model, logger)
    model.to(device)

    # frozen inputs, computed once: latent posterior (mean, std) of every stimulus, embeddings of every trial
    with torch.no_grad():
        model.vae.eval()
        post = [model.vae.encode(model.to_model_space(torch.from_numpy(ds.images[i:i + 256]).to(device))).latent_dist
                for i in range(0, len(ds.images), 256)]
        lat_mu = torch.cat([p.mean for p in post]) * model.scaling_factor      # (M, c, s, s)
        lat_sd = torch.cat([p.std for p in post]) * model.scaling_factor
    emb_table = _embed_all(enc, ds.x, device) if cfg.mode != "joint" else None  # (N, emb_dim)
    img_table = (image_embeddings(image_encoder_folder(cfg, run_dir), ds.images, enc.cfg.emb_dim).to(device)
                 if cfg.image_cond_frac > 0 else None)                     # (M, emb_dim)
    x_all = torch.from_numpy(ds.x)
    img_of = torch.from_numpy(ds.image)

    from diffusers import DDPMScheduler

    ddpm = DDPMScheduler(**{k: v for k, v in mcfg.scheduler_config().items() if k not in ("set_alpha_to_one", "steps_offset")})
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("encoder.")],
               "lr": cfg.lr}]
    if cfg.mode == "joint":
        groups.append({"params": list(enc.parameters()), "lr": cfg.encoder_lr})
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = None
    if cfg.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(trainable, decay=cfg.ema_decay)
    steps = cfg.steps_per_epoch or max(1, len(train_idx) // cfg.batch_size)
    total = steps * cfg.epochs
    modules: dict[str, Any] = {"model": model}
    if ema is not None:
        modules["ema"] = _EMAState(ema)
    progress = load_checkpoint(run_dir / "ckpt", modules, {"opt": opt}) or {
        "epoch": 0, "history": [], "grad_log": [], "grid_first": []}
    if progress["epoch"]:
        logger.info(f"resuming stage B at epoch {progress['epoch']}/{cfg.epochs}")
    ddp_model, opt = acc.prepare(model, opt)
    if ema is not None:
        ema.to(device)
    grid_idx = pick_grid_trials(ds, val_idx, cfg.grid_trials, cfg.seed)
    val_loss_idx = np.random.default_rng(cfg.seed + 5).permutation(val_idx)[:256]
    ref_retrieval = None
    if cfg.mode == "joint":
        gal = np.random.default_rng(cfg.seed + 3).permutation(train_idx)[:2000]
        z_al = _embed_all(aligned.to(device), ds.x, device).cpu().numpy()
        ref_retrieval = retrieval_top1(z_al[val_idx], ds.y[val_idx], z_al[gal], ds.y[gal])
    rank, world, per = acc.process_index, acc.num_processes, cfg.batch_size // acc.num_processes

    def batch_loss(rows: np.ndarray, g: torch.Generator, train: bool) -> torch.Tensor:
        n = len(rows)
        # the whole global batch's randomness is drawn on every process, then sliced: same result for any world size
        t = torch.randint(0, mcfg.num_train_timesteps, (n,), generator=g)
        noise = torch.randn((n,) + tuple(lat_mu.shape[1:]), generator=g)
        eps_lat = torch.randn((n,) + tuple(lat_mu.shape[1:]), generator=g)
        drop = torch.rand(n, generator=g) < (mcfg.cond_dropout if train else 0.0)
        # drawn only when used, so runs without it keep their random stream
        use_img = torch.rand(n, generator=g) < cfg.image_cond_frac if img_table is not None and train else None
        sl = slice(rank * per, (rank + 1) * per) if train else slice(None)
        rows, t, noise, eps_lat, drop = rows[sl], t[sl].to(device), noise[sl].to(device), eps_lat[sl].to(device), drop[sl].to(device)
        im = img_of[rows].to(device)
        z0 = lat_mu[im] + lat_sd[im] * eps_lat
        noisy = ddpm.add_noise(z0, noise, t)
        target = noise if mcfg.prediction_type == "epsilon" else ddpm.get_velocity(z0, noise, t)
        net = ddp_model if train else model
        if emb_table is not None:
            emb = emb_table[torch.from_numpy(rows).to(device)]                     # (n, emb_dim)
            if use_img is not None:
                emb = torch.where(use_img[sl].to(device)[:, None], img_table[im], emb)
            pred = net(noisy, t, emb, drop)
        else:  # joint: the encoder runs inside the (DDP-wrapped) forward, so its gradients are synchronised too
            pred = net(noisy, t, None, drop, eeg=x_all[rows].to(device))
        return F.mse_loss(pred.float(), target.float())

    for epoch in range(progress["epoch"], cfg.epochs):
        model.train()
        model.vae.eval()
        if cfg.mode != "joint" and model.encoder is not None:
            model.encoder.eval()
        t0 = time.perf_counter()
        g = _gen(cfg.seed, epoch, 2)
        order = np.concatenate([np.random.default_rng([cfg.seed, epoch]).permutation(train_idx)
                                for _ in range(math.ceil(steps * cfg.batch_size / len(train_idx)))])
        tot, gn_enc, gn_unet = 0.0, [], []
        bar = tqdm(range(steps), desc=f"{cfg.mode} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not acc.is_local_main_process)
        for s in bar:
            step = epoch * steps + s
            for grp in opt.param_groups:
                grp["lr"] = grp["base_lr"] * _lr_factor(step, total, cfg.warmup_steps)
            loss = batch_loss(order[s * cfg.batch_size:(s + 1) * cfg.batch_size], g, True)
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            if cfg.mode == "joint":
                gn_enc.append(_grad_norm(model.encoder.parameters()))
                gn_unet.append(_grad_norm(model.unet.parameters()))
            if cfg.grad_clip > 0:
                acc.clip_grad_norm_(trainable, cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.step(trainable)
            tot += float(acc.reduce(loss.detach(), reduction="mean"))  # global batch's loss on every process
            bar.set_postfix(loss=f"{loss.item():.4f}")
        train_s = time.perf_counter() - t0
        rec: dict[str, Any] = {"epoch": epoch + 1, "loss": tot / steps, "seconds": train_s, "steps": steps}
        if ema is not None:
            ema.store(trainable)
            ema.copy_to(trainable)
        model.eval()
        with torch.no_grad():
            rec["val_loss"] = float(batch_loss(val_loss_idx, _gen(cfg.seed, 99), False))
        if cfg.mode == "joint":
            z = _embed_all(model.encoder, ds.x, device).cpu().numpy()
            rec["encoder_retrieval_top1"] = retrieval_top1(z[val_idx], ds.y[val_idx], z[gal], ds.y[gal])
            rec["grad_norm_encoder"] = float(np.mean(gn_enc))
            rec["grad_norm_unet"] = float(np.mean(gn_unet))
            progress["grad_log"].extend([[step_i, e, u] for step_i, e, u in
                                         zip(range(epoch * steps, (epoch + 1) * steps), gn_enc, gn_unet)])
        if acc.is_main_process:
            first = _epoch_grid(model, ds, grid_idx, cfg, run_dir, epoch + 1)
            progress["grid_first"].append(first.tolist())
            save_strip(run_dir / "grids", [np.asarray(f, np.float32) for f in progress["grid_first"]],
                       ds.images[ds.image[grid_idx]])
        if ema is not None:
            ema.restore(trainable)
        progress["history"].append(rec)
        progress["epoch"] = epoch + 1
        if acc.is_main_process:
            save_checkpoint(run_dir / "ckpt", modules, {"opt": opt}, progress)
            logger.info(f"stage B ({cfg.mode}) epoch {epoch + 1}/{cfg.epochs}: loss {rec['loss']:.4f} "
                        f"val {rec['val_loss']:.4f} ({train_s:.1f} s)"
                        + (f" enc-grad {rec['grad_norm_encoder']:.2e} unet-grad {rec['grad_norm_unet']:.2e} "
                           f"retrieval {rec['encoder_retrieval_top1']:.3f} (aligned {ref_retrieval:.3f})"
                           if cfg.mode == "joint" else ""))
        acc.wait_for_everyone()

    # final weights (EMA if on), LoRA fused into the UNet so every consumer sees a plain UNet2DConditionModel
    if ema is not None:
        ema.copy_to(trainable)
    model.eval()
    metrics: dict[str, Any] = {
        "mode": cfg.mode, "data": ds.name, "n_train_trials": int(len(train_idx)), "n_train_images": int(len(train_imgs)),
        "vae": vae_stats, "history": progress["history"], "params": model_sizes(model),
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in progress["history"]])) if progress["history"] else 0.0,
        "processes": world, "device": str(device)}
    if acc.is_main_process:
        if cfg.mode == "lora":
            from peft.utils import get_peft_model_state_dict

            lora_state = get_peft_model_state_dict(model.unet)
            model.unet.fuse_lora()
            model.unet.unload_lora()
            metrics["lora_params"] = int(sum(v.numel() for v in lora_state.values()))
        save_diffusion(run_dir / MODEL_DIR, model, mcfg)
        if cfg.mode == "lora":
            save_weights(run_dir / MODEL_DIR / "unet_lora.safetensors", lora_state)
        if cfg.mode == "joint":
            metrics["joint"] = {"aligned_encoder_retrieval_top1": ref_retrieval,
                                "chance": 1.0 / ds.n_outputs,
                                "final_encoder_retrieval_top1": progress["history"][-1]["encoder_retrieval_top1"],
                                "grad_norm_encoder_mean": float(np.mean([r[1] for r in progress["grad_log"]])),
                                "grad_norm_unet_mean": float(np.mean([r[2] for r in progress["grad_log"]])),
                                "retrieval": "1-NN EEG->EEG (cosine) on the validation split, gallery: 2000 train trials"}
            if cfg.plot:
                plot_joint(run_dir / "joint.png", progress, ref_retrieval, 1.0 / ds.n_outputs)
        if cfg.speed:
            metrics["speed"] = measure_speed(model, device)
        metrics["wall_s"] = time.perf_counter() - t_start
        update_metrics(run_dir, "diffusion", metrics)
        logger.info(f"stage B done in {metrics['wall_s']:.1f} s; model in {run_dir / MODEL_DIR}")
    acc.wait_for_everyone()
    return metrics


def _grad_norm(params) -> float:
    sq = [p.grad.detach().float().pow(2).sum() for p in params if p.grad is not None]
    return float(torch.stack(sq).sum().sqrt()) if sq else 0.0


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


def plot_joint(path: Path, progress: dict, ref: float | None, chance: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = np.asarray(progress["grad_log"], dtype=np.float64)
    hist = progress["history"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.semilogy(log[:, 0], np.maximum(log[:, 1], 1e-12), label="encoder", lw=0.8)
    a.semilogy(log[:, 0], np.maximum(log[:, 2], 1e-12), label="UNet", lw=0.8)
    a.set_xlabel("step"), a.set_ylabel("gradient L2 norm"), a.legend(), a.set_title("joint: gradient reaching each part")
    b.plot([h["epoch"] for h in hist], [h["encoder_retrieval_top1"] for h in hist], "o-", label="joint encoder")
    if ref is not None:
        b.axhline(ref, color="g", ls="--", label="aligned (two-stage)")
    b.axhline(chance, color="gray", ls=":", label="chance")
    b.set_xlabel("epoch"), b.set_ylabel("1-NN retrieval top-1 (val)"), b.legend(fontsize=7), b.set_ylim(0, 1)
    fig.tight_layout()
    from eegsine.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


@torch.no_grad()
def measure_speed(model: EEGDiffusion, device: torch.device, steps: int | None = None, reps: int = 3) -> dict[str, Any]:
    """images/s at batch 1 and 16 (full sampler loop with CFG + VAE decode) and peak memory."""
    out: dict[str, Any] = {"sampler": model.cfg.sampler, "steps": steps or model.cfg.sample_steps,
                           "guidance": model.cfg.guidance, "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for b in (1, 16):
        emb = F.normalize(torch.randn(b, model.cfg.emb_dim, generator=torch.Generator().manual_seed(0)), dim=1).to(device)
        model.sample(emb, steps=steps)  # warm-up
        times = []
        for _ in range(reps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.sample(emb, steps=steps)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out[f"batch{b}_seconds"] = float(np.median(times))
        out[f"batch{b}_images_per_s"] = float(b / np.median(times))
    if device.type == "cuda":
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["peak_memory_kind"] = "torch.cuda.max_memory_allocated"
    else:
        out["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["peak_memory_kind"] = "process peak RSS (ru_maxrss, whole training process)"
    return out


__all__ = ["DiffusionTrainConfig", "diffusion_preset", "PRESETS", "train_diffusion", "train_vae", "measure_speed",
           "save_grid", "retrieval_top1", "pick_grid_trials", "resolve_encoder"]
