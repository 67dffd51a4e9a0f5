"""N-way K-shot episodes: which trials form each training episode of the encoder alignment.

Hand-written: the sampler is ~40 lines; the few-shot libraries that ship one (learn2learn,
torchmeta) are unmaintained and pull in torchvision, which does not import here.

Bad input policy (documented, tested): at sampler construction every training class with
fewer than K + Q trials (including empty classes) is *skipped and logged* with its count;
fewer than N usable classes is a :class:`UserError`. The losses over an episode live in
:mod:`eegsine.training.losses`.
"""
from __future__ import annotations

import logging

import numpy as np

from eegsine.errors import UserError


class EpisodeSampler:
    """Draws (support, query) trial indices: ``n_way`` classes x (``k_shot`` + ``n_query``) trials."""

    def __init__(self, y: np.ndarray, classes: list[int] | np.ndarray, n_way: int, k_shot: int, n_query: int,
                 logger: logging.Logger | None = None, what: str = "train split"):
        if k_shot < 1 or n_query < 1:
            raise UserError(f"episodes: k_shot and n_query must be >= 1, got {k_shot}, {n_query}")
        need = k_shot + n_query
        self.by_class: dict[int, np.ndarray] = {}
        skipped = []
        for c in classes:
            idx = np.flatnonzero(y == c)
            if len(idx) < need:
                skipped.append((int(c), len(idx)))
            else:
                self.by_class[int(c)] = idx
        self.skipped = skipped
        if skipped and logger is not None:
            logger.warning(f"episodes: skipping {len(skipped)} class(es) of the {what} with fewer than "
                           f"k_shot + n_query = {need} trials: "
                           + ", ".join(f"class {c} ({n})" for c, n in skipped[:10])
                           + (" ..." if len(skipped) > 10 else ""))
        self.classes = np.array(sorted(self.by_class), dtype=np.int64)
        self.n_way = n_way if n_way > 0 else len(self.classes)
        if len(self.classes) < max(self.n_way, 2):
            raise UserError(f"episodes: {what} has {len(self.classes)} class(es) with >= {need} trials "
                            f"(k_shot={k_shot} + n_query={n_query}) but n_way={self.n_way} needs at least "
                            f"{max(self.n_way, 2)}; lower n_way/k_shot/n_query")
        self.k_shot, self.n_query = k_shot, n_query

    @property
    def episode_size(self) -> int:
        return self.n_way * (self.k_shot + self.n_query)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Return (support (n_way*k_shot,), query (n_way*n_query,)) trial indices, class-major."""
        chosen = rng.choice(self.classes, size=self.n_way, replace=False)
        sup, qry = [], []
        for c in chosen:
            pick = rng.choice(self.by_class[int(c)], size=self.k_shot + self.n_query, replace=False)
            sup.append(pick[:self.k_shot])
            qry.append(pick[self.k_shot:])
        return np.concatenate(sup), np.concatenate(qry)
