"""Paired comparison of two classifiers on the same images: McNemar's exact test and intervals for the difference.

Torch-free (numpy + scipy). For two models judged on the same n images, with per-image correctness
``a`` and ``b`` (bool arrays), the 2x2 table is

=================  =============  =============
                   b correct      b wrong
=================  =============  =============
a correct          ``n11``        ``n10``
a wrong            ``n01``        ``n00``
=================  =============  =============

* :func:`mcnemar_exact` -- the exact (conditional) McNemar test: under H0 (equal accuracy) the discordant
  pair count ``n10`` is Binomial(n10 + n01, 1/2); two-sided p from ``scipy.stats.binomtest``
  (for p = 1/2 that is ``min(1, 2 * P[X <= min(n10, n01)])``); 1.0 when there are no discordant pairs;
  one-sided (``alternative="greater"``: P[X >= n10]) for a directional question.
* :func:`newcombe_paired_ci` -- the interval for ``acc_a - acc_b`` of Newcombe (1998, Statistics in
  Medicine 17:2635, "Improved confidence intervals for the difference between binomial proportions
  based on paired data", method 10: Wilson score intervals of the two marginal proportions combined
  with the phi correlation of the table, no continuity correction). It stays inside [-1, 1] and behaves
  at 0 / n counts, where the Wald interval collapses.
* :func:`wald_paired_ci` -- the textbook Wald interval ``d +- z sqrt(n10 + n01 - (n10 - n01)^2 / n) / n``,
  kept beside it for reference.
* :func:`wilson_ci` -- the Wilson score interval of one proportion.

:func:`paired_compare` returns all of it for two correctness vectors.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest, norm

from eegsine.stats import wilson_ci  # noqa: F401 (the one Wilson interval, re-exported)


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    return float(norm.ppf(0.5 + level / 2))


def table(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int]:
    """(n11, n10, n01, n00) of two same-length correctness vectors."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired vectors must be 1-D and of equal length, got {a.shape} and {b.shape}")
    return int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum()), int((~a & ~b).sum())


def mcnemar_exact(n10: int, n01: int, alternative: str = "two-sided") -> float:
    """Exact McNemar p-value from the discordant counts: two-sided, or with ``alternative="greater"`` the
    one-sided P[X >= n10], X ~ Binomial(n10 + n01, 1/2) (evidence that n10 outnumbers n01)."""
    if n10 < 0 or n01 < 0:
        raise ValueError(f"mcnemar_exact: counts must be >= 0, got {n10}, {n01}")
    if n10 + n01 == 0:
        return 1.0
    return float(binomtest(n10, n10 + n01, 0.5, alternative=alternative).pvalue)


def newcombe_paired_ci(n11: int, n10: int, n01: int, n00: int, level: float = 0.95) -> tuple[float, float]:
    """Newcombe's method-10 interval for p_a - p_b = (n10 - n01) / n (paired proportions)."""
    n = n11 + n10 + n01 + n00
    if n < 1 or min(n11, n10, n01, n00) < 0:
        raise ValueError(f"newcombe_paired_ci: bad table {(n11, n10, n01, n00)}")
    p1, p2 = (n11 + n10) / n, (n11 + n01) / n
    l1, u1 = wilson_ci(n11 + n10, n, level)
    l2, u2 = wilson_ci(n11 + n01, n, level)
    den = (n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)
    phi = (n11 * n00 - n10 * n01) / math.sqrt(den) if den > 0 else 0.0
    d = p1 - p2
    dl = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    du = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, d - dl), min(1.0, d + du)


def wald_paired_ci(n11: int, n10: int, n01: int, n00: int, level: float = 0.95) -> tuple[float, float]:
    """Wald interval for the paired difference (n10 - n01) / n."""
    n = n11 + n10 + n01 + n00
    if n < 1:
        raise ValueError("wald_paired_ci: empty table")
    d = (n10 - n01) / n
    se = math.sqrt(max(0.0, n10 + n01 - (n10 - n01) ** 2 / n)) / n
    z = _z(level)
    return max(-1.0, d - z * se), min(1.0, d + z * se)


def paired_compare(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> dict:
    """Everything the robustness table reports for ``acc_a - acc_b`` on the same images."""
    n11, n10, n01, n00 = table(a, b)
    n = n11 + n10 + n01 + n00
    if n == 0:
        raise ValueError("paired_compare: no images")
    return {"n": n, "n11": n11, "n10": n10, "n01": n01, "n00": n00,
            "acc_a": (n11 + n10) / n, "acc_b": (n11 + n01) / n, "diff": (n10 - n01) / n,
            "ci_newcombe": list(newcombe_paired_ci(n11, n10, n01, n00, level)),
            "ci_wald": list(wald_paired_ci(n11, n10, n01, n00, level)),
            "p_mcnemar_exact": mcnemar_exact(n10, n01), "level": level}
