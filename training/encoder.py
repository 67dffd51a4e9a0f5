"""Stage one of EEG->image: align an EEG encoder to image embeddings (``eegsine train encoder``).

Per step one N-way K-shot episode is drawn from the train split; the loss is

    w_proto * prototypical(query vs. prototypes of the support [+ image anchors])
  + w_clip  * InfoNCE(EEG, paired image embedding; learnable temperature)
  + w_cls   * cosine-classifier CE (optional)

against a *frozen* image encoder (by default the in-project CNN, trained first on the
train-split stimuli; see ``eegsine.models.image_encoder``). An epoch is as many episodes as
cover the train split once. After every epoch the model is scored on the validation split
(nearest class mean [+ retrieval]); the best epoch is kept - never chosen on test. Every
epoch writes a resumable checkpoint (``eegsine.training.loop``); a rerun on the same folder resumes.
The loop runs under Hugging Face Accelerate, so ``accelerate launch -m eegsine train
encoder ...`` runs data-parallel unchanged (each process draws its own episodes).

Control baselines (``controls=True``) are trained / computed beside every run: the same
training on shuffled label+image assignments, and the class-only encoder (see
``eegsine.metrics.embedding``). Evaluation lives in ``eegsine.training.encoder_eval``.

Hand-written: the episode loop (no library trains prototypical + contrastive objectives
under Accelerate); the losses are in ``eegsine.training.losses``, the episodes in
``eegsine.training.episodes``; Accelerate does devices/DDP, tqdm the progress, eegsine.io and
eegsine.runs.checkpoint the files.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from eegsine.progress import tqdm

from eegsine.runs.checkpoint import load_state_into, save_weights
from eegsine.data import EEGSet, get_spec, load_eeg
from eegsine.data.alignment import align_set
from eegsine.data.options import parse_pairs
from eegsine.metrics.embedding import _l2, retrieval_topk
from eegsine.errors import DataMissingError, UserError
from eegsine.io import update_metrics
from eegsine.models.eeg_encoder import EEGEncoderConfig, build_encoder, embed
from eegsine.models.image_encoder import ImageEncoder, build_image_encoder, embed_images
from eegsine.models.protocol import MODEL_DIR, Provenance
from eegsine.runs.folder import RunFolder, main_process
from eegsine.training.configs import ENCODER_PRESETS as PRESETS  # noqa: F401 - re-exported
from eegsine.training.configs import EncoderTrainConfig, encoder_preset  # noqa: F401 - re-exported
from eegsine.training.episodes import EpisodeSampler
from eegsine.training.loop import Checkpoint, accelerator, cosine_warmup, open_run, start_log
from eegsine.training.losses import clip_loss, cosine_ce, prototypical_loss
from eegsine.training.encoder_eval import evaluate
from eegsine.training.image_encoder import train_image_encoder

ENCODER_DIR = MODEL_DIR            # best EEG encoder, a model folder (EEGEncoder.from_pretrained reads it)
IMAGE_ENCODER_DIR = "image_encoder"
ALIGNER_FILE = "aligner.safetensors"  # best encoder + temperatures + classification head
CONTROL_DIR = "control_shuffled"


# -- data -----------------------------------------------------------------------------------------
def data_options(cfg: EncoderTrainConfig | Any) -> dict[str, Any]:
    """The loader options a run's data fields give (``data_root``, ``image_set``, LOSO, ``--data-options``):
    what ``load_eeg`` gets, and what the trained model's provenance records (an encoder or diffusion run)."""
    opts: dict[str, Any] = {}
    if cfg.data_root:
        opts["root"] = cfg.data_root
    if cfg.data == "synthetic-vep" and cfg.image_set:
        opts["image_set"] = cfg.image_set
    if cfg.data == "eegcvpr40" and getattr(cfg, "loso_subject", 0):  # the diffusion stage has no LOSO field
        opts["loso_subject"] = cfg.loso_subject
    if cfg.data_options:  # typed by the set's options (a set handed in by a caller has no registry entry, no -o)
        opts.update(parse_pairs(cfg.data, get_spec(cfg.data).options, cfg.data_options))
    return opts


def run_provenance(cfg: EncoderTrainConfig | Any, **fields: Any) -> Provenance:
    """What a model trained by run config ``cfg`` records about its training (``fields``: the rest)."""
    return Provenance(trained_by=cfg.KIND, data=cfg.data, data_options=data_options(cfg), seed=cfg.seed, **fields)


