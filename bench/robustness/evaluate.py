"""Robustness evaluation of classifier runs: tables in the source's format, sanity checks, figures.

``evaluate_robustness([run_a, run_b], cfg, out_dir)`` attacks every model with every attack of
:data:`eegsine.attacks.algorithms.ATTACKS` over an eps grid (L-inf, **[0, 1] pixel units**, always stated),
on a seeded ``n_eval`` subset of the test split (expensive attacks on its first
``n_eval_expensive`` images), and writes ``robustness.md`` / ``robustness.json`` (also under
``metrics.json["robustness"]``), ``acc_vs_eps.png`` and ``logits.png``.

Every reported figure is the **per-example worst case across eps**: an image broken at a smaller radius
counts as broken at every larger radius (same attack, same images: its adversarial example lies inside the
larger L-inf ball; :func:`eegsine.bench.robustness.eps_nesting.cumulative_robust`), so each attack's row is monotone
in eps by construction. Each (attack, eps) run is seeded on its own and cached raw; its own figure stays in
the JSON as ``accuracy_single_run``, with ``broken_at_smaller_eps``, the images the nesting added.

Sanity checks (Carlini et al. 2019, "On evaluating adversarial robustness") run with every
table and a failing one is printed loudly and kept in the JSON:

* ``zero_gradients`` -- share of evaluated images whose input gradient of the CE loss is exactly 0;
* ``black_box_vs_white_box`` -- images Square fools although every white-box attack at that eps failed;
* ``monotone_in_eps`` -- an attack-weakness diagnostic on the raw runs: per attack and eps, the images the
  single run at that eps left robust although a smaller eps broke them; fails when, for some (attack, eps),
  they exceed ``monotone_max_share`` (2 %) of the attacked (clean-correct) images;
* ``iterative_vs_single_step`` -- on the reported (nested) per-example results, no iterative attack may be
  significantly weaker than FGSM at the same eps: of the images only one of the two broke, FGSM's share is
  tested with the one-sided exact McNemar test, failing at p < ``iterative_alpha`` (0.01) per attack and eps
  (a statement about the attacks, not about which images happened to be drawn);
* ``chance_at_eps_0.5`` -- at eps = 0.5 every image can be turned solid grey, so the strongest
  attack must bring accuracy to the majority-class share of the subset (plus one image) or below.

Hand-written: the bookkeeping; every attack comes from :mod:`eegsine.attacks.algorithms` (torchattacks).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from eegsine.progress import tqdm

from eegsine.attacks.algorithms import ATTACKS, AttackParams, AutoAttackStandard, LowPrecision, build_attack, describe
from eegsine.bench.report.doc import md_table
from eegsine.bench.robustness.configs import (CIFAR10_GRID, DEFAULT_ATTACKS, RobustnessConfig,  # noqa: F401 - re-exported
                                   robustness_preset)
from eegsine.bench.robustness.shard import Processes, chunk_seed, merge_chunks
from eegsine.bench.robustness.eps_nesting import (CAPTION, and_prefix, broken_at_smaller_eps, cumulative_robust,
                                                  only_below)
from eegsine.errors import DataMissingError, UserError
from eegsine.io import atomic_write_text, quiet_logger, read_json, run_logger, sha256_file, update_metrics, write_json
from eegsine.models.classifier import Classifier, check_images
from eegsine.runs.checkpoint import load_weights, save_weights
from eegsine.runs.folder import RunFolder
from eegsine.training.loop import resolve_device, use_device
from eegsine.data import load_images
from eegsine.models.configs import ClassifierConfig
from eegsine.models.protocol import WEIGHTS_FILE, model_folder, read_provenance

GREY_SETS = ("mnist", "fashion-mnist", "digits")
MNIST_GRID = [0.1, 0.2, 0.3, 0.4]
# The source's grids (MNIST): FGSM 0.1-0.3, PGD 0.3-0.7, AutoAttack 0.2-0.5.
SOURCE_EXTRA = {"pgd-ce": [0.5, 0.6, 0.7], "pgd-margin": [0.5, 0.6, 0.7], "autoattack": [0.5]}


def eps_grid(attack: str, dataset: str, cfg: RobustnessConfig) -> list[float]:
    """The attack's eps values ([0, 1] pixel units)."""
    if ATTACKS[attack].expensive and cfg.expensive_eps:
        return sorted(set(cfg.expensive_eps))
    if cfg.eps:
        base = list(cfg.eps)
    elif dataset in GREY_SETS:
        base = MNIST_GRID + SOURCE_EXTRA.get(attack, [])
    else:
        base = CIFAR10_GRID
    return sorted(set(base))


def _fmt_eps(e: float) -> str:
    k = e * 255
    return f"{e:g}" if abs(k - round(k)) > 1e-6 or e >= 0.1 else f"{round(k)}/255"


# -- per-model evaluation -------------------------------------------------------------------------
def _dev(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, bs: int) -> torch.Tensor:
    """Logits on the CPU (every record is kept there); each batch runs on the model's device."""
    dev = _dev(model)
    return torch.cat([model(x[i:i + bs].to(dev)).cpu() for i in range(0, len(x), bs)]) if len(x) else torch.zeros(0)


