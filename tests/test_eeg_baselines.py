"""The strong EEG baselines of issue #26 (core/metrics/eeg_baselines.py): xDAWN + shrinkage LDA, ERP and xDAWN
covariances in the tangent space (pyriemann), MiniRocket and MultiRocket (aeon). This file is the proof
requirements.txt names that aeon's MiniRocket / MultiRocket run on the locked numba 0.68.

Each baseline, on a small synthetic problem with a planted class-dependent ERP (3 classes, a latency and a
spatial pattern per class, in noise), must decode test trials it never saw clearly above chance (the 95 % Wilson
lower bound of its accuracy above 0.6, chance 1/3: a classifier at chance passes that with p < 1e-9), give
identical predictions on a rerun with the same seed, and never read the test labels (shuffled test labels leave
the same predictions, so the accuracy against them falls to chance). Arrays are tiny: numba's first compile of
the rockets is what takes time (about a minute on a loaded 2-core machine).
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from eegsine.errors import UserError
from eegsine.metrics import eeg_baselines as B
from eegsine.stats import wilson_ci

C, T, SFREQ, K = 4, 64, 128.0, 3
PATTERNS = np.random.default_rng(1234).normal(size=(K, C))  # one spatial pattern per class, shared by the splits


def erp_set(n: int, seed: int, amp: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """n trials (C, T) of unit white noise; class k adds a Gaussian bump at 120 + 100 k ms on pattern k."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % K)
    x = rng.normal(size=(n, C, T))
    t = np.arange(T) / SFREQ
    for k in range(K):
        x[y == k] += amp * PATTERNS[k][:, None] * np.exp(-((t - 0.12 - 0.1 * k) / 0.03) ** 2)
    return x.astype(np.float32), y


PREDICT = {  # name -> its fit on the training trials only: (x_tr, y_tr, x_te, seed) -> (test predictions, chosen)
    "xdawn_lda": lambda x_tr, y_tr, x_te, seed: B.xdawn_lda_predict(x_tr, y_tr, x_te, SFREQ, seed),
    "erp_cov_ts": B.erp_cov_ts_predict,
    "xdawn_cov_ts": B.xdawn_cov_ts_predict,
    "minirocket": lambda x_tr, y_tr, x_te, seed: B.rocket_predict("minirocket", x_tr, y_tr, x_te, seed),
    "multirocket": lambda x_tr, y_tr, x_te, seed: B.rocket_predict("multirocket", x_tr, y_tr, x_te, seed),
}


def test_every_strong_baseline_is_registered_and_tested_here():
    assert set(B.STRONG) == set(PREDICT) and set(B.STRONG) <= set(B.REGISTRY)


@pytest.mark.parametrize("name", B.STRONG)
def test_strong_baseline_decodes_unseen_trials_deterministically_without_test_labels(name):
    (x_tr, y_tr), (x_te, y_te) = erp_set(90, 0), erp_set(120, 1)
    pred, chosen = PREDICT[name](x_tr, y_tr, x_te, 7)
    again, chosen_again = PREDICT[name](x_tr, y_tr, x_te, 7)
    np.testing.assert_array_equal(pred, again)  # same seed, same predictions
    assert chosen == chosen_again
    r = B.REGISTRY[name].fit(x_tr, y_tr, x_te, y_te, SFREQ, 7)
    assert r["n_test"] == len(y_te) and r["top1"] == pytest.approx(float(np.mean(pred == y_te)))
    lo, _ = wilson_ci(int(round(r["top1"] * len(y_te))), len(y_te))
    assert lo > 0.6, (name, r)
    y_shuffled = np.random.default_rng(3).permutation(y_te)
    r_shuffled = B.REGISTRY[name].fit(x_tr, y_tr, x_te, y_shuffled, SFREQ, 7)
    assert r_shuffled["top1"] == pytest.approx(float(np.mean(pred == y_shuffled)))  # same predictions
    assert r_shuffled["top1"] < 0.5, r_shuffled  # chance is 1/3: the fit never saw the test labels


@pytest.mark.parametrize("name", ["xdawn_lda", "xdawn_cov_ts"])
def test_strong_baseline_learns_from_the_training_labels(name):
    """Shuffled *training* labels leave nothing to learn: the accuracy on intact test labels falls to chance."""
    (x_tr, y_tr), (x_te, y_te) = erp_set(90, 0), erp_set(120, 1)
    r = B.REGISTRY[name].fit(x_tr, np.random.default_rng(5).permutation(y_tr), x_te, y_te, SFREQ, 0)
    _, hi = wilson_ci(int(round(r["top1"] * len(y_te))), len(y_te))
    assert r["top1"] < 0.5 and hi < 0.6, r


def test_validation_is_carved_from_the_training_trials(monkeypatch):
    y = np.repeat(np.arange(3), 20)
    folds = B.validation_splits(y, 0)
    assert len(folds) == 5 and sorted(np.concatenate([b for _, b in folds]).tolist()) == list(range(60))
    monkeypatch.setattr(B, "VAL_KFOLD_MAX", 50)  # a large training set: one stratified 80 / 20 hold-out
    (a, b), = B.validation_splits(y, 0)
    assert len(b) == 12 and not set(a) & set(b) and np.bincount(y[b]).tolist() == [4, 4, 4]


def test_erp_covariances_reduce_prototypes_of_many_channels():
    """(1 + classes) x channels rows above ERP_MAX_ROWS: only the SVD-reduced prototypes are tried."""
    x_tr, y_tr = erp_set(45, 0)
    wide = np.repeat(x_tr, 9, axis=1)[:, :33] + np.random.default_rng(0).normal(size=(45, 33, T)) * 0.1
    _, chosen = B.erp_cov_ts_predict(wide, y_tr, wide[:6])
    assert (1 + K) * 33 > B.ERP_MAX_ROWS and chosen["svd"] == 4


@pytest.mark.parametrize("module, name, hint", [("pyriemann.spatialfilters", "xdawn_lda", ".[baselines]"),
                                                ("pyriemann.estimation", "erp_cov_ts", ".[baselines]"),
                                                ("aeon.classification", "minirocket", "aeon==1.6.0")])
def test_a_missing_package_is_one_line_naming_its_install(monkeypatch, module, name, hint):
    monkeypatch.setitem(sys.modules, module, None)  # import of it raises ImportError
    (x_tr, y_tr), (x_te, y_te) = erp_set(30, 0), erp_set(6, 1)
    with pytest.raises(UserError, match="not installed") as e:
        B.REGISTRY[name].fit(x_tr, y_tr, x_te, y_te, SFREQ, 0)
    assert hint in str(e.value) and "\n" not in str(e.value)


def test_run_all_runs_only_the_named_baselines_and_refuses_unknown_ones():
    (x_tr, y_tr), (x_te, y_te) = erp_set(30, 0), erp_set(12, 1)
    assert list(B.run_all(x_tr, y_tr, x_te, y_te, SFREQ, names=["xdawn_lda", "majority"])) == ["majority",
                                                                                            "xdawn_lda"]
    with pytest.raises(UserError, match="unknown nope"):
        B.run_all(x_tr, y_tr, x_te, y_te, SFREQ, names=["nope"])
