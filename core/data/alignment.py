"""Euclidean alignment (He & Wu 2019, IEEE TBME 67:399): whiten each subject's trials by its mean covariance.

Per group g (a subject, or a subject's session): R_g = mean over its trials of X_i X_i^T / T (channel means
removed), and every trial of g becomes R_g^{-1/2} X_i, so the aligned trials' mean covariance is the identity
and subjects / sessions share one reference. Unsupervised (no labels). Here R_g is estimated on g's
*training* trials only (``fit_idx``); a group with none there (a held-out LOSO subject) uses its own trials,
as He & Wu align a new subject from its unlabelled trials.

Hand-written: the whole method is the ten lines below (pyriemann's ``Whitening`` whitens features, not trials).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from eegsine.errors import UserError


def mean_covariance(x: np.ndarray) -> np.ndarray:
    """(N, C, T) trials -> (C, C) mean of their sample covariances (channel means removed)."""
    xc = x - x.mean(axis=-1, keepdims=True)
    return np.einsum("nct,ndt->cd", xc, xc, dtype=np.float64) / (x.shape[0] * x.shape[2])


def inv_sqrt(r: np.ndarray, rel_floor: float = 1e-6) -> np.ndarray:
    """R^{-1/2} of a symmetric PSD matrix; eigenvalues floored at ``rel_floor`` x the largest (rank-deficient
    montages, e.g. average-referenced EEG, would otherwise blow up)."""
    w, v = np.linalg.eigh((r + r.T) / 2)
    w = np.maximum(w, rel_floor * max(float(w.max()), 1e-30))
    return (v / np.sqrt(w)) @ v.T


def euclidean_alignment(x: np.ndarray, groups: np.ndarray, fit_idx: np.ndarray | None = None) -> np.ndarray:
    """Align trials ``x`` (N, C, T) per group (``groups`` (N,)): R_g from the group's trials in ``fit_idx``
    (all trials when None; the group's own when it has none there). -> aligned (N, C, T) float32."""
    if len(groups) != len(x):
        raise UserError(f"euclidean_alignment: {len(groups)} group labels for {len(x)} trials")
    fit = np.zeros(len(x), bool)
    fit[np.arange(len(x)) if fit_idx is None else fit_idx] = True
    out = np.empty_like(x, dtype=np.float32)
    for g in np.unique(groups):
        member = groups == g
        ref = member & fit if (member & fit).any() else member
        w = inv_sqrt(mean_covariance(x[ref]))
        out[member] = np.einsum("cd,ndt->nct", w, x[member]).astype(np.float32)
    return out


def align_set(ds, fit_idx: np.ndarray):
    """The EEGSet ``ds`` with its trials Euclidean-aligned per subject, references from ``fit_idx`` (train);
    ``info['euclidean_alignment']`` records it."""
    x = euclidean_alignment(ds.x, ds.subject, fit_idx)
    info = dict(ds.info, euclidean_alignment={"groups": "subject", "reference": "train split",
                                              "n_groups": int(len(np.unique(ds.subject)))})
    return dataclasses.replace(ds, x=x, info=info)