def _image_source(cfg: EncoderTrainConfig) -> str:
    """The alignment target as provenance names it: cnn (in-project) or hf:<folder> ('' when the data has none)."""
    return "cnn" if cfg.image_encoder.source == "cnn" else f"hf:{cfg.image_encoder.hf_path}"


def load_data(cfg: EncoderTrainConfig | Any) -> EEGSet:
    opts = data_options(cfg)
    try:
        return load_eeg(cfg.data, **opts).check()
    except DataMissingError as e:
        raise e.for_flag("--data-root") from None
    except TypeError as e:
        raise UserError(f"{cfg.data}: bad data option ({e}); given: {sorted(opts)}") from None


@dataclasses.dataclass
class Prepared:
    """Splits restricted to seen/unseen classes, and the frozen image side."""

    ds: EEGSet
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seen: np.ndarray
    unseen: np.ndarray
    unseen_support: np.ndarray
    unseen_query: np.ndarray
    img_emb: np.ndarray | None      # (M, D) frozen image embeddings of every stimulus
    anchors: np.ndarray | None      # (n_classes, D) class-mean image embedding over train-split stimuli
    image_stats: dict


def split_indices(ds: EEGSet, cfg: EncoderTrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    train, test = ds.split("train"), ds.split("test")
    val = ds.splits.get("val")
    if val is None or len(val) == 0:
        raise UserError(f"{ds.name}: no validation split; checkpoints are chosen on validation, never on test")
    if cfg.loso_subject and not ds.info.get("loso_subject"):  # eegcvpr40's loader applies LOSO itself
        subjects = np.unique(ds.subject)
        if cfg.loso_subject not in subjects:
            raise UserError(f"loso_subject={cfg.loso_subject}: {ds.name} has subjects {subjects.tolist()}")
        out = ds.subject == cfg.loso_subject
        test = np.flatnonzero(out)                       # every trial of the held-out subject
        train, val = train[~out[train]], val[~out[val]]  # by-image train/val of the others
    for name, idx in (("train", train), ("test", test)):
        if cfg.loso_subject and len(idx) == 0:  # e.g. a one-subject set: the fold would train or score on nothing
            raise UserError(f"{ds.name}: loso_subject={cfg.loso_subject} leaves 0 {name} trials")
    return train, val, test


def prepare(ds: EEGSet, cfg: EncoderTrainConfig, run_dir: Path, logger) -> Prepared:
    train, val, test = split_indices(ds, cfg)
    if cfg.align == "euclidean":  # references from the train split only (a LOSO test subject: its own trials)
        ds = align_set(ds, train)
        logger.info(f"{ds.name}: Euclidean alignment per subject ({ds.info['euclidean_alignment']['n_groups']} "
                    "group(s)), references from the train split")
    classes = np.arange(ds.n_outputs)
    rng = np.random.default_rng(cfg.seed)
    if cfg.heldout_classes >= ds.n_outputs - 1:
        raise UserError(f"heldout_classes={cfg.heldout_classes}: {ds.name} has only {ds.n_outputs} classes")
    unseen = (np.sort(rng.choice(classes, size=cfg.heldout_classes, replace=False)) if cfg.heldout_classes
              else classes[:0])
    seen = np.setdiff1d(classes, unseen)
    is_seen = np.isin(ds.y, seen)
    prep = Prepared(ds, train[is_seen[train]], val[is_seen[val]], test[is_seen[test]], seen, unseen,
                    np.concatenate([train, val])[~is_seen[np.concatenate([train, val])]], test[~is_seen[test]],
                    None, None, {})
    if ds.images is None:
        if cfg.w_clip > 0 or cfg.image_anchor:
            logger.warning(f"{ds.name} has no stimulus images: InfoNCE and image anchors are off, retrieval not scored")
        return prep
    prep.img_emb, prep.image_stats = image_embeddings(ds, prep, cfg, run_dir, logger)
    lab = ds.image_labels if ds.image_labels is not None else None
    if lab is None:
        raise UserError(f"{ds.name}: has images but no image_labels")
    train_imgs = np.unique(ds.image[np.concatenate([train, val])])
    train_imgs = train_imgs[train_imgs >= 0]
    anchors = np.zeros((ds.n_outputs, prep.img_emb.shape[1]), np.float32)
    for c in classes:
        m = train_imgs[lab[train_imgs] == c]
        if len(m):
            anchors[c] = _l2(prep.img_emb[m].mean(0, keepdims=True))[0]
    prep.anchors = anchors
    return prep


def image_embeddings(ds: EEGSet, prep: Prepared, cfg: EncoderTrainConfig, run_dir: Path,
                     logger) -> tuple[np.ndarray, dict]:
    """Train (or reload) the frozen image encoder and embed every stimulus image -> (M, D)."""
    folder = run_dir / IMAGE_ENCODER_DIR
    stats: dict = {}
    if (folder / "config.json").exists():
        model = ImageEncoder.from_pretrained(folder)
        icfg = model.cfg
        logger.info(f"image encoder: reloaded from {folder}")
    else:
        icfg = cfg.image_encoder.replace(in_chans=int(ds.images.shape[1]), image_size=int(ds.images.shape[2]),
                                         n_classes=ds.n_outputs)
        if icfg.source == "cnn":
            shown = np.unique(ds.image[prep.train])           # stimuli of the train split, seen classes only
            shown = shown[shown >= 0]
            model, stats = train_image_encoder(ds.images[shown], ds.image_labels[shown], icfg, epochs=cfg.image_epochs,
                                               seed=cfg.seed, logger=logger)
        else:
            model = build_image_encoder(icfg)
    emb = embed_images(model, ds.images)
    if emb.shape[1] != cfg.encoder.emb_dim:
        raise UserError(f"image encoder gives {emb.shape[1]}-d embeddings but encoder.emb_dim={cfg.encoder.emb_dim}; "
                        f"set --encoder-emb-dim {emb.shape[1]}")
    if not (folder / "config.json").exists():  # saved only once usable: the corrected retry must not find it
        model.cfg = icfg
        model.save_pretrained(folder, run_provenance(cfg))
    stats.update({"source": icfg.source, "hf_path": icfg.hf_path, "emb_dim": int(emb.shape[1])})
    return emb, stats


# -- model --------------------------------------------------------------------------------------
class Aligner(nn.Module):
    """The EEG encoder plus what its losses learn: two logit scales and an optional class head."""

    def __init__(self, enc_cfg: EEGEncoderConfig, cfg: EncoderTrainConfig, n_classes: int):
        super().__init__()
        self.encoder = build_encoder(enc_cfg)
        self.log_proto_scale = nn.Parameter(torch.tensor(math.log(cfg.proto_scale)))
        self.log_clip_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)))
        self.class_weight = nn.Parameter(torch.randn(n_classes, enc_cfg.emb_dim) * 0.1) if cfg.w_cls > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, emb_dim)
        return self.encoder(x)

    def scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        # CLIP clamps its scale at 100 so the temperature cannot collapse
        return (self.log_proto_scale.clamp(max=math.log(100.0)).exp(),
                self.log_clip_scale.clamp(max=math.log(100.0)).exp())


