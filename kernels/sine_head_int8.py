"""INT8 sine head: int8 weights with per-output-channel scales, per-tensor activations.

Computes exactly what the INT8 QDQ ONNX graph of the head computes (symmetric, zero points 0):

    x_q = clamp(round_half_even(x / x_scale), -128, 127)          QuantizeLinear (int8)
    acc = x_q @ W_q^T                                              int32, exact
    z   = acc * (x_scale * w_scale[n]) + b                         DequantizeLinear(s) + Add
    out = amplitude * sin(omega * z)

``W_q = clamp(round(W / w_scale), -127, 127)`` with ``w_scale = max|W[n]| / 127``: the
symmetric per-channel scheme of onnxruntime.quantization (weights in [-127, 127]).

The Triton path is ``sine_head._fwd_kernel`` with QUANT=True (int8 x int8 -> int32 tl.dot,
dequantize in the epilogue before the sine); the torch reference is here. Inference only:
nothing here is differentiable. Its caller is the kernel benchmark's INT8 case
(``python -m eegsine.bench.speed.kernels --mode int8``: this kernel against its eager and compiled
reference, the same-answer check before timing), which ``eegsine bench``'s ``triton`` row points GPU users to.
"""
from __future__ import annotations

import torch

from .sine_head import (FUSED_PREDICT_MAX_N, SineHeadPrediction, _prediction_from_out, _use_kernel,
                        launch_forward)


def quantize_weight_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (N, K) float -> (W_q (N, K) int8 in [-127, 127], w_scale (N,) fp32).
    An all-zero row gets scale 1 (its codes are 0 either way)."""
    w = weight.detach().float()
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    w_q = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
    return w_q, scale


def activation_scale(amax: float) -> float:
    """Symmetric per-tensor int8 activation scale for a calibrated |x| maximum, as
    onnxruntime.quantization computes it with ActivationSymmetric=True (range [-127, 127]:
    scale = amax / 127; QuantizeLinear itself still saturates to [-128, 127])."""
    if not amax > 0:
        raise ValueError(f"activation amax must be > 0, got {amax}")
    return float(amax) / 127.0


def quantize_activation(x: torch.Tensor, x_scale: float) -> torch.Tensor:
    """QuantizeLinear with zero point 0: int8 codes of x (torch.round is half-to-even)."""
    return torch.clamp(torch.round(x.float() / x_scale), -128, 127).to(torch.int8)


def reference_sine_head_int8(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor,
                             bias: torch.Tensor | None, x_scale: float, omega: float = 1.0,
                             amplitude: float = 1.0) -> torch.Tensor:
    """Torch reference. x (..., K) float; w_q (N, K) int8; w_scale (N,); bias (N,) -> (..., N) x.dtype."""
    x_q = quantize_activation(x, x_scale)
    # |acc| <= 128 * 127 * K, so a float64 GEMM is exact (= the int32 accumulator) for any
    # K < 2**39, and BLAS: 0.78 ms vs 1.47 ms for an int64 matmul at 256x1024x10 (1 thread).
    acc = torch.matmul(x_q.to(torch.float64), w_q.to(torch.float64).t())
    z = acc.float() * (float(x_scale) * w_scale.float())
    if bias is not None:
        z = z + bias.float()
    return (amplitude * torch.sin(omega * z)).to(x.dtype)


def _check(x, w_q, w_scale):
    if w_q.dtype != torch.int8:
        raise TypeError(f"w_q must be int8 (see quantize_weight_per_channel), got {w_q.dtype}")
    if w_scale.shape != (w_q.shape[0],):
        raise ValueError(f"w_scale must have shape ({w_q.shape[0]},), got {tuple(w_scale.shape)}")
    if x.shape[-1] != w_q.shape[1]:
        raise ValueError(f"x has {x.shape[-1]} features, w_q expects {w_q.shape[1]}")


@torch.no_grad()
def sine_head_int8(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor,
                   bias: torch.Tensor | None, x_scale: float, omega: float = 1.0,
                   amplitude: float = 1.0, impl: str | None = None) -> torch.Tensor:
    """INT8 head with the same dispatch as sine_head (Triton on CUDA, reference elsewhere)."""
    _check(x, w_q, w_scale)
    if not _use_kernel(x, omega, amplitude, impl):
        return reference_sine_head_int8(x, w_q, w_scale, bias, x_scale, omega, amplitude)
    N, K = w_q.shape
    out, _, _, _ = launch_forward(x.reshape(-1, K), w_q, _f32(bias), omega, amplitude,
                                  w_scale=w_scale.float().contiguous(), x_scale=x_scale)
    return out.reshape(*x.shape[:-1], N)


@torch.no_grad()
def sine_head_int8_predict(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor,
                           bias: torch.Tensor | None, x_scale: float, omega: float = 1.0,
                           amplitude: float = 1.0, impl: str | None = None) -> SineHeadPrediction:
    """INT8 head output, log-softmax and argmax over N; one launch on the Triton path."""
    _check(x, w_q, w_scale)
    N, K = w_q.shape
    if not _use_kernel(x, omega, amplitude, impl) or N > FUSED_PREDICT_MAX_N:
        return _prediction_from_out(sine_head_int8(x, w_q, w_scale, bias, x_scale, omega, amplitude, impl))
    out, _, lsm, pred = launch_forward(x.reshape(-1, K), w_q, _f32(bias), omega, amplitude,
                                       w_scale=w_scale.float().contiguous(), x_scale=x_scale,
                                       fuse_row=True)
    lead = x.shape[:-1]
    return SineHeadPrediction(out.reshape(*lead, N), lsm.reshape(*lead, N), pred.reshape(lead))


def _f32(bias):
    return None if bias is None else bias.float().contiguous()


class SineHeadInt8(torch.nn.Module):
    """Frozen INT8 copy of a SineHead: buffers w_q (N, K) int8, w_scale (N,), bias (N,)."""

    def __init__(self, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                 x_scale: float, omega: float = 1.0, amplitude: float = 1.0, impl: str | None = None):
        super().__init__()
        _check(torch.empty(0, w_q.shape[1]), w_q, w_scale)
        self.register_buffer("w_q", w_q)
        self.register_buffer("w_scale", w_scale.float())
        self.register_buffer("bias", None if bias is None else bias.detach().float())
        self.x_scale, self.omega, self.amplitude, self.impl = float(x_scale), float(omega), float(amplitude), impl

    @classmethod
    def from_float(cls, head, x_scale: float) -> "SineHeadInt8":
        """head: a SineHead (weight, bias, omega, amplitude)."""
        w_q, w_scale = quantize_weight_per_channel(head.weight)
        return cls(w_q, w_scale, head.bias, x_scale, head.omega, head.amplitude, getattr(head, "impl", None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        return sine_head_int8(x, self.w_q, self.w_scale, self.bias, self.x_scale,
                              self.omega, self.amplitude, self.impl)

    def predict(self, x: torch.Tensor) -> SineHeadPrediction:
        return sine_head_int8_predict(x, self.w_q, self.w_scale, self.bias, self.x_scale,
                                      self.omega, self.amplitude, self.impl)
