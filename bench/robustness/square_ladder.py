"""The Square budget ladder's records: which rungs ran, what each broke, folded into the per-example worst case.

A ladder (run by :mod:`eegsine.bench.experiments.square_ladder`) is a sequence of Square runs, each ``QUERIES:SEED``
(margin loss, AutoAttack's initial square size), on the images still robust after every attack of a paired
evaluation at one eps and after every earlier rung; rungs go in order of queries, then seed. Each (rung, chunk)
result is one ``.npz`` beside the evaluation's own chunks: ``idx`` (subset positions attacked: the survivors) and
``robust`` (for each of them). Torch-free: the paired evaluation's report folds complete rungs in with
:func:`fold`, and a rung that breaks no new image, on either head, is the convergence evidence of the
gradient-free part.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from eegsine.bench.report.doc import md_table
from eegsine.errors import UserError

PREFIX = "square-ladder"
_FILE = re.compile(rf"^{PREFIX}-q(\d+)-s(\d+)__eps([0-9.]+)__(\d+)\.npz$")


def _fmt(e: float) -> str:
    return f"{e:g}"


@dataclasses.dataclass(frozen=True, order=True)
class Rung:
    queries: int
    seed: int

    @property
    def name(self) -> str:
        return f"{PREFIX}-q{self.queries}-s{self.seed}"

    def path(self, cache_dir: Path, eps: float, lo: int) -> Path:
        """The chunk file (the paired evaluation's naming: ``<attack>__eps<e>__<lo>.npz``)."""
        return Path(cache_dir) / f"{self.name}__eps{_fmt(eps)}__{lo:04d}.npz"


def parse_rungs(text: str) -> list[Rung]:
    """``"10000:1,20000:2"`` -> rungs in ladder order (queries, then seed); a repeated rung is refused."""
    rungs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        q, sep, s = part.partition(":")
        if not sep or not q.isdigit() or not s.isdigit() or int(q) < 1:
            raise UserError(f"--rungs {part!r}: expected QUERIES:SEED (two non-negative integers, queries > 0)")
        rungs.append(Rung(int(q), int(s)))
    if not rungs or len(set(rungs)) != len(rungs):
        raise UserError(f"--rungs {text!r}: give at least one rung and none twice")
    return sorted(rungs)


def base_survivors(res: dict, nres: dict, clean: np.ndarray, eps: float, n_aa: int, label: str) -> np.ndarray:
    """The worst case incl. AutoAttack at ``eps`` of one head over the first ``n_aa`` images, as a mask; refused
    (one line) while an attack of that worst case has not reached ``n_aa`` images."""
    short = sorted(f"{a}@{_fmt(e)} {r['n_done']}/{n_aa}" for (a, e), r in res.items()
                   if e <= eps and r["n_done"] < min(n_aa, r["n_planned"]))
    if not any(e == eps for (_, e) in res) or short:
        raise UserError(f"{label}: the worst case incl. AutoAttack at eps {_fmt(eps)} is not complete on the first "
                        f"{n_aa} images ({', '.join(short) or 'no attack run at that eps'}): finish "
                        "`paired_eval run` first")
    w = clean[:n_aa].copy()
    for (_, e), r in nres.items():
        if e <= eps:  # nested across eps: broken at a smaller radius is broken here
            w &= r["robust"][:n_aa]
    return w


def ladder_files(cache_dir: Path) -> dict[tuple[Rung, float], dict[int, Path]]:
    """Every cached rung chunk of one head: {(rung, eps): {lo: path}}."""
    out: dict = {}
    cache_dir = Path(cache_dir)
    if cache_dir.is_dir():
        for p in cache_dir.iterdir():
            m = _FILE.match(p.name)
            if m:
                out.setdefault((Rung(int(m[1]), int(m[2])), float(m[3])), {})[int(m[4])] = p
    return out


def walk(cache_dir: Path, base: np.ndarray, eps: float, chunk: int) -> list[dict]:
    """The complete rungs at ``eps`` in ladder order, each with the images it attacked and broke anew and the
    robust mask after it; stops at the first rung with a chunk missing (later rungs depend on it)."""
    files = ladder_files(cache_dir)
    have = sorted(r for (r, e) in files if e == eps)
    cur, out = base.copy(), []
    for rung in have:
        los = range(0, len(base), chunk)
        if not all(lo in files[(rung, eps)] for lo in los):
            break
        attacked = broken = 0
        secs = 0.0
        for lo in los:
            with np.load(files[(rung, eps)][lo], allow_pickle=False) as z:
                idx, rob = z["idx"].astype(np.int64), z["robust"].astype(bool)
                secs += float(z["seconds"])
            if not np.array_equal(np.flatnonzero(cur[lo:lo + chunk]) + lo, idx):
                raise UserError(f"{cache_dir}: {rung.name} chunk {lo} attacked other images than the ladder's "
                                "survivors (a rung was added below one already run?): remove that rung's files")
            attacked += len(idx)
            broken += int((~rob).sum())
            cur[idx[~rob]] = False
        out.append({"queries": rung.queries, "seed": rung.seed, "attacked": attacked, "newly_broken": broken,
                    "robust_after": int(cur.sum()), "seconds": round(secs, 1), "mask": cur.copy()})
    return out


def fold(cache_dirs: dict[str, Path], res: dict, nres: dict, clean: dict, n_aa: int, chunk: int
         ) -> dict[str, dict[float, dict]]:
    """{label: {eps: {"mask": robust after the last complete rung (n_aa,), "robust_before", "rungs": [...]}}} of
    the rungs cached in each head's ``cache_dirs[label]``. ``res`` / ``nres`` / ``clean``: the paired evaluation's
    raw and eps-nested per-attack results and clean masks, per head (the rungs' base is recomputed from them, so a
    changed base is caught by :func:`walk`)."""
    out: dict = {}
    for lb, d in cache_dirs.items():
        for eps in sorted({e for (_, e) in ladder_files(d)}):
            base = base_survivors(res[lb], nres[lb], clean[lb], eps, n_aa, lb)
            rungs = walk(d, base, eps, chunk)
            if rungs:
                out.setdefault(lb, {})[eps] = {"mask": rungs[-1]["mask"], "robust_before": int(base.sum()),
                                               "rungs": [{k: v for k, v in r.items() if k != "mask"}
                                                         for r in rungs]}
    return out


def render(ladders: dict, names: dict[str, str]) -> list[str]:
    """The ladder section of robustness.md."""
    if not ladders:
        return []
    out = ["", "### Square budget ladder (gradient-free convergence)", "",
           "More queries and fresh seeds on the images still robust after every attack (AutoAttack included) and "
           "every earlier rung, on the first n_aa images; a rung that breaks nothing new is the convergence evidence. "
           "The worst case incl. AutoAttack above includes these rungs at their eps and every larger one.", ""]
    rows = []
    for lb, per in ladders.items():
        for eps, d in per.items():
            rows.append([names.get(lb, lb), _fmt(float(eps)), "(committed attacks)", "", "", str(d["robust_before"]),
                         ""])
            for r in d["rungs"]:
                rows.append([names.get(lb, lb), _fmt(float(eps)), f"Square {r['queries']} queries",
                             str(r["seed"]), str(r["attacked"]), str(r["robust_after"]),
                             f"{r['newly_broken']} ({r['seconds']} s)"])
    return out + md_table(["head", "eps", "rung", "seed", "images attacked", "robust after", "newly broken (s)"],
                          rows)
