"""The sine head across training seeds: every seed's paired result, then the between-seed answer.

``python -m eegsine.bench.experiments.seeds --seed 0=DIR/eval --seed 1=DIR/seed1/eval ... --out DIR/seeds``
reads each seed's ``robustness.json`` (written by :mod:`eegsine.bench.experiments.paired_eval`: both heads
on the same images) and, per worst-case row (``worst+aa`` at each eps: every attack incl. AutoAttack), writes
``seeds.json``, ``seeds.md`` and ``seeds.png``:

* every seed's accuracies, its paired difference sine - standard with Newcombe's 95 % interval and McNemar's
  exact p (as the seed's own table has them);
* between seeds, two answers over the k seeds whose row is complete:
  - the mean of the per-seed differences with a t interval over seeds (k - 1 degrees of freedom): what a
    reader who retrains the heads with a new seed can expect, ignoring how precisely each seed was measured;
  - a random-effects meta-analysis (DerSimonian & Laird 1986) that keeps the per-image pairing: each seed's
    difference with its paired variance ``(n10 + n01 - (n10 - n01)^2 / n) / n^2`` (the variance of a mean of
    per-image differences), the between-seed variance tau^2 estimated from Cochran's Q, the pooled difference
    with its 95 % interval and two-sided p (normal), and I^2 (the share of variation that is between seeds).
A seed whose row has not reached its planned n is listed as running and left out of both answers. Where a
seed's evaluation ran the Square budget ladder (:mod:`eegsine.bench.experiments.square_ladder`), its worst case
already includes the ladder's complete rungs, and a second table lists per seed and head what each rung broke anew.
Hand-written: a DerSimonian-Laird estimate is ten lines; no package in the stack offers it.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

from scipy import stats

from eegsine.bench.report.doc import md_table
from eegsine.errors import UserError
from eegsine.io import atomic_write_text, read_json, write_json
from eegsine.runs.plots import plt, save_figure

KEY = "worst+aa"  # the per-example worst case over every attack, AutoAttack included


@dataclasses.dataclass
class SeedRow:
    seed: str
    eps: float
    n: int
    n_planned: int
    acc_standard: float
    acc_sine: float
    n10: int   # sine right, standard wrong
    n01: int   # sine wrong, standard right
    ci: tuple[float, float]
    p: float

    @property
    def complete(self) -> bool:
        return self.n >= self.n_planned

    @property
    def diff(self) -> float:
        return (self.n10 - self.n01) / self.n

    @property
    def var(self) -> float:
        """Variance of the mean per-image difference (paired: only discordant images differ)."""
        return max((self.n10 + self.n01 - (self.n10 - self.n01) ** 2 / self.n) / self.n ** 2, 1e-12)


def read_seed(seed: str, folder: str | Path) -> list[SeedRow]:
    """The ``worst+aa`` rows of one seed's robustness.json (sine vs standard, paired)."""
    path = Path(folder) / "robustness.json"
    if not path.is_file():
        raise UserError(f"seed {seed}: {path} not found (run paired_eval report first)")
    data = read_json(path)
    rows = []
    for r in data.get("worst_case", []):
        p = r.get("paired") or {}
        if r.get("key") != KEY or not p:
            continue
        if (p.get("a"), p.get("b")) != ("sine", "standard"):
            raise UserError(f"{path}: the paired rows compare {p.get('a')} with {p.get('b')}, not sine with standard")
        rows.append(SeedRow(seed, float(r["eps"]), int(p["n"]), int(r.get("n_planned", p["n"])), float(p["acc_b"]),
                            float(p["acc_a"]), int(p["n10"]), int(p["n01"]), tuple(p["ci_newcombe"]),
                            float(p["p_mcnemar_exact"])))
    return rows


def read_ladder(seed: str, folder: str | Path) -> list[dict[str, Any]]:
    """The Square budget ladder of one seed's robustness.json: a row per (head, eps), [] where none ran."""
    data = read_json(Path(folder) / "robustness.json")
    return [{"seed": seed, "head": head, "eps": float(eps), "robust_before": d["robust_before"], "rungs": d["rungs"]}
            for head, per in (data.get("square_ladder") or {}).items() for eps, d in per.items()]