def zero_gradient_share(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int = 250) -> float:
    """Share of images whose input gradient of the CE loss is exactly zero."""
    zero = 0
    for i in range(0, len(x), bs):
        xb = x[i:i + bs].to(_dev(model)).clone().requires_grad_(True)
        g = torch.autograd.grad(F.cross_entropy(model(xb), y[i:i + bs].to(xb.device), reduction="sum"), xb)[0]
        zero += int((g.flatten(1).abs().amax(1) == 0).sum())
    return zero / max(1, len(x))


def run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, correct: torch.Tensor, eps: float,
               n_classes: int, params: AttackParams, bs: int, source: nn.Module | None = None,
               precision: str = "no") -> dict:
    """Attack the clean-correct images; -> {robust (N,) bool, seconds, n_attacked, success_by (AA only)}.

    ``precision`` bf16 / fp16: the attack's passes under autocast (:class:`LowPrecision`); judged in fp32."""
    robust = correct.clone()
    idx = correct.nonzero().squeeze(1)
    success_by = torch.full((len(x),), -2, dtype=torch.long)
    adv_all = x.clone()
    t0 = time.perf_counter()
    dev = _dev(model)
    for i in range(0, len(idx), bs):
        j = idx[i:i + bs]
        atk = build_attack(name, model if precision == "no" else LowPrecision(model, precision), eps, n_classes,
                           params, source_model=source)
        xj, yj = x[j].to(dev), y[j].to(dev)  # records stay on the CPU; the attack runs where the model is
        adv = atk(xj, yj)
        adv = (xj + (adv - xj).clamp(-eps, eps)).clamp(0, 1)  # judged inside the eps ball, whatever the attack did
        adv_all[j] = adv.cpu()
        with torch.no_grad():
            robust[j] = (model(adv).argmax(1) == yj).cpu()
        if isinstance(atk, AutoAttackStandard):
            success_by[j] = atk.success_by.cpu()
    secs = time.perf_counter() - t0
    return {"robust": robust, "seconds": secs, "n_attacked": len(idx), "success_by": success_by, "adv": adv_all,
            "threads": torch.get_num_threads()}


def nest_results(res: dict) -> dict:
    """``res[attack][eps]`` (one dict per raw run, with ``robust`` (N,) bool) -> the same with ``robust`` nested
    across eps (:func:`~eegsine.bench.robustness.eps_nesting.cumulative_robust`) and the run's own mask kept as
    ``robust_single_run``. Idempotent: a result that already holds ``robust_single_run`` is nested from it."""
    out = {}
    for a, per in res.items():
        raw = {e: r.get("robust_single_run", r["robust"]) for e, r in per.items()}
        cum = cumulative_robust(raw)
        out[a] = {e: {**per[e], "robust": cum[e], "robust_single_run": raw[e]} for e in sorted(per)}
    return out


def sanity_checks(res: dict, n_classes_share: float, n: int, n_exp: int, zero_share: float,
                  cfg: RobustnessConfig) -> dict:
    """Evaluate the five checks on one model's raw per-run results ``res[attack][eps] -> robust (N,)``.

    ``monotone_in_eps`` reads the raw runs against their nesting across eps; the other checks judge the
    reported, nested figures (:func:`nest_results`)."""
    res = nest_results(res)
    attacked = res["clean"][0.0]["robust"]  # only clean-correct images are attacked
    return {"zero_gradients": {
                "passed": zero_share <= cfg.zero_grad_max_share, "value": zero_share,
                "detail": f"{100 * zero_share:.1f}% of {n} images have an all-zero input gradient "
                          f"(limit {100 * cfg.zero_grad_max_share:.0f}%)"},
            "black_box_vs_white_box": _check_black_box(res, attacked, n_exp, cfg),
            "monotone_in_eps": _check_monotone(res, attacked, cfg),
            "iterative_vs_single_step": _check_iterative(res, cfg),
            "chance_at_eps_0.5": _check_chance(res, n, n_classes_share)}


def _check_black_box(res: dict, attacked: torch.Tensor, n_exp: int, cfg: RobustnessConfig) -> dict:
    """Black-box vs white-box, per eps on the expensive subset: images Square fools that every white-box attack
    missed (gradient masking shows as a black-box attack beating the white-box ones)."""
    bb = []
    for eps in sorted({e for a in ("square", "autoattack") if a in res for e in res[a]}):
        white = [a for a in res
                 if a != "clean" and ATTACKS[a].kind in ("single-step", "iterative", "adaptive") and eps in res[a]]
        all_white_fail = torch.ones(n_exp, dtype=torch.bool)
        for a in white:
            all_white_fail &= res[a][eps]["robust"][:n_exp]
        if "autoattack" in res and eps in res["autoattack"]:
            all_white_fail &= res["autoattack"][eps]["success_by"][:n_exp] != 0
            all_white_fail &= res["autoattack"][eps]["success_by"][:n_exp] != 1
            all_white_fail &= res["autoattack"][eps]["success_by"][:n_exp] != 2
        sq = torch.zeros(n_exp, dtype=torch.bool)
        if "square" in res and eps in res["square"]:
            sq |= ~res["square"][eps]["robust"][:n_exp]
        if "autoattack" in res and eps in res["autoattack"]:
            sq |= res["autoattack"][eps]["success_by"][:n_exp] == 3
        clean_ok = attacked[:n_exp]
        count = int((all_white_fail & sq & clean_ok).sum())
        bb.append({"eps": eps, "count": count, "n": n_exp, "white_box": white})
    worst = max((b["count"] / max(1, b["n"]) for b in bb), default=None)
    return {"passed": None if worst is None else worst <= cfg.bb_max_share, "value": bb,
            "detail": ("Square not run" if worst is None else "; ".join(
                f"eps={_fmt_eps(b['eps'])}: Square fools {b['count']}/{b['n']} images every white-box attack missed"
                for b in bb))}


