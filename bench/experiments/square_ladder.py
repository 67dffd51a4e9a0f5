"""The Square budget ladder: more queries and fresh seeds on the images every attack left standing, until a run
finds nothing new.

``python -m eegsine.bench.experiments.square_ladder --out EVAL_DIR --model standard=DIR --model sine=DIR
--eps 0.3 --rungs 10000:1,20000:2,50000:3`` runs on a :mod:`~eegsine.bench.experiments.paired_eval` folder whose
worst case incl. AutoAttack at ``--eps`` is complete. Each rung ``QUERIES:SEED`` is one Square run (margin loss,
AutoAttack's initial square size) with that many queries and its own seed, on the images of the first ``n_aa``
that are still robust after every committed attack and every earlier rung (rungs in order of queries, then seed).
A rung that breaks no new image, on either head, is the evaluation's convergence evidence for the gradient-free
part; one that does break images says the budget is not yet enough.

Each (rung, chunk of 100 images) result is cached beside the paired evaluation's chunks (atomic ``.npz``, the same
settings key and weights hash), so a killed ladder resumes; ``paired_eval report`` then folds the complete rungs
into the worst case incl. AutoAttack at ``--eps`` and every larger eps (an image broken in the smaller ball is
broken in the larger one) and reports the ladder per head (:mod:`eegsine.bench.robustness.square_ladder`).
eps is L-inf in [0, 1] pixel units.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from eegsine.attacks.registry import AttackParams
from eegsine.bench.experiments.paired_eval import (
    ChunkCache, Settings, _clean_masks, _fmt, _models_arg, collect, load_models, load_subset, nest_collected,
    plan_for)
from eegsine.bench.robustness.evaluate import run_attack
from eegsine.bench.robustness.shard import chunk_seed
from eegsine.bench.robustness.square_ladder import Rung, base_survivors, parse_rungs, walk
from eegsine.config import threads_type
from eegsine.errors import UserError


def run(out_dir: str | Path, specs: dict[str, str], settings: Settings, eps: float, rungs: list[Rung],
        max_seconds: float | None = None, log=print, jobs: list | None = None) -> dict:
    """Attack every missing (rung, chunk) of the ladder, head by head, rung by rung; -> {"computed", "stopped"}.
    ``jobs``: the paired evaluation's plan (default :func:`~eegsine.bench.experiments.paired_eval.plan_for`)."""
    import torch

    models = load_models(specs)
    x, y, _, ds = load_subset(settings)
    clean, _ = _clean_masks(models, x, y, ds)
    res = collect(out_dir, models, settings, jobs or plan_for(settings.n_eval, settings.n_aa))
    bases = {lb: base_survivors(res[lb], nest_collected(res[lb]), clean[lb], eps, settings.n_aa, lb)
             for lb in models}
    t0, computed = time.perf_counter(), 0
    for rung in rungs:
        for lb, (model, sha, _) in models.items():
            cache = ChunkCache(out_dir, settings, lb, sha)
            done = {Rung(r["queries"], r["seed"]): r for r in walk(cache.dir, bases[lb], eps, settings.chunk)}
            if rung not in done and any(r > rung for r in done):
                raise UserError(f"{lb}: rung {rung.queries}:{rung.seed} sorts below rungs already run: a ladder only "
                                "grows upwards (start a new evaluation folder to change it)")
            earlier = [r for r in done if r < rung]
            cur = done[max(earlier)]["mask"] if earlier else bases[lb]
            for lo in range(0, settings.n_aa, settings.chunk):
                path = rung.path(cache.dir, eps, lo)
                if path.exists():
                    continue
                if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                    return {"computed": computed, "stopped": True}
                hi = min(lo + settings.chunk, settings.n_aa)
                alive = torch.from_numpy(cur[lo:hi])
                seed = chunk_seed(rung.seed, rung.name, eps, lo) & 0x7FFFFFFF
                torch.manual_seed(seed)
                params = AttackParams(square_queries=rung.queries, seed=seed)
                r = run_attack("square", model, x[lo:hi], y[lo:hi], alive, eps, model.cfg.n_classes, params,
                               bs=settings.chunk)
                idx = np.flatnonzero(cur[lo:hi])
                rob = r["robust"].numpy()[idx]
                cache.put(rung.name, eps, lo, {"lo": np.int64(lo), "idx": (idx + lo).astype(np.int64),
                                               "robust": rob.astype(bool), "seconds": np.float64(r["seconds"])})
                computed += 1
                log(f"{time.strftime('%H:%M:%S')} [{lb}] Square {rung.queries} queries seed {rung.seed} eps "
                    f"{_fmt(eps)} images {lo}-{hi}: {int((~rob).sum())} of {len(idx)} survivors broken "
                    f"({r['seconds']:.1f} s)")
                cur = cur.copy()
                cur[idx[~rob] + lo] = False
    return {"computed": computed, "stopped": False}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eegsine.bench.experiments.square_ladder",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the paired evaluation's folder (its chunk cache)")
    p.add_argument("--model", action="append", required=True, help="LABEL=MODEL_DIR (standard=..., sine=...)")
    p.add_argument("--eps", type=float, default=0.3, help="L-inf radius in [0, 1] pixel units (default 0.3)")
    p.add_argument("--rungs", default="10000:1,20000:2,50000:3",
                   help="QUERIES:SEED,... Square runs in ladder order (default 10000:1,20000:2,50000:3)")
    p.add_argument("--n-eval", type=int, default=1000, help="as the paired evaluation was run")
    p.add_argument("--n-aa", type=int, default=500, help="as the paired evaluation was run: the ladder's images")
    p.add_argument("--chunk", type=int, default=100, help="as the paired evaluation was run")
    p.add_argument("--max-seconds", type=float, default=None, help="stop starting new chunks after this long")
    p.add_argument("--threads", type=threads_type, default=1, help="torch threads")
    ns = p.parse_args(argv)
    import torch

    torch.set_num_threads(ns.threads)
    try:
        settings = Settings(n_eval=ns.n_eval, n_aa=ns.n_aa, chunk=ns.chunk)
        st = run(ns.out, _models_arg(ns.model), settings, ns.eps, parse_rungs(ns.rungs), ns.max_seconds,
                 log=lambda m: print(m, flush=True))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"computed {st['computed']} chunks; {'stopped at --max-seconds' if st['stopped'] else 'ladder done'}; "
          "`paired_eval report` folds it into the worst case")
    return 0


if __name__ == "__main__":
    sys.exit(main())
