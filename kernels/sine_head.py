"""Fused sine-bounded head: ``out = amplitude * sin(omega * (x @ W.T + b))``.

Hand-written because no library fuses a GEMM with a sine epilogue (torch eager runs
``addmm`` then two elementwise kernels and re-reads the (M, N) logits each time; for a
classifier head N is 10..1000, so those round trips and launches dominate).

One file, Liger-Kernel style:
  * ``_fwd_kernel``      GEMM with an fp32 (int32 for INT8) accumulator; epilogue applies
                         [dequant,] bias, omega, sin, amplitude; optionally stores the
                         pre-activation z for backward, and fuses log-softmax + argmax over
                         the row when one block holds all N columns (inference).
  * ``_bwd_dx_kernel``   dX = dZ @ W,     dZ = dOut * amplitude * omega * cos(omega z) fused.
  * ``_bwd_dw_kernel``   dW = dZ^T @ X and db = sum_m dZ (same fused dZ), split over M with
                         fp32 atomics when the (N, K) grid alone cannot fill the GPU.
  * launchers, ``SineHeadFunction`` (autograd), ``sine_head`` (functional + dispatch),
    ``sine_head_predict`` (one-launch inference), ``SineHead`` (nn.Module), and the torch
    references ``reference_sine_head`` / ``reference_sine_head_predict``.

The INT8 variant (per-channel int8 weights, per-tensor activations) lives in
``sine_head_int8.py`` and reuses ``_fwd_kernel``; the ONNX custom-domain op and the TensorRT
plugin live in ``trt_plugin.py``.

Dispatch (``sine_head``): ``impl`` argument, else env ``EEGSINE_SINE_HEAD_IMPL``
(auto|triton|torch), else auto = the Triton kernel for CUDA tensors when triton imports
*and* the call is being captured into a CUDA graph, the torch ops otherwise. Measured on an
H100 (docs/results/kernel-gpu): launched from Python the kernel costs ~60-80 us of host time
per call against ~20 us for eager's three launches, so it loses almost everywhere; replayed
from a graph, where launch cost vanishes, it is 2.2-4.5x faster than eager at N = 10.
``impl='triton'`` forces it. ``triton`` on CPU works only under ``TRITON_INTERPRET=1``
(used by the tests). During ONNX export / tracing the reference (plain ops) always runs.

Triton is imported lazily and the ``@triton.jit`` objects are built on first launch, so
importing this module never needs triton. Triton fixes interpreted-vs-compiled when
``triton.language`` is first imported (its own @jit helpers are built then), so
``TRITON_INTERPRET=1`` must be set before that; a mismatch raises a clear error.
"""
from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch

IMPL_ENV = "EEGSINE_SINE_HEAD_IMPL"  # "auto" (default), "triton" or "torch"
IMPLS = ("auto", "triton", "torch")
# Largest N for the fused log-softmax/argmax epilogue: one program holds a 16 x N fp32
# accumulator (64 regs/thread at 8 warps for N=1024) and the pipelined W^T tiles: 65 KiB of
# shared memory for fp32 at N=1024 (Triton 3.9, sm_80); N=2048 would need ~130 KiB, more
# than consumer GPUs have. Larger N falls back to the kernel + torch log_softmax/argmax.
MAX_FUSED_N = 1024
# Largest N that sine_head_predict sends to the fused kernel. Measured on an H100 (fp16, K=1024,
# CUDA-graph replays, docs/results/kernel-gpu): fused predict 3.5-4.5x faster than eager at N=10,
# 0.24-0.38x at N=1000 (a 16 x 1024 row tile is a poor GEMM tile); in between not measured,
# so the cut sits at the plain forward's N tile (64). Larger N: tiled forward + torch epilogue.
FUSED_PREDICT_MAX_N = 64
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------- references
def reference_sine_head(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        omega: float = 1.0, amplitude: float = 1.0) -> torch.Tensor:
    """Torch reference. x: (..., K), weight: (N, K), bias: (N,) -> (..., N).

    Exports to ONNX as Gemm/MatMul + Add, Mul, Sin, Mul (the plain path every runtime runs).
    """
    z = torch.nn.functional.linear(x, weight, bias)
    return amplitude * torch.sin(omega * z)


