"""Adversarial training of the standard / sine-bounded classifiers (``eegsine train classifier``).

Modes: ``natural``; ``fgsm_rs`` -- FGSM with a random start (Wong et al. 2020, torchattacks
``FFGSM``); ``fgsm_rs_wong`` -- the same step as Wong et al.'s own code takes it (the gradient at the
unclipped random start, :class:`eegsine.attacks.algorithms.FGSMRSWong`); ``pgd`` -- Madry et al. 2018
(torchattacks ``PGD``). The checkpoint written as ``model.safetensors`` is the one with the best
robust accuracy (PGD on a held-out validation split carved out of the training set, never the test set; natural training
selects on clean validation accuracy). Catastrophic
overfitting -- validation PGD accuracy collapsing while FGSM accuracy keeps rising -- is
logged as a WARNING and stored in metrics.json. Per-layer gradient norms of the first
steps are logged and plotted (``grad_norms.png``) so the head-initialisation claim can be
checked; :func:`init_gradient_probe` compares the three head inits side by side.

Under ``accelerate launch`` (several processes) the model is Accelerate's DDP: every process draws the same
global batch order and trains on its slice of each batch (the loss scaled so that the averaged gradient is
the whole batch's mean), crafts its slice's adversarial examples with its own random stream, and the main
process alone validates, checkpoints and writes; with BatchNorm the statistics are per process, as in any
DDP run without SyncBatchNorm (tests/test_shard.py checks 2 gloo processes against 1 in natural mode).
``mixed_precision`` autocasts the training forward/backward only; the attacks keep fp32 gradients.

Hand-written: the loop (epoch, step, evaluation, ~90 lines). One process runs it without Accelerate (its
results stay what they were) and the per-step gradient logging stays simple; the attacks are torchattacks' FGSM,
FFGSM and PGD, built through the attack registry (:mod:`eegsine.attacks.registry`); the
learning rate, checkpoint and run folder come from :mod:`eegsine.training.loop`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from eegsine.progress import tqdm

from eegsine.attacks.algorithms import AttackParams, build_attack  # torchattacks there, with how to install it
from eegsine.bench.report.doc import md_table
from eegsine.runs.checkpoint import load_weights, save_weights
from eegsine.errors import DataMissingError, UserError
from eegsine.io import atomic_write_text, quiet_logger, update_metrics
from eegsine.models.classifier import ClassifierConfig, build_classifier
from eegsine.models.protocol import MODEL_DIR, Provenance
from eegsine.runs.plots import plot_accuracy_curves, plot_grad_norms, plot_layer_norms
from eegsine.runs.folder import RunFolder, main_process
from eegsine.training.configs import (CLASSIFIER_PRESETS, DATASETS, ClassifierTrainConfig,  # noqa: F401 - re-exported
                                     classifier_preset)
from eegsine.training.loop import (Checkpoint, autocast, cosine_warmup, data_parallel, open_run, rank_seed,
                                   resolve_device, several_processes, start_log, use_device)
from eegsine.data import load_images

BEST_FILE = "best.safetensors"


# -- data -------------------------------------------------------------------------------------
def load_split(cfg: ClassifierTrainConfig) -> dict[str, torch.Tensor]:
    """Train / validation / test tensors; validation is a seeded slice of the training set."""
    kwargs = {"root": cfg.data_root} if cfg.data_root else {}
    try:
        ds = load_images(cfg.dataset, **kwargs)
    except DataMissingError as e:
        raise e.for_flag("--data-root") from None
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(ds.train_x))
    n_val = max(1, int(round(cfg.val_fraction * len(perm)))) if cfg.val_fraction > 0 else 0
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if cfg.n_train:
        if cfg.n_train > len(train_idx):
            raise UserError(f"ClassifierTrainConfig.n_train: {cfg.n_train} > {len(train_idx)} training images "
                            f"of {cfg.dataset}")
        train_idx = train_idx[: cfg.n_train]
    t = torch.from_numpy
    return {"train_x": t(ds.train_x[train_idx]), "train_y": t(ds.train_y[train_idx]),
            "val_x": t(ds.train_x[val_idx]), "val_y": t(ds.train_y[val_idx]),
            "test_x": t(ds.test_x), "test_y": t(ds.test_y), "n_classes": ds.n_classes, "source": ds.source}


def resolve_model_config(cfg: ClassifierTrainConfig, data: dict) -> ClassifierTrainConfig:
    """Take in_channels / image_size / n_classes from the data set."""
    c, h, w = data["train_x"].shape[1:]
    if h != w:
        raise UserError(f"{cfg.dataset}: square images expected, got {h}x{w}")
    return cfg.replace(model=cfg.model.replace(in_channels=int(c), image_size=int(h), n_classes=int(data["n_classes"])))


# -- evaluation during training ---------------------------------------------------------------
@torch.no_grad()
def _on(model: nn.Module, *ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``ts`` on the model's device (the data stay on the CPU; a batch moves when it is used)."""
    dev = next(model.parameters()).device
    return tuple(t.to(dev) for t in ts)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), bs):
        xb, yb = _on(model, x[i:i + bs], y[i:i + bs])
        correct += int((model(xb).argmax(1) == yb).sum())
    return correct / max(1, len(x))


