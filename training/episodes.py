"""N-way K-shot episodes and the alignment losses (prototypical, CLIP-style InfoNCE, cosine CE).

Hand-written: the sampler and the three losses are ~20 lines each; the few-shot libraries
that ship them (learn2learn, torchmeta) are unmaintained and pull in torchvision, which
does not import here.

Bad input policy (documented, tested): at sampler construction every training class with
fewer than K + Q trials (including empty classes) is *skipped and logged* with its count;
fewer than N usable classes is a :class:`UserError`. Inside the loss, a query class without
support examples (an empty class in an episode) is a :class:`UserError`, never a NaN
prototype.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

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
                           f"k_shot + n_query = {need} trials: " + ", ".join(f"class {c} ({n})" for c, n in skipped[:10])
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


def prototypical_loss(z_s: torch.Tensor, y_s: torch.Tensor, z_q: torch.Tensor, y_q: torch.Tensor,
                      scale: torch.Tensor, anchors: torch.Tensor | None = None,
                      anchor_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of queries against class prototypes; returns (loss, accuracy).

    z_s (S, D), z_q (Q, D) unit vectors; prototypes = normalised mean of a class's support
    embeddings, plus ``anchor_weight`` x that class's image anchor (``anchors`` (n_classes, D),
    indexed by class id) when image-anchored prototypes are on.
    """
    classes = torch.unique(y_q)                                          # (n_way,)
    protos = []
    for c in classes:
        m = y_s == c
        if not bool(m.any()):
            raise UserError(f"episode: class {int(c)} has query trials but no support trials (empty class)")
        p = F.normalize(z_s[m].mean(0), dim=0)
        if anchors is not None:
            p = F.normalize(p + anchor_weight * anchors[c], dim=0)
        protos.append(p)
    P = torch.stack(protos)                                             # (n_way, D)
    target = torch.searchsorted(classes, y_q)                           # (Q,) position of each query's class
    logits = scale * z_q @ P.T                                          # (Q, n_way)
    return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean()


def clip_loss(z: torch.Tensor, img_z: torch.Tensor, img_id: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between EEG (B, D) and the paired image embeddings (B, D).

    Several trials of one batch can show the same image; those pairs are all positives
    (soft targets spread evenly over them) rather than false negatives.
    """
    logits = scale * z @ img_z.T                                        # (B, B)
    same = (img_id[:, None] == img_id[None, :]).float()                 # (B, B) positives
    t = same / same.sum(1, keepdim=True)
    loss_e = -(t * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_i = -(t * F.log_softmax(logits, dim=0)).sum(0).mean()
    return 0.5 * (loss_e + loss_i)


def cosine_ce(z: torch.Tensor, y: torch.Tensor, class_weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Classification term: cosine classifier logits = scale * cos(z, w_c)."""
    return F.cross_entropy(scale * z @ F.normalize(class_weight, dim=-1).T, y)
