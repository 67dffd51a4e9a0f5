"""Latency / throughput / memory measurement shared by every benchmark.

Hand-written on purpose: pytest-benchmark drives the microbenchmarks, but the backend table
needs one loop that times torch, ONNX Runtime and TensorRT callables identically (same
warm-up, same clock, same percentiles) and records peak memory per case. These machines are
noisy: ratios against torch eager measured in the same run are the figures to compare.
"""
from __future__ import annotations

import dataclasses
import gc
import os
import resource
import statistics
import time
from typing import Any, Callable

import numpy as np


@dataclasses.dataclass
class Timing:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    n: int
    warmup: int

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def time_callable(fn: Callable[[], Any], warmup: int = 10, iters: int = 100, max_seconds: float = 20.0) -> Timing:
    """Time ``fn()`` ``iters`` times after ``warmup`` calls (stops early after ``max_seconds``)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(iters):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
        if time.perf_counter() - start > max_seconds and len(times) >= 5:
            break
    arr = np.asarray(times)
    return Timing(float(np.percentile(arr, 50)), float(np.percentile(arr, 90)), float(np.percentile(arr, 99)),
                  float(statistics.fmean(times)), len(times), warmup)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB). Linux reports KiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def measure_memory(fn: Callable[[], Any]) -> float:
    """Resident-memory growth (MiB) across one call of ``fn`` (CPU; a lower bound on its working set)."""
    gc.collect()
    before = current_rss_mb()
    fn()
    return max(0.0, current_rss_mb() - before)


def set_threads(n: int) -> None:
    """Fix intra-op threads for torch (ONNX Runtime sessions take it in their options)."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        import torch

        torch.set_num_threads(n)
        # inter-op pool size can only be set once per process
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
    except ImportError:
        pass


def diffusion_speed(model, device, steps: int | None = None, reps: int = 3) -> dict[str, Any]:
    """Sampling speed of an EEGDiffusion: images/s at batch 1 and 16 (full sampler loop with CFG + VAE decode),
    median of ``reps`` after a warm-up, and peak memory. ``eegsine train diffusion`` records it as ``speed``."""
    import torch
    import torch.nn.functional as F

    out: dict[str, Any] = {"sampler": model.cfg.sampler, "steps": steps or model.cfg.sample_steps,
                           "guidance": model.cfg.guidance, "threads": torch.get_num_threads(), "device": str(device)}
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for b in (1, 16):
            g = torch.Generator().manual_seed(0)
            emb = F.normalize(torch.randn(b, model.cfg.emb_dim, generator=g), dim=1).to(device)
            model.sample(emb, steps=steps)  # warm-up
            times = []
            for _ in range(reps):
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                model.sample(emb, steps=steps)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            out[f"batch{b}_seconds"] = float(np.median(times))
            out[f"batch{b}_images_per_s"] = float(b / np.median(times))
    if cuda:
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["peak_memory_kind"] = "torch.cuda.max_memory_allocated"
    else:
        out["peak_memory_mb"] = peak_rss_mb()
        out["peak_memory_kind"] = "process peak RSS (ru_maxrss, whole training process)"
    return out