def _check_monotone(res: dict, attacked: torch.Tensor, cfg: RobustnessConfig) -> dict:
    """Monotone in eps: per (attack, eps), images the run there left robust although a smaller eps broke them."""
    missed = []
    for a, per in res.items():
        if a == "clean":
            continue
        for e, r in per.items():
            k = broken_at_smaller_eps(r["robust_single_run"], r["robust"])
            if k:
                m = int(attacked[:len(r["robust"])].sum())
                missed.append({"attack": a, "eps": e, "missed": k, "attacked": m, "share": k / max(1, m)})
    mono_limit = cfg.monotone_max_share
    return {"passed": all(v["share"] <= mono_limit for v in missed), "value": missed,
            "detail": ("; ".join(f"{v['attack']} at eps={_fmt_eps(v['eps'])}: {v['missed']} of {v['attacked']} "
                                 f"attacked images ({100 * v['share']:.1f}%) broken at a smaller eps, missed by this "
                                 "run"
                                 + (" **over the limit**" if v["share"] > mono_limit else "") for v in missed)
                       or "no run at a larger eps missed an image a smaller eps broke")
                      + f" (limit {100 * mono_limit:g}% of the attacked images per attack and eps)"}


def _check_iterative(res: dict, cfg: RobustnessConfig) -> dict:
    """Iterative vs single-step, same subset, on the reported (nested) figures: per example, the images only FGSM
    broke against those only the iterative attack broke, one-sided exact McNemar."""
    from eegsine.bench.robustness.paired_stats import mcnemar_exact

    bad = []
    if "fgsm" in res:
        for a in ("pgd-ce", "pgd-margin", "apgd-ce", "apgd-dlr"):
            for e in res.get(a, {}):
                if e in res["fgsm"]:
                    ri, rf = res[a][e]["robust"], res["fgsm"][e]["robust"]
                    m = min(len(ri), len(rf))
                    only_fgsm, only_iter = int((ri[:m] & ~rf[:m]).sum()), int((~ri[:m] & rf[:m]).sum())
                    p = mcnemar_exact(only_fgsm, only_iter, alternative="greater")
                    if p < cfg.iterative_alpha:
                        bad.append(f"{a} at eps={_fmt_eps(e)}: {only_fgsm} images only FGSM broke vs {only_iter} only "
                                   f"{a} broke (one-sided exact McNemar p = {p:.2g})")
    return {"passed": None if "fgsm" not in res else not bad, "value": bad,
            "detail": ("FGSM not run" if "fgsm" not in res
                       else ("; ".join(bad) or "no iterative attack significantly weaker than FGSM")
                       + f" (per attack and eps: one-sided exact McNemar on the images only one of the two broke, "
                         f"fails at p < {cfg.iterative_alpha:g})")}


def _check_chance(res: dict, n: int, n_classes_share: float) -> dict:
    """Chance at eps = 0.5: the strongest full-set white-box attack leaves no more than the majority-class share."""
    at_half = {a: int(per[0.5]["robust"][:n].sum()) for a, per in res.items()
               if a != "clean" and 0.5 in per and len(per[0.5]["robust"]) >= n and ATTACKS[a].kind != "transfer"}
    if not at_half:
        return {"passed": None, "value": None, "detail": "no attack run at eps=0.5"}
    best_a = min(at_half, key=at_half.get)
    acc = at_half[best_a] / n
    limit = n_classes_share + 1.0 / n
    return {"passed": acc <= limit, "value": acc,
            "detail": f"{best_a} at eps=0.5: {100 * acc:.1f}% "
                      f"(chance = majority-class share {100 * n_classes_share:.1f}%)"}


def run_data(run: str | Path) -> tuple[str, str]:
    """(dataset, data_root) a classifier was trained on, from its provenance ("", "" when it names none).

    The model folder's config is checked too, so a bad folder fails before anything is written."""
    folder = model_folder(run)
    ClassifierConfig.load(folder)
    prov = read_provenance(folder)
    return prov.data, str(prov.data_options.get("root", ""))


def resolve_data(runs: list[str | Path | nn.Module], cfg: RobustnessConfig) -> tuple[str, str]:
    """(dataset, data_root) to attack on: ``cfg``'s, else the first run's; every run folder's config is checked."""
    if not runs:
        raise UserError("evaluate_robustness: give at least one classifier run folder")
    from_runs = [run_data(r) for r in runs if not isinstance(r, nn.Module)]
    first = runs[0]
    if isinstance(first, nn.Module) and not cfg.dataset:
        raise UserError("RobustnessConfig.dataset: needed for in-memory models")
    dataset = cfg.dataset or from_runs[0][0]
    if not dataset:
        raise UserError(f"{first}: config.json names no data set; pass --dataset")
    data_root = cfg.data_root or (from_runs[0][1] if not isinstance(first, nn.Module) else "")
    return dataset, data_root


