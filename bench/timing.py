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
