"""Resumable, per-example robustness evaluation of two classifier heads on the same images, with paired statistics.

``python -m eegsine.bench.experiments.paired_eval run --out DIR --model standard=MODEL_DIR --model sine=MODEL_DIR``
attacks both models chunk by chunk on one seeded subset of the test split and keeps every
(model, attack, eps, chunk) result -- which images the attack broke, and for AutoAttack which component
broke each one -- as a small ``.npz`` under ``DIR/cache/`` (written atomically: temp file, fsync, rename).
A killed run continues at the first missing chunk; the cache is keyed by the models' weights (sha256) and
the evaluation settings, so it can be committed and continued on another machine.
``python -m eegsine.bench.experiments.paired_eval report --out DIR --model ...`` assembles what is there (complete or
not) into ``robustness.json`` / ``robustness.md``: per attack and eps each head's accuracy (Wilson 95%
interval), the per-example **worst case over every attack run at that eps** (incl. the adaptive BPDA /
pre-sine attacks and the transfer attack on the sine head), and for every row both heads share, the
paired comparison on the *same* images: McNemar's exact test and Newcombe's 95% interval for the
accuracy difference (:mod:`eegsine.bench.robustness.paired_stats`).

Every reported figure is the **per-example worst case across eps**: an image broken at a smaller radius
counts as broken at every larger radius (its adversarial example lies inside the larger L-inf ball), per
attack on the same images (:func:`eegsine.bench.robustness.eps_nesting.cumulative_robust`) and in the worst case over
attacks, so every row is monotone in eps by construction. The cache keeps each chunk's raw run; each
attack row keeps the run's own figure (``accuracy_single_run``) and the images the nesting added
(``broken_at_smaller_eps``), which the ``monotone_in_eps`` sanity check judges.

The plan (:func:`plan_for`) follows the source's MNIST grids: FGSM 0.1-0.3, PGD 0.3-0.7 (plus 0.2, so
the worst case at AutoAttack's smallest eps has PGD in it), APGD-CE / APGD-DLR / transfer at 0.2-0.5 and
AutoAttack standard at 0.2-0.5 (on the first ``n_aa`` images), eps 0.3 first; last, a stand-alone Square
(5,000 queries) at 0.3 and 0.2 on the first ``n_aa`` images. eps is L-inf in [0, 1]
pixel units. Every attack comes from :mod:`eegsine.attacks.algorithms` through the registry; only clean-correct
images are attacked, and an image counts as broken if it is misclassified clean or under attack.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from eegsine.bench.report.doc import md_table
from eegsine.bench.robustness.eps_nesting import CAPTION, and_prefix, broken_at_smaller_eps, only_below
from eegsine.bench.robustness.paired_stats import paired_compare, wilson_ci
from eegsine.bench.robustness.shard import Processes, chunk_seed
from eegsine.bench.robustness.square_ladder import fold as fold_ladders, render as render_ladder
from eegsine.config import threads_type
from eegsine.errors import UserError
from eegsine.attacks.registry import AttackParams, ATTACKS, describe
from eegsine.bench.robustness.configs import RobustnessConfig
from eegsine.data import load_images
from eegsine.io import atomic_write_bytes, atomic_write_text, sha256_file, write_json
from eegsine.models.protocol import WEIGHTS_FILE, model_folder
from eegsine.runs.folder import main_process

HEAD_ORDER = ("standard", "sine")
SUBSET_ATTACKS = ("autoattack", "square")  # run on the first n_aa images only


@dataclasses.dataclass(frozen=True)
class Job:
    attack: str
    eps: float
    n: int  # first n images of the subset


def plan_for(n_eval: int = 1000, n_aa: int = 500) -> list[Job]:
    """The issue's grid, eps 0.3 first, then 0.2, 0.4, 0.5, then PGD's larger radii."""
    jobs = [Job("fgsm", e, n_eval) for e in (0.1, 0.2, 0.3)]
    per_eps = ["pgd-ce", "pgd-margin", "apgd-ce", "apgd-dlr", "bpda-pgd", "presine-pgd", "transfer", "autoattack"]
    for e in (0.3, 0.2, 0.4, 0.5):
        jobs += [Job(a, e, n_aa if a == "autoattack" else n_eval) for a in per_eps]
    for e in (0.6, 0.7):
        jobs += [Job(a, e, n_eval) for a in ("pgd-ce", "pgd-margin", "bpda-pgd", "presine-pgd")]
    # a second, independently seeded Square (5,000 queries) on every clean-correct image, not only on AutoAttack's
    # survivors: the reference AutoAttack flags Square gains on these models (a gradient-masking sign)
    jobs += [Job("square", e, n_aa) for e in (0.3, 0.2)]
    return jobs


@dataclasses.dataclass
class Settings:
    """What one chunk's result depends on besides the model's weights (hashed into the cache folder)."""

    dataset: str = "mnist"
    n_eval: int = 1000
    n_aa: int = 500
    chunk: int = 100
    seed: int = 0
    pgd_steps: int = 40
    pgd_restarts: int = 5
    apgd_steps: int = 100
    fab_steps: int = 100
    square_queries: int = 5000
    n_targets: int = 9

    def key(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def params(self):
        return AttackParams(pgd_steps=self.pgd_steps, pgd_restarts=self.pgd_restarts, apgd_steps=self.apgd_steps,
                            fab_steps=self.fab_steps, square_queries=self.square_queries, n_targets=self.n_targets,
                            seed=self.seed)


def _fmt(e: float) -> str:
    return f"{e:g}"


class ChunkCache:
    """``<out>/cache/<settings key>/<label>-<weights sha256[:12]>/<attack>__eps<e>__<lo>.npz`` files."""

    def __init__(self, out_dir: Path, settings: Settings, label: str, weights_sha: str):
        self.root = Path(out_dir) / "cache" / settings.key()
        self.dir = self.root / f"{label}-{weights_sha[:12]}"

    def path(self, attack: str, eps: float, lo: int) -> Path:
        return self.dir / f"{attack}__eps{_fmt(eps)}__{lo:04d}.npz"

    def get(self, attack: str, eps: float, lo: int) -> dict | None:
        p = self.path(attack, eps, lo)
        if not p.exists():
            return None
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def put(self, attack: str, eps: float, lo: int, rec: dict) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **rec)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path(attack, eps, lo), buf.getvalue())


def write_settings(out_dir: Path, settings: Settings) -> None:
    root = Path(out_dir) / "cache" / settings.key()
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "settings.json").exists():
        write_json(root / "settings.json", dataclasses.asdict(settings))


# -- models and data --------------------------------------------------------------------------------
def load_models(specs: dict[str, str]) -> dict[str, tuple]:
    """{label: model dir} -> {label: (model in eval mode, weights sha256, head)}."""
    from eegsine.models.classifier import Classifier

    out = {}
    for label, d in specs.items():
        model = Classifier.from_pretrained(d).eval()
        out[label] = (model, sha256_file(model_folder(d) / WEIGHTS_FILE), model.cfg.head)
    return out


def load_subset(settings: Settings):
    """The seeded test subset (as bench.robustness selects it): (x, y, test indices, data source)."""
    import torch


    ds = load_images(settings.dataset)
    n = min(settings.n_eval, len(ds.test_x))
    sel = np.random.default_rng(settings.seed).permutation(len(ds.test_x))[:n]
    return torch.from_numpy(ds.test_x[sel]), torch.from_numpy(ds.test_y[sel]), sel, ds


def _applies(attack: str, head: str, label: str, source_label: str | None) -> bool:
    spec = ATTACKS[attack]
    if spec.sine_only and head != "sine":
        return False
    if spec.needs_source and (source_label is None or label == source_label):
        return False
    return True


def _source_label(models: dict) -> str | None:
    return next((lb for lb, (_, _, head) in models.items() if head == "linear"), None)


# -- running --------------------------------------------------------------------------------------------
def run_plan(out_dir: str | Path, model_specs: dict[str, str], settings: Settings | None = None,
             jobs: list[Job] | None = None, max_seconds: float | None = None, log=print) -> dict:
    """Attack every missing chunk of ``jobs`` (default :func:`plan_for`); -> {"computed": k, "stopped": bool}.

    Under ``accelerate launch`` the processes share the chunks (every N-th (job, chunk, model) item each,
    :class:`~eegsine.bench.robustness.shard.Processes`): each chunk is seeded on its own, so the cache holds
    what one process would have written, and each process resumes at its own missing chunks."""
    import fcntl

    import torch

    from eegsine.bench.robustness.evaluate import run_attack

    settings = settings or Settings()
    jobs = jobs if jobs is not None else plan_for(settings.n_eval, settings.n_aa)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = Processes(torch.device("cpu"))  # the committed caches are CPU results; a GPU's floats would differ
    lock_file = out_dir / (".paired_eval.lock.tmp" if procs.count == 1 else f".paired_eval.lock{procs.rank}.tmp")
    lock = open(lock_file, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise UserError(f"{out_dir}: another paired evaluation is writing here "
                        f"({lock_file.name} is held)") from None
    try:
        if procs.is_main:
            for tmp in out_dir.glob("cache/*/*/.*.tmp"):  # a killed writer's half-written chunk; we hold the lock
                tmp.unlink()
            write_settings(out_dir, settings)
        procs.wait()
        models = load_models(model_specs)
        x, y, _, _ = load_subset(settings)
        src = _source_label(models)
        params = settings.params()
        t_start, computed, stopped = time.perf_counter(), 0, False
        items = [(job, lo, label) for job in jobs for lo in range(0, min(job.n, len(x)), settings.chunk)
                 for label, (_, _, head) in models.items() if _applies(job.attack, head, label, src)]
        for _, (job, lo, label) in procs.mine(items):
            hi = min(lo + settings.chunk, job.n, len(x))
            model, sha, _ = models[label]
            cache = ChunkCache(out_dir, settings, label, sha)
            if cache.path(job.attack, job.eps, lo).exists():
                continue
            if max_seconds is not None and time.perf_counter() - t_start > max_seconds:
                stopped = True
                break
            xc, yc = x[lo:hi], y[lo:hi]
            with torch.no_grad():
                correct = model(xc).argmax(1) == yc
            torch.manual_seed(chunk_seed(settings.seed, job.attack, job.eps, lo))
            r = run_attack(job.attack, model, xc, yc, correct, job.eps, model.cfg.n_classes, params,
                           bs=settings.chunk, source=models[src][0] if src and job.attack == "transfer"
                           else None)
            rec = {"lo": np.int64(lo), "robust": r["robust"].numpy().astype(bool),
                   "seconds": np.float64(r["seconds"]), "threads": np.int64(r["threads"])}
            if job.attack == "autoattack":
                rec["success_by"] = r["success_by"].numpy().astype(np.int8)
            cache.put(job.attack, job.eps, lo, rec)
            computed += 1
            log(f"{time.strftime('%H:%M:%S')} [{label}] {job.attack} eps={_fmt(job.eps)} images {lo}-{hi}: "
                f"{int(rec['robust'].sum())}/{hi - lo} robust ({r['seconds']:.1f} s)")
        procs.wait()  # the report reads every process's chunks
        return {"computed": computed, "stopped": stopped}
    finally:
        lock_file.unlink(missing_ok=True)  # not left behind (and *.tmp is git-ignored)
        lock.close()


# -- assembling ---------------------------------------------------------------------------------------------
def collect(out_dir: str | Path, models: dict, settings: Settings, jobs: list[Job]) -> dict:
    """{label: {(attack, eps): {"robust": bool (n_done,), "success_by": ..., "seconds": s, "n_done": k}}},
    contiguous from image 0 (a chunk after a missing one is not used, so every row is a prefix of the subset)."""
    src = _source_label(models)
    res: dict = {}
    for label, (_, sha, head) in models.items():
        cache = ChunkCache(out_dir, settings, label, sha)
        per: dict = {}
        for job in jobs:
            if not _applies(job.attack, head, label, src):
                continue
            rob, sb, secs = [], [], 0.0
            for lo in range(0, job.n, settings.chunk):
                rec = cache.get(job.attack, job.eps, lo)
                if rec is None:
                    break
                rob.append(rec["robust"])
                if "success_by" in rec:
                    sb.append(rec["success_by"])
                secs += float(rec["seconds"])
            r = np.concatenate(rob) if rob else np.zeros(0, dtype=bool)
            per[(job.attack, job.eps)] = {"robust": r, "n_done": len(r), "n_planned": job.n, "seconds": secs,
                                          "success_by": np.concatenate(sb) if sb else None}
        res[label] = per
    return res


def nest_collected(per: dict) -> dict:
    """:func:`collect`'s ``{(attack, eps): result}`` of one head with ``robust`` nested across eps per attack
    (:func:`eegsine.bench.robustness.evaluate.nest_results`) and the run's own mask kept as ``robust_single_run``."""
    from eegsine.bench.robustness.evaluate import nest_results

    by_attack: dict = {}
    for (a, e), r in per.items():
        by_attack.setdefault(a, {})[e] = r
    return {(a, e): r for a, d in nest_results(by_attack).items() for e, r in d.items()}