def evaluate_robustness(runs: list[str | Path | nn.Module], cfg: RobustnessConfig, out_dir: str | Path) -> dict:
    """Evaluate classifier run folders; write tables, figures and checks into ``out_dir``; return the summary.

    ``out_dir`` follows :class:`~eegsine.runs.folder.RunFolder`'s protocol: locked while evaluating,
    config.json written once models and data are loaded.
    Under ``accelerate launch`` with ``cfg.chunk`` set, the processes share the chunks
    (:mod:`eegsine.bench.robustness.shard`) and every one returns the merged summary; the main process locks and
    writes the folder.
    """
    dataset, data_root = resolve_data(runs, cfg)  # every run's config checked before anything is written
    procs = Processes(resolve_device(cfg.device))
    procs.check(cfg.chunk)
    with RunFolder(out_dir, lock=procs.is_main) as run:
        procs.wait()  # the main process has swept dead writers' temporaries before any chunk is written
        return _evaluate(runs, cfg, run, dataset, data_root, procs)


def _evaluate(runs: list[str | Path | nn.Module], cfg: RobustnessConfig, run: RunFolder, dataset: str,
              data_root: str, procs: Processes) -> dict:
    out_dir = run.path
    log = run_logger(out_dir, "eegsine.attack") if procs.is_main else quiet_logger("eegsine.attack")
    run.log_notes(log)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = procs.device
    models = [(p, use_device(m, dev), c) for p, m, c in _load_models(runs)]
    try:
        ds = load_images(dataset, **({"root": data_root} if data_root else {}))
    except DataMissingError as e:
        raise e.for_flag("--data-root") from None
    n = min(cfg.n_eval, len(ds.test_x))
    sel = np.random.default_rng(cfg.seed).permutation(len(ds.test_x))[:n]
    x, y = torch.from_numpy(ds.test_x[sel]), torch.from_numpy(ds.test_y[sel])
    n_exp = min(cfg.n_eval_expensive, n)
    majority = float(np.bincount(y.numpy(), minlength=ds.n_classes).max() / n)
    # not compared on a rerun (RunFolder.check_config): the attack cache is keyed by these settings,
    # so another config evaluates afresh beside the old results
    if procs.is_main:
        cfg.save(out_dir)
    names = _model_names(models)
    source = (use_device(Classifier.from_pretrained(cfg.transfer_from), dev) if cfg.transfer_from
              else next((m for _, m, c in models if c.head == "linear"), None))
    params = cfg.params
    log.info(f"robustness on {dataset} test split ({ds.source}): n_eval={n} (expensive attacks: first {n_exp}), "
             f"eps in [0, 1] pixel units, models: {', '.join(names)}, on {dev}")

    summary: dict = {"dataset": dataset, "data_source": ds.source, "split": "test", "n_eval": n,
                     "n_eval_expensive": n_exp,
                     "eps_units": "L-inf, [0, 1] pixel units", "seed": cfg.seed, "config": cfg.to_dict(),
                     "attacks": {a: {"label": describe(a, params)[0], "full_strength": describe(a, params)[1],
                                     "subset": n_exp if ATTACKS[a].expensive else n} for a in cfg.attacks},
                     "models": {}}
    if cfg.chunk:
        summary["processes"] = procs.count
    logits_store: dict = {}
    per_example: dict[str, dict] = {}  # label -> attack -> eps -> robust (N,): for the paired comparison
    for (path, model, mcfg), label in zip(models, names):
        model.eval()
        check_images(x, y, mcfg, what=f"{dataset} test images for {path}")
        t_model = time.perf_counter()
        clean_logits = _predict(model, x, cfg.batch_size)
        correct = clean_logits.argmax(1) == y
        todo = _attack_plan(cfg, dataset, mcfg, model is source or _same_run(path, cfg.transfer_from), source,
                            summary["attacks"], n)
        cache = _Cache(out_dir, cfg, path, label, dataset)
        res = (_run_chunked(todo, cache, model, x, y, correct, mcfg, source, n_exp, cfg, procs) if cfg.chunk else
               _run_attacks(todo, cache, model, x, y, correct, mcfg, source, n_exp, cfg, label, log))
        if any(a == "pgd-ce" for a, _ in todo):
            logits_store[label] = {"clean": clean_logits, "y": y,
                                   "adv": {e: r["adv_logits"] for e, r in res["pgd-ce"].items()}}
        zero = zero_gradient_share(model, x, y, cfg.batch_size)
        checks = sanity_checks(res, majority, n, n_exp, zero, cfg)
        res = nest_results(res)  # what is reported: the per-example worst case across eps
        summary["models"][label] = _model_entry(path, mcfg, correct, res, checks, time.perf_counter() - t_model)
        per_example[label] = {a: {e: r["robust"] for e, r in per.items()} for a, per in res.items()}
        _print_checks(label, checks, log)
    summary["table"] = table_rows(summary)
    summary["paired"] = paired_rows(per_example, summary)
    if procs.is_main:
        _write_outputs(summary, logits_store, out_dir, dataset)
    procs.wait()
    return summary


