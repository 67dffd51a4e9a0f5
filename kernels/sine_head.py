"""Fused sine-bounded head: ``out = amplitude * sin(omega * (x @ W.T + b))``.

(Being written: the Triton kernels land here. The public API below is fixed.)
"""
from __future__ import annotations

import os

import torch

IMPL_ENV = "EEGSINE_SINE_HEAD_IMPL"  # "auto" (default), "triton" or "torch"


def reference_sine_head(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        omega: float = 1.0, amplitude: float = 1.0) -> torch.Tensor:
    """Torch reference. x: (..., K), weight: (N, K), bias: (N,) -> (..., N)."""
    z = torch.nn.functional.linear(x, weight, bias)
    return amplitude * torch.sin(omega * z)


def kernel_available(x: torch.Tensor) -> bool:
    return False


def sine_head(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
              omega: float = 1.0, amplitude: float = 1.0, impl: str | None = None) -> torch.Tensor:
    """Dispatch: Triton kernel on CUDA when available, torch reference elsewhere."""
    impl = impl or os.environ.get(IMPL_ENV, "auto")
    return reference_sine_head(x, weight, bias, omega, amplitude)