def host_isa() -> str:
    """The int8-relevant ISA flags of this CPU (``grep -o 'avx512_vnni\\|avx2' /proc/cpuinfo | sort -u``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError as e:
        return f"unknown ({e})"
    flags = sorted({f for f in ("avx512_vnni", "avx2") if f in text.split()})
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    return f"{model}; flags: {', '.join(flags) or 'neither avx2 nor avx512_vnni'}"


def _row(attack_label: str, eps: float, per_head: dict, labels: list[str], single_run: dict | None = None) -> dict:
    """One table row: each head's accuracy on its done prefix, and the paired comparison on the common prefix.

    ``single_run``: each head's raw mask of this (attack, eps) run, when ``per_head`` holds its nesting across eps;
    its own figure is kept beside the nested one (``accuracy_single_run``, ``broken_at_smaller_eps``)."""
    row = {"attack": attack_label, "eps": eps, "heads": {}}
    for lb in labels:
        r = per_head.get(lb)
        if r is None or len(r) == 0:
            row["heads"][lb] = None
            continue
        k = int(r.sum())
        row["heads"][lb] = {"accuracy": k / len(r), "n": len(r), "ci_wilson": list(wilson_ci(k, len(r)))}
        if single_run is not None:
            raw = single_run[lb]
            row["heads"][lb].update(accuracy_single_run=int(raw.sum()) / len(raw),
                                    broken_at_smaller_eps=broken_at_smaller_eps(raw, r))
    have = [lb for lb in labels if per_head.get(lb) is not None and len(per_head[lb])]
    if len(have) == 2:
        a, b = per_head[have[1]], per_head[have[0]]  # sine - standard
        m = min(len(a), len(b))
        row["paired"] = {"a": have[1], "b": have[0], **paired_compare(a[:m], b[:m])}
    return row


def assemble(out_dir: str | Path, model_specs: dict[str, str], settings: Settings | None = None,
             jobs: list[Job] | None = None, extra: dict | None = None) -> dict:
    """Write robustness.json / robustness.md from the cache (whatever is done); return the summary."""
    import torch

    settings = settings or Settings()
    jobs = jobs if jobs is not None else plan_for(settings.n_eval, settings.n_aa)
    out_dir = Path(out_dir)
    models = load_models(model_specs)
    x, y, sel, ds = load_subset(settings)
    labels = [lb for lb in HEAD_ORDER if lb in models] + [lb for lb in models if lb not in HEAD_ORDER]
    clean, clean_full = _clean_masks(models, x, y, ds)
    res = collect(out_dir, models, settings, jobs)  # the raw runs (the sanity checks read them)
    nres = {lb: nest_collected(res[lb]) for lb in labels}  # what is reported: the per-example worst case across eps
    # the Square budget ladder's complete rungs, where one was run
    ladders = fold_ladders({lb: ChunkCache(out_dir, settings, lb, models[lb][1]).dir for lb in labels}, res, nres,
                           clean, settings.n_aa, settings.chunk)
    params = settings.params()
    rows = [_row("Clean", 0.0, clean, labels)]
    for job in jobs:
        key = (job.attack, job.eps)
        per = {lb: nres[lb][key]["robust"] for lb in labels if key in nres[lb]}
        raw = {lb: nres[lb][key]["robust_single_run"] for lb in labels if key in nres[lb]}
        rows.append({**_row(describe(job.attack, params)[0], job.eps, per, labels, raw), "key": job.attack,
                     "n_planned": job.n})
    worst_rows = [row for eps in sorted({j.eps for j in jobs}) for with_aa in (False, True)
                  if (row := _worst_row(eps, with_aa, res, nres, clean, labels, settings, ladders)) is not None]
    budget = {lb: {f"{a}@{_fmt(e)}": f"{r['n_done']}/{r['n_planned']}" for (a, e), r in res[lb].items()}
              for lb in labels}
    checks = {lb: _sanity(models[lb][0], x, y, clean[lb], res[lb], settings) for lb in labels}
    secs = {lb: round(sum(r["seconds"] for r in res[lb].values()), 1) for lb in labels}
    summary = {"dataset": settings.dataset, "data_source": ds.source, "split": "test",
               "eps_units": "L-inf, [0, 1] pixel units", "settings": dataclasses.asdict(settings),
               "test_indices_sha256": hashlib.sha256(np.asarray(sel, dtype=np.int64).tobytes()).hexdigest(),
               "models": {lb: {"dir": model_specs[lb], "weights_sha256": models[lb][1], "head": models[lb][2],
                               "clean_accuracy_full_test": clean_full[lb], "n_full_test": len(ds.test_x),
                               "attack_seconds": secs[lb]} for lb in labels},
               "rows": rows, "worst_case": worst_rows, "budget_reached": budget,
               "square_ladder": {lb: {_fmt(e): {k: v for k, v in d.items() if k != "mask"} for e, d in per.items()}
                                 for lb, per in ladders.items()}, "sanity_checks": checks,
               "autoattack_first_success_by": _aa_first_success(res, labels),
               "paired_method": "McNemar exact (two-sided binomial on the discordant pairs, scipy.stats.binomtest); "
                                "95% interval for acc(sine) - acc(standard): Newcombe 1998 method 10 (Wilson score, "
                                "paired); Wald interval also given",
               "host": {"cpu": host_isa(), "python": platform.python_version(), "torch": torch.__version__,
                        "torch_threads": torch.get_num_threads()},
               **(extra or {})}
    write_json(out_dir / "robustness.json", summary)
    atomic_write_text(out_dir / "robustness.md", render_markdown(summary, labels))
    plot_worst_case(summary, labels, out_dir / "worst_case_vs_eps.png")
    return summary


def _clean_masks(models: dict, x, y, ds) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each head's clean-correct mask on the subset and its clean accuracy on the full test split."""
    import torch

    clean, clean_full = {}, {}
    with torch.no_grad():
        for lb, (m, _, _) in models.items():
            clean[lb] = (m(x).argmax(1) == y).numpy()
            tx, ty = torch.from_numpy(ds.test_x), torch.from_numpy(ds.test_y)
            clean_full[lb] = float(np.mean(np.concatenate(
                [(m(tx[i:i + 1000]).argmax(1) == ty[i:i + 1000]).numpy() for i in range(0, len(tx), 1000)])))
    return clean, clean_full