def _attack_accuracy(atk, model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int = 250) -> float:
    correct = 0
    for i in range(0, len(x), bs):
        xb, yb = _on(model, x[i:i + bs], y[i:i + bs])
        adv = atk(xb, yb)
        with torch.no_grad():
            correct += int((model(adv).argmax(1) == yb).sum())
    return correct / max(1, len(x))


def validate_robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> dict[str, float]:
    """Clean, FGSM and PGD-``steps`` accuracy (eps in pixel units) on a validation subset."""
    model.eval()
    out = {"clean": _accuracy(model, x, y)}
    out["fgsm"] = _attack_accuracy(build_attack("fgsm", model, eps), model, x, y) if eps > 0 else out["clean"]
    pgd = build_attack("pgd-rs", model, eps, params=AttackParams(pgd_steps=steps)) if eps > 0 else None
    out["pgd"] = _attack_accuracy(pgd, model, x, y) if pgd is not None else out["clean"]
    return out


def detect_catastrophic_overfitting(history: list[dict]) -> str | None:
    """Wong et al.'s signature on the validation split: PGD accuracy halves from its best while FGSM rises."""
    if len(history) < 2:
        return None
    cur, prev = history[-1], history[-2]
    best_pgd = max(h["pgd"] for h in history[:-1])
    if best_pgd >= 0.2 and cur["pgd"] < 0.5 * best_pgd and cur["fgsm"] >= prev["fgsm"] - 0.01:
        return (f"catastrophic overfitting at step {cur['step']}: validation PGD accuracy {cur['pgd']:.3f} "
                f"(best {best_pgd:.3f}) while FGSM accuracy {prev['fgsm']:.3f} -> {cur['fgsm']:.3f}")
    return None


# -- gradient norms ---------------------------------------------------------------------------------
def layer_names(model: nn.Module) -> list[str]:
    """Weighted layers in forward order (convs, linears, head)."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) or n == "head"]


def layer_grad_norms(model: nn.Module) -> dict[str, float]:
    mods = dict(model.named_modules())
    return {n: float(mods[n].weight.grad.norm()) if mods[n].weight.grad is not None else 0.0
            for n in layer_names(model)}


def init_gradient_probe(model_cfg: ClassifierConfig, x: torch.Tensor, y: torch.Tensor, out_dir: str | Path,
                        inits: tuple[str, ...] = ("siren", "poster", "default"), n_batches: int = 5,
                        batch_size: int = 64, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per-layer gradient norms at initialisation for each head init (mean over ``n_batches``).

    Writes ``init_probe.png`` and returns {init: {layer: norm}}: the claim under test is that
    the special head init keeps the early-layer gradients of a sine head alive.
    """
    out: dict[str, dict[str, float]] = {}
    for init in inits:
        torch.manual_seed(seed)
        model = build_classifier(model_cfg.replace(init=init)).train()
        acc: dict[str, float] = {}
        for b in range(n_batches):
            xb, yb = x[b * batch_size:(b + 1) * batch_size], y[b * batch_size:(b + 1) * batch_size]
            model.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            for k, v in layer_grad_norms(model).items():
                acc[k] = acc.get(k, 0.0) + v / n_batches
        out[init] = acc
    plot_layer_norms(out, layer_names(build_classifier(model_cfg)), Path(out_dir) / "init_probe.png",
                     f"{model_cfg.arch}, {model_cfg.head} head (omega={model_cfg.omega}, A={model_cfg.amplitude}): "
                     f"gradient norms at initialisation")
    return out


