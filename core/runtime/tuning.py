"""The per-host choice of (backend, precision, threads) for each model file, by measurement.

``eegsine-verify --tune`` (:func:`eegsine.runtime.verify.tune_on_device`) times every combination this host has
at batch 1 and appends a *tune record* to the bundle's ``verifications.json``: per model, every combination
(:class:`Candidate`: its median time, how many calls, whether that model's golden-set gates passed on that
backend and precision here) and the chosen one. :class:`eegsine.runtime.Bundle` reads the newest tune record of
*this* host (ISA class and CPU model both equal, the model's files unchanged) and runs the choice by default;
an explicit ``backend=``, ``precision=`` or ``threads=`` narrows the choice to the combinations that have it.

:func:`choose` is the one rule: never a combination whose gates failed, however fast; of those within
``tie`` (relative) of the fastest, the simplest (ORT before OpenVINO, FP32 before INT8, fewer threads), since
a difference inside the measurement noise is no reason to leave the default. Torch-free.
"""
from __future__ import annotations

import dataclasses
import random
import statistics
import time
from typing import Any, Callable, Iterable

from eegsine.runtime.backends import BACKENDS
from eegsine.runtime.manifest import PRECISIONS

TUNE_KIND = "tune"
DEFAULT_TIE = 0.03  # relative: two medians within 3 % are one speed on these noisy shared machines


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One (backend, precision, threads) combination of one model file and what was measured of it."""

    backend: str
    precision: str
    threads: int
    p50_ms: float | None = None     # median batch-1 call; None where it was not timed
    passed: bool = False            # that model's gates passed on this backend and precision, on this host
    calls: int = 0                  # timed calls behind p50_ms

    def simplicity(self) -> tuple[int, int, int]:
        """Lower is simpler: the default backend, then FP32, then fewer threads."""
        b = BACKENDS.index(self.backend) if self.backend in BACKENDS else len(BACKENDS)
        p = PRECISIONS.index(self.precision) if self.precision in PRECISIONS else len(PRECISIONS)
        return (b, p, self.threads)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Candidate":
        return cls(str(d["backend"]), str(d["precision"]), int(d["threads"]),
                   None if d.get("p50_ms") is None else float(d["p50_ms"]), bool(d.get("passed")),
                   int(d.get("calls", 0)))


def choose(candidates: Iterable[Candidate], backend: str | None = None, precision: str | None = None,
           threads: int | None = None, tie: float = DEFAULT_TIE, backends: Iterable[str] | None = None,
           max_threads: int | None = None) -> Candidate | None:
    """The fastest passing candidate, ties to the simplest; ``backend``/``precision``/``threads`` keep only the
    candidates that have it, ``backends`` those installed here, ``max_threads`` those this process can run.
    None where none is left (the caller falls back to the runtime's default)."""
    have = None if backends is None else set(backends)
    ok = [c for c in candidates
          if c.passed and c.p50_ms is not None
          and (backend is None or c.backend == backend) and (precision is None or c.precision == precision)
          and (threads is None or c.threads == threads) and (have is None or c.backend in have)
          and (max_threads is None or c.threads <= max_threads)]
    if not ok:
        return None
    best = min(c.p50_ms for c in ok)  # type: ignore[type-var]
    near = [c for c in ok if c.p50_ms <= best * (1.0 + tie)]  # type: ignore[operator]
    return min(near, key=Candidate.simplicity)


def same_host(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two records' hosts are one host for tuning: the same ISA class and the same CPU model."""
    return a.get("isa_class") == b.get("isa_class") and a.get("cpu") == b.get("cpu")


def tuned_candidates(records: list[dict[str, Any]], host: dict[str, Any], model: str,
                     files: dict[str, str]) -> list[Candidate]:
    """The candidates of ``model`` in the newest tune record of ``host`` whose sha256 of that model's files are
    ``files`` (rel -> sha256); [] where there is none (a record of another host, or of changed files, is
    ignored)."""
    for r in reversed(records):
        if r.get("kind") != TUNE_KIND or not same_host(r.get("host", {}), host):
            continue
        entry = r.get("tuning", {}).get(model)
        if not isinstance(entry, dict):
            continue
        if any(r.get("files", {}).get(rel) != sha for rel, sha in files.items()):
            continue
        return [Candidate.from_dict(c) for c in entry.get("candidates", [])]
    return []


def time_interleaved(calls: dict[Any, Callable[[], Any]], rounds: int, warmup: int = 3, max_seconds: float = 30.0,
                     seed: int = 0) -> dict[Any, tuple[float, int]]:
    """Median milliseconds and call count of each callable, timed interleaved: every round calls each once in a
    fresh random order, so drift in the machine's load (other processes, frequency) falls on all alike.
    Stops after ``rounds`` rounds or ``max_seconds`` (at least 5 rounds)."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    keys = list(calls)
    times: dict[Any, list[float]] = {k: [] for k in keys}
    rng = random.Random(seed)
    start = time.perf_counter()
    for r in range(rounds):
        rng.shuffle(keys)
        for k in keys:
            t0 = time.perf_counter_ns()
            calls[k]()
            times[k].append((time.perf_counter_ns() - t0) / 1e6)
        if r >= 4 and time.perf_counter() - start > max_seconds:
            break
    return {k: (statistics.median(v), len(v)) for k, v in times.items()}