def _worst_row(eps: float, with_aa: bool, res: dict, nres: dict, clean: dict, labels: list[str],
               settings: Settings, ladders: dict | None = None) -> dict | None:
    """The worst case per example over every attack at ``eps`` (nested: or at a smaller eps), on the prefix every
    one of them has reached; None before any of its attacks has started. ``ladders`` (incl. AutoAttack only):
    :func:`eegsine.bench.robustness.square_ladder.fold`'s masks, ANDed in at their eps and every larger one."""
    per, used, pending = {}, {}, {}
    for lb in labels:
        keys = [k for k in res[lb] if k[1] == eps and (with_aa or k[0] not in SUBSET_ATTACKS)]
        if with_aa and res[lb].get(("autoattack", eps), {}).get("n_done", 0) == 0:
            continue  # the row is AutoAttack's: not before it has run
        started = [k for k in keys if res[lb][k]["n_done"] > 0]
        if not started:
            continue
        m = min(res[lb][k]["n_done"] for k in started)
        w = clean[lb][:m].copy()
        for k in started:
            w &= nres[lb][k]["robust"][:m]
        done: dict = {}  # the attacks of this row run only at a smaller eps: broken there is broken here
        for (a, e), r in nres[lb].items():
            if r["n_done"] and (with_aa or a not in SUBSET_ATTACKS):
                done.setdefault(a, {})[e] = r["robust"]
        below = only_below(done, eps)
        for a, e0 in below.items():
            and_prefix(w, done[a][e0])
        lad = [(e0, d) for e0, d in ((ladders or {}).get(lb) or {}).items() if with_aa and e0 <= eps]
        for _, d in lad:
            and_prefix(w, d["mask"])
        per[lb], used[lb] = w, sorted(k[0] for k in started) + [f"{a}@{_fmt(e0)}" for a, e0 in sorted(
            below.items())] + [f"square-ladder@{_fmt(e0)} (to {d['rungs'][-1]['queries']} queries)" for e0, d in lad]
        if len(started) < len(keys):
            pending[lb] = sorted(k[0] for k in keys if k not in started)
    if not per:
        return None
    label = "Worst case over every attack" + (" incl. AutoAttack (and Square)" if with_aa
                                              else " on all images (no AutoAttack, no Square)")
    if pending:  # an attack not yet run at all: said in the label, the row is an upper bound until then
        label += " -- PENDING " + "; ".join(f"{lb}: {', '.join(v)}" for lb, v in pending.items())
    return {**_row(label, eps, per, labels), "key": "worst+aa" if with_aa else "worst", "attacks_used": used,
            "attacks_pending": pending, "n_planned": settings.n_aa if with_aa else settings.n_eval}


