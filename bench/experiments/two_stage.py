"""The two-stage claim, measured (issue #18 part 4): ``python -m eegsine.bench.experiments.two_stage``.

docs/design.md trains the EEG encoder first (stage one: aligned to images) and then the diffusion
UNet on the frozen encoder (stage two), because an encoder trained *through* the diffusion loss
"does not learn". This module runs the arms on the same data (the tiny preset's synthetic-vep EEG
+ MNIST), the same UNet budget (epochs x steps x batch, learning rate, warm-up) and the same seeds:

* ``two-stage``: the aligned stage-one encoder frozen, the UNet trained on its embeddings;
* ``joint``: a fresh encoder (same architecture, re-initialised from the seed) trained together
  with the UNet through the diffusion loss (``--mode joint``);
* ``joint-aligned``: the same, but the encoder starts from the aligned weights;
* ``two-stage-img``: two-stage with the tiny preset's ``image_cond_frac`` 0.5 (the pipeline as
  shipped; the other arms condition on EEG only, which joint mode requires).

Per arm it records the encoder's 1-NN retrieval per epoch (validation split, the joint module's
metric; epoch 0 is the encoder the arm starts from), the gradient norm reaching the encoder and the
UNet per step (joint arms), the validation denoising loss per epoch, and the generation table of
``eegsine generate --evaluate`` on the test split (EEG-conditioned n-way accuracy of the domain
classifier vs the class-only and shuffled-EEG controls, FID on the domain network). One VAE
(stage A) and one domain feature network are trained once and shared by every arm, so the arms
differ only in how the encoder is trained.

``run`` trains what is missing (an arm whose run folder holds its ``two_stage`` record is skipped;
a killed arm resumes from its checkpoint), then writes ``results.json`` and renders;
``render`` re-renders ``table.md`` and the figure from ``results.json`` alone (``--check``: fail
when the committed table differs). The numbers in docs/results/two-stage/ come from here only.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import copy
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from eegsine.bench.report.doc import md_table
from eegsine.config import threads_type
from eegsine.io import update_metrics
from eegsine.training.configs import diffusion_preset, encoder_preset

ARMS: dict[str, dict[str, Any]] = {
    "two-stage": {"label": "two-stage: aligned encoder frozen", "mode": "full", "init": "aligned",
                  "image_cond_frac": 0.0},
    "joint": {"label": "joint: fresh encoder trained through the diffusion loss", "mode": "joint", "init": "fresh",
              "image_cond_frac": 0.0},
    "joint-aligned": {"label": "joint, encoder starting from the aligned weights", "mode": "joint",
                      "init": "aligned", "image_cond_frac": 0.0},
    "two-stage-img": {"label": "two-stage + image_cond_frac 0.5 (the tiny preset as shipped)", "mode": "full",
                      "init": "aligned", "image_cond_frac": 0.5},
}
DEFAULT_ARMS = ("two-stage", "joint", "joint-aligned")
CONDITIONS = ("eeg", "class-only", "shuffled-eeg")
SHARED = "shared"          # WORK/shared/{vae,domain-cnn-*}: trained once, copied into every arm
RECORD = "two_stage"       # the section of an arm's metrics.json that marks it complete
FIGURE = "two_stage.png"
WINDOW = 100               # steps averaged for the "first / last" gradient norms of the table


# -- small metric helpers (tested on hand-checkable cases) --------------------------------------------
def window_means(values: list[float] | np.ndarray, n: int = WINDOW) -> tuple[float, float]:
    """Mean of the first ``n`` and of the last ``n`` values (the whole list when it is shorter)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v[:n].mean()), float(v[-n:].mean())


