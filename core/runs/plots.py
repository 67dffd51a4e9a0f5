"""Every PNG the trainers write: matplotlib's Agg backend set once, here, and figures saved atomically.

Importing this module selects Agg (no display is ever assumed); the rest of eegsine plots
through it instead of calling ``matplotlib.use`` itself. Images are (C, H, W) arrays in
[0, 1], one channel drawn grey. Hand-written: a few matplotlib calls per figure; no plotting
library in the stack draws these layouts (sample grids with the ground truth rightmost,
per-layer gradient-norm curves).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402 - after the backend is chosen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from eegsine.io import atomic_path  # noqa: E402


def save_figure(fig, path: str | Path, dpi: int) -> Path:
    """Write ``fig`` as a PNG (temp file + rename, parent folders created) and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path


def _show(ax, img: np.ndarray) -> None:
    """One (C, H, W) image in [0, 1] on ``ax``, without ticks."""
    im = img.transpose(1, 2, 0)
    ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([]), ax.set_yticks([])


def save_png(path: str | Path, img: np.ndarray) -> None:
    """One (C, H, W) image in [0, 1] -> a PNG of its own pixels (grey for one channel)."""
    im = img.transpose(1, 2, 0)
    with atomic_path(path) as tmp:
        if im.shape[-1] == 1:
            mpimg.imsave(tmp, im[..., 0], cmap="gray", vmin=0, vmax=1, format="png")
        else:
            mpimg.imsave(tmp, np.clip(im, 0, 1), format="png")


# -- sample grids ------------------------------------------------------------------------------
def save_grid(path: Path, samples: np.ndarray, truth: np.ndarray | None, title: str = "") -> Path:
    """samples (T, S, C, H, W), truth (T, C, H, W) or None -> PNG: a row per trial, ground truth rightmost."""
    T, S = samples.shape[:2]
    K = S + (truth is not None)
    fig, axes = plt.subplots(T, K, figsize=(0.9 * K, 0.9 * T + 0.4), squeeze=False)
    for i in range(T):
        for j in range(K):
            _show(axes[i, j], samples[i, j] if j < S else truth[i])
            if i == 0:
                axes[i, j].set_title("truth" if j == S else f"s{j}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def save_strip(grid_dir: Path, epochs_samples: list[np.ndarray], truth: np.ndarray) -> Path:
    """Rows = epochs (each grid trial's first sample), last row = ground truth: shows where quality jumps."""
    rows = [np.asarray(e) for e in epochs_samples] + [truth]
    E, T = len(rows), len(truth)
    fig, axes = plt.subplots(E, T, figsize=(0.7 * T + 0.5, 0.7 * E + 0.2), squeeze=False)
    for e, row in enumerate(rows):
        for j in range(T):
            _show(axes[e, j], row[j])
        axes[e, 0].set_ylabel("truth" if e == E - 1 else f"ep {e + 1}", fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.2)
    return save_figure(fig, grid_dir / "strip.png", dpi=80)


def save_condition_strip(path: Path, truth: np.ndarray, columns: dict[str, np.ndarray], row_labels: list[str]) -> Path:
    """The first-screen picture: a row per trial, the seen image first, then one image per condition.

    truth (T, C, H, W); ``columns``: condition name -> (T, C, H, W) generated images (the same seed).
    """
    cols = [("seen image", truth), *columns.items()]
    T, K = len(truth), len(cols)
    fig, axes = plt.subplots(T, K, figsize=(0.9 * K + 0.6, 0.9 * T + 0.3), squeeze=False)
    for i in range(T):
        for j, (name, imgs) in enumerate(cols):
            _show(axes[i, j], imgs[i])
            if i == 0:
                axes[i, j].set_title(name, fontsize=7)
        axes[i, 0].set_ylabel(row_labels[i], fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.2)
    return save_figure(fig, path, dpi=90)


# -- training curves -----------------------------------------------------------------------------
def plot_joint(path: Path, progress: dict, ref: float | None, chance: float) -> Path:
    """Joint ablation: gradient norm reaching encoder vs UNet per step, and the encoder's retrieval per epoch."""
    log = np.asarray(progress["grad_log"], dtype=np.float64)
    hist = progress["history"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.semilogy(log[:, 0], np.maximum(log[:, 1], 1e-12), label="encoder", lw=0.8)
    a.semilogy(log[:, 0], np.maximum(log[:, 2], 1e-12), label="UNet", lw=0.8)
    a.set_xlabel("step"), a.set_ylabel("gradient L2 norm"), a.legend()
    a.set_title("joint: gradient reaching each part")
    b.plot([h["epoch"] for h in hist], [h["encoder_retrieval_top1"] for h in hist], "o-", label="joint encoder")
    if ref is not None:
        b.axhline(ref, color="g", ls="--", label="aligned (two-stage)")
    b.axhline(chance, color="gray", ls=":", label="chance")
    b.set_xlabel("epoch"), b.set_ylabel("1-NN retrieval top-1 (val)"), b.legend(fontsize=7), b.set_ylim(0, 1)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def plot_grad_norms(grad_log: dict[str, list[float]], path: Path, title: str) -> Path:
    """Per-layer gradient norms over the first training steps, one curve per layer (log scale)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    cmap = plt.get_cmap("viridis")
    names = list(grad_log)
    for i, name in enumerate(names):
        ax.plot(np.maximum(grad_log[name], 1e-30), label=name, color=cmap(i / max(1, len(names) - 1)))
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("||dL/dW|| (per layer)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def plot_layer_norms(norms: dict[str, dict[str, float]], layers: list[str], path: Path, title: str) -> Path:
    """One line per setting (e.g. a head init) over the layers in forward order: gradient norms at init."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for setting, by_layer in norms.items():
        ax.plot(range(len(layers)), [max(by_layer[n], 1e-30) for n in layers], marker="o", label=f"init={setting}")
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("||dL/dW|| at init")
    ax.set_title(title, fontsize=8)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def plot_accuracy_curves(history: list[dict], keys: tuple[str, ...], path: Path, ylabel: str, title: str) -> Path:
    """Accuracies (``keys`` of each history record) against the record's ``step``, on [0, 1]."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in keys:
        ax.plot([r["step"] for r in history], [r[k] for r in history], marker="o", label=k)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