def _lr_at(step: int, total: int, cfg: EncoderTrainConfig) -> float:
    """Warm-up over ``warmup_frac`` of the steps (at least one), then a cosine to 0."""
    return cosine_warmup(step, total, max(1, int(cfg.warmup_frac * total)), cfg.lr)


def augment(x: torch.Tensor, cfg: EncoderTrainConfig, sfreq: float, g: torch.Generator) -> torch.Tensor:
    """Per-trial time shift (edge-padded), channel dropout and white noise: (B, C, T) -> (B, C, T)."""
    B, C, T = x.shape
    shift = int(round(cfg.aug_shift_ms * 1e-3 * sfreq))
    if shift > 0:
        s = torch.randint(-shift, shift + 1, (B, 1, 1), generator=g)
        idx = (torch.arange(T).view(1, 1, T) + s).clamp(0, T - 1).expand(B, C, T)
        x = torch.gather(x, 2, idx)
    if cfg.aug_chan_drop > 0:
        x = x * (torch.rand(B, C, 1, generator=g) >= cfg.aug_chan_drop)
    if cfg.aug_noise > 0:
        rms = x.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
        x = x + cfg.aug_noise * rms * torch.randn(x.shape, generator=g)
    return x


def shuffled_assignment(ds: EEGSet, splits: list[np.ndarray], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Permute (label, image) pairs across trials inside each split: the shuffled-labels control."""
    y, image = ds.y.copy(), ds.image.copy()
    rng = np.random.default_rng(seed + 7919)
    for idx in splits:
        p = rng.permutation(idx)
        y[idx], image[idx] = ds.y[p], ds.image[p]
    return y, image


def validate_score(model: Aligner, prep: Prepared, y: np.ndarray, image: np.ndarray, seed: int) -> dict[str, float]:
    """Validation: nearest class mean (train embeddings) top-1 [+ retrieval top-1]; the selection score."""
    ds = prep.ds
    rng = np.random.default_rng(seed)
    tr = prep.train if len(prep.train) <= 3000 else rng.choice(prep.train, 3000, replace=False)
    z_tr, z_va = embed(model.encoder, ds.x[tr]), embed(model.encoder, ds.x[prep.val])
    classes = np.unique(y[tr])
    means = _l2(np.stack([z_tr[y[tr] == c].mean(0) for c in classes]))
    out = {"val_ncm_top1": float((classes[np.argmax(z_va @ means.T, 1)] == y[prep.val]).mean())}
    score = out["val_ncm_top1"]
    if prep.img_emb is not None:
        r = retrieval_topk(z_va, y[prep.val], image[prep.val], prep.img_emb, prep.ds.image_labels,
                           np.unique(image[prep.val]), n_way=len(prep.seen), ks=(1,), seed=seed)
        out["val_retrieval_top1"] = r["top1"]
        score = 0.5 * (score + r["top1"])
    out["val_score"] = score
    return out


@dataclasses.dataclass
class _Fit:
    """What the epochs of one :func:`fit` share."""

    cfg: EncoderTrainConfig
    prep: Prepared
    acc: Any                      # accelerate.Accelerator
    model: nn.Module              # the Aligner as Accelerate prepared it (DDP-wrapped under accelerate launch)
    raw: Aligner
    opt: Any
    sampler: EpisodeSampler
    steps: int
    y: np.ndarray                 # labels and stimulus ids trained on (permuted for the shuffled control)
    image: np.ndarray
    w_clip: float
    anchors: torch.Tensor | None
    shuffle: bool
    out_dir: Path
    x_all: torch.Tensor = dataclasses.field(init=False)       # (N, C, T) every trial
    y_t: torch.Tensor = dataclasses.field(init=False)
    img_t: torch.Tensor = dataclasses.field(init=False)
    img_emb: torch.Tensor | None = dataclasses.field(init=False)  # (M, D) frozen image embeddings

    def __post_init__(self) -> None:
        self.x_all = torch.from_numpy(self.prep.ds.x)
        self.y_t, self.img_t = torch.from_numpy(self.y), torch.from_numpy(self.image)
        self.img_emb = torch.as_tensor(self.prep.img_emb) if self.prep.img_emb is not None else None

    @property
    def total(self) -> int:
        return self.steps * self.cfg.epochs


def fit(cfg: EncoderTrainConfig, prep: Prepared, out_dir: Path, logger, shuffle: bool = False,
        callback: Callable[[int, dict], None] | None = None) -> dict:
    """Train one aligner into ``out_dir`` (resumable); returns the training summary."""
    ds = prep.ds
    out_dir.mkdir(parents=True, exist_ok=True)
    y, image = (shuffled_assignment(ds, [prep.train, prep.val], cfg.seed) if shuffle else (ds.y, ds.image))
    enc_cfg = cfg.encoder.fit_to(ds.n_chans, ds.n_times, ds.sfreq, what=ds.name)
    use_img = prep.img_emb is not None
    w_clip = cfg.w_clip if use_img else 0.0
    anchors = torch.as_tensor(prep.anchors) if (use_img and cfg.image_anchor) else None
    if w_clip + cfg.w_proto + cfg.w_cls <= 0:
        raise UserError(f"{ds.name}: no loss left (no images for w_clip; set w_proto or w_cls > 0)")

    torch.manual_seed(cfg.seed)
    acc = accelerator(cfg.device, cfg.mixed_precision)
    model = Aligner(enc_cfg, cfg, ds.n_outputs)
    model.encoder.fit_data(ds.x[prep.train], cfg.seed)  # parts fitted on data, not by gradient (MiniRocket)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_way = min(cfg.n_way, len(prep.seen)) if cfg.n_way else 0  # held-out classes shrink the pool
    sampler = EpisodeSampler(y[prep.train], prep.seen, n_way, cfg.k_shot, cfg.n_query, logger)
    sampler.by_class = {c: prep.train[i] for c, i in sampler.by_class.items()}  # local -> dataset indices
    ckpt = Checkpoint(out_dir / "ckpt", {"model": model}, {"opt": opt})
    progress = ckpt.resume({"epoch": 0, "best_score": -1.0, "best_epoch": -1, "history": []}, logger, str(out_dir),
                           "epoch", cfg.epochs)
    prepared, opt = acc.prepare(model, opt)
    f = _Fit(cfg, prep, acc, prepared, acc.unwrap_model(prepared), opt, sampler,
             max(1, len(prep.train) // sampler.episode_size), y, image, w_clip, anchors, shuffle, out_dir)
    for epoch in range(progress["epoch"], cfg.epochs):
        rec = _fit_epoch(f, epoch)
        if acc.is_main_process:
            _end_epoch(f, epoch, rec, progress, ckpt, enc_cfg, logger)
        acc.wait_for_everyone()
        if callback is not None:
            callback(epoch + 1, rec)
    best = Aligner(enc_cfg, cfg, ds.n_outputs)
    load_state_into(best, out_dir / ALIGNER_FILE)
    return {"model": best.eval(), "best_epoch": progress["best_epoch"], "best_val_score": progress["best_score"],
            "history": progress["history"], "steps_per_epoch": f.steps, "episode_size": sampler.episode_size,
            "classes_skipped": sampler.skipped, "labels": y, "images": image}


def _fit_epoch(f: _Fit, epoch: int) -> dict:
    """One epoch of episodes; -> its record (mean losses, episode accuracy, time, lr, temperature)."""
    cfg, acc, ds = f.cfg, f.acc, f.prep.ds
    rng = np.random.default_rng([cfg.seed, epoch, acc.process_index])
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))  # augmentation: reproducible on resume
    f.model.train()
    t0 = time.perf_counter()
    sums = {"loss": 0.0, "proto": 0.0, "clip": 0.0, "cls": 0.0, "episode_acc": 0.0}
    bar = tqdm(range(f.steps), desc=f"{'control ' if f.shuffle else ''}epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not acc.is_local_main_process)
    for s in bar:
        for group in f.opt.param_groups:
            group["lr"] = _lr_at(epoch * f.steps + s, f.total, cfg)
        sup, qry = f.sampler.sample(rng)
        idx = torch.from_numpy(np.concatenate([sup, qry]))
        z = f.model(augment(f.x_all[idx], cfg, ds.sfreq, g).to(acc.device))  # (S+Q, D)
        loss = _episode_loss(f, z, idx, len(sup), sums)
        f.opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(f.model.parameters(), 1.0)
        f.opt.step()
        sums["loss"] += loss.item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    rec = {k: v / f.steps for k, v in sums.items()}
    rec.update(epoch=epoch + 1, seconds=time.perf_counter() - t0, steps=f.steps,
               lr=_lr_at((epoch + 1) * f.steps - 1, f.total, cfg), temperature=1.0 / f.raw.scales()[1].item())
    return rec


def _episode_loss(f: _Fit, z: torch.Tensor, idx: torch.Tensor, n_sup: int, sums: dict[str, float]) -> torch.Tensor:
    """w_proto * prototypical + w_clip * InfoNCE + w_cls * cosine CE of one episode's embeddings z (S+Q, D)."""
    cfg, dev = f.cfg, f.acc.device
    yb = f.y_t[idx].to(dev)
    ps, cs = f.raw.scales()
    loss = torch.zeros((), device=dev)
    if cfg.w_proto > 0:
        lp, ea = prototypical_loss(z[:n_sup], yb[:n_sup], z[n_sup:], yb[n_sup:], ps,
                                   f.anchors.to(dev) if f.anchors is not None else None, cfg.anchor_weight)
        loss = loss + cfg.w_proto * lp
        sums["proto"] += lp.item()
        sums["episode_acc"] += ea.item()
    if f.w_clip > 0:
        ib = f.img_t[idx]
        lc = clip_loss(z, f.img_emb[ib].to(dev), ib.to(dev), cs)
        loss = loss + f.w_clip * lc
        sums["clip"] += lc.item()
    if cfg.w_cls > 0:
        lcl = cosine_ce(z, yb, f.raw.class_weight, ps)
        loss = loss + cfg.w_cls * lcl
        sums["cls"] += lcl.item()
    return loss


def _end_epoch(f: _Fit, epoch: int, rec: dict, progress: dict, ckpt: Checkpoint, enc_cfg: EEGEncoderConfig,
               logger) -> None:
    """Main process: score the epoch on validation, keep the best so far (``encoder/``, aligner file), checkpoint."""
    ds, out_dir = f.prep.ds, f.out_dir
    rec.update(validate_score(f.raw, f.prep, f.y, f.image, f.cfg.seed))
    improved = rec["val_score"] > progress["best_score"]
    if improved:
        progress.update(best_score=rec["val_score"], best_epoch=epoch + 1)
        save_weights(out_dir / ALIGNER_FILE, f.raw.state_dict())
        f.raw.encoder.cfg, f.raw.encoder.preprocessing = enc_cfg, ds.preprocessing
        f.raw.encoder.save_pretrained(out_dir / ENCODER_DIR, run_provenance(
            f.cfg, image_encoder=_image_source(f.cfg) if f.prep.img_emb is not None else ""))
    progress["history"].append(rec)
    progress["epoch"] = epoch + 1
    ckpt.save(progress)
    logger.info(f"{'[control] ' if f.shuffle else ''}epoch {epoch + 1}/{f.cfg.epochs}: loss {rec['loss']:.3f} "
                f"val {', '.join(f'{k[4:]} {v:.3f}' for k, v in rec.items() if k.startswith('val_'))} "
                f"({rec['seconds']:.1f} s){' *' if improved else ''}")


def train_encoder(cfg: EncoderTrainConfig, run_dir: str | Path, data: EEGSet | None = None,
                  callback: Callable[[int, dict], None] | None = None) -> dict:
    """Train (or resume) the aligned encoder and its controls in ``run_dir``; evaluate; return metrics.

    The folder follows :class:`~eegsine.runs.folder.RunFolder`'s protocol: the main process
    locks it and writes config.json once the data is loaded, before the first result (the
    image encoder), so no result ever sits beside another run's config.
    """
    with open_run(run_dir, cfg, lock=main_process()) as run:
        return _train(cfg, run, data, callback)


def _train(cfg: EncoderTrainConfig, run: RunFolder, data: EEGSet | None,
           callback: Callable[[int, dict], None] | None) -> dict:
    run_dir = run.path
    logger = start_log(run)
    t0 = time.perf_counter()
    ds = data if data is not None else load_data(cfg)
    ds.check()
    if main_process():
        run.write_config(cfg)  # only now: an attempt that fails on a bad flag must not block the retry
    logger.info(f"{ds.name}: {len(ds.x)} trials, {ds.n_chans} ch x {ds.n_times} samples @ {ds.sfreq:g} Hz, "
                f"{ds.n_outputs} classes; {ds.info.get('warning', '')}".rstrip("; "))
    if ds.name == "eegcvpr40" and not ds.info.get("bandpass_hz"):
        logger.warning("eegcvpr40 without band-pass: raw block-design EEG carries slow drifts that inflate accuracy "
                       "(Li et al., TPAMI 2020: 0.98 raw vs ~0.48 band-passed); compare with the controls below")
    prep = prepare(ds, cfg, run_dir, logger)
    main = fit(cfg, prep, run_dir, logger, shuffle=cfg.shuffle_labels, callback=callback)
    control = None
    if cfg.controls and not cfg.shuffle_labels:
        control = fit(cfg, prep, run_dir / CONTROL_DIR, logger, shuffle=True)
    train_s = time.perf_counter() - t0
    metrics = evaluate(cfg, prep, main, control, run_dir, logger)
    metrics["train"] = {"wall_s": train_s, "best_epoch": main["best_epoch"], "best_val_score": main["best_val_score"],
                        "steps_per_epoch": main["steps_per_epoch"], "episode_size": main["episode_size"],
                        "seconds_per_epoch": float(np.mean([h["seconds"] for h in main["history"]])),
                        "classes_skipped": main["classes_skipped"], "image_encoder": prep.image_stats,
                        "history": main["history"],
                        "control_best_epoch": control["best_epoch"] if control else None}
    update_metrics(run_dir, "encoder", metrics)
    logger.info(f"done in {time.perf_counter() - t0:.1f} s; metrics in {run_dir / 'metrics.json'}")
    return metrics
