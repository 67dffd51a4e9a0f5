"""The per-example worst case across eps (bench.eps_nesting): monotone by construction, nothing hidden."""
from __future__ import annotations

import numpy as np
import torch

from eegsine.bench.robustness.eps_nesting import and_prefix, broken_at_smaller_eps, cumulative_robust, only_below


def test_nested_masks_are_the_and_over_smaller_eps_and_monotone():
    rng = np.random.default_rng(0)
    for _ in range(50):  # any raw runs, however non-monotone: the nested counts never rise with eps
        raw = {e: rng.random(40) < rng.random() for e in rng.choice([0.1, 0.2, 0.3, 0.4, 0.5], 4, replace=False)}
        before = {e: m.copy() for e, m in raw.items()}
        nested = cumulative_robust(raw)
        es = sorted(raw)
        assert list(nested) == es
        for i, e in enumerate(es):
            np.testing.assert_array_equal(nested[e], np.logical_and.reduce([raw[x] for x in es[:i + 1]]))
            assert broken_at_smaller_eps(raw[e], nested[e]) == int((raw[e] & ~nested[e]).sum()) >= 0
        counts = [int(nested[e].sum()) for e in es]
        assert counts == sorted(counts, reverse=True)
        for e in es:  # the raw runs are kept as they were
            np.testing.assert_array_equal(raw[e], before[e])


def test_torch_masks_and_prefixes():
    t = lambda *v: torch.tensor(v, dtype=torch.bool)  # noqa: E731
    raw = {0.3: t(1, 1, 1, 1), 0.1: t(1, 0, 1, 1), 0.2: t(1, 1, 0)}  # 0.2: a prefix of 3 images so far
    nested = cumulative_robust(raw)
    assert [nested[e].tolist() for e in (0.1, 0.2, 0.3)] == [[1, 0, 1, 1], [1, 0, 0], [1, 0, 0, 1]]
    assert raw[0.3].tolist() == [1, 1, 1, 1] and broken_at_smaller_eps(raw[0.3], nested[0.3]) == 2
    w = t(1, 1)
    assert and_prefix(w, t(0, 1, 0)) is w and w.tolist() == [0, 1]


def test_only_below_names_the_largest_smaller_eps_of_attacks_missing_at_eps():
    per = {"fgsm": {0.1: 0, 0.2: 0, 0.3: 0}, "pgd-ce": {0.3: 0, 0.4: 0}, "square": {0.5: 0}}
    assert only_below(per, 0.4) == {"fgsm": 0.3}
    assert only_below(per, 0.3) == {}
    assert only_below(per, 0.6) == {"fgsm": 0.3, "pgd-ce": 0.4, "square": 0.5}
