"""Model definitions (torch). Shared helpers live here; the configs live torch-free in :mod:`eegsine.models.configs`."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing a config (``eegsine.models.configs``) must not import torch
    import torch
    import torch.nn as nn


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); CPU for a module with neither.

    Batch helpers (``embed``, metrics) move each input batch there and bring results back to
    the CPU, so a model trained on a GPU evaluates in place.
    """
    import torch

    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def n_params(module: nn.Module | None) -> int:
    """Parameter count of a module (0 for None: an optional part that is absent)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def autocast(dev: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bf16 or fp16 on ``dev`` (CPU or CUDA), or nothing at ``no`` (fp32, the default):
    Accelerate's ``mixed_precision`` values, for the loops that are not Accelerate's."""
    if precision == "no":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(dev.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
