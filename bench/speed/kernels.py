"""GPU benchmark of the fused Triton sine head against torch eager and torch.compile.

    python -m eegsine.bench.speed.kernels [--n 10 1000] [--batch 1 8 64 512 4096 8192]
        [--k 1024] [--dtype float16] [--mode forward|predict|backward|int8] [--cudagraph] [--json out.json]

For each (N, batch) it times, with triton.testing.do_bench (median ms, CUDA events):
  * triton   the fused kernel (sine_head / sine_head_predict / forward+backward; ``int8``: the INT8
             head of :mod:`eegsine.kernels.sine_head_int8`, int8 x int8 -> int32 GEMM, dequantize + bias
             + sine in the epilogue: what the classifier's INT8 QDQ ONNX head computes)
  * eager    torch: F.linear, then sin and the amplitude multiply (+ log_softmax, argmax); ``int8``: the
             INT8 head's torch reference (quantize, integer matmul, dequantize, sine)
  * compile  torch.compile of the same eager function (default mode, dynamic=False)
With --cudagraph the calls are replayed from a CUDA graph (triton.testing.do_bench_cudagraph),
which removes the host's launch overhead: the default numbers are what a Python caller sees,
the graph numbers what the GPU spends (forward and predict only). It
reports achieved GB/s (minimum bytes: read x, W, b once, write the outputs once; for
backward also read dOut and write dX, dW, db) and TFLOP/s (2*M*N*K per GEMM). Numbers are
for the GPU named in the header. Without a CUDA GPU and triton it exits with status 2 and
says so. Hand-written: this is the kernel's own comparison, no benchmark library does it.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Literal

import torch

from eegsine.config import Config
from eegsine.kernels import sine_head as sh, sine_head_int8 as sq
from eegsine.io import write_json

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
OMEGA, AMP = 1.0, 1.0


@dataclasses.dataclass
class KernelBenchConfig(Config):
    """What :func:`run` times (the flags of ``python -m eegsine.bench.speed.kernels``, one field each)."""

    KIND = "kernel-bench"
    VERSION = 1

    n: list[int] = dataclasses.field(default_factory=lambda: [10, 1000])
    batch: list[int] = dataclasses.field(default_factory=lambda: [1, 8, 64, 512, 4096, 8192])
    k: int = 1024
    dtype: Literal["float32", "float16", "bfloat16"] = "float16"
    mode: Literal["forward", "predict", "backward", "int8"] = "forward"
    warmup: int = 25
    rep: int = 100
    cudagraph: bool = False


def _eager(x, w, b):
    return AMP * torch.sin(OMEGA * torch.nn.functional.linear(x, w, b))


def _eager_predict(x, w, b):
    out = _eager(x, w, b)
    return out, torch.log_softmax(out.float(), dim=-1).to(out.dtype), out.argmax(dim=-1)


def _bytes(mode: str, m: int, n: int, k: int, es: int) -> int:
    if mode == "int8":  # x in its dtype, W as int8 + one fp32 scale per row, fp32 bias, fp32 output
        return m * k * es + n * k + 8 * n + 4 * m * n
    fwd = (m * k + n * k + n) * es + m * n * es
    if mode == "predict":
        return fwd + m * n * es + m * 8
    if mode == "backward":  # fwd (+ z in fp32 for triton; not counted) + dOut, dX, dW, db
        return fwd + (m * n + m * k + n * k + n) * es + (m * k + n * k) * es
    return fwd


def _flops(mode: str, m: int, n: int, k: int) -> int:
    return 2 * m * n * k * (3 if mode == "backward" else 1)


def _int8_callables(x, w, b, compiled: bool = True) -> dict:
    w_q, w_s = sq.quantize_weight_per_channel(w)
    x_s = sq.activation_scale(float(x.abs().max()))
    b32 = b.float()
    out = {"triton": lambda: sq.sine_head_int8(x, w_q, w_s, b32, x_s, OMEGA, AMP, impl="triton"),
           "eager": lambda: sq.reference_sine_head_int8(x, w_q, w_s, b32, x_s, OMEGA, AMP)}
    if compiled:
        fn = torch.compile(sq.reference_sine_head_int8, dynamic=False)
        out["compile"] = lambda: fn(x, w_q, w_s, b32, x_s, OMEGA, AMP)
    return out


def _callables(mode: str, x, w, b):
    torch._dynamo.reset()  # one shape per compile: else shapes past the recompile limit (8) run eagerly
    if mode == "int8":
        return _int8_callables(x, w, b)
    compiled = torch.compile(_eager_predict if mode == "predict" else _eager, dynamic=False)
    if mode == "forward":
        return {"triton": lambda: sh.sine_head(x, w, b, OMEGA, AMP, impl="triton"),
                "eager": lambda: _eager(x, w, b), "compile": lambda: compiled(x, w, b)}
    if mode == "predict":
        return {"triton": lambda: sh.sine_head_predict(x, w, b, OMEGA, AMP, impl="triton"),
                "eager": lambda: _eager_predict(x, w, b), "compile": lambda: compiled(x, w, b)}
    xg, wg, bg = (t.detach().requires_grad_() for t in (x, w, b))
    g = torch.randn(x.shape[0], w.shape[0], device=x.device, dtype=x.dtype)

    def step(fn):
        return lambda: torch.autograd.backward(fn(xg, wg, bg), g)

    return {"triton": step(lambda *a: sh.sine_head(*a, OMEGA, AMP, impl="triton")),
            "eager": step(_eager), "compile": step(compiled)}


def run(cfg: KernelBenchConfig) -> list[dict]:
    """Time every (N, batch) of ``cfg`` on this CUDA GPU; print the table, return its rows."""
    import triton.testing

    dev = torch.device("cuda")
    dtype = DTYPES[cfg.dtype]
    es = torch.finfo(dtype).bits // 8
    rows = []
    timer = "do_bench_cudagraph" if cfg.cudagraph else "do_bench"
    print(f"# {torch.cuda.get_device_name(dev)} | torch {torch.__version__} | {cfg.dtype} | "
          f"K={cfg.k} | mode={cfg.mode} | {timer} median of warmup={cfg.warmup} rep={cfg.rep} ms")
    print(f"{'N':>5} {'batch':>6} {'impl':>8} {'ms':>9} {'GB/s':>8} {'TFLOP/s':>8} {'x eager':>8}")
    for n in cfg.n:
        for m in cfg.batch:
            g = torch.Generator(device=dev).manual_seed(0)
            x = torch.randn(m, cfg.k, device=dev, dtype=dtype, generator=g)
            w = torch.randn(n, cfg.k, device=dev, dtype=dtype, generator=g) / cfg.k ** 0.5
            b = torch.randn(n, device=dev, dtype=dtype, generator=g)
            if cfg.mode != "backward":  # same answer before timing anything
                if cfg.mode == "int8":
                    fns = _int8_callables(x, w, b, compiled=False)
                    ref, got = fns["eager"]().float(), fns["triton"]().float()
                else:
                    ref = _eager(x.float(), w.float(), b.float())
                    got = sh.sine_head(x, w, b, OMEGA, AMP, impl="triton").float()
                err = (got - ref).abs().max().item()
                if err > (1e-4 if dtype == torch.float32 else 2e-2):
                    raise SystemExit(f"kernel disagrees with torch at N={n} batch={m}: max err {err:.3g}")
            times = {}
            for impl, fn in _callables(cfg.mode, x, w, b).items():
                if cfg.cudagraph:  # its own warm-up call (compiles) runs before the capture
                    ms = triton.testing.do_bench_cudagraph(fn, rep=cfg.rep, return_mode="median")
                else:
                    ms = triton.testing.do_bench(fn, warmup=cfg.warmup, rep=cfg.rep, return_mode="median")
                times[impl] = ms
                gbs = _bytes(cfg.mode, m, n, cfg.k, es) / (ms * 1e-3) / 1e9
                tfl = _flops(cfg.mode, m, n, cfg.k) / (ms * 1e-3) / 1e12
                row = dict(n=n, batch=m, k=cfg.k, dtype=cfg.dtype, mode=cfg.mode, impl=impl, timer=timer,
                           ms=ms, gb_s=gbs, tflop_s=tfl, speedup_vs_eager=None)
                rows.append(row)
            for row in rows[-len(times):]:
                row["speedup_vs_eager"] = times["eager"] / row["ms"]
                print(f"{n:>5} {m:>6} {row['impl']:>8} {row['ms']:>9.4f} {row['gb_s']:>8.1f} "
                      f"{row['tflop_s']:>8.3f} {row['speedup_vs_eager']:>8.2f}")
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eegsine.bench.speed.kernels", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[10, 1000], help="output classes N")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64, 512, 4096, 8192], help="batch sizes M")
    p.add_argument("--k", type=int, default=1024, help="input features K")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float16", help="input and weight dtype")
    p.add_argument("--mode", choices=["forward", "predict", "backward", "int8"], default="forward",
                   help="forward, predict (+ log-softmax and argmax), backward (forward + autograd), or int8 "
                        "(the INT8 head: int8 weights per output channel, per-tensor int8 activations)")
    p.add_argument("--warmup", type=int, default=25, help="do_bench warmup (ms)")
    p.add_argument("--rep", type=int, default=100, help="do_bench repetition time (ms)")
    p.add_argument("--cudagraph", action="store_true",
                   help="time CUDA-graph replays (GPU time without host launch overhead; not --mode backward)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if not torch.cuda.is_available():
        print("kernel_bench: no CUDA GPU here; the Triton sine-head benchmark needs one "
              "(CPU numbers: pytest tests/benchmarks/test_bench_sine_head.py)", file=sys.stderr)
        return 2
    if not sh.triton_available():
        print("kernel_bench: the `triton` package is not installed", file=sys.stderr)
        return 2
    if sh.interpreter_enabled():
        print("kernel_bench: unset TRITON_INTERPRET (the interpreter is not a benchmark)", file=sys.stderr)
        return 2
    if ns.cudagraph and ns.mode == "backward":
        print("kernel_bench: --cudagraph times forward and predict only (autograd is not captured)", file=sys.stderr)
        return 2
    if any(v < 1 for v in [*ns.n, *ns.batch, ns.k]):
        print("kernel_bench: --n, --batch and --k must be >= 1", file=sys.stderr)
        return 2
    rows = run(KernelBenchConfig(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(KernelBenchConfig)}))
    if ns.json:
        write_json(ns.json, {"device": torch.cuda.get_device_name(0), "rows": rows})
        print(f"wrote {ns.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