# -- training ---------------------------------------------------------------------------------------
# ClassifierTrainConfig.mode -> attack registry name
TRAIN_ATTACK = {"fgsm_rs": "fgsm-rs", "fgsm_rs_wong": "fgsm-rs-wong", "pgd": "pgd-rs"}


def _lr_at(cfg: ClassifierTrainConfig, step: int, total: int) -> float:
    """constant; a cosine from lr to 0 over the run (no warm-up); or cyclic: Wong et al. 2020's triangle,
    ``np.interp(t, [0, 2/5, 1] * run, [0, lr, 0])`` at ``t = step + 1`` (their ``epoch + (i + 1) / len``)."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "cyclic":
        return float(np.interp(step + 1, [0, 0.4 * total, total], [0.0, cfg.lr, 0.0]))
    return cosine_warmup(step, total, 0, cfg.lr)


def _train_attack(cfg: ClassifierTrainConfig, model: nn.Module, eps: float):
    if cfg.mode == "natural" or eps <= 0:
        return None
    p = AttackParams(pgd_steps=cfg.steps, pgd_alpha=cfg.alpha, fgsm_rs_alpha=cfg.alpha)
    return build_attack(TRAIN_ATTACK[cfg.mode], model, eps, cfg.model.n_classes, p)


@dataclasses.dataclass
class _Run:
    """What the steps of one classifier run share."""

    cfg: ClassifierTrainConfig
    model: nn.Module
    opt: torch.optim.Optimizer
    data: dict
    run_dir: Path
    log: logging.Logger
    ckpt: Checkpoint
    prog: dict
    steps_per_epoch: int
    net: nn.Module | None = None   # what trains: the model, or Accelerate's DDP wrapper of it
    acc: object = None             # Accelerate's Accelerator when several processes run, else None
    scaler: object = None          # fp16: torch's gradient scaler

    @property
    def is_main(self) -> bool:
        return self.acc is None or self.acc.is_main_process

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs


def train_classifiers(heads: dict[str, tuple[Path, ClassifierTrainConfig]], init_probe: bool = True) -> dict:
    """Train each named head into its folder (a preset's standard and sine heads, or one model): what
    ``eegsine train classifier`` runs. With ``init_probe``, a sine head also gets the gradient norms at
    initialisation of the three head inits (``init_probe.png``). Returns the per-head summary it prints."""
    summary = {}
    for name, (run, cfg) in heads.items():
        m = train_classifier(cfg, run)
        if m.get("process_index"):  # another process of accelerate launch: the main one reports
            continue
        summary[name] = {"run": str(run), "best_val": m["best"], "test_clean_accuracy": m["test_clean_accuracy"],
                         "train_wall_s": m["train_wall_s"],
                         # None: no validation images watched it (val_fraction 0), so it was not checked
                         "catastrophic_overfitting": bool(m["catastrophic_overfitting"]) if m.get("history") else None}
        if init_probe and cfg.model.head == "sine":
            data = load_split(cfg)
            mcfg = resolve_model_config(cfg, data).model
            probe = init_gradient_probe(mcfg, data["train_x"][:320], data["train_y"][:320], run)
            update_metrics(run, "init_probe", probe)
            summary[name]["init_probe"] = str(Path(run) / "init_probe.png")
    return summary


def classifier_provenance(cfg: ClassifierTrainConfig) -> Provenance:
    """What the trained classifier records: its data set (and folder), eps, training mode and seed."""
    return Provenance(trained_by=cfg.KIND, data=cfg.dataset,
                      data_options={"root": cfg.data_root} if cfg.data_root else {}, train_eps=cfg.eps,
                      train_attack=cfg.mode, seed=cfg.seed)


def train_classifier(cfg: ClassifierTrainConfig, run_dir: str | Path, data: dict | None = None) -> dict:
    """Train one classifier into ``run_dir`` (resuming from its checkpoint if present); return its metrics.

    The folder follows :class:`~eegsine.runs.folder.RunFolder`'s protocol: locked while training,
    ``config.json`` written once data and model are ready (the model's input shape comes from the
    data, so the config is compared with the folder's only then).
    """
    with open_run(run_dir, lock=not several_processes() or main_process()) as run:
        return _train(cfg, run, data)


def _train(cfg: ClassifierTrainConfig, run: RunFolder, data: dict | None) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = data or load_split(cfg)
    cfg = resolve_model_config(cfg, data)
    torch.manual_seed(cfg.seed)
    dev = resolve_device(cfg.device)
    acc = data_parallel(dev)
    dev = acc.device if acc is not None else dev
    model = use_device(build_classifier(cfg.model), dev)  # initialised on the CPU, then moved: the same weights
    opt = (torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay) if cfg.optimizer == "adam"
           else torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay,
                                nesterov=True))
    if acc is None or acc.is_main_process:
        run.write_config(cfg)  # only now: a failed attempt must not block the corrected retry
    log = start_log(run, "eegsine.train") if acc is None or acc.is_main_process else quiet_logger("eegsine.train")
    n = len(data["train_x"])
    ckpt = Checkpoint(run.path, {"model": model}, {"opt": opt})
    r = _Run(cfg, model, opt, data, run.path, log, ckpt, {}, math.ceil(n / cfg.batch_size), net=model, acc=acc,
             scaler=torch.amp.GradScaler(dev.type) if cfg.mixed_precision == "fp16" else None)
    r.prog = ckpt.resume({"step": 0, "history": [], "best": None, "co_events": [], "grad_norms": {}, "train_s": 0.0,
                          "seen": 0}, log, "training", "step", r.total_steps)
    if not r.prog["step"]:
        log.info(f"training {cfg.model.arch} ({cfg.model.head} head, init={cfg.model.init}) on {cfg.dataset} "
                 f"({n} train / {len(data['val_x'])} val images, {data['source']}), mode={cfg.mode}, eps={cfg.eps} "
                 f"(pixel units), {cfg.epochs} epochs x {r.steps_per_epoch} steps, on {dev}")
    if acc is not None:
        r.net = acc.prepare_model(model)  # DDP: gradients averaged across the processes
        torch.manual_seed(rank_seed(cfg.seed, acc.process_index))  # each process its own attack starts
    while r.prog["step"] < r.total_steps:
        _epoch(r)
    if not r.is_main:
        return {"process_index": acc.process_index, "processes": acc.num_processes}
    return _finish(r)


def _epoch(r: _Run) -> None:
    """The rest of the epoch the run stands in (a resumed run restarts mid-epoch at its step)."""
    cfg, prog = r.cfg, r.prog
    epoch, start = divmod(prog["step"], r.steps_per_epoch)
    perm = torch.from_numpy(np.random.default_rng(cfg.seed * 100_003 + epoch).permutation(len(r.data["train_x"])))
    eval_every = cfg.eval_every_steps or r.steps_per_epoch
    vx, vy = r.data["val_x"][: cfg.n_val_eval], r.data["val_y"][: cfg.n_val_eval]
    bar = tqdm(range(start, r.steps_per_epoch), desc=f"{cfg.model.head} epoch {epoch + 1}/{cfg.epochs}",
               initial=start, total=r.steps_per_epoch, leave=False, dynamic_ncols=True, disable=not r.is_main)
    for b in bar:
        t0 = time.perf_counter()
        idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        loss, acc, eps = _step(r, r.data["train_x"][idx], r.data["train_y"][idx])
        prog["seen"] += len(idx)
        prog["train_s"] += time.perf_counter() - t0
        bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.2f}", eps=f"{eps:.2f}")
        if r.is_main and len(vx) and (prog["step"] % eval_every == 0 or prog["step"] == r.total_steps):
            _evaluate(cfg, r.model, vx, vy, prog, r.run_dir, r.log)
        if r.is_main and cfg.ckpt_every_steps and prog["step"] % cfg.ckpt_every_steps == 0:
            r.ckpt.save(prog)
    bar.close()
    if r.is_main:
        r.ckpt.save(prog)


def _step(r: _Run, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """One optimizer step on the batch's adversarial examples; -> (loss, batch accuracy, eps used)."""
    cfg, model, prog = r.cfg, r.model, r.prog
    n_batch = len(x)
    if r.acc is not None:  # this process's slice of the global batch
        x, y = x.tensor_split(r.acc.num_processes)[r.acc.process_index], y.tensor_split(r.acc.num_processes)[
            r.acc.process_index]
    x, y = _on(model, x, y)
    step = prog["step"]
    ramp = min(1.0, (step + 1) / (cfg.eps_ramp_epochs * r.steps_per_epoch)) if cfg.eps_ramp_epochs > 0 else 1.0
    atk = _train_attack(cfg, model, cfg.eps * ramp)  # on the bare model, in fp32 (never through DDP)
    x_in = atk(x, y) if atk is not None and len(x) else x  # torchattacks evaluates in eval mode, restores train mode
    r.net.train()
    for g in r.opt.param_groups:
        g["lr"] = _lr_at(cfg, step, r.total_steps)
    with autocast(x.device, cfg.mixed_precision):
        logits = r.net(x_in)
        # several processes: the slice's summed loss over the global batch, x processes (DDP averages them), so
        # the gradient is the global batch's mean for any split; one process: the mean, as always
        loss = (F.cross_entropy(logits, y) if r.acc is None
                else F.cross_entropy(logits, y, reduction="sum") * (r.acc.num_processes / n_batch))
    if not math.isfinite(loss.item()):  # stop before the step: NaN weights are never checkpointed or saved
        raise UserError(f"training diverged: loss is {loss.item()} at step {step + 1} with lr={cfg.lr:g} "
                        f"({cfg.optimizer}); lower --lr")
    r.opt.zero_grad(set_to_none=True)
    _backward(r, loss)
    if step < cfg.grad_log_steps:
        for k, v in layer_grad_norms(model).items():
            prog["grad_norms"].setdefault(k, []).append(v)
    if r.scaler is not None:
        r.scaler.step(r.opt)
        r.scaler.update()
    else:
        r.opt.step()
    if step == 0 and not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise UserError(f"training diverged: the first step with lr={cfg.lr:g} ({cfg.optimizer}) made the "
                        "weights non-finite; lower --lr")
    prog["step"] = step + 1
    return loss.item(), (logits.argmax(1) == y).float().mean().item(), cfg.eps * ramp


def _backward(r: _Run, loss: torch.Tensor) -> None:
    """``loss.backward()``; fp16: scaled, then unscaled in place (the logged gradient norms are the real ones)."""
    if r.scaler is None:
        loss.backward()
        return
    r.scaler.scale(loss).backward()
    r.scaler.unscale_(r.opt)


def _finish(r: _Run) -> dict:
    """The final model (the best on validation, or with keep=last the last step's): save it, score it on the
    clean test split, write the report."""
    cfg, model, prog, data, run_dir = r.cfg, r.model, r.prog, r.data, r.run_dir
    if cfg.keep == "best" and (run_dir / BEST_FILE).exists():
        model.load_state_dict(load_weights(run_dir / BEST_FILE))
    model.eval()
    model.save_pretrained(run_dir / MODEL_DIR, classifier_provenance(cfg))
    test_clean = _accuracy(model, data["test_x"], data["test_y"])
    if prog["grad_norms"]:
        plot_grad_norms(prog["grad_norms"], run_dir / "grad_norms.png",
                        f"{cfg.model.head} head, init={cfg.model.init}: per-layer gradient norms, first "
                        f"{len(next(iter(prog['grad_norms'].values())))} steps ({cfg.mode}, {cfg.dataset})")
    n_val_eval = len(data["val_x"][: cfg.n_val_eval])
    metrics = {
        "dataset": cfg.dataset, "data_source": data["source"], "n_train": len(data["train_x"]),
        "n_val": len(data["val_x"]), "n_val_eval": n_val_eval, "mode": cfg.mode, "eps": cfg.eps,
        "eps_units": "[0,1] pixel",
        "head": cfg.model.head, "init": cfg.model.init, "steps": prog["step"], "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "history": prog["history"], "best": prog["best"], "catastrophic_overfitting": prog["co_events"],
        "test_clean_accuracy": test_clean, "n_test": len(data["test_x"]),
        "train_wall_s": round(prog["train_s"], 1),
        "train_images_per_s": round(prog["seen"] / max(prog["train_s"], 1e-9), 1),
        "grad_norms_first_steps": prog["grad_norms"],
    }
    if r.acc is not None:
        metrics["processes"] = r.acc.num_processes
    update_metrics(run_dir, "train", metrics)
    write_train_report(run_dir, cfg, metrics)
    best = prog["best"] or {}
    kept = ("the last step's weights; " if cfg.keep == "last" else
            f"best val (step {best.get('step')}): clean {best.get('clean', float('nan')):.3f}, "
            f"FGSM {best.get('fgsm', float('nan')):.3f}, PGD-{cfg.val_pgd_steps} {best.get('pgd', float('nan')):.3f} "
            f"at eps={cfg.eps} on {n_val_eval} val images; ")
    r.log.info(f"done: {kept}test clean {test_clean:.4f} ({len(data['test_x'])} images); "
               f"{metrics['train_wall_s']} s training")
    return metrics


def _score(cfg: ClassifierTrainConfig, res: dict) -> float:
    """Selection metric: PGD accuracy (ties -> clean) for adversarial training; clean accuracy for natural
    training, whose robust accuracy at eps=0.3 is ~0 and would favour a constant (untrained) predictor."""
    if cfg.mode == "natural":
        return res["clean"]
    return res["pgd"] + 1e-3 * res["clean"]


def _evaluate(cfg: ClassifierTrainConfig, model: nn.Module, vx: torch.Tensor, vy: torch.Tensor, prog: dict,
              run_dir: Path, log) -> None:
    t0 = time.perf_counter()
    eps = cfg.eps  # natural runs are validated at the same radius (their robust accuracy is the baseline)
    res = validate_robust(model, vx, vy, eps, cfg.val_pgd_steps)
    res["step"] = prog["step"]
    prog["history"].append(res)
    model.train()
    if prog["best"] is None or _score(cfg, res) > _score(cfg, prog["best"]):
        prog["best"] = dict(res)
        if cfg.keep == "best":
            save_weights(run_dir / BEST_FILE, model.state_dict())
    co = detect_catastrophic_overfitting(prog["history"])
    if co:
        prog["co_events"].append(co)
        log.warning(co)
    log.info(f"step {prog['step']}: val clean {res['clean']:.3f}  FGSM {res['fgsm']:.3f}  PGD-{cfg.val_pgd_steps} "
             f"{res['pgd']:.3f} (eps={eps}, {len(vx)} images, {time.perf_counter() - t0:.1f} s)")


def write_train_report(run_dir: Path, cfg: ClassifierTrainConfig, m: dict) -> None:
    """``train.md`` (one table) and ``curves.png`` (validation accuracy over steps)."""
    b = m["best"] or {}
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    kept = (f"the weights after the last step (no checkpoint selection; {m['n_val_eval']} validation images "
            "watched)" if cfg.keep == "last" else
            f"checkpoint chosen on {m['n_val_eval']} held-out validation images by PGD-{cfg.val_pgd_steps} accuracy")
    val = [[f"validation (best, step {b.get('step')})", pct(b.get("clean")), pct(b.get("fgsm")), pct(b.get("pgd"))]]
    lines = [f"### {cfg.model.head} head ({cfg.model.arch}, init={cfg.model.init}) -- "
             f"{cfg.mode} training on {cfg.dataset}",
             "", f"eps = {cfg.eps} ([0, 1] pixel units); {m['n_train']} training images, {cfg.epochs} epochs; "
             f"{kept}.",
             "",
             *md_table(["split", "clean %", "FGSM %", f"PGD-{cfg.val_pgd_steps} %"],
                       (val if b else []) + [[f"test ({m['n_test']} images)", pct(m["test_clean_accuracy"]), "", ""]]),
             "",
             f"Training wall time {m['train_wall_s']} s ({m['train_images_per_s']} images/s incl. attack generation).",
             "Catastrophic overfitting: " + ("; ".join(m["catastrophic_overfitting"]) or (
                 "not detected" if m["history"] else "not watched (no validation images)")) + "."]
    atomic_write_text(run_dir / "train.md", "\n".join(lines) + "\n")
    if m["history"]:
        plot_accuracy_curves(m["history"], ("clean", "fgsm", "pgd"), run_dir / "curves.png",
                             f"validation accuracy (eps={cfg.eps})",
                             f"{cfg.model.head} head, {cfg.mode} on {cfg.dataset}")
