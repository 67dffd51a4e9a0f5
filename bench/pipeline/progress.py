"""What a person watching ``eegsine pipeline`` reads: stage ETAs, a heartbeat, a report to open early.

Expected seconds per stage come from, in order: this run folder's previous record of the stage
(``pipeline.json`` of an earlier invocation, or ``.stages/<name>.json``), else the preset's idle
measurement on this project's 2-core machine kind (:data:`EXPECTED`). Once stages have finished,
the rest is scaled by how much slower or faster this machine ran them than expected (a loaded
laptop sees a later, truer ETA).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

from eegsine.io import read_json

# Stage wall seconds of the tiny preset, two stages at a time with 1 thread each, from one uninterrupted idle
# `eegsine pipeline --preset tiny` on 2026-12-07 (2-core Intel Xeon, avx2 avx512_vnni amx_int8; data already
# fetched, docs/results/demo-times/x86-amx/): an ETA hint only, never reported as a result; a run folder's own
# previous record replaces it.
EXPECTED: dict[str, dict[str, float]] = {
    "tiny": {"data": 5, "classifier": 202, "robustness": 76, "features": 183, "encoder": 28, "diffusion": 441,
             "generation": 37, "export": 27, "verify": 29, "stream": 16, "bench": 32, "report": 2},
}
HEARTBEAT_S = 30.0
MIN_SCALING_S = 20.0  # only stages expected to take at least this long rescale the estimates of the rest


def expected_seconds(root: Path, preset: str, names: list[str]) -> dict[str, float]:
    """Stage -> expected seconds (stages with no estimate are absent)."""
    out = {k: float(v) for k, v in EXPECTED.get(preset, {}).items() if k in names}
    prev = root / "pipeline.json"
    try:
        stages = read_json(prev).get("stages", []) if prev.is_file() else []
    except (OSError, ValueError):
        stages = []
    for s in stages:  # this folder's own earlier run knows this machine best
        secs = s.get("seconds")
        if s.get("name") in names and s.get("status") == "done" and isinstance(secs, (int, float)) and secs > 0:
            out[s["name"]] = float(secs)
    for name in names:
        rec = root / ".stages" / f"{name}.json"
        try:
            secs = read_json(rec).get("seconds") if rec.is_file() else None
        except (OSError, ValueError):
            secs = None
        if isinstance(secs, (int, float)) and secs > 0:
            out[name] = float(secs)
    return out


class Eta:
    """Remaining time of a pipeline from per-stage estimates, rescaled by the stages already measured."""

    def __init__(self, expected: dict[str, float], names: list[str]):
        self.expected, self.names = expected, names
        self.measured: dict[str, float] = {}

    def finished(self, name: str, seconds: float) -> None:
        # a stage expected to take seconds says nothing about this machine's speed (the data stage: 0.0 s when
        # cached, which once scaled a 67 s classifier estimate down to 17 s)
        if self.expected.get(name, 0.0) >= MIN_SCALING_S:
            self.measured[name] = seconds

    def scale(self) -> float:
        """Actual / expected over the stages measured so far (1 before any), kept within [0.25, 50]."""
        exp = sum(self.expected[n] for n in self.measured)
        return min(50.0, max(0.25, sum(self.measured.values()) / exp)) if exp > 0 else 1.0

    def stage(self, name: str) -> float | None:
        e = self.expected.get(name)
        return None if e is None else e * self.scale()

    def left(self, todo: list[str]) -> tuple[float, int]:
        """Seconds left for ``todo`` (the running stage first), and how many of them have no estimate."""
        known = [self.stage(n) for n in todo]
        return sum(k for k in known if k is not None), sum(k is None for k in known)


def duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def eta_text(eta: Eta, name: str, todo: list[str], left: float | None = None) -> str:
    """``expected ~35 s; pipeline ~9 min left`` (or what is unknown). ``left``: the pipeline's remaining seconds
    when stages run side by side (:func:`eegsine.bench.pipeline.lanes.makespan`), else the sum of ``todo``'s."""
    st = eta.stage(name)
    total, unknown = eta.left(todo)
    left = total if left is None else left
    parts = [f"expected ~{duration(st)}" if st is not None else "no estimate for this stage"]
    if left > 0:
        parts.append(f"pipeline ~{duration(left)} left" + (f" + {unknown} stage(s) without an estimate"
                                                            if unknown else ""))
    return "; ".join(parts)


class Heartbeat:
    """While a stage runs, a log line every ``every`` seconds: which stage, how long so far, of how long."""

    def __init__(self, say: Callable[[str], Any], name: str, expected: float | None, every: float = HEARTBEAT_S):
        self.say, self.name, self.expected, self.every = say, name, expected, every
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{name}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            el = time.perf_counter() - self._t0
            of = f" of ~{duration(self.expected)} expected" if self.expected else ""
            self.say(f"{self.name}: still running, {duration(el)}{of}")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
