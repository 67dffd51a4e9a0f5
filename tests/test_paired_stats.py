"""The paired statistics of the robustness table: McNemar exact, Newcombe's and Wald's paired intervals."""
from __future__ import annotations

import math

import numpy as np
import pytest

from eegsine.bench.robustness.paired_stats import (mcnemar_exact, newcombe_paired_ci, paired_compare, table,
                                                   wald_paired_ci, wilson_ci)

Z = 1.959963984540054  # norm.ppf(0.975)


@pytest.mark.parametrize("n10,n01,p", [(0, 5, 2 / 32), (5, 0, 2 / 32), (1, 9, 2 * 11 / 1024), (3, 3, 1.0),
                                       (0, 0, 1.0), (0, 1, 1.0), (2, 12, 2 * (1 + 14 + 91) / 2 ** 14)])
def test_mcnemar_exact_by_hand(n10, n01, p):
    # two-sided exact = 2 * P[Binomial(n10 + n01, 1/2) <= min(n10, n01)], capped at 1
    assert mcnemar_exact(n10, n01) == pytest.approx(p, rel=1e-12)


def test_one_sided_mcnemar_by_hand():
    # P[Binomial(n10 + n01, 1/2) >= n10]: the iterative-vs-FGSM sanity check's test
    assert mcnemar_exact(10, 0, alternative="greater") == pytest.approx(2.0 ** -10, rel=1e-12)
    assert mcnemar_exact(3, 1, alternative="greater") == pytest.approx(5 / 16, rel=1e-12)
    assert mcnemar_exact(0, 10, alternative="greater") == 1.0 and mcnemar_exact(0, 0, alternative="greater") == 1.0


def test_wald_by_hand():
    # n = 100, n10 = 10, n01 = 4: d = 0.06, se = sqrt(14 - 36/100) / 100
    lo, hi = wald_paired_ci(40, 10, 4, 46)
    se = math.sqrt(14 - 0.36) / 100
    assert (lo, hi) == pytest.approx((0.06 - Z * se, 0.06 + Z * se), abs=1e-12)


def test_wilson_by_hand():
    # k = n: lower limit n / (n + z^2), upper 1
    lo, hi = wilson_ci(100, 100)
    assert lo == pytest.approx(100 / (100 + Z * Z), abs=1e-12) and hi == 1.0
    lo, hi = wilson_ci(10, 20)
    half = Z * math.sqrt(0.25 / 20 + Z * Z / 1600) / (1 + Z * Z / 20)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)


@pytest.mark.parametrize("n", [1, 7, 100, 500, 1000, 12345])
def test_wilson_holds_its_estimate_at_the_edges(n):
    # k = n and k = 0: the limits must not fall a rounding error short of p (matplotlib refuses negative bars)
    assert wilson_ci(n, n)[1] >= 1.0 and wilson_ci(n, n)[0] <= 1.0
    assert wilson_ci(0, n)[0] <= 0.0 and wilson_ci(0, n)[1] >= 0.0
    for k in range(0, n + 1, max(1, n // 50)):
        lo, hi = wilson_ci(k, n)
        assert lo <= k / n <= hi


def test_newcombe_all_concordant_correct():
    # p1 = p2 = 1, phi undefined (0): the interval is +-(1 - n / (n + z^2))
    lo, hi = newcombe_paired_ci(100, 0, 0, 0)
    w = 1 - 100 / (100 + Z * Z)
    assert (lo, hi) == pytest.approx((-w, w), abs=1e-12)


def test_newcombe_perfectly_correlated_halves_is_zero_width():
    # n11 = n00 = 10: p1 = p2 = 1/2, phi = 1, so both half-widths are sqrt(h^2 - 2 h^2 + h^2) = 0
    lo, hi = newcombe_paired_ci(10, 0, 0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.0, abs=1e-12)


def test_newcombe_by_hand_mixed_table():
    n11, n10, n01, n00 = 40, 10, 4, 46
    p1, p2 = 0.5, 0.44
    l1, u1 = wilson_ci(50, 100)
    l2, u2 = wilson_ci(44, 100)
    phi = (40 * 46 - 10 * 4) / math.sqrt(50 * 50 * 44 * 56)
    dl = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    du = math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    lo, hi = newcombe_paired_ci(n11, n10, n01, n00)
    assert (lo, hi) == pytest.approx((0.06 - dl, 0.06 + du), abs=1e-12)
    assert lo < 0.06 < hi
    # swapping the models negates the interval
    lo2, hi2 = newcombe_paired_ci(n11, n01, n10, n00)
    assert (lo2, hi2) == pytest.approx((-hi, -lo), abs=1e-12)


def test_newcombe_coverage_on_correlated_pairs():
    """Two heads that agree on most images (as two adversarially trained CNNs do): the 95% interval must cover
    the true difference close to 95% of the time. A sign error in phi or a swapped Wilson limit leaves this band."""
    rng = np.random.default_rng(0)
    n, sims = 200, 2000
    # cells: both right 0.70, a only 0.08, b only 0.04, both wrong 0.18 -> true diff 0.04
    probs = [0.70, 0.08, 0.04, 0.18]
    cover_n = cover_w = 0
    for _ in range(sims):
        n11, n10, n01, n00 = rng.multinomial(n, probs)
        lo, hi = newcombe_paired_ci(n11, n10, n01, n00)
        cover_n += lo <= 0.04 <= hi
        lo, hi = wald_paired_ci(n11, n10, n01, n00)
        cover_w += lo <= 0.04 <= hi
    assert 0.93 <= cover_n / sims <= 0.975
    assert 0.92 <= cover_w / sims <= 0.975


def test_paired_compare_counts_and_direction():
    a = np.array([1, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    b = np.array([1, 0, 0, 0, 1, 1, 0, 0], dtype=bool)
    assert table(a, b) == (2, 3, 1, 2)
    r = paired_compare(a, b)
    assert r["diff"] == pytest.approx((3 - 1) / 8) and r["acc_a"] == 5 / 8 and r["acc_b"] == 3 / 8
    assert r["p_mcnemar_exact"] == pytest.approx(mcnemar_exact(3, 1))
    assert r["ci_newcombe"][0] < r["diff"] < r["ci_newcombe"][1]
    with pytest.raises(ValueError):
        paired_compare(a, b[:-1])
