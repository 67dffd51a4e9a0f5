"""Evaluating an EEG embedding: linear probe, k-means + Hungarian, n-way EEG->image retrieval,
few-shot prototypes on unseen classes, the 2-D embedding plot, and the control baselines.

numpy / scikit-learn / scipy only; every function takes embeddings (N, D) and labels (N,)
so any encoder (or control) is scored by the same code. Controls:

* ``class_only_embeddings``: the class-only encoder. No learning on the trial beyond its
  class: each trial is assigned to the nearest raw-EEG class mean (cosine, on
  trial-normalised, flattened EEG) and emits that class's mean image embedding. It carries
  class information only, so it bounds what "clusters by class" alone buys on every metric.
* shuffled labels: the same training run on label/image assignments permuted across trials
  (done by the trainer); scored here like any encoder.
* ``bandpower_baseline`` and ``lda_baseline``: the standard EEG classifiers, for classification accuracy;
  they live in :mod:`eegsine.metrics.eeg_baselines` (the one baseline set) and are re-exported here.

Hand-written: the metrics are a few lines each on top of sklearn's KMeans /
LogisticRegression and scipy's ``linear_sum_assignment``; no library bundles this protocol.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eegsine.errors import UserError
from eegsine.io import atomic_path
from eegsine.metrics.eeg_baselines import (BANDS, bandpower_baseline, bandpower_features,  # noqa: F401 - re-exported
                                           lda_baseline, window_means as _window_means)



def _l2(z: np.ndarray) -> np.ndarray:
    return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-12)


def hungarian_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of cluster ids ``pred`` after the best one-to-one cluster->class matching."""
    from scipy.optimize import linear_sum_assignment

    if len(pred) == 0:
        raise UserError("hungarian_accuracy: no samples")
    p_ids, p = np.unique(pred, return_inverse=True)
    y_ids, t = np.unique(y, return_inverse=True)
    cm = np.zeros((len(p_ids), len(y_ids)), np.int64)
    np.add.at(cm, (p, t), 1)
    rows, cols = linear_sum_assignment(-cm)
    return float(cm[rows, cols].sum() / len(y))