def render_ladders(ladders: list[dict[str, Any]]) -> list[str]:
    """The ladder table of seeds.md: per seed and head, the images each rung broke anew (none: converged)."""
    if not ladders:
        return []
    rows = [[d["seed"], {"standard": "Standard", "sine": "Sine"}.get(d["head"], d["head"]), f"{d['eps']:g}",
             str(d["robust_before"]), ", ".join(f"{r['queries']:,} q: {r['newly_broken']}" for r in d["rungs"]),
             str(d["rungs"][-1]["robust_after"]),
             "yes" if d["rungs"][-1]["newly_broken"] == 0 else "no (the last rung still broke images)"]
            for d in sorted(ladders, key=lambda d: (d["eps"], d["seed"], d["head"] != "standard"))]
    return [""] + md_table(["training seed", "head", "eps", "robust after every attack", "broken anew per rung",
                            "robust after the ladder", "last rung broke none"], rows, align="lllrlrl",
                           caption="Square budget ladder (the gradient-free part's convergence): Square with more "
                                   "queries and a fresh seed per rung, on the first 500 images still robust after "
                                   "every attack incl. AutoAttack and every earlier rung. The worst case above "
                                   "includes these rungs.")


def mean_over_seeds(diffs: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean per-seed difference with a t interval over seeds (needs two seeds)."""
    k = len(diffs)
    mean = sum(diffs) / k
    if k < 2:
        return {"k": k, "mean": mean, "ci": None, "sd": None}
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (k - 1))
    half = stats.t.ppf(0.5 + level / 2, k - 1) * sd / math.sqrt(k)
    return {"k": k, "mean": mean, "sd": sd, "ci": [mean - half, mean + half]}


def random_effects(diffs: list[float], variances: list[float], level: float = 0.95) -> dict[str, Any]:
    """DerSimonian-Laird pooled difference: estimate, interval, p, tau^2, Q and I^2."""
    k = len(diffs)
    w = [1 / v for v in variances]
    fixed = sum(wi * d for wi, d in zip(w, diffs)) / sum(w)
    q = sum(wi * (d - fixed) ** 2 for wi, d in zip(w, diffs))
    c = sum(w) - sum(wi ** 2 for wi in w) / sum(w)
    tau2 = max(0.0, (q - (k - 1)) / c) if k > 1 and c > 0 else 0.0
    ws = [1 / (v + tau2) for v in variances]
    pooled = sum(wi * d for wi, d in zip(ws, diffs)) / sum(ws)
    se = math.sqrt(1 / sum(ws))
    z = stats.norm.ppf(0.5 + level / 2)
    return {"k": k, "pooled": pooled, "se": se, "ci": [pooled - z * se, pooled + z * se],
            "p": float(2 * stats.norm.sf(abs(pooled / se))), "tau2": tau2, "q": q,
            "i2": max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0}


def between_seeds(rows: list[SeedRow]) -> dict[str, dict[str, Any]]:
    """Per eps: the complete seeds' differences, their mean over seeds and the random-effects answer."""
    out: dict[str, dict[str, Any]] = {}
    for eps in sorted({r.eps for r in rows}):
        done = [r for r in rows if r.eps == eps and r.complete]
        if not done:
            continue
        diffs = [r.diff for r in done]
        out[f"{eps:g}"] = {"seeds": [r.seed for r in done], "mean_over_seeds": mean_over_seeds(diffs),
                           "random_effects": random_effects(diffs, [r.var for r in done])}
    return out


def _pts(v: float) -> str:
    return f"{100 * v:+.1f}"


def render(rows: list[SeedRow], summary: dict[str, dict[str, Any]], ladders: list[dict[str, Any]] | None = None
           ) -> str:
    """seeds.md: every seed's row, then the two between-seed answers per eps (and the Square ladders)."""
    per = [[r.seed, f"{r.eps:g}", f"{r.n}" + ("" if r.complete else f" of {r.n_planned} (running)"),
            f"{100 * r.acc_standard:.1f}", f"{100 * r.acc_sine:.1f}",
            f"{_pts(r.diff)} [{_pts(r.ci[0])}, {_pts(r.ci[1])}]", f"{r.p:.2g}"]
           for r in sorted(rows, key=lambda r: (r.eps, r.seed))]
    lines = md_table(["training seed", "eps", "n images", "Standard %", "Sine %", "sine − standard, points [95% CI]",
                      "McNemar p"], per, align="llrrrrr",
                     caption=f"Per-example worst case over every attack incl. AutoAttack (`{KEY}`), MNIST test "
                             "images, both heads on the same images, eps L-inf in [0, 1] pixel units. One row per "
                             "training seed (every seed evaluated, none left out).")
    agg = []
    for eps, s in summary.items():
        m, re_ = s["mean_over_seeds"], s["random_effects"]
        ci = f"[{_pts(m['ci'][0])}, {_pts(m['ci'][1])}]" if m["ci"] else "(one seed: no interval)"
        agg.append([eps, str(m["k"]), f"{_pts(m['mean'])} {ci}",
                    f"{_pts(re_['pooled'])} [{_pts(re_['ci'][0])}, {_pts(re_['ci'][1])}]", f"{re_['p']:.2g}",
                    f"{100 * re_['i2']:.0f} %"])
    lines += [""] + md_table(["eps", "seeds", "mean over seeds, points [95% t CI]",
                              "random effects, points [95% CI]", "p", "I²"], agg, align="lrrrrr",
                             caption="Between seeds (complete seeds only): the mean of the per-seed differences "
                                     "with a t interval over seeds, and a DerSimonian-Laird random-effects estimate "
                                     "that weights each seed by its paired per-image variance plus the "
                                     "between-seed variance (I²: the share of the variation that is between seeds).")
    lines += render_ladders(ladders or [])
    return "\n".join(lines) + "\n"


def plot(rows: list[SeedRow], summary: dict[str, dict[str, Any]], path: Path, eps: str = "0.3") -> Path | None:
    """Per-seed differences at ``eps`` with their Newcombe intervals, and the random-effects estimate."""
    mine = sorted((r for r in rows if f"{r.eps:g}" == eps), key=lambda r: r.seed)
    if not mine:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 0.45 * len(mine) + 1.6))
    for i, r in enumerate(mine):
        ax.errorbar(100 * r.diff, i, xerr=[[100 * max(0.0, r.diff - r.ci[0])], [100 * max(0.0, r.ci[1] - r.diff)]],
                    fmt="o",
                    color="C0" if r.complete else "0.6", capsize=3)
    labels = [f"seed {r.seed}" + ("" if r.complete else " (running)") for r in mine]
    s = summary.get(eps)
    if s:
        re_ = s["random_effects"]
        ax.errorbar(100 * re_["pooled"], len(mine), xerr=[[100 * (re_["pooled"] - re_["ci"][0])],
                                                          [100 * (re_["ci"][1] - re_["pooled"])]],
                    fmt="D", color="C3", capsize=3)
        labels.append(f"random effects ({s['random_effects']['k']} seeds)")
    ax.axvline(0, color="0.3", lw=0.8, ls=":")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel(f"sine − standard, points (worst case incl. AutoAttack, eps {eps})")
    ax.set_title(f"MNIST, n = {mine[0].n} images per seed, 95 % intervals", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eegsine.bench.experiments.seeds", description=__doc__.split("\n")[0])
    p.add_argument("--seed", action="append", required=True, metavar="SEED=EVAL_DIR",
                   help="a training seed and its paired_eval folder (holding robustness.json); repeat per seed")
    p.add_argument("--out", required=True, help="folder for seeds.json, seeds.md and seeds.png")
    ns = p.parse_args(argv)
    try:
        rows: list[SeedRow] = []
        ladders: list[dict[str, Any]] = []
        for item in ns.seed:
            seed, sep, folder = item.partition("=")
            if not sep or not seed or not folder:
                raise UserError(f"--seed {item!r}: expected SEED=EVAL_DIR")
            rows += read_seed(seed, folder)
            ladders += read_ladder(seed, folder)
        summary = between_seeds(rows)
        out = Path(ns.out)
        write_json(out / "seeds.json", {"key": KEY, "rows": [{**dataclasses.asdict(r), "diff": r.diff, "var": r.var,
                                                              "complete": r.complete} for r in rows],
                                        "between_seeds": summary, "square_ladder": ladders})
        atomic_write_text(out / "seeds.md", render(rows, summary, ladders))
        plot(rows, summary, out / "seeds.png")
        print(f"seeds: {len({r.seed for r in rows})} seed(s) -> {out / 'seeds.md'}")
        return 0
    except UserError as e:
        print(f"seeds: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