def _load_models(runs: list[str | Path | nn.Module]) -> list[tuple[Path, nn.Module, ClassifierConfig]]:
    """(path or name, model, its config) per run folder or in-memory model (carrying its config as ``.cfg``)."""
    models = []
    for i, r in enumerate(runs):
        if isinstance(r, nn.Module):
            models.append((Path(getattr(r, "name", f"model{i}")), r, r.cfg))
        else:
            model = Classifier.from_pretrained(r)
            models.append((Path(r), model, model.cfg))
    return models


def _same_run(path: Path, transfer_from: str | None) -> bool:
    """Whether ``path`` is the transfer source's run folder (a model is not attacked with its own transfer)."""
    return bool(transfer_from) and path.resolve() == Path(transfer_from).resolve()


def _attack_plan(cfg: RobustnessConfig, dataset: str, mcfg: ClassifierConfig, is_source: bool,
                 source: nn.Module | None, attacks: dict, n: int) -> list[tuple[str, float]]:
    """(attack, eps) pairs to run on one model; adds PGD-CE at eps 0.5 (and its ``attacks`` entry) when no cheap
    iterative attack covers it, since the chance-at-0.5 check needs one."""
    todo = [(a, e) for a in cfg.attacks for e in eps_grid(a, dataset, cfg)
            if not (ATTACKS[a].sine_only and mcfg.head != "sine")
            and not (ATTACKS[a].needs_source and (source is None or is_source))]
    if not any(e == 0.5 for a, e in todo
               if ATTACKS[a].kind in ("iterative", "ensemble") and not ATTACKS[a].expensive):
        todo.append(("pgd-ce", 0.5))
        if "pgd-ce" not in attacks:
            attacks["pgd-ce"] = {"label": describe("pgd-ce", cfg.params)[0] + " (for the eps=0.5 check)",
                                 "full_strength": True, "subset": n}
    return todo


def _run_attacks(todo: list[tuple[str, float]], cache: "_Cache", model: nn.Module, x: torch.Tensor,
                 y: torch.Tensor, correct: torch.Tensor, mcfg: ClassifierConfig, source: nn.Module | None,
                 n_exp: int, cfg: RobustnessConfig, label: str, log) -> dict:
    """Each (attack, eps) of ``todo`` from the cache or run afresh -> ``res[attack][eps]`` (with ``clean``)."""
    n = len(x)
    res: dict = {"clean": {0.0: {"robust": correct, "seconds": 0.0, "n_attacked": n}}}
    bar = tqdm(todo, desc=f"attacks on {label}", dynamic_ncols=True)
    for a, e in bar:
        bar.set_postfix(attack=a, eps=_fmt_eps(e))
        m = n_exp if ATTACKS[a].expensive else n
        r = cache.get(a, e)
        if r is None:
            torch.manual_seed(cfg.seed)  # every (attack, eps) result reproducible on its own (and from the cache)
            r = run_attack(a, model, x[:m], y[:m], correct[:m], e, mcfg.n_classes, cfg.params, cfg.batch_size,
                           source=source if ATTACKS[a].needs_source else None, precision=cfg.mixed_precision)
            if a == "pgd-ce":
                r["adv_logits"] = _predict(model, r["adv"], cfg.batch_size)
            cache.put(a, e, r)
        log.info(f"[{label}] {a} eps={_fmt_eps(e)}: accuracy {float(r['robust'].float().mean()):.3f} on {m} images "
                 f"(this run alone; {r['seconds']:.1f} s)")
        res.setdefault(a, {})[e] = r
    return res


def _run_chunked(todo: list[tuple[str, float]], cache: "_Cache", model: nn.Module, x: torch.Tensor,
                 y: torch.Tensor, correct: torch.Tensor, mcfg: ClassifierConfig, source: nn.Module | None,
                 n_exp: int, cfg: RobustnessConfig, procs: Processes) -> dict:
    """:func:`_run_attacks` in seeded chunks of ``cfg.chunk`` images shared by the processes, each chunk from the
    cache or run afresh; -> the same ``res[attack][eps]`` on every process, whatever their number."""
    n = len(x)
    items = [(a, e, lo) for a, e in todo for lo in range(0, n_exp if ATTACKS[a].expensive else n, cfg.chunk)]
    mine = {}
    for _, (a, e, lo) in tqdm(procs.mine(items), desc=f"attack chunks (process {procs.rank + 1}/{procs.count})",
                              dynamic_ncols=True, disable=not procs.is_main):
        r = cache.get(a, e, lo)
        if r is None:
            hi = min(lo + cfg.chunk, n_exp if ATTACKS[a].expensive else n)
            torch.manual_seed(chunk_seed(cfg.seed, a, e, lo))  # the chunk's result, whichever process runs it
            r = run_attack(a, model, x[lo:hi], y[lo:hi], correct[lo:hi], e, mcfg.n_classes, cfg.params,
                           cfg.batch_size, source=source if ATTACKS[a].needs_source else None,
                           precision=cfg.mixed_precision)
            if a == "pgd-ce":
                r["adv_logits"] = _predict(model, r["adv"], cfg.batch_size)
            del r["adv"]  # not gathered: the logits are what the report reads
            cache.put(a, e, r, lo)
        mine[(a, e, lo)] = r
    done = procs.gather(mine)
    res: dict = {"clean": {0.0: {"robust": correct, "seconds": 0.0, "n_attacked": n}}}
    for a, e in todo:
        res.setdefault(a, {})[e] = merge_chunks([done[(a, e, lo)] for a2, e2, lo in items if (a2, e2) == (a, e)])
    return res