def kmeans_accuracy(z: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """k-means (k = number of classes present, on unit vectors) scored by Hungarian matching."""
    from sklearn.cluster import KMeans

    k = len(np.unique(y))
    pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(_l2(z).astype(np.float64))
    return hungarian_accuracy(pred, y)


def linear_probe_top1(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray) -> float:
    """Top-1 of a logistic regression fitted on frozen train embeddings."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y_train)) < 2:
        raise UserError("linear probe: the train split has fewer than 2 classes")
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(z_train, y_train)
    return float((clf.predict(z_test) == y_test).mean())


def retrieval_topk(z: np.ndarray, y: np.ndarray, image: np.ndarray, image_emb: np.ndarray, image_labels: np.ndarray,
                   pool: np.ndarray, n_way: int, ks: tuple[int, ...] = (1, 5), seed: int = 0) -> dict[str, float]:
    """n-way zero-shot EEG->image retrieval.

    For each trial: candidates are the image it saw plus one random image from each of
    ``n_way - 1`` other classes (drawn from ``pool``, the image indices shown in this
    split); candidates are ranked by cosine similarity to the trial's embedding.
    Returns top-k hit rates and their chance levels (k / n_way).
    """
    rng = np.random.default_rng(seed)
    pool = np.asarray(pool)
    pool_classes = np.unique(image_labels[pool])
    n_way = min(n_way, len(pool_classes))
    if n_way < 2:
        raise UserError(f"retrieval: need images of at least 2 classes, got {len(pool_classes)}")
    by_class = {int(c): pool[image_labels[pool] == c] for c in pool_classes}
    zi, ie = _l2(z), _l2(image_emb)
    hits = {k: 0 for k in ks}
    for i in range(len(z)):
        others = rng.choice(pool_classes[pool_classes != y[i]], size=n_way - 1, replace=False)
        cands = np.array([image[i]] + [rng.choice(by_class[int(c)]) for c in others])
        sims = ie[cands] @ zi[i]
        rank = int((sims > sims[0]).sum())  # ties count in the trial's favour only if exactly equal
        for k in ks:
            hits[k] += rank < k
    out = {f"top{k}": hits[k] / len(z) for k in ks}
    out.update({f"chance_top{k}": min(k, n_way) / n_way for k in ks})
    out["n_way"] = n_way
    return out


def prototype_fewshot(z_s: np.ndarray, y_s: np.ndarray, z_q: np.ndarray, y_q: np.ndarray, n_way: int, k_shot: int,
                      n_episodes: int = 200, seed: int = 0) -> dict[str, float]:
    """Few-shot accuracy: prototypes = mean of ``k_shot`` support embeddings per class, queries by cosine.

    Classes with fewer than ``k_shot`` support trials or no query trials are left out (and
    counted in ``classes_skipped``); fewer than 2 usable classes is an error.
    """
    rng = np.random.default_rng(seed)
    classes = [int(c) for c in np.unique(y_q) if (y_s == c).sum() >= k_shot]
    skipped = len(np.unique(np.concatenate([y_s, y_q]))) - len(classes)
    if len(classes) < 2:
        raise UserError(f"few-shot eval: need >= 2 classes with >= {k_shot} support trials, got {len(classes)}")
    n_way = min(n_way, len(classes))
    zs, zq = _l2(z_s), _l2(z_q)
    accs = []
    for _ in range(n_episodes):
        ep = rng.choice(classes, size=n_way, replace=False)
        protos = np.stack([zs[rng.choice(np.flatnonzero(y_s == c), size=k_shot, replace=False)].mean(0) for c in ep])
        qmask = np.isin(y_q, ep)
        pred = ep[np.argmax(zq[qmask] @ _l2(protos).T, axis=1)]
        accs.append(float((pred == y_q[qmask]).mean()))
    a = np.asarray(accs)
    return {"top1": float(a.mean()), "ci95": float(1.96 * a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0,
            "n_way": n_way, "k_shot": k_shot, "episodes": n_episodes, "chance": 1.0 / n_way,
            "classes_skipped": int(skipped)}


# -- controls ---------------------------------------------------------------------------------
def raw_features(x: np.ndarray) -> np.ndarray:
    """Trial-normalised, flattened EEG (N, C*T): the same normalisation the encoders apply."""
    x = x - x.mean(axis=-1, keepdims=True)
    x = x / (np.sqrt((x ** 2).mean(axis=(1, 2), keepdims=True)) + 1e-6)
    return x.reshape(len(x), -1).astype(np.float32)


def raw_class_means(x: np.ndarray, y: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean of :func:`raw_features`, in chunks (12k x 128 x 440 trials never flattened at once)."""
    classes = np.unique(y)
    sums = None
    counts = np.zeros(len(classes))
    pos = np.searchsorted(classes, y)
    for i in range(0, len(x), chunk):
        f = raw_features(x[i:i + chunk])
        sums = np.zeros((len(classes), f.shape[1])) if sums is None else sums
        np.add.at(sums, pos[i:i + chunk], f)
        np.add.at(counts, pos[i:i + chunk], 1)
    return (sums / counts[:, None]).astype(np.float32), classes


def nearest_class_mean(means: np.ndarray, classes: np.ndarray, x_eval: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Predict each trial's class by cosine to the raw-EEG class means: (N, C, T) -> (N,)."""
    m = _l2(means)
    out = [classes[np.argmax(_l2(raw_features(x_eval[i:i + chunk])) @ m.T, axis=1)]
           for i in range(0, len(x_eval), chunk)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def class_only_embeddings(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray,
                          class_emb: np.ndarray) -> np.ndarray:
    """Class-only encoder: (N, C, T) -> class_emb[nearest raw-EEG class mean] (N, D)."""
    means, classes = raw_class_means(x_train, y_train)
    return class_emb[nearest_class_mean(means, classes, x_eval)]


def window_means(x: np.ndarray, sfreq: float, win_ms: float = 40.0) -> np.ndarray:
    """Deprecated name: :func:`eegsine.metrics.eeg_baselines.window_means` with ``win_ms`` and ``sfreq``."""
    return _window_means(x, win_ms=win_ms, sfreq=sfreq)


# -- plot -------------------------------------------------------------------------------------
def embedding_plot(z: np.ndarray, y: np.ndarray, classes: list[str], path: str | Path, title: str,
                   method: str = "tsne", max_points: int = 1500, seed: int = 0) -> Path:
    """2-D t-SNE (or PCA) of embeddings coloured by class, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE


    rng = np.random.default_rng(seed)
    idx = rng.choice(len(z), size=min(len(z), max_points), replace=False)
    zz, yy = _l2(z[idx]), y[idx]
    if method == "tsne" and len(zz) > 10:
        xy = TSNE(n_components=2, perplexity=min(30.0, (len(zz) - 1) / 3), init="pca",
                  random_state=seed).fit_transform(zz)
    else:
        xy = PCA(n_components=2, random_state=seed).fit_transform(zz)
    fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
    present = np.unique(yy)
    cmap = plt.get_cmap("tab10" if len(present) <= 10 else "tab20" if len(present) <= 20 else "gist_ncar")
    for j, c in enumerate(present):
        m = yy == c
        ax.scatter(xy[m, 0], xy[m, 1], s=6, color=cmap(j / max(len(present) - 1, 1) if len(present) > 20 else j),
                   label=classes[int(c)] if int(c) < len(classes) else str(c))
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(present) <= 20:
        ax.legend(fontsize=6, markerscale=2, loc="best", ncol=2)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