def running_mean(values: list[float] | np.ndarray, k: int) -> np.ndarray:
    """Trailing mean over up to ``k`` values (the first ones average what exists): the figure's smoothing."""
    v = np.asarray(values, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(1, len(v) + 1)
    lo = np.maximum(0, i - k)
    return (c[i] - c[lo]) / (i - lo)


def per_weight(norm: float, n_params: int) -> float:
    """A gradient's L2 norm as the RMS gradient of one weight: norm / sqrt(n), comparable across module sizes."""
    return float(norm) / float(np.sqrt(n_params))


def seed_mean(values: list[float | None]) -> float:
    """Mean over seeds of the values that exist (nan when none do)."""
    v = [float(x) for x in values if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def data_fingerprint(ds) -> str:
    """sha256 over what the arms train on (EEG, labels, stimulus of each trial, images, splits)."""
    h = hashlib.sha256()
    for a in (ds.x, ds.y, ds.image, ds.subject, ds.images if ds.images is not None else np.zeros(0)):
        h.update(np.ascontiguousarray(a).tobytes())
    for name in sorted(ds.splits):
        h.update(name.encode())
        h.update(np.ascontiguousarray(ds.splits[name]).tobytes())
    return h.hexdigest()


def image_fingerprint(ds) -> str:
    """sha256 over what stage A sees (the stimulus images and which are in the train split): the shared VAE's key."""
    h = hashlib.sha256(np.ascontiguousarray(ds.images).tobytes())
    h.update(np.ascontiguousarray(np.unique(ds.image[ds.split("train")])).tobytes())
    return h.hexdigest()


def work_dirs(work: Path, ds) -> tuple[Path, Path]:
    """(WORK/data-<sha>: the arms' run folders, WORK/shared-<sha of the images>: the shared VAE and domain network).

    Keyed by the data, so that regenerated EEG (another synthetic-vep version) never resumes an old arm."""
    return work / f"data-{data_fingerprint(ds)[:12]}", work / f"{SHARED}-{image_fingerprint(ds)[:12]}"


# -- training the arms ----------------------------------------------------------------------------
def _encoder_cfg(seed: int):
    # the tiny pipeline's stage one, without its shuffled-label control (not needed here) and plots
    return encoder_preset("tiny").replace(seed=seed, controls=False, plot=False)


@dataclasses.dataclass(frozen=True)
class Budget:
    """The study's shared training budget over the tiny preset's (``run``'s flags; 0 / None: the preset's)."""

    epochs: int = 0
    steps_per_epoch: int = 0
    vae_epochs: int | None = None
    encoder_lr: float = 1e-3
    grid_samples: int = 1


def arm_config(arm: str, seed: int, encoder_run: Path, budget: Budget):
    """The tiny diffusion preset with this arm's mode / conditioning and the study's shared budget."""
    a = ARMS[arm]
    base = diffusion_preset("tiny")
    over: dict[str, Any] = dict(seed=seed, encoder_run=str(encoder_run), mode=a["mode"],
                                image_cond_frac=a["image_cond_frac"], speed=False, grid_samples=budget.grid_samples)
    if budget.epochs:
        over["epochs"] = budget.epochs
    if budget.steps_per_epoch:
        over["steps_per_epoch"] = budget.steps_per_epoch
    if budget.vae_epochs is not None:
        over["vae_epochs"] = budget.vae_epochs
    if a["mode"] == "joint":
        over["encoder_lr"] = budget.encoder_lr
    return base.replace(**over)


@contextlib.contextmanager
def _joint_encoder_init(init: str):
    """Arm joint-aligned: mode joint normally re-initialises the encoder (``fresh_encoder``); keep the aligned weights.

    DiffusionTrainConfig has no field for this, so the arm swaps the function ``train_diffusion`` calls
    for one that returns a copy of the aligned encoder, for the duration of the arm only.
    """
    if init == "fresh":
        yield
        return
    import eegsine.training.diffusion as diffusion

    orig = diffusion.fresh_encoder
    diffusion.fresh_encoder = lambda aligned, seed: copy.deepcopy(aligned)
    try:
        yield
    finally:
        diffusion.fresh_encoder = orig


def _metrics(run: Path) -> dict:
    p = run / "metrics.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _share(src_root: Path, name: str, dst_run: Path) -> None:
    """Copy WORK/shared/NAME into the arm's folder when the arm has none yet."""
    src, dst = src_root / name, dst_run / name
    if (src / "config.json").exists() and not dst.exists():
        dst_run.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst)


def _publish(run: Path, name: str, shared: Path) -> None:
    """Keep the first arm's VAE / domain network as the one every later arm copies."""
    src, dst = run / name, shared / name
    if (src / "config.json").exists() and not dst.exists():
        shared.mkdir(parents=True, exist_ok=True)
        tmp = shared / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        tmp.rename(dst)


def train_stage_one(ds, work: Path, seed: int, log) -> Path:
    """Stage one of seed ``seed`` in WORK/seedS/encoder (``work``: the data's folder of :func:`work_dirs`)."""
    from eegsine.training.encoder import train_encoder

    run = work / f"seed{seed}" / "encoder"
    if "encoder" in _metrics(run) and (run / "model" / "config.json").exists():
        return run
    log(f"seed {seed}: stage one (tiny encoder preset) in {run}")
    t0 = time.perf_counter()
    train_encoder(_encoder_cfg(seed), run, data=ds)
    log(f"seed {seed}: stage one done in {time.perf_counter() - t0:.0f} s")
    return run


def run_arm(arm: str, seed: int, ds, work: Path, shared: Path, budget: Budget, log) -> Path:
    """Train + evaluate one arm into WORK/seedS/ARM (skipped when complete); -> the run folder."""
    from eegsine.models.eeg_encoder import EEGEncoder
    from eegsine.training.diffusion import train_diffusion
    from eegsine.training.generate import evaluate_run
    from eegsine.training.joint import encoder_retrieval, fresh_encoder

    enc_run = train_stage_one(ds, work, seed, log)
    run = work / f"seed{seed}" / arm
    if RECORD in _metrics(run):
        log(f"seed {seed} {arm}: complete, skipped")
        return run
    cfg = arm_config(arm, seed, enc_run, budget)
    _share(shared, "vae", run)
    t0 = time.perf_counter()
    log(f"seed {seed} {arm}: training ({cfg.epochs} epochs x {cfg.steps_per_epoch} steps, mode {cfg.mode}) in {run}")
    with _joint_encoder_init(ARMS[arm]["init"]):
        train_diffusion(cfg, run, data=ds)
    train_s = time.perf_counter() - t0
    _publish(run, "vae", shared)
    for d in sorted(shared.glob("domain-cnn-*")) if shared.exists() else []:
        _share(shared, d.name, run)
    t1 = time.perf_counter()
    log(f"seed {seed} {arm}: evaluating generation on the test split")
    gen = evaluate_run(run, split="test", data=ds, seed=0)
    eval_s = time.perf_counter() - t1
    for d in run.glob("domain-cnn-*"):
        _publish(run, d.name, shared)
    # the encoder each arm starts from (epoch 0) and ends with, scored like the joint module scores it
    aligned = EEGEncoder.from_pretrained(enc_run / "model")
    start = fresh_encoder(aligned, seed) if ARMS[arm]["init"] == "fresh" else aligned
    from eegsine.models.diffusion import EEGDiffusion

    final = EEGDiffusion.from_pretrained(run / "model").encoder
    rec = {"arm": arm, "seed": seed, "encoder_init": ARMS[arm]["init"],
           "retrieval_val_start": encoder_retrieval(start, ds, seed),
           "retrieval_val_final": encoder_retrieval(final, ds, seed),
           "retrieval_test_final": encoder_retrieval(final, ds, seed, split="test"),
           "aligned_retrieval_val": encoder_retrieval(aligned, ds, seed),
           "aligned_retrieval_test": encoder_retrieval(aligned, ds, seed, split="test"),
           "train_wall_s": train_s, "eval_wall_s": eval_s, "eeg_acc": gen["conditions"]["eeg"]["acc"],
           "data_sha256": data_fingerprint(ds)}
    update_metrics(run, RECORD, rec)
    log(f"seed {seed} {arm}: done (train {train_s:.0f} s, eval {eval_s:.0f} s): retrieval val "
        f"{rec['retrieval_val_start']:.3f} -> {rec['retrieval_val_final']:.3f}, EEG gen acc {rec['eeg_acc']:.3f}")
    return run


# -- collecting -----------------------------------------------------------------------------------
def arm_record(run: Path) -> dict[str, Any]:
    """What results.json keeps of one complete arm (per-step gradient norms to 4 significant digits)."""
    m = _metrics(run)
    d, g, r = m["diffusion"], m["generation"], m[RECORD]
    cfg = json.loads((run / "config.json").read_text())
    hist = d["history"]
    joint = d.get("joint")
    if joint is not None:  # the joint module's per-epoch score; epoch 0 is the starting encoder
        retrieval = [r["retrieval_val_start"]] + [h["encoder_retrieval_top1"] for h in hist]
    else:                  # frozen: the aligned encoder's score at every epoch (checked on the final model)
        retrieval = [r["retrieval_val_start"]] * (len(hist) + 1)
    out: dict[str, Any] = {
        "arm": r["arm"], "seed": r["seed"], "encoder_init": r["encoder_init"],
        "settings": {k: cfg[k] for k in ("mode", "image_cond_frac", "epochs", "steps_per_epoch", "batch_size", "lr",
                                         "encoder_lr", "warmup_steps", "grad_clip", "seed")},
        "steps": int(sum(h["steps"] for h in hist)),
        "params": {k: int(d["params"][k]) for k in ("encoder", "unet") if k in d.get("params", {})},
        "train_wall_s": round(r["train_wall_s"], 1), "eval_wall_s": round(r["eval_wall_s"], 1),
        "seconds_per_epoch": round(d["seconds_per_epoch"], 2),
        "retrieval_val_per_epoch": retrieval,
        "retrieval_val_final": r["retrieval_val_final"], "retrieval_test_final": r["retrieval_test_final"],
        "aligned_retrieval_val": r["aligned_retrieval_val"], "aligned_retrieval_test": r["aligned_retrieval_test"],
        "val_loss_per_epoch": [h["val_loss"] for h in hist],
        "generation": {
            "split": g["split"], "n_trials": g["n_trials"], "feature_network": g["feature_network"],
            "feature_network_test_top1": g.get("feature_network_test_top1"),
            "ground_truth_acc": g["ground_truth"]["acc"], "sampler": g["sampler"], "steps": g["steps"],
            "guidance": g["guidance"],
            "conditions": {c: {k: g["conditions"][c][k] for k in ("acc", "acc_ci", "fid_domain", "fid_domain_ci")}
                           for c in CONDITIONS}},
    }
    if joint is not None:
        rows = json.loads((run / joint["grad_log"]).read_text())["rows"]
        out["grad_norm_encoder"] = [_sig(x[1]) for x in rows]
        out["grad_norm_unet"] = [_sig(x[2]) for x in rows]
    return out


def _domain_record(shared: Path) -> dict[str, Any] | None:
    """Which domain network scored every arm: its config, test top-1 and the sha256 of its weights."""
    folder = next(iter(sorted(shared.glob("domain-cnn-*"))), None) if shared.exists() else None
    if folder is None:
        return None
    w = folder / "model.safetensors"
    stats = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else {}
    return {"name": folder.name, "config": json.loads((folder / "config.json").read_text()),
            "test_top1": stats.get("test_top1"),
            "weights_sha256": hashlib.sha256(w.read_bytes()).hexdigest() if w.exists() else None}


def _host() -> dict[str, Any]:
    import torch

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in flags.splitlines() if ln.startswith("model name")), "")
    isa = sorted({f for f in ("avx2", "avx512_vnni") if f" {f}" in flags})
    return {"cpu": model or platform.processor(), "isa": isa, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def _commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %s"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip()[:120]
    except (OSError, subprocess.SubprocessError):
        return ""


def collect(work: Path, arms: list[str], seeds: list[int], ds, argv: list[str], started: float) -> dict[str, Any]:
    runs = {(a, s): work / f"seed{s}" / a for s in seeds for a in arms}
    done = {k: arm_record(p) for k, p in runs.items() if RECORD in _metrics(p)}
    info = ds.info or {}
    return {
        "what": "issue #18 part 4: joint vs two-stage training of the EEG encoder, same data, UNet budget and seeds",
        "command": "python -m eegsine.bench.experiments.two_stage " + " ".join(argv),
        "collected_at_commit": _commit(), "host": _host(),
        "data": {"name": ds.name, "config": info.get("config"), "n_trials": int(len(ds.x)),
                 "n_chans": ds.n_chans, "n_times": ds.n_times, "sfreq": ds.sfreq, "n_classes": ds.n_outputs,
                 "splits": {k: int(len(v)) for k, v in ds.splits.items()}, "sha256": data_fingerprint(ds)},
        "retrieval": "1-NN EEG->EEG (cosine) top-1, validation split (test for *_test_*), gallery: the run's "
                     "train trials (eegsine.training.joint.encoder_retrieval)",
        "grad_norm": "L2 norm of the gradient reaching the encoder / UNet parameters, per step, before clipping",
        "shared": "one VAE (stage A) and one domain feature network, trained in the first arm and copied into the "
                  "others; stage one (tiny encoder preset, no controls) is trained once per seed",
        "arms": {a: ARMS[a]["label"] for a in arms}, "seeds": seeds,
        "chance": 1.0 / ds.n_outputs,
        "complete": [f"{a}/seed{s}" for (a, s) in done],
        "missing": [f"{a}/seed{s}" for (a, s) in runs if (a, s) not in done],
        "wall_s_this_invocation": round(time.perf_counter() - started, 1),
        "results": [done[k] for k in runs if k in done],
    }


# -- rendering (from results.json only) --------------------------------------------------------------
def _f(x: float | None, nd: int = 3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def _ci(v: dict) -> str:
    lo, hi = v["acc_ci"]
    return f"{v['acc']:.3f} [{lo:.2f}, {hi:.2f}]"


def render_table(res: dict[str, Any]) -> str:
    """table.md: one row per arm and seed, then the means over seeds; every number from ``res``."""
    rows = res["results"]
    d = res["data"]
    steps = sorted({r["steps"] for r in rows})
    lines = [
        "<!-- rendered by `python -m eegsine.bench.experiments.two_stage render` from results.json; do not edit -->",
        f"Data: {d['name']} ({d['n_trials']} trials, {d['n_chans']} ch x {d['n_times']} samples at {d['sfreq']:g} Hz, "
        f"{d['n_classes']} classes; splits {', '.join(f'{k} {v}' for k, v in d['splits'].items())}). "
        f"UNet budget per arm: {', '.join(map(str, steps))} steps. Chance {res['chance']:.3f}.",
        "",
        "**Encoder** (1-NN retrieval top-1; epoch 0 is the encoder the arm starts from; gradient norm reaching the "
        f"encoder, mean of the first / last {WINDOW} steps, the UNet's beside it, and both per weight: "
        "norm / sqrt(parameters), since the UNet has ~10x the encoder's weights)",
        "",
    ]
    lines += md_table(["arm", "seed", "retrieval val: epoch 0 → final", "retrieval test (final)",
                       "aligned encoder val / test", "encoder grad norm first → last", "UNet grad norm first → last",
                       "per weight, encoder / UNet (last)", "val loss (final)"], [_encoder_cells(r) for r in rows])
    n_ep = max((len(r["retrieval_val_per_epoch"]) for r in rows), default=0)
    lines += ["", "**Encoder retrieval (val) per epoch** (two-stage: frozen, the same encoder every epoch)", ""]
    lines += md_table(["arm", "seed", *(str(e) for e in range(n_ep))],
                      [[r["arm"], str(r["seed"]), *(f"{v:.2f}" for v in r["retrieval_val_per_epoch"])] for r in rows])
    g0 = rows[0]["generation"] if rows else None
    lines += [
        "",
        "**Generation** (test split" + (f", {g0['n_trials']} trials, {g0['sampler']} {g0['steps']} steps, guidance "
                                        f"{g0['guidance']:g}; n-way accuracy of the {g0['feature_network']} "
                                        f"classifier on the generated images [95% bootstrap CI], ground truth "
                                        f"{g0['ground_truth_acc']:.3f}" if g0 else "") + ")",
        "",
    ]
    gen = [(r, r["generation"]["conditions"]) for r in rows]
    lines += md_table(["arm", "seed", "EEG-conditioned acc", "class-only acc", "shuffled-EEG acc", "FID (EEG)",
                       "train s", "eval s"],
                      [[r["arm"], str(r["seed"]), _ci(c["eeg"]), _ci(c["class-only"]), _ci(c["shuffled-eeg"]),
                        f"{c['eeg']['fid_domain']:.2f}", f"{r['train_wall_s']:.0f}", f"{r['eval_wall_s']:.0f}"]
                       for r, c in gen])
    seeds_of = {a: [r for r in rows if r["arm"] == a] for a in res["arms"]}
    if any(len(v) > 1 for v in seeds_of.values()):
        lines += ["", "**Means over seeds**", ""]
        lines += md_table(["arm", "seeds", "retrieval val final", "retrieval test final", "EEG acc", "class-only acc",
                           "shuffled-EEG acc"], [_mean_cells(a, rs) for a, rs in seeds_of.items() if rs])
    if res.get("missing"):
        lines += ["", f"Not run (budget): {', '.join(res['missing'])}."]
    return "\n".join(lines) + "\n"


def _encoder_cells(r: dict) -> list[str]:
    """One arm and seed of the encoder table: retrieval, gradient norms (first / last window), val loss."""
    rv = r["retrieval_val_per_epoch"]
    if "grad_norm_encoder" in r:
        e0, e1 = window_means(r["grad_norm_encoder"])
        u0, u1 = window_means(r["grad_norm_unet"])
        gn_e, gn_u = f"{e0:.2e} → {e1:.2e}", f"{u0:.2e} → {u1:.2e}"
        n = r.get("params", {})
        per = (f"{per_weight(e1, n['encoder']):.2e} / {per_weight(u1, n['unet']):.2e}"
               if n.get("encoder") and n.get("unet") else "—")
    else:
        gn_e, gn_u, per = "0 (frozen)", "—", "—"
    return [r["arm"], str(r["seed"]), f"{rv[0]:.3f} → {r['retrieval_val_final']:.3f}",
            f"{r['retrieval_test_final']:.3f}", f"{r['aligned_retrieval_val']:.3f} / {r['aligned_retrieval_test']:.3f}",
            gn_e, gn_u, per, f"{r['val_loss_per_epoch'][-1]:.4f}"]


def _mean_cells(arm: str, rs: list[dict]) -> list[str]:
    """One arm's means over its seeds."""
    acc = {k: seed_mean([r["generation"]["conditions"][k]["acc"] for r in rs]) for k in CONDITIONS}
    return [arm, str(len(rs)), _f(seed_mean([r["retrieval_val_final"] for r in rs])),
            _f(seed_mean([r["retrieval_test_final"] for r in rs])), _f(acc["eeg"]), _f(acc["class-only"]),
            _f(acc["shuffled-eeg"])]


COLORS = {"two-stage": "tab:green", "joint": "tab:red", "joint-aligned": "tab:orange", "two-stage-img": "tab:blue"}


def render_figure(res: dict[str, Any], path: Path) -> Path:
    """Retrieval per epoch (every arm, every seed), the encoder's gradient norm per step (joint arms), and the
    EEG-conditioned generation accuracy beside its controls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["results"]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 1.15, 1]})
    styles = ["-", "--", ":"]
    seeds = sorted({r["seed"] for r in rows})
    for r in rows:
        ls = styles[seeds.index(r["seed"]) % 3]
        col = COLORS.get(r["arm"], "k")
        rv = r["retrieval_val_per_epoch"]
        a.plot(range(len(rv)), rv, ls, marker="o", ms=2.5, color=col, lw=1, label=f"{r['arm']} s{r['seed']}")
        if "grad_norm_encoder" in r:
            k = 25
            b.semilogy(running_mean(r["grad_norm_encoder"], k), ls, color=col, lw=1,
                       label=f"{r['arm']} s{r['seed']}: encoder")
            b.semilogy(running_mean(r["grad_norm_unet"], k), ls, color=col, lw=0.6, alpha=0.45,
                       label=f"{r['arm']} s{r['seed']}: UNet")
    a.axhline(res["chance"], color="gray", ls=":", lw=1, label="chance")
    a.set_xlabel("epoch (0: the starting encoder)"), a.set_ylabel("1-NN retrieval top-1 (val)")
    a.set_ylim(0, max([0.7] + [max(r["retrieval_val_per_epoch"]) + 0.05 for r in rows]))
    a.set_title("encoder retrieval per epoch", fontsize=9), a.legend(fontsize=6, ncol=2)
    b.set_xlabel("step"), b.set_ylabel("gradient L2 norm (running mean of 25)")
    b.set_title("gradient reaching the encoder (dark) and UNet (light)", fontsize=9), b.legend(fontsize=5.5, ncol=2)
    arms = [x for x in res["arms"] if any(r["arm"] == x for r in rows)]
    w = 0.8 / max(1, len(CONDITIONS))
    for j, cond in enumerate(CONDITIONS):
        for i, arm in enumerate(arms):
            got = [r["generation"]["conditions"][cond] for r in rows if r["arm"] == arm]
            vals = [v["acc"] for v in got]
            x = i + (j - 1) * w
            c.bar(x, seed_mean(vals), w, color=["tab:purple", "tab:gray", "silver"][j], label=cond if i == 0 else None)
            for v in got:  # each seed's value with its 95% bootstrap interval
                c.errorbar([x], [v["acc"]], yerr=[[v["acc"] - v["acc_ci"][0]], [v["acc_ci"][1] - v["acc"]]], fmt="k.",
                           ms=3, lw=0.8, capsize=2)
    c.axhline(res["chance"], color="gray", ls=":", lw=1)
    c.set_xticks(range(len(arms)), arms, fontsize=7)
    c.set_ylabel("generated-image n-way accuracy (test)")
    c.set_title("generation: mean over seeds (dots: seeds, 95% CI)", fontsize=9), c.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def render(out: Path) -> tuple[str, Path]:
    res = json.loads((out / "results.json").read_text())
    table = render_table(res)
    (out / "table.md").write_text(table)
    return table, render_figure(res, out / FIGURE)


# -- command line ----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eegsine.bench.experiments.two_stage",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train the missing arms, then write results.json, table.md and the figure")
    r.add_argument("--out", required=True, type=Path, help="results folder (results.json, table.md, figure)")
    r.add_argument("--work", type=Path, default=Path("runs/two-stage"), help="run folders of the arms")
    r.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(DEFAULT_ARMS),
                   help="arms to train and compare")
    r.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds of every arm")
    r.add_argument("--epochs", type=int, default=0, help="UNet epochs (0: the tiny preset's)")
    r.add_argument("--steps-per-epoch", type=int, default=0, help="UNet steps per epoch (0: the tiny preset's)")
    r.add_argument("--vae-epochs", type=int, default=None, help="stage A epochs (default: the tiny preset's)")
    r.add_argument("--encoder-lr", type=float, default=1e-3,
                   help="joint arms: the encoder's learning rate (default 1e-3, the tiny preset's UNet lr)")
    r.add_argument("--grid-samples", type=int, default=1, help="samples per trial in each epoch's grid")
    r.add_argument("--data-options", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra synthetic-vep options over the tiny preset's (tests: a smaller set)")
    r.add_argument("--domain-net", type=Path, default=None, metavar="DIR",
                   help="an already trained domain-cnn-<images> folder to score with (e.g. the tiny pipeline's "
                        "runs/tiny/diffusion/domain-cnn-mnist; it depends on the image set only); default: trained "
                        "in the first arm")
    r.add_argument("--threads", type=threads_type, default=1, help="torch threads")
    r.add_argument("--collect-only", action="store_true", help="train nothing; collect the complete arms")
    q = sub.add_parser("render", help="re-render table.md and the figure from results.json")
    q.add_argument("--out", required=True, type=Path, help="results folder holding results.json")
    q.add_argument("--check", action="store_true", help="exit 1 when table.md is not what results.json renders")
    return p


def _load(data_options: list[str]):
    from eegsine.training.encoder import load_data

    cfg = diffusion_preset("tiny")
    cfg = cfg.replace(data_options=list(cfg.data_options) + list(data_options))
    return load_data(cfg)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.cmd == "render":
        res = json.loads((args.out / "results.json").read_text())
        table = render_table(res)
        if args.check:
            ok = (args.out / "table.md").exists() and (args.out / "table.md").read_text() == table
            print("table.md matches results.json" if ok else "table.md differs from what results.json renders")
            return 0 if ok else 1
        render(args.out)
        print(table)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    log_file = args.work / "two_stage.log"

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        with log_file.open("a") as f:
            f.write(line + "\n")

    ds = _load(args.data_options)
    budget = Budget(args.epochs, args.steps_per_epoch, args.vae_epochs, args.encoder_lr, args.grid_samples)
    work, shared = work_dirs(args.work, ds)
    log(f"data {ds.name}: {len(ds.x)} trials, sha256 {data_fingerprint(ds)[:16]}; arms {args.arms}, seeds "
        f"{args.seeds}; runs in {work}")
    if args.domain_net is not None and not (shared / args.domain_net.name / "config.json").exists():
        if not (args.domain_net / "config.json").exists() or not args.domain_net.name.startswith("domain-cnn-"):
            raise SystemExit(f"--domain-net {args.domain_net}: not a domain-cnn-<images> folder")
        shutil.copytree(args.domain_net, shared / args.domain_net.name)
        log(f"domain network copied from {args.domain_net}")
    if not args.collect_only:
        for seed in args.seeds:
            for arm in args.arms:
                run_arm(arm, seed, ds, work, shared, budget, log)
    res = collect(work, args.arms, args.seeds, ds, argv, started)
    res["domain_network"] = _domain_record(shared)
    (args.out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    table, fig = render(args.out)
    print(table)
    log(f"wrote {args.out / 'results.json'}, {args.out / 'table.md'}, {fig}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