def _model_entry(path: Path, mcfg: ClassifierConfig, correct: torch.Tensor, res: dict, checks: dict,
                 wall_s: float) -> dict:
    """One model's summary entry from its nested results: accuracy per attack and eps, images/s per attack."""
    entry = {"run": str(path), "head": mcfg.head, "arch": mcfg.arch, "clean_accuracy": float(correct.float().mean()),
             "eval_wall_s": round(wall_s, 1), "results": {}, "images_per_s": {}, "checks": checks}
    for a, per in res.items():
        if a == "clean":
            continue
        entry["results"][a] = {}
        tot_n = tot_s = 0.0
        for e, r in sorted(per.items()):
            m = len(r["robust"])
            entry["results"][a][f"{e:.6g}"] = {
                "eps": e, "accuracy": float(r["robust"].float().mean()),
                "accuracy_single_run": float(r["robust_single_run"].float().mean()),
                "broken_at_smaller_eps": broken_at_smaller_eps(r["robust_single_run"], r["robust"]), "n": m,
                "n_attacked": r["n_attacked"], "seconds": round(r["seconds"], 2), "threads": r.get("threads")}
            if a == "autoattack":
                entry["results"][a][f"{e:.6g}"]["first_success_by"] = {
                    nm: int((r["success_by"] == k).sum())
                    for k, nm in enumerate(["apgd-ce", "apgd-t", "fab-t", "square"])}
            tot_n += r["n_attacked"]
            tot_s += r["seconds"]
        entry["images_per_s"][a] = round(tot_n / tot_s, 2) if tot_s > 0 else None
    return entry


def _write_outputs(summary: dict, logits_store: dict, out_dir: Path, dataset: str) -> None:
    md = render_markdown(summary)
    atomic_write_text(out_dir / "robustness.md", md)
    write_json(out_dir / "robustness.json", summary)
    update_metrics(out_dir, "robustness", summary)
    plot_acc_vs_eps(summary, out_dir / "acc_vs_eps.png")
    if logits_store:
        plot_logits(logits_store, out_dir / "logits.png", dataset)
    print(md)


class _Cache:
    """Per-(attack, eps) results kept under ``out_dir/cache/<key>/`` so a killed evaluation resumes.

    The key hashes the evaluation config, the run folder and its weights file, so a changed
    setting or retrained model never reuses stale results.
    """

    def __init__(self, out_dir: Path, cfg: RobustnessConfig, run: Path, label: str, dataset: str):
        import hashlib
        import json



        w = model_folder(run) / WEIGHTS_FILE if run.exists() else run / WEIGHTS_FILE
        keep = ("n_eval", "n_eval_expensive", "pgd_steps", "pgd_restarts", "pgd_alpha", "apgd_steps", "fab_steps",
                "square_queries", "n_targets", "seed", "data_root")  # what one (attack, eps) result depends on
        settings = {k: getattr(cfg, k) for k in keep}
        for k, off in (("chunk", 0), ("mixed_precision", "no")):  # only when set: the default caches keep their keys
            if getattr(cfg, k) != off:
                settings[k] = getattr(cfg, k)
        h = hashlib.sha256(json.dumps([settings, str(run), label, dataset,
                                       sha256_file(w) if w.exists() else "in-memory"], sort_keys=True).encode())
        self.dir = out_dir / "cache" / h.hexdigest()[:16]
        self.enabled = w.exists()  # in-memory models (tests) are not cached

    def _path(self, a: str, e: float, ext: str, lo: int | None = None) -> Path:
        chunk = "" if lo is None else f"__{lo:06d}"  # a chunk of images from the lo-th on (RobustnessConfig.chunk)
        return self.dir / f"{a}__eps{e:.6g}{chunk}{ext}"  # (not Path.with_suffix: "0.3" would lose its ".3")

    def get(self, a: str, e: float, lo: int | None = None) -> dict | None:
        if not self.enabled or not self._path(a, e, ".json", lo).exists():
            return None
        meta = read_json(self._path(a, e, ".json", lo))
        t = load_weights(self._path(a, e, ".safetensors", lo))
        r = {"robust": t["robust"].bool(), "success_by": t["success_by"], "seconds": meta["seconds"],
             "n_attacked": meta["n_attacked"], "threads": meta.get("threads")}
        if "adv_logits" in t:
            r["adv_logits"] = t["adv_logits"]
        return r

    def put(self, a: str, e: float, r: dict, lo: int | None = None) -> None:
        if not self.enabled:
            return
        t = {"robust": r["robust"].to(torch.uint8), "success_by": r["success_by"]}
        if "adv_logits" in r:
            t["adv_logits"] = r["adv_logits"]
        save_weights(self._path(a, e, ".safetensors", lo), t)
        write_json(self._path(a, e, ".json", lo), {"seconds": r["seconds"], "n_attacked": r["n_attacked"],
                                                    "threads": r.get("threads")})  # commit record