def _aa_first_success(res: dict, labels: list[str]) -> dict:
    """label -> eps -> how many images each AutoAttack component broke first."""
    aa_by: dict = {}
    for lb in labels:
        for (a, e), r in res[lb].items():
            if a == "autoattack" and r["success_by"] is not None:
                aa_by.setdefault(lb, {})[_fmt(e)] = {nm: int((r["success_by"] == i).sum())
                                                     for i, nm in enumerate(["apgd-ce", "apgd-t", "fab-t", "square"])}
    return aa_by


def plot_worst_case(s: dict, labels: list[str], path: Path) -> None:
    """Per-example worst-case accuracy vs eps for each head (Wilson 95% bars): white-box and incl. AutoAttack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for lb in labels:
        for key, ls in (("worst", "-"), ("worst+aa", "--")):
            pts = [(r["eps"], r["heads"][lb]) for r in s["worst_case"] if r["key"] == key and r["heads"].get(lb)]
            if not pts:
                continue
            e = [q[0] for q in pts]
            acc = [q[1]["accuracy"] for q in pts]
            err = [[max(0.0, a - q[1]["ci_wilson"][0]) for a, q in zip(acc, pts)],
                   [max(0.0, q[1]["ci_wilson"][1] - a) for a, q in zip(acc, pts)]]
            n = pts[0][1]["n"]
            ax.errorbar(e, acc, yerr=err, ls=ls, marker="o", ms=3, capsize=2,
                        label=f"{lb}, {'incl. AutoAttack' if key == 'worst+aa' else 'no AutoAttack'} (n={n})")
    ax.set_xlabel("eps (L-inf, [0, 1] pixel units)")
    ax.set_ylabel("worst-case accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Per-example worst case over every attack, {s['dataset']} test", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _sanity(model, x, y, clean: np.ndarray, res: dict, settings: Settings) -> dict:
    """bench.robustness's sanity checks (zero gradients, black box vs white box, monotone in eps, iterative vs
    single step, chance at eps 0.5) on the (attack, eps) results that are complete, given as the raw runs
    (:func:`~eegsine.bench.robustness.evaluate.sanity_checks` nests them across eps itself)."""
    import torch

    from eegsine.bench.robustness.evaluate import sanity_checks, zero_gradient_share

    res_t: dict = {"clean": {0.0: {"robust": torch.from_numpy(clean)}}}
    for (a, e), r in res.items():
        if r["n_done"] == r["n_planned"] and r["n_done"] > 0:
            entry = {"robust": torch.from_numpy(r["robust"])}
            if r["success_by"] is not None:
                entry["success_by"] = torch.from_numpy(r["success_by"].astype(np.int64))
            res_t.setdefault(a, {})[e] = entry
    majority = float(np.bincount(y.numpy(), minlength=10).max() / len(y))
    zero = zero_gradient_share(model, x, y)
    return sanity_checks(res_t, majority, len(x), min(settings.n_aa, len(x)), zero, RobustnessConfig())


def _pct(v: dict | None) -> str:
    if v is None:
        return "—"
    lo, hi = v["ci_wilson"]
    return f"{100 * v['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _paired_cells(row: dict) -> list[str]:
    p = row.get("paired")
    if p is None:
        return ["—", "—", "—"]
    lo, hi = p["ci_newcombe"]
    return [f"{100 * p['diff']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]", f"{p['n10']} / {p['n01']}",
            f"{p['p_mcnemar_exact']:.3g}"]


def render_markdown(s: dict, labels: list[str]) -> str:
    names = {"standard": "Standard", "sine": "Sine"}
    head = [names.get(lb, lb) for lb in labels]
    cols = (["Attack", "eps"] + [f"{h} % [95% CI] (n)" for h in head]
            + ["sine - standard, points [95% CI]", "discordant sine-only / standard-only", "McNemar p"])

    def line(r: dict) -> list[str]:
        cells = []
        for lb in labels:
            v = r["heads"].get(lb)
            cells.append("—" if v is None else f"{_pct(v)} ({v['n']})")
        e = "0" if not r["eps"] else _fmt(r["eps"])
        return [r["attack"], e, *cells, *_paired_cells(r)]

    out = [f"## Robust accuracy (%) on {s['dataset']} test ({s['data_source']}), per example, paired", "",
           f"L-inf eps in [0, 1] pixel units. A seeded subset of {s['settings']['n_eval']} test images (seed "
           f"{s['settings']['seed']}), AutoAttack on its first {s['settings']['n_aa']}; both heads judged on the same "
           "images. n per cell = images done so far (a row still short of its plan is a prefix of the subset). "
           "Accuracy intervals: Wilson 95%. " + s["paired_method"] + ". " + CAPTION, ""]
    models = [s["models"][lb] for lb in labels]
    out += md_table(["model", "weights sha256", "clean accuracy, full test (n)", "attack wall s"],
                    [[f"{names.get(lb, lb)} ({m['head']} head)", f"`{m['weights_sha256'][:12]}`",
                      f"{100 * m['clean_accuracy_full_test']:.2f} ({m['n_full_test']})", str(m["attack_seconds"])]
                     for lb, m in zip(labels, models)])
    out += ["", "### Worst case per example over every attack at that eps", "",
            "An image counts as robust if it is clean-correct and no attack broke it at that eps or at a smaller one.",
            ""]
    out += md_table(cols, [line(r) for r in s["worst_case"]])
    out += ["", "Attacks in each worst case: " + "; ".join(
        f"eps {_fmt(r['eps'])} {r['key']}: " + ", ".join(f"{names.get(lb, lb)} {'+'.join(v)}"
                                                          for lb, v in r["attacks_used"].items())
        for r in s["worst_case"]), "", "### Each attack", ""]
    out += md_table(cols, [line(r) for r in s["rows"]])
    added = [f"{names.get(lb, lb)} {r['attack']} eps {_fmt(r['eps'])}: {v['broken_at_smaller_eps']} "
             f"(single run {100 * v['accuracy_single_run']:.1f})"
             for r in s["rows"] for lb, v in r["heads"].items() if v and v.get("broken_at_smaller_eps")]
    out += ["", "Images broken at a smaller eps that the run at this eps missed (added by the nesting): "
            + ("; ".join(added) if added else "none") + "."]
    if s["autoattack_first_success_by"]:
        out += ["", "AutoAttack: images first broken by each component: " + "; ".join(
            f"{names.get(lb, lb)} eps {e}: " + ", ".join(f"{k} {v}" for k, v in d.items())
            for lb, per in s["autoattack_first_success_by"].items() for e, d in per.items())]
    out += render_ladder(s.get("square_ladder", {}), names)
    out += ["", "### Sanity checks (on the complete (attack, eps) results)", ""]
    for lb in labels:
        for name, c in s["sanity_checks"][lb].items():
            mark = {True: "PASS", False: "**FAIL**", None: "not run"}[c["passed"]]
            out.append(f"- {mark} [{names.get(lb, lb)}] `{name}`: {c['detail']}")
    out += ["", "### Budget reached (images done / planned)", ""]
    for lb in labels:
        out.append(f"- {names.get(lb, lb)}: " + ", ".join(f"{k} {v}" for k, v in s["budget_reached"][lb].items()))
    out += ["", f"Assembled on: {s['host']['cpu']}; torch {s['host']['torch']}, {s['host']['torch_threads']} "
            "thread(s) (the attack wall seconds are those of the machines that ran the cached chunks).", ""]
    return "\n".join(out)


# -- command line ---------------------------------------------------------------------------------------------
def only_eps(jobs: list[Job], text: str) -> list[Job]:
    """``jobs`` at the eps of ``"0.3,0.2"`` (all for ``""``), in plan order; an eps the plan lacks is refused."""
    if not text.strip():
        return jobs
    try:
        want = {float(t) for t in text.split(",") if t.strip()}
    except ValueError:
        raise UserError(f"--only-eps {text!r}: expected numbers separated by commas") from None
    missing = sorted(want - {j.eps for j in jobs})
    if missing:
        raise UserError(f"--only-eps: the plan has no attack at eps {', '.join(map(_fmt, missing))} "
                        f"(its eps: {', '.join(map(_fmt, sorted({j.eps for j in jobs})))})")
    return [j for j in jobs if j.eps in want]


def _models_arg(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise UserError(f"--model takes LABEL=MODEL_DIR, got {v!r}")
        k, d = v.split("=", 1)
        out[k] = d
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eegsine.bench.experiments.paired_eval",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("run", "report"),
                   help="run: compute the missing chunks (resumable); report: write robustness.json/md from them")
    p.add_argument("--out", required=True, help="evaluation folder (its chunk cache and the report)")
    p.add_argument("--model", action="append", required=True, help="LABEL=MODEL_DIR (standard=..., sine=...)")
    p.add_argument("--n-eval", type=int, default=1000, help="test images every attack runs on")
    p.add_argument("--n-aa", type=int, default=500, help="of them, images AutoAttack and Square run on")
    p.add_argument("--chunk", type=int, default=100, help="images per cached chunk (the unit of resuming)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop starting new chunks after this long")
    p.add_argument("--only-eps", default="", metavar="E[,E...]",
                   help="run: only the plan's attacks at these eps, in plan order (the report covers the whole plan)")
    p.add_argument("--threads", type=threads_type, default=1, help="torch threads")
    ns = p.parse_args(argv)
    import torch

    torch.set_num_threads(ns.threads)
    settings = Settings(n_eval=ns.n_eval, n_aa=ns.n_aa, chunk=ns.chunk)
    specs = _models_arg(ns.model)
    try:
        if ns.action == "run":
            st = run_plan(ns.out, specs, settings, jobs=only_eps(plan_for(settings.n_eval, settings.n_aa), ns.only_eps),
                          max_seconds=ns.max_seconds, log=lambda m: print(m, flush=True))
            print(f"computed {st['computed']} chunks; {'stopped at --max-seconds' if st['stopped'] else 'plan done'}")
            if not main_process():  # under accelerate launch the main process writes the report
                return 0
        git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
        s = assemble(ns.out, specs, settings, extra={"git_head": git})
        print(render_markdown(s, [lb for lb in HEAD_ORDER if lb in s["models"]]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
