"""Per-example cross-check of eegsine's AutoAttack against the authors' reference implementation.

The reference is Croce & Hein's own code (github.com/fra31/auto-attack) as packaged on PyPI as
``pyautoattack`` 0.2.0: its attack modules (autopgd_base, fab_base/fab_pt/fab_projections, square,
other_utils, state) are the repository's files at commit a392200 (2023-01-09) up to import paths and
whitespace; ``autoattack.py`` and ``checks.py`` differ only in API (keyword arguments, ``batch_size``,
always returning ``(x_adv, y_adv)``), logging through :mod:`logging`, and the TensorFlow path removed.

:func:`crosscheck` runs both "standard" ensembles (APGD-CE, APGD-T 9 targets, FAB-T 9 targets, Square
5,000 queries; L-inf) on the same images and returns, per image, whether each broke it. eegsine's ensemble
must break every image the reference breaks (``tests/test_autoattack_reference.py``, a slow test).

``python -m eegsine.bench.experiments.aa_crosscheck --model standard=DIR --model sine=DIR --n 100 --out FILE.json``
writes the per-example comparison for committed models.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from eegsine.io import write_json


def reference_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int = 0,
                         batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """pyautoattack's standard L-inf AutoAttack -> (x_adv, predicted labels on x_adv)."""
    try:
        from pyautoattack import AutoAttack
    except ImportError as e:
        raise ImportError("the AutoAttack cross-check needs the authors' reference: pip install pyautoattack==0.2.0 "
                          "(no dependencies of its own; `make install` installs it)", name="pyautoattack") from e
    aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, device="cpu")
    x_adv, y_adv = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    return x_adv.detach(), y_adv.detach()


def crosscheck(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int = 0) -> dict:
    """Both ensembles on the same images; -> per-example broken flags and summary counts."""
    from eegsine.attacks.algorithms import AutoAttackStandard

    model.eval()
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    ours = AutoAttackStandard(model, eps=eps, n_classes=int(model(x[:1]).shape[1]), seed=seed)
    adv = ours(x, y).detach()
    t_ours = time.perf_counter() - t0
    with torch.no_grad():
        ours_pred = model(adv).argmax(1)
    ours_broken = (ours.success_by != -1).cpu().numpy()  # -2: wrong clean, >= 0: a component broke it
    t0 = time.perf_counter()
    ref_adv, ref_pred = reference_autoattack(model, x, y, eps, seed)
    t_ref = time.perf_counter() - t0
    with torch.no_grad():
        ref_pred_check = model(ref_adv).argmax(1)
    ref_broken = (ref_pred != y).cpu().numpy()
    return {"eps": eps, "n": len(x), "seed": seed,
            "ours_broken": ours_broken, "ref_broken": ref_broken,
            "ours_success_by": ours.success_by.cpu().numpy(),
            "ours_adv_misclassified": (ours_pred != y).cpu().numpy(),
            "ours_linf": (adv - x).flatten(1).abs().amax(1).cpu().numpy(),
            "ref_linf": (ref_adv - x).flatten(1).abs().amax(1).cpu().numpy(),
            "ref_pred_consistent": bool((ref_pred_check == ref_pred).all()),
            "missed_by_ours": np.flatnonzero(ref_broken & ~ours_broken).tolist(),
            "missed_by_ref": np.flatnonzero(ours_broken & ~ref_broken).tolist(),
            "robust_ours": float(1 - ours_broken.mean()), "robust_ref": float(1 - ref_broken.mean()),
            "seconds_ours": round(t_ours, 1), "seconds_ref": round(t_ref, 1)}


def main(argv: list[str] | None = None) -> int:
    from eegsine.bench.experiments.paired_eval import Settings, _models_arg, load_models, load_subset

    p = argparse.ArgumentParser(prog="python -m eegsine.bench.experiments.aa_crosscheck")
    p.add_argument("--model", action="append", required=True, help="LABEL=MODEL_DIR")
    p.add_argument("--n", type=int, default=100, help="first N images of the paired evaluation's subset")
    p.add_argument("--eps", type=float, default=0.3, help="L-inf radius, [0, 1] pixel units")
    p.add_argument("--out", required=True, help="folder for the cross-check's results (JSON and markdown)")
    ns = p.parse_args(argv)
    torch.set_num_threads(1)
    x, y, sel, ds = load_subset(Settings())
    x, y = x[:ns.n], y[:ns.n]
    out = {"dataset": "mnist", "data_source": ds.source, "eps_units": "L-inf, [0, 1] pixel units",
           "test_indices": sel[:ns.n].tolist(), "reference": "pyautoattack 0.2.0 (fra31/auto-attack a392200)",
           "models": {}}
    for label, (model, sha, head) in load_models(_models_arg(ns.model)).items():
        r = crosscheck(model, x, y, ns.eps)
        out["models"][label] = {"weights_sha256": sha, "head": head, **{k: (v.tolist() if isinstance(v, np.ndarray)
                                                                             else v) for k, v in r.items()}}
        print(f"[{label}] eps={ns.eps}: robust ours {r['robust_ours']:.3f} vs reference {r['robust_ref']:.3f} "
              f"on {ns.n}; reference-only breaks: {r['missed_by_ours']}; ours-only: {r['missed_by_ref']}", flush=True)
        write_json(ns.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