class SineHeadPrediction(NamedTuple):
    out: torch.Tensor        # (..., N) amplitude * sin(omega * z), x's dtype
    log_probs: torch.Tensor  # (..., N) log_softmax(out) over N, x's dtype
    pred: torch.Tensor       # (...,)   argmax over N (int64); a NaN row gives its first NaN


def _prediction_from_out(out: torch.Tensor) -> SineHeadPrediction:
    of = out.float()
    return SineHeadPrediction(out, torch.log_softmax(of, dim=-1).to(out.dtype), of.argmax(dim=-1))


def reference_sine_head_predict(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                omega: float = 1.0, amplitude: float = 1.0) -> SineHeadPrediction:
    """Reference of the fused inference epilogue: head output, log-softmax and argmax over N."""
    return _prediction_from_out(reference_sine_head(x, weight, bias, omega, amplitude))


# --------------------------------------------------------------------------- triton kernels
# Plain functions; ``_kernels()`` wraps them with triton.jit on first use. Parameter order
# is (input pointers, int scalars, float scalars, output pointers, constexprs) so the
# TensorRT AOT plugin can launch _fwd_kernel as-is (it wants inputs, scalars, outputs).
def _fwd_kernel(x_ptr, w_ptr, b_ptr, ws_ptr,
                M, N, K, stride_xm, stride_xk, stride_wn, stride_wk,
                omega, amplitude, x_scale,
                out_ptr, z_ptr, lsm_ptr, pred_ptr,
                HAS_BIAS: tl.constexpr, QUANT: tl.constexpr, STORE_Z: tl.constexpr,
                FUSE_ROW: tl.constexpr, PRECISION: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    if QUANT:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)  # (BM, BK)
        w = tl.load(w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None] * stride_wk,
                    mask=mask_n[None, :] & mask_k[:, None], other=0)  # (BK, BN) = W^T tile
        if QUANT:
            # QuantizeLinear: saturate(round_half_even(x / scale)); floor-based so the same
            # code runs on GPU and in the interpreter (no libdevice rint there).
            v = x.to(tl.float32) / x_scale
            r = tl.floor(v + 0.5)
            r = tl.where(((r - v) == 0.5) & ((r - 2.0 * tl.floor(r * 0.5)) != 0.0), r - 1.0, r)
            r = tl.minimum(tl.maximum(r, -128.0), 127.0)
            acc = tl.dot(r.to(tl.int8), w, acc, out_dtype=tl.int32)
        else:
            acc = tl.dot(x, w, acc, input_precision=PRECISION)
    if QUANT:
        ws = tl.load(ws_ptr + offs_n, mask=mask_n, other=0.0)
        z = acc.to(tl.float32) * (x_scale * ws)[None, :]
    else:
        z = acc
    if HAS_BIAS:
        z = z + tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    y = amplitude * tl.sin(omega * z)  # (BM, BN) fp32
    offs_out = offs_m[:, None] * N + offs_n[None, :]
    mask_out = mask_m[:, None] & mask_n[None, :]
    tl.store(out_ptr + offs_out, y.to(out_ptr.dtype.element_ty), mask=mask_out)
    if STORE_Z:
        tl.store(z_ptr + offs_out, z, mask=mask_out)
    if FUSE_ROW:
        # The launcher guarantees BLOCK_N >= N and a single program along N.
        yr = tl.where(mask_n[None, :], y, float("-inf"))
        row_max = tl.max(yr, axis=1)
        lse = row_max + tl.log(tl.sum(tl.exp(yr - row_max[:, None]), axis=1))
        tl.store(lsm_ptr + offs_out, (y - lse[:, None]).to(lsm_ptr.dtype.element_ty), mask=mask_out)
        # torch.argmax treats NaN as the maximum (first NaN wins); mirror that.
        is_nan = (y != y) & mask_n[None, :]
        first_nan = tl.min(tl.where(is_nan, offs_n[None, :], BLOCK_N), axis=1)
        best = tl.argmax(tl.where(is_nan, float("-inf"), yr), axis=1)
        pred = tl.where(first_nan < BLOCK_N, first_nan, best)
        tl.store(pred_ptr + offs_m, pred.to(tl.int64), mask=mask_m)