def _model_names(models: list) -> list[str]:
    base = [("Sine" if c.head == "sine" else "Standard CNN") for _, _, c in models]
    return [b if base.count(b) == 1 else f"{b} ({run.name})" for b, (run, _, _) in zip(base, models)]


def _print_checks(label: str, checks: dict, log) -> None:
    for name, c in checks.items():
        if c["passed"] is False:
            log.warning(f"!!! SANITY CHECK FAILED [{label}] {name}: {c['detail']}")
        else:
            status = "passed" if c["passed"] else "not run"
            log.info(f"sanity check {status} [{label}] {name}: {c['detail']}")


# -- tables & figures ----------------------------------------------------------------------------------
def table_rows(summary: dict) -> list[dict]:
    labels = list(summary["models"])
    rows = [{"attack": "Clean", "eps": 0.0, "n": summary["n_eval"],
             **{lb: summary["models"][lb]["clean_accuracy"] for lb in labels}}]
    for a, meta in summary["attacks"].items():
        eps_all = sorted({v["eps"] for lb in labels for v in summary["models"][lb]["results"].get(a, {}).values()})
        for e in eps_all:
            row = {"attack": meta["label"], "eps": e, "n": meta["subset"]}
            for lb in labels:
                r = summary["models"][lb]["results"].get(a, {}).get(f"{e:.6g}")
                row[lb] = None if r is None else r["accuracy"]
            rows.append(row)
    return rows


def paired_rows(per_example: dict[str, dict], summary: dict) -> list[dict]:
    """Two models on the same images: per attack and eps, and per-example worst case over every attack at each eps,
    McNemar's exact test and Newcombe's 95% interval for acc(second) - acc(first)
    (:mod:`eegsine.bench.robustness.paired_stats`).
    ``per_example[label][attack][eps]`` are the reported masks, already nested across eps (:func:`nest_results`),
    so the worst case at eps covers every attack at that eps or a smaller one. Empty unless exactly two models
    were evaluated."""
    from eegsine.bench.robustness.paired_stats import paired_compare

    labels = list(per_example)
    if len(labels) != 2:
        return []
    a_lb, b_lb = labels[1], labels[0]
    A, B = per_example[a_lb], per_example[b_lb]
    rows = []

    def add(attack: str, eps: float, ra: torch.Tensor, rb: torch.Tensor, used: dict) -> None:
        m = min(len(ra), len(rb))
        rows.append({"attack": attack, "eps": eps, "a": a_lb, "b": b_lb, "attacks_used": used,
                     **paired_compare(ra[:m].numpy(), rb[:m].numpy())})

    for att in [k for k in A if k in B]:
        for e in sorted(e for e in A[att] if e in B[att]):
            label = "Clean" if att == "clean" else summary["attacks"][att]["label"]
            add(label, e, A[att][e], B[att][e], {a_lb: [att], b_lb: [att]})
    for e in sorted({e for per in (A, B) for att, d in per.items() if att != "clean" for e in d}):
        worst, used = {}, {}
        for lb, per in ((a_lb, A), (b_lb, B)):
            atts = [att for att, d in per.items() if att != "clean" and e in d]
            if not atts:
                break
            m = min(len(per[att][e]) for att in atts)  # the expensive attacks ran on a prefix of the subset
            w = per["clean"][0.0][:m].clone()
            for att in atts:
                w &= per[att][e][:m]
            below = only_below({att: d for att, d in per.items() if att != "clean"}, e)
            for att, e0 in below.items():  # run only at a smaller eps: broken there is broken here
                and_prefix(w, per[att][e0])
            worst[lb], used[lb] = w, sorted(atts) + [f"{att}@{_fmt_eps(e0)}" for att, e0 in sorted(below.items())]
        if len(worst) == 2:
            add("Worst case per example over every attack", e, worst[a_lb], worst[b_lb], used)
    return rows


