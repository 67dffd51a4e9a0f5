"""The figures the report draws itself from a run's JSON: every axis labelled, n in every title.

Written into ``<report dir>/report_figures/`` so that report.md can link them too.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from eegsine.io import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    _plt().close(fig)
    return path


def bench_latency(bench: dict[str, Any], path: Path) -> Path | None:
    """One row per model, one marker per backend: batch-1 p50 latency on a log axis."""
    ok = [r for r in bench.get("rows", []) if r.get("status") == "ok" and isinstance(r.get("p50_ms"), (int, float))]
    if not ok:
        return None
    plt = _plt()
    models = list(dict.fromkeys(r["model"] for r in ok))
    backends = list(dict.fromkeys(r["backend"] for r in ok))
    fig, ax = plt.subplots(figsize=(7.6, 0.32 * len(models) + 1.5))
    markers = "os^vD<>pPX*h"
    for k, b in enumerate(backends):
        pts = [(r["p50_ms"], models.index(r["model"])) for r in ok if r["backend"] == b]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=markers[k % len(markers)], s=26, label=b,
                   zorder=3)
    ax.set_xscale("log")
    ax.set_yticks(range(len(models)), models, fontsize=8)
    ax.invert_yaxis()
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.set_xlabel("batch-1 latency, p50 (ms, log scale)")
    ax.set_ylabel("model")
    iters = sorted({int(r["iters"]) for r in ok if isinstance(r.get("iters"), (int, float))})
    n = f"n = {iters[0]}" + (f"-{iters[-1]}" if len(iters) > 1 else "") + " timed calls per point" if iters else ""
    meta = bench.get("meta", {})
    ax.set_title(f"Bench latency ({n}, {meta.get('threads', '?')} threads)", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, path)


def diffusion_loss(diffusion: dict[str, Any], path: Path) -> Path | None:
    hist = [h for h in diffusion.get("history", []) if isinstance(h, dict) and "epoch" in h]
    if not hist:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.4, 3.0))
    ep = [h["epoch"] for h in hist]
    ax.plot(ep, [h.get("loss", math.nan) for h in hist], marker="o", ms=3, label="train")
    if any("val_loss" in h for h in hist):
        ax.plot(ep, [h.get("val_loss", math.nan) for h in hist], marker="s", ms=3, label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("denoising loss (MSE)")
    ax.set_title(f"Diffusion training loss, n = {diffusion.get('n_train_trials', '?')} training trials, "
                 f"{len(hist)} epochs", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def unet_sqnr(eeg: dict[str, Any], limit: float | None, path: Path) -> Path | None:
    per = eeg.get("unet_sqnr_db_per_timestep") or {}
    pts = sorted((int(t), float(v)) for t, v in per.items() if isinstance(v, (int, float)))
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.4, 3.0))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label="INT8 vs FP32")
    if limit is not None and limit > 0:
        ax.axhline(limit, color="#b00", lw=1, ls="--", label=f"gate {limit:g} dB")
    ax.set_xlabel("diffusion timestep t")
    ax.set_ylabel("UNet output SQNR (dB)")
    ax.invert_xaxis()  # sampling runs from t = 999 down to 0
    n = (eeg.get("data") or {}).get("n_trials", "?")
    ax.set_title(f"INT8 UNet agreement per timestep (teacher-forced), n = {n} trials", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
