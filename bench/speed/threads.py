"""Threads and OpenMP waiting, measured: what `eegsine pipeline` runs its torch stages with, and why.

``python -m eegsine.bench.speed.threads --out docs/results/threads`` times one training step of a small
conv net (the size of the demo's models: 4 -> 32 -> 64 -> 32 -> 4 channels, 16 x 16, batch 16, AdamW) in
fresh processes, for each thread count and OpenMP wait policy (libgomp's default spin-then-sleep, and
``OMP_WAIT_POLICY=PASSIVE``), on an idle machine and beside one other busy process (a one-thread torch
matmul loop: what a user's other job, or a second pipeline stage, is). Each cell is the median step time
over ``--seconds`` of steps after a warm-up; the host's ISA and load average are recorded. Run it with
nothing else busy: the "idle" rows are only idle if the machine is.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from eegsine.bench.report.doc import md_table
from eegsine.config import usable_cpus
from eegsine.runtime.isa import this_host
from eegsine.io import atomic_write_text, write_json

_STEP = r"""
import statistics, sys, time
import torch, torch.nn as nn
torch.manual_seed(0)
torch.set_num_threads(int(sys.argv[1]))
m = nn.Sequential(nn.Conv2d(4, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 64, 3, padding=1), nn.SiLU(),
                  nn.Conv2d(64, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 4, 3, padding=1))
opt = torch.optim.AdamW(m.parameters(), 1e-3)
x = torch.randn(16, 4, 16, 16)
def step():
    loss = (m(x) - x).pow(2).mean(); opt.zero_grad(); loss.backward(); opt.step()
for _ in range(10): step()
times, t_end = [], time.perf_counter() + float(sys.argv[2])
while time.perf_counter() < t_end:
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print(statistics.median(times) * 1e3, len(times))
"""
_BUSY = r"""
import torch
torch.set_num_threads(1)
a = torch.randn(256, 256)
while True:
    a = torch.tanh(a @ a)
"""


def _cell(threads: int, policy: str, seconds: float) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["OMP_NUM_THREADS"] = str(threads)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", _STEP, str(threads), str(seconds)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1])


def measure(threads: list[int], seconds: float) -> list[dict]:
    rows = []
    for load in ("idle", "beside one busy process"):
        busy = None
        if load != "idle":
            env = dict(os.environ, OMP_NUM_THREADS="1")
            busy = subprocess.Popen([sys.executable, "-c", _BUSY], env=env)
            time.sleep(2.0)
        try:
            for policy in ("default", "PASSIVE"):
                for n in threads:
                    ms, steps = _cell(n, policy, seconds)
                    rows.append({"load": load, "threads": n, "wait_policy": policy, "ms_per_step": ms,
                                 "steps": steps})
                    print(f"{load:>24} threads={n} OMP_WAIT_POLICY={policy:<8} {ms:8.2f} ms/step", flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    return rows


def render(rec: dict) -> str:
    rows = rec["rows"]
    idle = {(r["threads"], r["wait_policy"]): r["ms_per_step"] for r in rows if r["load"] == "idle"}
    body = [[r["load"], str(r["threads"]), r["wait_policy"], f"{r['ms_per_step']:.2f}", str(r["steps"]),
             f"{r['ms_per_step'] / idle[(r['threads'], r['wait_policy'])]:.2f}x"] for r in rows]
    host = rec["host"]
    return (f"# Threads and OpenMP waiting on this host\n\nHost: {host['cpu']} ({host['isa']}), "
            f"{host['cpus']} usable CPUs, load average {host['load_before']:.2f} before; torch {host['torch']}. "
            f"One training step of a small conv net (batch 16), median over {rec['seconds']:.0f} s per cell, "
            "each cell a fresh process.\n\n"
            + "\n".join(md_table(["load", "threads", "OMP_WAIT_POLICY", "ms per step", "steps", "vs idle"], body))
            + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/results/threads", help="folder for threads.json and threads.md")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to time")
    p.add_argument("--seconds", type=float, default=6.0, help="timed seconds per cell")
    ns = p.parse_args(argv)
    import torch

    facts = this_host()
    host = {"cpu": facts["cpu"], "isa": f"{facts['isa_class']} ({', '.join(facts['int8_features'])})",
            "cpus": usable_cpus(), "load_before": os.getloadavg()[0], "torch": torch.__version__}
    rec = {"host": host, "seconds": ns.seconds, "rows": measure(ns.threads, ns.seconds)}
    out = Path(ns.out)
    write_json(out / "threads.json", rec)
    atomic_write_text(out / "threads.md", render(rec))
    print(json.dumps(host))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
