"""The initial noise of a diffusion trajectory, drawn with numpy only: one function for the torch pipeline and the
runtime, so ``eegsine generate --seed S`` and ``EEGToImage(...)(eeg, generator=S)`` start from the same latents.

An integer seed draws image ``i`` from its own stream, ``numpy.random.default_rng((seed, offset + i))``
(a ``SeedSequence`` of the pair: distinct pairs never share a stream, where ``seed * K + i`` collides), so an
image's noise does not depend on the batch it is drawn in: trial 3 alone and trial 3 of a batch of 16 get the
same latents. A ``numpy.random.Generator`` is drawn from as given, the whole batch at once (diffusers'
``generator=`` semantics: the caller owns the stream).
"""
from __future__ import annotations

import numbers
import reprlib
from typing import Union

import numpy as np

from eegsine.errors import UserError

Seed = Union[int, np.random.Generator]


def check_seed(seed: object, name: str = "seed") -> Seed:
    """An integer >= 0 (numpy's SeedSequence refuses negative entropy) or a numpy Generator, else one line."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise UserError(f"{name} must be an integer, got {type(seed).__name__} {reprlib.repr(seed)} "
                        "(or a numpy.random.Generator)")
    if seed < 0:
        raise UserError(f"{name} must be >= 0, got {seed}")
    return int(seed)


def initial_latents(n: int, shape: tuple[int, ...], seed: Seed = 0, offset: int = 0) -> np.ndarray:
    """(n, *shape) float32 standard normal: image i from ``(seed, offset + i)`` (module docstring), or the
    next n draws of a numpy Generator."""
    seed = check_seed(seed)
    full = (int(n),) + tuple(int(s) for s in shape)
    if isinstance(seed, np.random.Generator):
        return seed.standard_normal(full, dtype=np.float32)
    out = np.empty(full, np.float32)
    for i in range(n):
        out[i] = np.random.default_rng((seed, offset + i)).standard_normal(full[1:], dtype=np.float32)
    return out
