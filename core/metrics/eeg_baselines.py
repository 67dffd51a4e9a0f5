"""Simple, standard classifiers for EEG trials (N, C, T), the reference row beside the encoder on ``uea:<Name>``.

Each baseline is fitted on the training trials only; every free parameter (window count,
regularisation C, shrinkage) is chosen by stratified k-fold cross-validation *inside* the
training trials, never on test. Each returns ``{"top1", "n_test", "features", "chosen"}``.

* :func:`majority` -- the most frequent training class, for every test trial.
* :func:`window_mean_logreg` -- per-channel means over ``w`` equal time windows (C x w
  features; ``w`` by CV from 1..16), standardised, L2 logistic regression (C by CV). With
  ``w = 1`` this is the mean amplitude per channel: the slow-cortical-potential feature of
  SelfRegulationSCP1, whose class is a DC shift.
* :func:`window_mean_lda` -- the same window means with shrinkage LDA (Ledoit-Wolf): the
  classic ERP / readiness-potential classifier of BCI competitions.
* :func:`bandpower_logreg` -- log band power per channel (δ θ α β γ, Welch) + logistic
  regression: :func:`eegsine.metrics.embedding.bandpower_baseline`, the trainer's control.
* :func:`tangent_space_logreg` -- per-trial spatial covariance (shrunk), whitened by the
  log-Euclidean mean of the training covariances, matrix log, upper triangle
  (off-diagonal x sqrt 2) + logistic regression: the Riemannian "tangent space" classifier
  standard in motor-imagery BCI. It removes each channel's mean, so it sees no DC.
* :func:`nn1_euclidean` -- 1-nearest neighbour, Euclidean distance on the raw series (the
  ``ED`` baseline of the UEA archive paper).

Hand-written on numpy / scipy / scikit-learn (a few lines each); no code from other projects.
"""
from __future__ import annotations

import numpy as np

from eegsine.errors import UserError
from eegsine.metrics.embedding import bandpower_baseline

C_GRID = np.logspace(-3, 3, 13)
WINDOWS = (1, 2, 4, 8, 16)


def _folds(y: np.ndarray, seed: int, k: int = 5):
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y)
    n = max(2, min(k, int(counts[counts > 0].min())))
    return StratifiedKFold(n, shuffle=True, random_state=seed)


def _check(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray) -> None:
    if x_tr.ndim != 3 or x_te.ndim != 3 or x_tr.shape[1:] != x_te.shape[1:]:
        raise UserError(f"baselines: trials must be (N, C, T) with equal C, T; got {x_tr.shape} and {x_te.shape}")
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise UserError("baselines: trials and labels differ in number")
    if len(np.unique(y_tr)) < 2:
        raise UserError("baselines: the training trials hold fewer than 2 classes")


def _result(pred: np.ndarray, y_te: np.ndarray, features: str, chosen: dict) -> dict:
    return {"top1": float((pred == y_te).mean()), "n_test": int(len(y_te)), "features": features, "chosen": chosen}


def majority(y_tr: np.ndarray, y_te: np.ndarray) -> dict:
    """Predict the most frequent training class (the lowest label on ties) for every test trial."""
    counts = np.bincount(y_tr)
    c = int(np.argmax(counts))
    return _result(np.full(len(y_te), c), y_te, "none (most frequent training class)", {"class": c})


def window_means(x: np.ndarray, n_windows: int) -> np.ndarray:
    """Per-channel means over ``n_windows`` equal consecutive time windows: (N, C, T) -> (N, C * n_windows).

    When T is not a multiple, the last ``T mod n_windows`` samples join the last window."""
    n, c, t = x.shape
    if not 1 <= n_windows <= t:
        raise UserError(f"window_means: n_windows={n_windows} must be in [1, {t}]")
    edges = np.linspace(0, t, n_windows + 1).astype(int)
    return np.stack([x[..., a:b].mean(-1) for a, b in zip(edges[:-1], edges[1:])], axis=-1).reshape(n, -1)


def _cv_pick(make, feats: dict, y: np.ndarray, grid: list[dict], seed: int) -> tuple[dict, float]:
    """Best (feature key + estimator params) by mean CV accuracy on the training trials; ties -> first in grid."""
    from sklearn.model_selection import cross_val_score

    best, best_s = grid[0], -1.0
    cv = _folds(y, seed)
    for g in grid:
        s = float(cross_val_score(make(**{k: v for k, v in g.items() if k != "key"}), feats[g["key"]], y, cv=cv).mean())
        if s > best_s + 1e-12:
            best, best_s = g, s
    return best, best_s


def _logreg(C: float = 1.0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))


def _shrinkage_lda():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))


def window_mean_logreg(x_tr, y_tr, x_te, y_te, seed: int = 0, windows=WINDOWS) -> dict:
    """Window means (count by CV) + standardise + logistic regression (C by CV), fitted on the training trials."""
    _check(x_tr, y_tr, x_te, y_te)
    windows = [w for w in windows if w <= x_tr.shape[-1]]
    f_tr = {w: window_means(x_tr, w) for w in windows}
    grid = [{"key": w, "C": float(c)} for w in windows for c in C_GRID]
    best, cv_acc = _cv_pick(_logreg, f_tr, y_tr, grid, seed)
    clf = _logreg(best["C"]).fit(f_tr[best["key"]], y_tr)
    pred = clf.predict(window_means(x_te, best["key"]))
    return _result(pred, y_te, "per-channel means over w equal time windows",
                   {"windows": int(best["key"]), "C": best["C"], "cv_top1": cv_acc})


