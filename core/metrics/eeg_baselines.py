"""The standard EEG baselines, one set for every EEG table: classifiers for trials (N, C, T) fitted on training
trials only, beside the encoder on ``uea:<Name>`` (``bench.experiments.uea_table``), in the encoder trainer's
controls and in the encoder table (``training.encoder_eval``, ``bench.experiments.encoder_table``).

Every free parameter (window count, regularisation C, shrinkage) is chosen by stratified k-fold
cross-validation *inside* the training trials, never on test. Each returns ``{"top1", "n_test", "features",
"chosen"}``. :data:`REGISTRY` lists the uea table's set (name, table label, fit on one split); a new baseline
(xDAWN + LDA, MiniRocket, ...) is one more :class:`Baseline` entry there, and :func:`run_all` runs it.

* :func:`majority` -- the most frequent training class, for every test trial.
* :func:`window_mean_logreg` -- per-channel means over ``w`` equal time windows (C x w
  features; ``w`` by CV from 1..16), standardised, L2 logistic regression (C by CV). With
  ``w = 1`` this is the mean amplitude per channel: the slow-cortical-potential feature of
  SelfRegulationSCP1, whose class is a DC shift.
* :func:`window_mean_lda` -- the same window means with shrinkage LDA (Ledoit-Wolf): the
  classic ERP / readiness-potential classifier of BCI competitions.
* :func:`bandpower_logreg` -- log band power per channel (δ θ α β γ, Welch) + logistic
  regression: :func:`bandpower_baseline`, the trainer's control.
* :func:`tangent_space_logreg` -- per-trial spatial covariance (shrunk), whitened by the
  log-Euclidean mean of the training covariances, matrix log, upper triangle
  (off-diagonal x sqrt 2) + logistic regression: the Riemannian "tangent space" classifier
  standard in motor-imagery BCI. It removes each channel's mean, so it sees no DC.
* :func:`nn1_euclidean` -- 1-nearest neighbour, Euclidean distance on the raw series (the
  ``ED`` baseline of the UEA archive paper).

The strong decoders of the field (issue #26), on pyriemann and aeon (``pip install ".[baselines]"`` and the aeon
line of README.md's install section; imported only inside their fits). Their free parameters are chosen on
validation trials carved from the training trials (:func:`validation_splits`: 5-fold stratified CV, one stratified
80 / 20 hold-out above :data:`VAL_KFOLD_MAX` trials), the grids named in each function:

* :func:`xdawn_lda` -- xDAWN spatial filters (2 per class) + window means + shrinkage LDA: the textbook ERP
  pipeline.
* :func:`erp_cov_ts` -- ERP covariances (class prototypes stacked over the trial) -> tangent space -> logistic
  regression (pyriemann ``ERPCovariances``, ``TangentSpace``).
* :func:`xdawn_cov_ts` -- the same on xDAWN-filtered trials and prototypes (pyriemann ``XdawnCovariances``).
* :func:`minirocket` / :func:`multirocket` -- aeon's classifiers with their default kernels (10,000), scaling
  and ``RidgeClassifierCV`` (its alpha by leave-one-out on the training trials), seeded.

Outside the registry, the encoder's references: :func:`lda_baseline` (shrinkage LDA on fixed-length window
means, the encoder table's "LDA reference") and :func:`bandpower_baseline`. Both tables read their window
means from the one :func:`window_means`; what differs (a window count or a window length) is its parameter.

The simple ones are hand-written on numpy / scipy / scikit-learn (a few lines each); the strong ones call
pyriemann's and aeon's estimators; no code from other projects.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from eegsine.errors import UserError

C_GRID = np.logspace(-3, 3, 13)
WINDOWS = (1, 2, 4, 8, 16)
ENCODER_LDA_WIN_MS = 40.0  # the encoder table's LDA reference (docs/results/encoder): 40 ms window means
BANDS = {"delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0), "gamma": (30.0, 45.0)}


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


def window_means(x: np.ndarray, n_windows: int | None = None, *, win_ms: float | None = None,
                 sfreq: float | None = None) -> np.ndarray:
    """Per-channel means over consecutive, non-overlapping time windows: (N, C, T) -> (N, C * W).

    Two window definitions, each behind a committed table; give exactly one:

    * ``n_windows``: W equal windows, edges ``floor(i T / W)`` (the uea table's, W chosen by CV); every sample
      is used (when T is not a multiple, the remainder is spread over the windows, e.g. T 10, W 3: 3, 3, 4).
    * ``win_ms`` with ``sfreq``: windows of ``round(win_ms * sfreq / 1000)`` samples (the encoder table's 40 ms
      ERP read-out); W = T // length, a trailing partial window dropped (one window of all T when T is shorter).
    """
    n, c, t = x.shape
    if (n_windows is None) == (win_ms is None):
        raise UserError("window_means: give either n_windows or win_ms (with sfreq)")
    if win_ms is not None:
        if sfreq is None or not (win_ms > 0 and sfreq > 0):
            raise UserError(f"window_means: win_ms={win_ms} needs a positive sfreq (got {sfreq})")
        w = max(1, int(round(win_ms * sfreq / 1000.0)))
        k = max(1, t // w)
        w = min(w, t)
        return x[:, :, :k * w].reshape(n, c, k, w).mean(-1).reshape(n, c * k)
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


def _window_grid(x: np.ndarray, windows) -> dict[int, np.ndarray]:
    return {w: window_means(x, w) for w in windows if w <= x.shape[-1]}


def _pick_window_logreg(x: np.ndarray, y: np.ndarray, seed: int, windows) -> tuple[dict, dict, float]:
    """(features by window count, the CV-chosen {"key": w, "C": c}, its CV accuracy) inside (x, y)."""
    feats = _window_grid(x, windows)
    best, acc = _cv_pick(_logreg, feats, y, [{"key": w, "C": float(c)} for w in feats for c in C_GRID], seed)
    return feats, best, acc


def window_mean_logreg(x_tr, y_tr, x_te, y_te, seed: int = 0, windows=WINDOWS) -> dict:
    """Window means (count by CV) + standardise + logistic regression (C by CV), fitted on the training trials."""
    _check(x_tr, y_tr, x_te, y_te)
    f_tr, best, cv_acc = _pick_window_logreg(x_tr, y_tr, seed, windows)
    clf = _logreg(best["C"]).fit(f_tr[best["key"]], y_tr)
    pred = clf.predict(window_means(x_te, best["key"]))
    return _result(pred, y_te, "per-channel means over w equal time windows",
                   {"windows": int(best["key"]), "C": best["C"], "cv_top1": cv_acc})


def window_mean_logreg_cv(x: np.ndarray, y: np.ndarray, seed: int = 0, windows=WINDOWS) -> dict:
    """Cross-validated accuracy of :func:`window_mean_logreg` inside (x, y) alone (no test): ``{"cv_top1",
    "windows", "C"}`` of the chosen parameters. How much linear information a preprocessing keeps."""
    _, best, acc = _pick_window_logreg(x, y, seed, windows)
    return {"cv_top1": acc, "windows": int(best["key"]), "C": best["C"]}


def window_mean_lda(x_tr, y_tr, x_te, y_te, seed: int = 0, windows=WINDOWS) -> dict:
    """Window means (count by CV) + shrinkage LDA (Ledoit-Wolf shrinkage, no free parameter)."""
    _check(x_tr, y_tr, x_te, y_te)
    f_tr = _window_grid(x_tr, windows)
    best, cv_acc = _cv_pick(_shrinkage_lda, f_tr, y_tr, [{"key": w} for w in f_tr], seed)
    clf = _shrinkage_lda().fit(f_tr[best["key"]], y_tr)
    pred = clf.predict(window_means(x_te, best["key"]))
    return _result(pred, y_te, "per-channel means over w equal time windows, shrinkage LDA",
                   {"windows": int(best["key"]), "cv_top1": cv_acc})


def bandpower_features(x: np.ndarray, sfreq: float, bands: dict[str, tuple[float, float]] | None = None) -> np.ndarray:
    """log band power per channel and band (Welch PSD): (N, C, T) -> (N, C * n_bands)."""
    from scipy.signal import welch

    bands = bands or BANDS
    nyq = sfreq / 2.0
    use = {k: (lo, min(hi, nyq)) for k, (lo, hi) in bands.items() if lo < nyq}
    freqs, psd = welch(x, fs=sfreq, nperseg=min(x.shape[-1], int(sfreq)), axis=-1)  # (N, C, F)
    feats = []
    for lo, hi in use.values():
        m = (freqs >= lo) & (freqs < hi)
        if not m.any():  # band narrower than the frequency resolution: take the nearest bin
            m = np.abs(freqs - (lo + hi) / 2) == np.abs(freqs - (lo + hi) / 2).min()
        feats.append(np.log(psd[..., m].mean(-1) + 1e-12))
    return np.concatenate(feats, axis=1) if feats else np.zeros((len(x), 0), np.float32)


def bandpower_baseline(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                       sfreq: float, seed: int = 0) -> dict[str, float]:
    """Log band-power + standardise + logistic regression (C chosen by 5-fold CV on train only)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    counts = np.bincount(y_train)
    folds = max(2, min(5, int(counts[counts > 0].min())))
    clf = GridSearchCV(pipe, {"logisticregression__C": np.logspace(-3, 3, 10)},
                       cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    clf.fit(bandpower_features(x_train, sfreq), y_train)
    acc = float((clf.predict(bandpower_features(x_test, sfreq)) == y_test).mean())
    return {"top1": acc, "features": f"log band power ({', '.join(BANDS)}) x channels, Welch",
            "n_test": int(len(y_test))}


def bandpower_logreg(x_tr, y_tr, x_te, y_te, sfreq: float, seed: int = 0) -> dict:
    """The trainer's band-power control (:func:`bandpower_baseline`), in this module's format."""
    _check(x_tr, y_tr, x_te, y_te)
    r = bandpower_baseline(x_tr, y_tr, x_te, y_te, sfreq, seed)
    return {"top1": r["top1"], "n_test": r["n_test"], "features": r["features"], "chosen": {"C": "5-fold CV"}}


def lda_baseline(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 sfreq: float, *, win_ms: float) -> dict:
    """Shrinkage LDA (Ledoit-Wolf, sklearn's lsqr solver) on ``win_ms`` window means: the linear ERP read-out.

    The reference an encoder is judged against (issue #18): fitted on the same train split and fed the
    same (loader-preprocessed) EEG as the encoder, before the encoder's own normalisation. The encoder
    table's committed figures use ``win_ms=40`` (:data:`ENCODER_LDA_WIN_MS`).
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # small solves; BLAS threads only add spin-waits here
        lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
        lda.fit(window_means(x_train, win_ms=win_ms, sfreq=sfreq), y_train)
        acc = float((lda.predict(window_means(x_test, win_ms=win_ms, sfreq=sfreq)) == y_test).mean())
    return {"top1": acc, "features": f"{win_ms:g} ms window means x channels, shrinkage LDA (Ledoit-Wolf)",
            "n_test": int(len(y_test))}


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


# -- the strong decoders (#26): pyriemann and aeon, imported inside their fits ----------------------------------
VAL_KFOLD_MAX = 2000  # above this many training trials one 80 / 20 hold-out, not 5 folds: a pyriemann transform of
#                       10^4 trials x 128 channels takes minutes per fit on one thread
XDAWN_FILTERS = 2  # per class: the textbook ERP pipeline the issue measured
XDAWN_WIN_MS = (20.0, 40.0, 80.0)  # xdawn_lda's window lengths; 20 ms (the textbook read-out) first, so ties keep it
TS_C_GRID = np.logspace(-3, 3, 7)  # logistic regression's C on tangent vectors
ERP_SVD_GRID = (None, 4)  # ERPCovariances' prototype reduction (None: every channel of each class prototype)
ERP_MAX_ROWS = 96  # svd=None only while (1 + classes) x channels stays this small (11 x 128 rows: 10^6 features)
XDAWN_COV_FILTERS = (2, 4)  # XdawnCovariances' filters per class
COV_ESTIMATOR = "oas"  # shrunk covariances: a super-trial can have more rows than a short trial has samples
PYRIEMANN_INSTALL = 'pip install -c requirements.lock ".[baselines]"'
AEON_INSTALL = ("the aeon line of README.md's install section "
                "(pip install --no-deps -c requirements.lock aeon==1.6.0 numba==0.68.1 ...)")


def _missing(package: str, install: str, err: ImportError) -> UserError:
    return UserError(f"baselines: {package} is not installed ({err}); install it with {install}")


def validation_splits(y: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, validation) index pairs inside the training trials: 5-fold stratified CV, or one stratified 80 / 20
    hold-out above :data:`VAL_KFOLD_MAX` trials. The strong baselines choose their parameters on these."""
    from sklearn.model_selection import StratifiedShuffleSplit

    idx = np.zeros(len(y))
    if len(y) > VAL_KFOLD_MAX:
        return list(StratifiedShuffleSplit(1, test_size=0.2, random_state=seed).split(idx, y))
    return list(_folds(y, seed).split(idx, y))


def _pick_on_validation(x, y, seed: int, transforms: dict, classifiers: dict) -> tuple[tuple, float]:
    """The (transform key, classifier key) with the best mean validation accuracy (ties: the first in the grids).
    Each transform is fitted once per split on that split's fit part only (it may use labels: xDAWN does)."""
    scores: dict[tuple, list[float]] = {}
    for a, b in validation_splits(y, seed):
        for tk, make_t in transforms.items():
            t = make_t().fit(x[a], y[a])
            f_a, f_b = t.transform(x[a]), t.transform(x[b])
            for ck, make_c in classifiers.items():
                acc = float((make_c().fit(f_a, y[a]).predict(f_b) == y[b]).mean())
                scores.setdefault((tk, ck), []).append(acc)
    best = max(scores, key=lambda k: float(np.mean(scores[k])))  # max keeps the first of equal scores
    return best, float(np.mean(scores[best]))


def _fit_chosen(x_tr, y_tr, x_te, seed: int, transforms: dict, classifiers: dict) -> tuple[np.ndarray, tuple, float]:
    """Choose on validation inside the training trials, refit the chosen pair on all of them, predict the test
    trials: (predictions, chosen keys, validation accuracy). Test labels are never an argument."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # many small solves: extra BLAS threads only spin-wait
        (tk, ck), val = _pick_on_validation(x_tr, y_tr, seed, transforms, classifiers)
        t = transforms[tk]().fit(x_tr, y_tr)
        pred = classifiers[ck]().fit(t.transform(x_tr), y_tr).predict(t.transform(x_te))
    return pred, (tk, ck), val


CHUNK = 256  # trials per float64 block: the default set's 9,600 x 128 x 440 trials are 4.3 GB in float64


def channel_covariance(x: np.ndarray) -> np.ndarray:
    """Covariance of the channels over every sample of every trial (N, C, T) -> (C, C), accumulated in float64
    over blocks of :data:`CHUNK` trials: xDAWN's signal covariance without pyriemann's float64 copy of all trials
    (the default set's made its process run out of 23 GB)."""
    n, c, t = x.shape
    total, scatter = np.zeros(c), np.zeros((c, c))
    for i in range(0, n, CHUNK):
        b = np.ascontiguousarray(x[i:i + CHUNK].transpose(1, 0, 2), dtype=np.float64).reshape(c, -1)
        total += b.sum(1)
        scatter += b @ b.T
    mean = total / (n * t)
    return scatter / (n * t) - np.outer(mean, mean)


def _blocks(fn, x: np.ndarray) -> np.ndarray:
    """``fn`` over float64 blocks of :data:`CHUNK` trials, concatenated (per-trial transforms only)."""
    return np.concatenate([fn(x[i:i + CHUNK].astype(np.float64)) for i in range(0, len(x), CHUNK)])


class XdawnWindows:
    """xDAWN spatial filters (``nfilter`` per class, pyriemann's :class:`Xdawn` against
    :func:`channel_covariance`) fitted on labelled trials, then means over ``win_ms`` windows of each filtered
    signal: (N, C, T) -> (N, K nfilter W)."""

    def __init__(self, nfilter: int, win_ms: float, sfreq: float):
        self.nfilter, self.win_ms, self.sfreq = nfilter, win_ms, sfreq

    def fit(self, x: np.ndarray, y: np.ndarray) -> "XdawnWindows":
        try:
            from pyriemann.spatialfilters import Xdawn
        except ImportError as e:
            raise _missing("pyriemann", PYRIEMANN_INSTALL, e) from None
        self.xdawn_ = Xdawn(nfilter=self.nfilter, baseline_cov=channel_covariance(x)).fit(x, y)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return window_means(_blocks(self.xdawn_.transform, x), win_ms=self.win_ms, sfreq=self.sfreq)


class BlockCovariances:
    """A pyriemann covariance estimator (``ERPCovariances`` / ``XdawnCovariances``, made by ``make``) whose
    per-trial transform runs on float64 blocks of trials; xDAWN's signal covariance from
    :func:`channel_covariance`."""

    def __init__(self, make, xdawn: bool = False):
        self.make, self.xdawn = make, xdawn

    def fit(self, x: np.ndarray, y: np.ndarray) -> "BlockCovariances":
        self.est_ = (self.make(baseline_cov=channel_covariance(x)) if self.xdawn else self.make()).fit(x, y)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return _blocks(self.est_.transform, x)


def xdawn_lda_predict(x_tr, y_tr, x_te, sfreq: float, seed: int = 0) -> tuple[np.ndarray, dict]:
    """xDAWN (:data:`XDAWN_FILTERS` per class) + window means (length from :data:`XDAWN_WIN_MS` on validation) +
    shrinkage LDA, fitted on the training trials: (test predictions, chosen)."""
    transforms = {w: (lambda w=w: XdawnWindows(XDAWN_FILTERS, w, sfreq)) for w in XDAWN_WIN_MS}
    pred, (w, _), val = _fit_chosen(x_tr, y_tr, x_te, seed, transforms, {"lda": _shrinkage_lda})
    return pred, {"filters_per_class": XDAWN_FILTERS, "win_ms": w, "val_top1": val}


def xdawn_lda(x_tr, y_tr, x_te, y_te, sfreq: float, seed: int = 0) -> dict:
    """:func:`xdawn_lda_predict` scored on the test trials."""
    _check(x_tr, y_tr, x_te, y_te)
    pred, chosen = xdawn_lda_predict(x_tr, y_tr, x_te, sfreq, seed)
    return _result(pred, y_te, f"xDAWN ({XDAWN_FILTERS} filters per class) -> window means (ms in "
                   f"{[int(w) for w in XDAWN_WIN_MS]}), shrinkage LDA", chosen)


def _tangent(cov_factory):
    """A factory of (covariance estimator -> tangent space at the training trials' Riemannian mean) pipelines."""
    try:
        from pyriemann.tangentspace import TangentSpace
    except ImportError as e:
        raise _missing("pyriemann", PYRIEMANN_INSTALL, e) from None
    from sklearn.pipeline import make_pipeline

    return lambda: make_pipeline(cov_factory(), TangentSpace(metric="riemann"))


def _ts_classifiers() -> dict:
    return {float(c): (lambda c=float(c): _logreg(c)) for c in TS_C_GRID}


def erp_cov_ts_predict(x_tr, y_tr, x_te, seed: int = 0) -> tuple[np.ndarray, dict]:
    """pyriemann ``ERPCovariances`` (OAS; svd from :data:`ERP_SVD_GRID`) -> ``TangentSpace`` -> standardised
    logistic regression (C from :data:`TS_C_GRID`), both chosen on validation: (test predictions, chosen)."""
    try:
        from pyriemann.estimation import ERPCovariances
    except ImportError as e:
        raise _missing("pyriemann", PYRIEMANN_INSTALL, e) from None
    n_cls, n_ch = len(np.unique(y_tr)), x_tr.shape[1]
    svds = [s for s in ERP_SVD_GRID if s is not None or (1 + n_cls) * n_ch <= ERP_MAX_ROWS]
    transforms = {s: _tangent(lambda s=s: BlockCovariances(lambda: ERPCovariances(estimator=COV_ESTIMATOR, svd=s)))
                  for s in svds}
    pred, (s, c), val = _fit_chosen(x_tr, y_tr, x_te, seed, transforms, _ts_classifiers())
    return pred, {"svd": "none" if s is None else s, "C": c, "val_top1": val}


def erp_cov_ts(x_tr, y_tr, x_te, y_te, seed: int = 0) -> dict:
    """:func:`erp_cov_ts_predict` scored on the test trials."""
    _check(x_tr, y_tr, x_te, y_te)
    pred, chosen = erp_cov_ts_predict(x_tr, y_tr, x_te, seed)
    return _result(pred, y_te, "ERP covariances (class prototypes + trial, OAS) -> tangent space (Riemannian mean) "
                   "-> logistic regression", chosen)


def xdawn_cov_ts_predict(x_tr, y_tr, x_te, seed: int = 0) -> tuple[np.ndarray, dict]:
    """pyriemann ``XdawnCovariances`` (filters per class from :data:`XDAWN_COV_FILTERS`, OAS) -> ``TangentSpace``
    -> standardised logistic regression (C from :data:`TS_C_GRID`), chosen on validation."""
    try:
        from pyriemann.estimation import XdawnCovariances
    except ImportError as e:
        raise _missing("pyriemann", PYRIEMANN_INSTALL, e) from None
    transforms = {k: _tangent(lambda k=k: BlockCovariances(
        lambda **kw: XdawnCovariances(nfilter=k, estimator=COV_ESTIMATOR, **kw), xdawn=True))
        for k in XDAWN_COV_FILTERS}
    pred, (k, c), val = _fit_chosen(x_tr, y_tr, x_te, seed, transforms, _ts_classifiers())
    return pred, {"filters_per_class": k, "C": c, "val_top1": val}


def xdawn_cov_ts(x_tr, y_tr, x_te, y_te, seed: int = 0) -> dict:
    """:func:`xdawn_cov_ts_predict` scored on the test trials."""
    _check(x_tr, y_tr, x_te, y_te)
    pred, chosen = xdawn_cov_ts_predict(x_tr, y_tr, x_te, seed)
    return _result(pred, y_te, "xDAWN covariances (filtered prototypes + trial, OAS) -> tangent space (Riemannian "
                   "mean) -> logistic regression", chosen)


ROCKETS = {"minirocket": "MiniRocketClassifier", "multirocket": "MultiRocketClassifier"}


def rocket_predict(kind: str, x_tr, y_tr, x_te, seed: int = 0) -> tuple[np.ndarray, dict]:
    """aeon's ``MiniRocketClassifier`` / ``MultiRocketClassifier`` (``kind``: a key of :data:`ROCKETS`) with its
    defaults: 10,000 kernels, features scaled, ``RidgeClassifierCV`` choosing alpha in 10^-3..10^3 by
    leave-one-out on the training trials; ``random_state=seed``, one job. (test predictions, chosen)."""
    if kind not in ROCKETS:
        raise UserError(f"baselines: unknown rocket {kind!r} (known: {', '.join(ROCKETS)})")
    try:
        from aeon.classification import convolution_based
    except ImportError as e:
        raise _missing("aeon", AEON_INSTALL, e) from None
    clf = getattr(convolution_based, ROCKETS[kind])(random_state=seed, n_jobs=1)
    clf.fit(np.ascontiguousarray(x_tr, dtype=np.float32), y_tr)  # aeon casts to float32 itself: no float64 copy
    pred = clf.predict(np.ascontiguousarray(x_te, dtype=np.float32))
    alpha = float(clf.pipeline_.steps[-1][1].alpha_)
    return np.asarray(pred).astype(y_tr.dtype), {"kernels": int(clf.n_kernels), "ridge_alpha": alpha, "seed": seed}


def _rocket(kind: str, x_tr, y_tr, x_te, y_te, seed: int) -> dict:
    _check(x_tr, y_tr, x_te, y_te)
    pred, chosen = rocket_predict(kind, x_tr, y_tr, x_te, seed)
    return _result(pred, y_te, f"aeon {ROCKETS[kind]} (default kernels, scaled, RidgeClassifierCV)", chosen)


def minirocket(x_tr, y_tr, x_te, y_te, seed: int = 0) -> dict:
    """aeon's MiniRocket classifier (:func:`rocket_predict`) scored on the test trials."""
    return _rocket("minirocket", x_tr, y_tr, x_te, y_te, seed)


def multirocket(x_tr, y_tr, x_te, y_te, seed: int = 0) -> dict:
    """aeon's MultiRocket classifier (:func:`rocket_predict`) scored on the test trials."""
    return _rocket("multirocket", x_tr, y_tr, x_te, y_te, seed)


# -- the registry ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Baseline:
    """One baseline of the set: its results key, the label a table shows, and its fit on one split."""

    name: str
    label: str
    fit: Callable[..., dict]  # (x_tr, y_tr, x_te, y_te, sfreq, seed) -> {"top1", "n_test", "features", "chosen"}


REGISTRY: dict[str, Baseline] = {b.name: b for b in (
    Baseline("majority", "majority class (of TRAIN)",
             lambda x_tr, y_tr, x_te, y_te, sfreq, seed: majority(y_tr, y_te)),
    Baseline("window_mean_logreg", "window means + logistic regression",
             lambda x_tr, y_tr, x_te, y_te, sfreq, seed: window_mean_logreg(x_tr, y_tr, x_te, y_te, seed)),
    Baseline("window_mean_lda", "window means + shrinkage LDA",
             lambda x_tr, y_tr, x_te, y_te, sfreq, seed: window_mean_lda(x_tr, y_tr, x_te, y_te, seed)),
    Baseline("bandpower_logreg", "band power + logistic regression", bandpower_logreg),
    Baseline("tangent_space_logreg", "covariance tangent space + logistic regression",
             lambda x_tr, y_tr, x_te, y_te, sfreq, seed: tangent_space_logreg(x_tr, y_tr, x_te, y_te, seed)),
    Baseline("nn1_euclidean", "1-NN, Euclidean",
             lambda x_tr, y_tr, x_te, y_te, sfreq, seed: nn1_euclidean(x_tr, y_tr, x_te, y_te)),
    Baseline("xdawn_lda", "xDAWN (2/class) + window means + shrinkage LDA", xdawn_lda),
    Baseline("erp_cov_ts", "ERP covariances -> tangent space + logistic regression (pyriemann)",
             lambda x_tr, y_tr, x_te, y_te, sfreq, seed: erp_cov_ts(x_tr, y_tr, x_te, y_te, seed)),
    Baseline("xdawn_cov_ts", "xDAWN covariances -> tangent space + logistic regression (pyriemann)",
             lambda x_tr, y_tr, x_te, y_te, sfreq, seed: xdawn_cov_ts(x_tr, y_tr, x_te, y_te, seed)),
    Baseline("minirocket", "MiniRocket + ridge (aeon)",
             lambda x_tr, y_tr, x_te, y_te, sfreq, seed: minirocket(x_tr, y_tr, x_te, y_te, seed)),
    Baseline("multirocket", "MultiRocket + ridge (aeon)",
             lambda x_tr, y_tr, x_te, y_te, sfreq, seed: multirocket(x_tr, y_tr, x_te, y_te, seed)),
)}
STRONG = ("xdawn_lda", "erp_cov_ts", "xdawn_cov_ts", "minirocket", "multirocket")  # issue #26's strong decoders
BASELINES = tuple(REGISTRY)


def run_all(x_tr, y_tr, x_te, y_te, sfreq: float, seed: int = 0, names=None) -> dict[str, dict]:
    """The baselines of :data:`REGISTRY` (all, or ``names``) on one split -> {name: result}, in registry order."""
    unknown = sorted(set(names or ()) - set(REGISTRY))
    if unknown:
        raise UserError(f"baselines: unknown {', '.join(unknown)} (known: {', '.join(REGISTRY)})")
    return {name: b.fit(x_tr, y_tr, x_te, y_te, sfreq, seed) for name, b in REGISTRY.items()
            if names is None or name in names}
