"""Per-example worst case across eps: an image broken at a smaller radius counts as broken at every larger radius.

An adversarial example found inside the L-inf ball of radius e' around an image lies inside the ball of every
radius e >= e' around it, so an image an attack broke at e' is broken at e, whatever that attack's own,
independently seeded run at e found. :func:`cumulative_robust` turns one attack's raw per-run robust masks
``{eps: (N,) bool}`` (same attack, same images) into the reported ones: the mask at eps is the AND of the raw
masks at every eps' <= eps. Every table built on it is monotone in eps by construction, on every host and for
every seed; transfer attacks too (the transferred example is in the larger ball as well).

Nothing is hidden: each raw run stays on record beside the nested figure (``accuracy_single_run``), with the
number of images the nesting added (``broken_at_smaller_eps`` = raw robust count - nested robust count), which
``monotone_in_eps`` (:func:`eegsine.bench.robustness.evaluate.sanity_checks`) judges as an attack-weakness diagnostic
(Carlini et al. 2019, "On evaluating adversarial robustness": a larger bound must not make an attack weaker).

Torch-free: a mask is a numpy bool array or a torch bool tensor (anything with ``&``, slicing and ``.sum()``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

M = TypeVar("M")  # np.ndarray or torch.Tensor of bool


def _copy(mask: M) -> M:
    return mask.clone() if hasattr(mask, "clone") else mask.copy()  # torch / numpy


def cumulative_robust(per_eps: Mapping[float, M]) -> dict[float, M]:
    """``{eps: raw robust mask of one run}`` -> ``{eps: AND of the raw masks at every eps' <= eps}``, eps ascending.

    The masks are one attack's on one image subset. A shorter mask (a prefix of the subset still being
    computed) is AND-ed in on the images it covers; every result keeps the length of its own run's mask."""
    es = sorted(per_eps)
    out: dict[float, M] = {}
    for i, e in enumerate(es):
        m = _copy(per_eps[e])
        for e0 in es[:i]:
            and_prefix(m, per_eps[e0])
        out[e] = m
    return out


def and_prefix(w: M, mask: M) -> M:
    """``w &= mask`` in place on the images both cover (a prefix of the same subset); ``w`` keeps its length."""
    k = min(len(w), len(mask))
    w[:k] &= mask[:k]
    return w


def only_below(per_attack: Mapping[str, Mapping[float, object]], eps: float) -> dict[str, float]:
    """``{attack: largest eps' < eps it ran at}`` for the attacks not run at ``eps`` but at a smaller radius:
    a per-example worst case at ``eps`` ANDs in their (nested) mask there, on the images it covers."""
    return {a: max(e for e in d if e < eps) for a, d in per_attack.items()
            if eps not in d and any(e < eps for e in d)}


def broken_at_smaller_eps(raw: M, nested: M) -> int:
    """Images the raw run left robust that a smaller radius broke: how many the nesting added."""
    return int(raw.sum()) - int(nested.sum())


CAPTION = ("Per-example worst case across eps: an image broken at a smaller radius counts as broken at every larger "
           "radius (its adversarial example lies inside the larger L-inf ball), per attack on the same images and "
           "in the worst case over attacks, so every row is monotone in eps by construction. Each run's own figure "
           "is kept in the JSON (`accuracy_single_run`) with the images the nesting added (`broken_at_smaller_eps`).")