def window_mean_lda(x_tr, y_tr, x_te, y_te, seed: int = 0, windows=WINDOWS) -> dict:
    """Window means (count by CV) + shrinkage LDA (Ledoit-Wolf shrinkage, no free parameter)."""
    _check(x_tr, y_tr, x_te, y_te)
    windows = [w for w in windows if w <= x_tr.shape[-1]]
    f_tr = {w: window_means(x_tr, w) for w in windows}
    best, cv_acc = _cv_pick(_shrinkage_lda, f_tr, y_tr, [{"key": w} for w in windows], seed)
    clf = _shrinkage_lda().fit(f_tr[best["key"]], y_tr)
    pred = clf.predict(window_means(x_te, best["key"]))
    return _result(pred, y_te, "per-channel means over w equal time windows, shrinkage LDA",
                   {"windows": int(best["key"]), "cv_top1": cv_acc})


def bandpower_logreg(x_tr, y_tr, x_te, y_te, sfreq: float, seed: int = 0) -> dict:
    """The trainer's band-power control (:func:`eegsine.metrics.embedding.bandpower_baseline`), in this module's
    format."""
    _check(x_tr, y_tr, x_te, y_te)
    r = bandpower_baseline(x_tr, y_tr, x_te, y_te, sfreq, seed)
    return {"top1": r["top1"], "n_test": r["n_test"], "features": r["features"], "chosen": {"C": "5-fold CV"}}


# -- tangent space ---------------------------------------------------------------------------------
def covariances(x: np.ndarray, shrink: float = 0.05) -> np.ndarray:
    """Per-trial spatial covariance of the channel-centred trial, shrunk towards its mean eigenvalue: (N, C, C)."""
    xc = x - x.mean(-1, keepdims=True)
    cov = np.einsum("nct,ndt->ncd", xc, xc) / x.shape[-1]
    mu = np.trace(cov, axis1=1, axis2=2)[:, None, None] / x.shape[1]
    eye = np.eye(x.shape[1])[None]
    return (1 - shrink) * cov + shrink * mu * eye


def _sym_fn(m: np.ndarray, fn) -> np.ndarray:
    w, v = np.linalg.eigh(m)
    return (v * fn(w)[..., None, :]) @ np.swapaxes(v, -1, -2)


def tangent_vectors(cov: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """log(ref^-1/2 C ref^-1/2), upper triangle with off-diagonals x sqrt(2): (N, C, C) -> (N, C (C + 1) / 2)."""
    isq = _sym_fn(ref, lambda w: 1.0 / np.sqrt(np.maximum(w, 1e-12)))
    logs = _sym_fn(isq @ cov @ isq, lambda w: np.log(np.maximum(w, 1e-12)))
    iu = np.triu_indices(cov.shape[1])
    weight = np.where(iu[0] == iu[1], 1.0, np.sqrt(2.0))
    return logs[:, iu[0], iu[1]] * weight


def log_euclidean_mean(cov: np.ndarray) -> np.ndarray:
    return _sym_fn(_sym_fn(cov, lambda w: np.log(np.maximum(w, 1e-12))).mean(0), np.exp)


def tangent_space_logreg(x_tr, y_tr, x_te, y_te, seed: int = 0) -> dict:
    """Spatial covariances in the tangent space at the training set's log-Euclidean mean + logistic regression."""
    _check(x_tr, y_tr, x_te, y_te)
    c_tr, c_te = covariances(x_tr.astype(np.float64)), covariances(x_te.astype(np.float64))
    ref = log_euclidean_mean(c_tr)  # training trials only
    f_tr, f_te = tangent_vectors(c_tr, ref), tangent_vectors(c_te, ref)
    best, cv_acc = _cv_pick(_logreg, {0: f_tr}, y_tr, [{"key": 0, "C": float(c)} for c in C_GRID], seed)
    pred = _logreg(best["C"]).fit(f_tr, y_tr).predict(f_te)
    return _result(pred, y_te, "spatial covariance (shrinkage 0.05) -> tangent space at the log-Euclidean mean",
                   {"C": best["C"], "cv_top1": cv_acc})


def nn1_euclidean(x_tr, y_tr, x_te, y_te) -> dict:
    """1-nearest neighbour by Euclidean distance over all channels and samples (no normalisation, no parameter)."""
    _check(x_tr, y_tr, x_te, y_te)
    a, b = x_te.reshape(len(x_te), -1).astype(np.float64), x_tr.reshape(len(x_tr), -1).astype(np.float64)
    d = (a ** 2).sum(1)[:, None] - 2 * a @ b.T + (b ** 2).sum(1)[None]
    return _result(y_tr[np.argmin(d, axis=1)], y_te, "raw series, Euclidean distance", {})


BASELINES = ("majority", "window_mean_logreg", "window_mean_lda", "bandpower_logreg", "tangent_space_logreg",
             "nn1_euclidean")


def run_all(x_tr, y_tr, x_te, y_te, sfreq: float, seed: int = 0) -> dict[str, dict]:
    """Every baseline of :data:`BASELINES` on one split -> {name: result}."""
    return {"majority": majority(y_tr, y_te),
            "window_mean_logreg": window_mean_logreg(x_tr, y_tr, x_te, y_te, seed),
            "window_mean_lda": window_mean_lda(x_tr, y_tr, x_te, y_te, seed),
            "bandpower_logreg": bandpower_logreg(x_tr, y_tr, x_te, y_te, sfreq, seed),
            "tangent_space_logreg": tangent_space_logreg(x_tr, y_tr, x_te, y_te, seed),
            "nn1_euclidean": nn1_euclidean(x_tr, y_tr, x_te, y_te)}