def render_markdown(summary: dict) -> str:
    labels = list(summary["models"])
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
    out = [f"## Robust accuracy (%) on {summary['dataset']} test ({summary['data_source']})", "",
           f"L-inf eps in [0, 1] pixel units. n_eval = {summary['n_eval']} test images (seed {summary['seed']}); "
           f"APGD-T, FAB-T, Square and AutoAttack on the first {summary['n_eval_expensive']} of them. "
           "Only clean-correct images are attacked; accuracy is over all n images. "
           "Adaptive attacks (BPDA, pre-sine) are judged by the real model; — = not applicable. " + CAPTION, "",
           _nesting_note(summary), ""]
    out += md_table(["Attack", "eps", *labels, "n"],
                    [[r["attack"], _fmt_eps(r["eps"]) if r["eps"] else "0", *(pct(r.get(lb)) for lb in labels),
                      str(r["n"])] for r in summary["table"]])
    reduced = [m["label"] for m in summary["attacks"].values() if not m["full_strength"]]
    if reduced:
        out += ["", "**Reduced strength** (not the published setting): " + ", ".join(reduced) + "."]
    if summary.get("paired"):
        p0 = summary["paired"][0]
        out += ["", f"### Paired comparison on the same images: {p0['a']} - {p0['b']}", "",
                "McNemar exact (two-sided binomial on the discordant pairs); 95% interval for the accuracy difference: "
                "Newcombe 1998 method 10 (paired Wilson score). The worst case is per example over every attack run "
                "at that eps or a smaller one (on the prefix every one of them reached).", ""]
        out += md_table(["Attack", "eps", "n", "difference, points [95% CI]", "only a / only b robust", "McNemar p"],
                        [_paired_cells(r) for r in summary["paired"]])
    out += ["", "### Sanity checks", ""]
    for lb in labels:
        for name, c in summary["models"][lb]["checks"].items():
            mark = {True: "PASS", False: "**FAIL**", None: "not run"}[c["passed"]]
            out.append(f"- {mark} [{lb}] `{name}`: {c['detail']}")
    threads = sorted({str(v.get("threads")) for lb in labels for per in summary["models"][lb]["results"].values()
                      for v in per.values()})
    out += ["", "### Speed (images/s = attacked images / attack wall time; torch threads when computed: "
            f"{', '.join(threads)})", ""]
    attacks = sorted({a for lb in labels for a in summary["models"][lb]["images_per_s"]})
    speed = {lb: summary["models"][lb]["images_per_s"] for lb in labels}
    out += md_table(["Attack", *labels], [[a, *(str(speed[lb].get(a, "—")) for lb in labels)] for a in attacks])
    return "\n".join(out) + "\n"


def _paired_cells(r: dict) -> list[str]:
    lo, hi = r["ci_newcombe"]
    return [r["attack"], _fmt_eps(r["eps"]) if r["eps"] else "0", str(r["n"]),
            f"{100 * r['diff']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]", f"{r['n10']} / {r['n01']}",
            f"{r['p_mcnemar_exact']:.3g}"]


def _nesting_note(summary: dict) -> str:
    """The (model, attack, eps) cells where the nesting across eps changed the single run's figure."""
    added = [f"{lb} {summary['attacks'].get(a, {}).get('label', a)} eps={_fmt_eps(v['eps'])}: "
             f"{v['broken_at_smaller_eps']} (single run {100 * v['accuracy_single_run']:.1f})"
             for lb, m in summary["models"].items() for a, per in m["results"].items() for v in per.values()
             if v.get("broken_at_smaller_eps")]
    return ("Images broken at a smaller eps that the run at this eps missed (added by the nesting): "
            + ("; ".join(added) if added else "none") + ".")


def plot_acc_vs_eps(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = [a for a in summary["attacks"] if any(len(summary["models"][lb]["results"].get(a, {})) > 0
                                                  for lb in summary["models"])]
    cols = min(4, max(1, len(attacks)))
    rows = (len(attacks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, a in zip(axes.flat, attacks):
        for lb, m in summary["models"].items():
            pts = sorted((v["eps"], v["accuracy"]) for v in m["results"].get(a, {}).values())
            if pts:
                ax.plot([0.0] + [p[0] for p in pts], [m["clean_accuracy"]] + [p[1] for p in pts], marker="o",
                        ls="--" if m["head"] == "sine" else "-", label=lb)
        ax.set_title(summary["attacks"][a]["label"], fontsize=7)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("eps ([0, 1] pixel units)", fontsize=7)
        ax.set_ylabel("accuracy", fontsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(attacks):]:
        ax.axis("off")
    fig.suptitle(f"Robust accuracy vs eps, {summary['dataset']} test, n={summary['n_eval']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_logits(store: dict, path: Path, dataset: str) -> None:
    """Per model: histograms of all logits and of the true-class logit, clean vs PGD-CE at the middle eps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(store), figsize=(4.2 * len(store), 6), squeeze=False)
    for j, (lb, s) in enumerate(store.items()):
        es = sorted(s["adv"])
        e = min(es, key=lambda v: abs(v - (0.3 if dataset in GREY_SETS else 8 / 255)))
        clean, adv, y = s["clean"], s["adv"][e], s["y"]
        for i, (title, f) in enumerate((("all logits", lambda z: z.flatten()),
                                        ("true-class logit", lambda z: z.gather(1, y[:, None]).flatten()))):
            ax = axes[i, j]
            lo, hi = float(min(clean.min(), adv.min())), float(max(clean.max(), adv.max()))
            bins = np.linspace(lo, hi, 50)
            ax.hist(f(clean).numpy(), bins=bins, alpha=0.55, density=True, label="clean")
            ax.hist(f(adv).numpy(), bins=bins, alpha=0.55, density=True, label=f"PGD-CE eps={_fmt_eps(e)}")
            ax.set_title(f"{lb}: {title}", fontsize=8)
            ax.legend(fontsize=6)
    n_shown = len(next(iter(store.values()))["y"])
    fig.suptitle(f"Logit distributions, clean vs adversarial ({dataset} test, n={n_shown})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