def _bwd_dx_kernel(g_ptr, z_ptr, w_ptr, dx_ptr,
                   M, N, K, stride_gm, stride_gn, stride_wn, stride_wk,
                   omega, amplitude,
                   PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_k = offs_k < K
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        mask = mask_m[:, None] & mask_n[None, :]
        g = tl.load(g_ptr + offs_m[:, None] * stride_gm + offs_n[None, :] * stride_gn,
                    mask=mask, other=0.0).to(tl.float32)  # (BM, BN)
        z = tl.load(z_ptr + offs_m[:, None] * N + offs_n[None, :], mask=mask, other=0.0)
        dz = g * (amplitude * omega) * tl.cos(omega * z)
        w = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk,
                    mask=mask_n[:, None] & mask_k[None, :], other=0.0)  # (BN, BK)
        acc = tl.dot(dz.to(w.dtype), w, acc, input_precision=PRECISION)
    tl.store(dx_ptr + offs_m[:, None] * K + offs_k[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_k[None, :])


def _bwd_dw_kernel(g_ptr, z_ptr, x_ptr,
                   M, N, K, stride_gm, stride_gn, stride_xm, stride_xk, rows_per_split,
                   omega, amplitude,
                   dw_ptr, db_ptr,
                   HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_s = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_n = offs_n < N
    mask_k = offs_k < K
    m_start = pid_s * rows_per_split
    m_end = tl.minimum(m_start + rows_per_split, M)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for m0 in range(m_start, m_end, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < m_end
        mask = mask_n[:, None] & mask_m[None, :]
        g = tl.load(g_ptr + offs_n[:, None] * stride_gn + offs_m[None, :] * stride_gm,
                    mask=mask, other=0.0).to(tl.float32)  # (BN, BM) = dOut^T tile
        z = tl.load(z_ptr + offs_m[None, :] * N + offs_n[:, None], mask=mask, other=0.0)
        dzt = g * (amplitude * omega) * tl.cos(omega * z)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)  # (BM, BK)
        acc = tl.dot(dzt.to(x.dtype), x, acc, input_precision=PRECISION)
        db += tl.sum(dzt, axis=1)
    ptrs = dw_ptr + offs_n[:, None] * K + offs_k[None, :]
    mask_w = mask_n[:, None] & mask_k[None, :]
    mask_b = offs_n < tl.where(pid_k == 0, N, 0)  # db written once, by the k == 0 column
    if ATOMIC:
        tl.atomic_add(ptrs, acc, mask=mask_w)
        if HAS_BIAS:
            tl.atomic_add(db_ptr + offs_n, db, mask=mask_b)
    else:
        tl.store(ptrs, acc, mask=mask_w)
        if HAS_BIAS:
            tl.store(db_ptr + offs_n, db, mask=mask_b)


_KERNEL_FNS = (_fwd_kernel, _bwd_dx_kernel, _bwd_dw_kernel)
_built: dict = {}


def _import_triton():
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None, None
    return triton, tl


def triton_available() -> bool:
    return _import_triton()[0] is not None


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _language_interpreted() -> bool:
    """Whether triton.language was imported under TRITON_INTERPRET=1: its own @jit helpers
    (tl.zeros, tl.cdiv, ...) are built at that import, so the mode is fixed per process."""
    import triton.language.standard as std

    return type(std.cdiv).__name__ == "InterpretedFunction"


def _kernels() -> dict:
    """The triton.jit objects, built on first use (triton.jit picks interpreted vs compiled
    at decoration time from TRITON_INTERPRET)."""
    key = interpreter_enabled()
    if key not in _built:
        triton, tl = _import_triton()
        if triton is None:
            raise RuntimeError("the Triton sine-head kernel needs the `triton` package "
                               f"(install it, or set {IMPL_ENV}=torch)")
        if _language_interpreted() != key:
            raise RuntimeError(
                f"TRITON_INTERPRET is {'set' if key else 'unset'} now but was "
                f"{'set' if not key else 'unset'} when triton was first imported; Triton fixes "
                "the interpreter mode at import, so set TRITON_INTERPRET before importing "
                "triton (i.e. in a fresh process)")
        globals()["tl"] = tl  # the kernel bodies resolve `tl` from module globals
        _built[key] = {fn.__name__: triton.jit(fn) for fn in _KERNEL_FNS}
    return _built[key]


# --------------------------------------------------------------------------- launchers
def _pow2(n: int, lo: int = 16, hi: int | None = None) -> int:
    p = max(lo, 1 << max(0, (int(n) - 1).bit_length()))
    return min(p, hi) if hi else p


def _precision(dtype: torch.dtype) -> str:
    # fp32 follows torch's own matmul setting so kernel and reference agree: full IEEE
    # unless the user enabled TF32 (torch.backends.cuda.matmul.allow_tf32).
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _stages(dtype: torch.dtype) -> int:
    # software-pipelining depth: 3 for 16-bit inputs; 2 keeps fp32 64x64x64 tiles at 64 KiB
    # of shared memory (3 stages = 96 KiB, more than consumer GPUs' ~100 KiB minus scratch).
    return 2 if dtype == torch.float32 else 3


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2


def _check_launch(x: torch.Tensor) -> None:
    if x.device.type != "cuda" and not interpreter_enabled():
        raise RuntimeError(
            f"{IMPL_ENV}=triton / impl='triton' on a {x.device.type} tensor: the Triton kernel "
            "runs on CUDA, or on CPU only under TRITON_INTERPRET=1 (set before triton is "
            "first imported); use impl='torch' for the reference")


def fwd_config(M: int, N: int, dtype: torch.dtype, fuse_row: bool, interp: bool = False,
               quant: bool = False):
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) of _fwd_kernel."""
    if fuse_row:
        bn = _pow2(N)  # the whole row in one program
        bm = max(16, min(64, 8192 // bn))
        bk = 32 if interp else (64 if bn <= 128 else (32 if bn <= 256 else 16))
        if quant:
            bk = max(bk, 32)  # int8 tl.dot needs K >= 32 (int8 tiles are 1/4 the bytes)
    else:
        # Classifier heads: N small. 64x64x64 tiles keep x reads coalesced; tiny M wastes
        # most of a 64-row tile, so shrink it (batch 1 is the edge-latency case).
        bm = 16 if M <= 16 else (32 if M <= 64 else 64)
        bn = _pow2(N, hi=64)
        bk = 32 if interp else 64
    return bm, bn, bk, 8 if bm * bn >= 8192 else 4, _stages(dtype)


def bwd_config(N: int, interp: bool = False) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K) of both backward kernels."""
    return (16, _pow2(N, hi=32), 32) if interp else (64, _pow2(N, hi=64), 64)


def launch_forward(x2d: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   omega: float, amplitude: float, *, w_scale: torch.Tensor | None = None,
                   x_scale: float = 1.0, store_z: bool = False, fuse_row: bool = False,
                   out_dtype: torch.dtype | None = None, block: tuple[int, int, int] | None = None):
    """Run _fwd_kernel. x2d (M, K); weight (N, K) float, or int8 with w_scale (N,) fp32.
    Returns (out (M, N), z (M, N) fp32 or None, log_probs (M, N) or None, pred (M,) or None)."""
    _check_launch(x2d)
    M, K = x2d.shape
    N = weight.shape[0]
    quant = w_scale is not None
    dev = x2d.device
    out_dtype = out_dtype or x2d.dtype
    out = torch.empty((M, N), device=dev, dtype=out_dtype)
    z = torch.empty((M, N), device=dev, dtype=torch.float32) if store_z else None
    lsm = torch.empty((M, N), device=dev, dtype=out_dtype) if fuse_row else None
    pred = torch.empty((M,), device=dev, dtype=torch.int64) if fuse_row else None
    if M == 0 or N == 0:
        return out, z, lsm, pred
    if fuse_row and N > MAX_FUSED_N:
        raise ValueError(f"fused log-softmax/argmax needs N <= {MAX_FUSED_N}, got N={N}")
    bm, bn, bk, warps, stages = fwd_config(M, N, x2d.dtype, fuse_row, dev.type != "cuda", quant)
    if block is not None:
        bm, bn, bk = block
    grid = (triton_cdiv(M, bm), 1 if fuse_row else triton_cdiv(N, bn))
    dummy = out  # placeholder for pointers a constexpr flag switches off
    _kernels()["_fwd_kernel"][grid](
        x2d, weight, bias if bias is not None else dummy, w_scale if quant else dummy,
        M, N, K, x2d.stride(0), x2d.stride(1), weight.stride(0), weight.stride(1),
        float(omega), float(amplitude), float(x_scale),
        out, z if store_z else dummy, lsm if fuse_row else dummy, pred if fuse_row else dummy,
        HAS_BIAS=bias is not None, QUANT=quant, STORE_Z=store_z, FUSE_ROW=fuse_row,
        PRECISION=_precision(x2d.dtype), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        num_warps=warps, num_stages=stages)
    return out, z, lsm, pred


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def launch_backward(g2d: torch.Tensor, z: torch.Tensor, x2d: torch.Tensor, weight: torch.Tensor,
                    has_bias: bool, omega: float, amplitude: float, *, need_dx: bool = True,
                    need_dw: bool = True, split_m: int | None = None):
    """dX (M, K), dW (N, K), db (N,) of out = amplitude*sin(omega*z) given dOut g2d (M, N)."""
    _check_launch(x2d)
    M, K = x2d.shape
    N = weight.shape[0]
    dev = x2d.device
    interp = dev.type != "cuda"
    prec = _precision(x2d.dtype)
    ks = _kernels()
    dx = dw = db = None
    if need_dx:
        dx = torch.empty((M, K), device=dev, dtype=x2d.dtype)
        bm, bn, bk = bwd_config(N, interp)
        if M and K:
            ks["_bwd_dx_kernel"][(triton_cdiv(M, bm), triton_cdiv(K, bk))](
                g2d, z, weight, dx, M, N, K, g2d.stride(0), g2d.stride(1),
                weight.stride(0), weight.stride(1), float(omega), float(amplitude),
                PRECISION=prec, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_stages=_stages(x2d.dtype))
    if need_dw:
        bm, bn, bk = bwd_config(N, interp)
        grid_nk = triton_cdiv(N, bn) * triton_cdiv(K, bk)
        m_tiles = max(1, triton_cdiv(M, bm))
        if split_m is None:
            # N=10, K=1024 gives 16 (N, K) tiles: far too few for 100+ SMs at large M, so
            # split M and reduce with fp32 atomics (off under deterministic algorithms).
            split_m = 1 if torch.are_deterministic_algorithms_enabled() else \
                max(1, min(m_tiles, (2 * _num_sms(dev)) // max(1, grid_nk)))
        split_m = max(1, min(split_m, m_tiles))
        rows = triton_cdiv(m_tiles, split_m) * bm
        split_m = triton_cdiv(max(M, 1), rows)
        atomic = split_m > 1
        alloc = torch.zeros if atomic else torch.empty
        dw32 = alloc((N, K), device=dev, dtype=torch.float32)
        db32 = alloc((N,), device=dev, dtype=torch.float32) if has_bias else dw32
        if M == 0:
            dw32.zero_()
            db32.zero_()
        elif N and K:
            ks["_bwd_dw_kernel"][(triton_cdiv(N, bn), triton_cdiv(K, bk), split_m)](
                g2d, z, x2d, M, N, K, g2d.stride(0), g2d.stride(1), x2d.stride(0), x2d.stride(1),
                rows, float(omega), float(amplitude), dw32, db32,
                HAS_BIAS=has_bias, ATOMIC=atomic, PRECISION=prec,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_stages=_stages(x2d.dtype))
        dw = dw32.to(weight.dtype)
        db = db32.to(weight.dtype) if has_bias else None
    return dx, dw, db


# --------------------------------------------------------------------------- autograd
class SineHeadFunction(torch.autograd.Function):
    """Triton forward/backward. Saves x, W and the fp32 pre-activation z (M*N*4 bytes: for a
    classifier head far cheaper than recomputing the GEMM in backward)."""

    @staticmethod
    def forward(ctx, x, weight, bias, omega: float, amplitude: float):
        K = x.shape[-1]
        x2d = x.reshape(-1, K)
        need_grad = any(ctx.needs_input_grad[:3])
        out, z, _, _ = launch_forward(x2d, weight, bias, omega, amplitude, store_z=need_grad)
        if need_grad:
            ctx.save_for_backward(x2d, weight, z)
        ctx.meta = (x.shape, bias is not None, float(omega), float(amplitude))
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x2d, weight, z = ctx.saved_tensors
        x_shape, has_bias, omega, amplitude = ctx.meta
        g2d = grad_out.reshape(-1, weight.shape[0])
        dx, dw, db = launch_backward(
            g2d, z, x2d, weight, has_bias, omega, amplitude,
            need_dx=ctx.needs_input_grad[0],
            need_dw=ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
        return (dx.reshape(x_shape) if dx is not None else None,
                dw if ctx.needs_input_grad[1] else None,
                db if ctx.needs_input_grad[2] else None, None, None)


# --------------------------------------------------------------------------- dispatch
def resolve_impl(impl: str | None = None) -> str:
    impl = (impl or os.environ.get(IMPL_ENV) or "auto").strip().lower()
    if impl not in IMPLS:
        raise ValueError(f"sine head impl must be one of {'|'.join(IMPLS)} "
                         f"(argument impl= or env {IMPL_ENV}), got {impl!r}")
    return impl


def kernel_available(x: torch.Tensor) -> bool:
    """True when the Triton kernel can run on x (CUDA float tensor + triton)."""
    return x.is_cuda and x.dtype in _FLOAT_DTYPES and triton_available()


def _capturing_cuda_graph() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _exporting() -> bool:
    return (torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()
            or torch.compiler.is_exporting())


# The op an exporter asks sine_head to emit under export instead of its own graph (trt_plugin.plugin_export
# installs the eegsine::SineHead custom op): this module knows no exporter, the exporter knows this hook.
_EXPORT_OPS: list[Callable[..., torch.Tensor]] = []


@contextlib.contextmanager
def export_as(op: Callable[..., torch.Tensor]) -> Iterator[None]:
    """While active, ``sine_head`` under export (ONNX, tracing, torch.export) is ``op(x, weight, bias, omega,
    amplitude)``; outside export nothing changes."""
    _EXPORT_OPS.append(op)
    try:
        yield
    finally:
        _EXPORT_OPS.remove(op)


def _use_kernel(x: torch.Tensor, omega, amplitude, impl: str | None) -> bool:
    impl = resolve_impl(impl)
    if impl == "torch" or _exporting():
        return False
    scalar = all(not isinstance(v, torch.Tensor) for v in (omega, amplitude))
    if impl == "triton":
        if not triton_available():
            raise RuntimeError(f"impl='triton' ({IMPL_ENV}) but the `triton` package is not installed")
        _check_launch(x)
        if not scalar:
            raise TypeError("the Triton sine head takes Python-number omega/amplitude, not tensors")
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"the Triton sine head supports float32/16/bfloat16 inputs, got {x.dtype}")
        return True
    # auto: the kernel only where its launch cost is not paid per call (CUDA-graph capture)
    return scalar and kernel_available(x) and _capturing_cuda_graph()


def sine_head(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
              omega: float = 1.0, amplitude: float = 1.0, impl: str | None = None) -> torch.Tensor:
    """amplitude * sin(omega * (x @ W.T + b)); x (..., K), weight (N, K), bias (N,) -> (..., N).

    Differentiable in both implementations (Triton: SineHeadFunction; torch: autograd)."""
    if _EXPORT_OPS and _exporting():
        return _EXPORT_OPS[-1](x, weight, bias, float(omega), float(amplitude))
    if not _use_kernel(x, omega, amplitude, impl):
        return reference_sine_head(x, weight, bias, omega, amplitude)
    x, weight, bias = _kernel_operands(x, weight, bias)
    return SineHeadFunction.apply(x, weight, bias, omega, amplitude)


def _kernel_operands(x, weight, bias):
    """Autocast like F.linear would, then insist on one dtype (the kernel has no mixed
    inputs) and a unit-stride bias (the kernel indexes it without a stride)."""
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        dt = torch.get_autocast_dtype("cuda")
        x, weight = x.to(dt), weight.to(dt)
        bias = bias.to(dt) if bias is not None else None
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise TypeError(f"sine head dtypes differ: x {x.dtype}, weight {weight.dtype}, "
                        f"bias {None if bias is None else bias.dtype}")
    if x.shape[-1] != weight.shape[1] or (bias is not None and bias.shape != (weight.shape[0],)):
        raise ValueError(f"sine head shapes: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                         f"bias {None if bias is None else tuple(bias.shape)}")
    return x, weight, None if bias is None else bias.contiguous()


@torch.no_grad()
def sine_head_predict(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      omega: float = 1.0, amplitude: float = 1.0,
                      impl: str | None = None) -> SineHeadPrediction:
    """Inference: head output, log-softmax and argmax over N in one launch (Triton, N <= 64);
    the reference (or kernel + torch for larger N) elsewhere. Not differentiable."""
    if not _use_kernel(x, omega, amplitude, impl):
        return reference_sine_head_predict(x, weight, bias, omega, amplitude)
    x, weight, bias = _kernel_operands(x, weight, bias)
    N, K = weight.shape
    if N > FUSED_PREDICT_MAX_N:
        return _prediction_from_out(sine_head(x, weight, bias, omega, amplitude, impl="triton"))
    out, _, lsm, pred = launch_forward(x.reshape(-1, K), weight, bias, omega, amplitude, fuse_row=True)
    lead = x.shape[:-1]
    return SineHeadPrediction(out.reshape(*lead, N), lsm.reshape(*lead, N), pred.reshape(lead))


# --------------------------------------------------------------------------- module
class SineHead(torch.nn.Module):
    """Linear layer followed by amplitude * sin(omega * .). Default init is nn.Linear's; the
    sine classifier applies its own (SIREN-style) init to .weight/.bias."""

    def __init__(self, in_features: int, out_features: int, omega: float = 1.0,
                 amplitude: float = 1.0, bias: bool = True, impl: str | None = None,
                 device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.omega, self.amplitude, self.impl = float(omega), float(amplitude), impl
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return sine_head(x, self.weight, self.bias, self.omega, self.amplitude, impl=self.impl)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        """``x @ W.T + b``, the values inside the sine before omega (adaptive attacks differentiate it)."""
        return torch.nn.functional.linear(x, self.weight, self.bias)

    def predict(self, x: torch.Tensor) -> SineHeadPrediction:
        return sine_head_predict(x, self.weight, self.bias, self.omega, self.amplitude, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"omega={self.omega}, amplitude={self.amplitude}, bias={self.bias is not None}")
