"""How long the main job took, per stage, idle and beside one busy process: the committed demo record.

``python -m eegsine.bench.pipeline.times --run idle=RUN_A --run "beside one busy process=RUN_B" --out DIR``
reads each run's ``pipeline.json`` (stage seconds, jobs, threads) and ``.stages`` records, and writes
``DIR/<ISA class>/times.json`` and ``times.md``: per stage its seconds in each run, the pipeline's wall time
(``total_seconds``), and each run's ratio to the first. Stages that ran side by side overlap: their seconds
add up to more than the wall time. Host facts (CPU, ISA class, cores) come from this process: run it on the
machine that made the runs. It then rewrites ``DIR/hosts.md``: one row per CPU class recorded under ``DIR``
(``--summary DIR`` rewrites only that).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from eegsine.bench.pipeline.config import STAGE_NAMES
from eegsine.bench.report.doc import md_table
from eegsine.config import usable_cpus
from eegsine.errors import UserError
from eegsine.io import atomic_write_text, read_json, write_json
from eegsine.runtime.isa import this_host


def read_run(root: Path) -> dict:
    """One run's wall seconds, jobs, threads and per-stage seconds (stages skipped as done are refused)."""
    p = root / "pipeline.json"
    if not p.is_file():
        raise UserError(f"{root}: no pipeline.json (not a pipeline run folder)")
    s = read_json(p)
    stages = {e["name"]: e for e in s.get("stages", [])}
    resumed = [n for n, e in stages.items() if str(e.get("status", "")).startswith("skipped")]
    if resumed:
        raise UserError(f"{root}: stages {', '.join(resumed)} were kept from an earlier invocation: not one run")
    if "total_seconds" not in s or s.get("failed"):
        raise UserError(f"{root}: the pipeline did not finish cleanly (failed: {s.get('failed')})")
    return {"folder": root.name, "preset": s.get("preset"), "jobs": s.get("jobs", 1), "threads": s.get("threads"),
            "total_seconds": float(s["total_seconds"]),
            "stages": {n: float(e.get("seconds", 0.0)) for n, e in stages.items()}, "figures": figures(root)}


def figures(root: Path) -> dict[str, float]:
    """A few of the run's headline figures (what a load-dependent run would change first), where present."""
    out: dict[str, float] = {}
    enc, dif = root / "encoder" / "metrics.json", root / "diffusion" / "metrics.json"
    if enc.is_file():
        a = read_json(enc).get("encoder", {}).get("seen", {}).get("aligned", {})
        out["encoder linear-probe top-1"] = a.get("linear_probe_top1")
        out["encoder retrieval top-1"] = (a.get("retrieval") or {}).get("top1")
    if dif.is_file():
        for cond, c in (read_json(dif).get("generation") or {}).get("conditions", {}).items():
            out[f"generation {cond} 10-way acc"] = c.get("acc")
            out[f"generation {cond} fid_domain"] = c.get("fid_domain")
    for head in ("standard", "sine"):
        m = root / "classifier" / head / "metrics.json"
        if m.is_file():
            out[f"classifier {head} clean accuracy"] = read_json(m).get("train", {}).get("test_clean_accuracy")
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float))}


def render(rec: dict) -> str:
    runs = rec["runs"]
    labels = list(runs)
    first = runs[labels[0]]
    names = [n for n in STAGE_NAMES if any(n in r["stages"] for r in runs.values())]
    rows = [[n, *(f"{runs[k]['stages'][n]:.1f}" if n in runs[k]["stages"] else "" for k in labels)] for n in names]
    walls = [[k, f"{r['total_seconds']:.0f} s ({r['total_seconds'] / 60:.1f} min)",
              f"{r['total_seconds'] / first['total_seconds']:.2f}x"] for k, r in runs.items()]
    h = rec["host"]
    setup = "; ".join(f"{k}: --jobs {r['jobs']} --threads {r['threads']}" for k, r in runs.items())
    return "\n".join([
        "# How long `make demo`'s pipeline takes", "",
        f"Host: {h['cpu']}, {h['cpus']} usable CPUs, ISA class {h['isa_class']} "
        f"({', '.join(h['int8_features'])}). Preset {first['preset']}; {setup}. Each run one uninterrupted "
        "`eegsine pipeline --preset tiny --out DIR` from an empty folder (data already fetched). Stages run side "
        "by side in two lanes, so their seconds add up to more than the wall time. Written by "
        "`python -m eegsine.bench.pipeline.times` from the runs' pipeline.json." + (f" {rec['note']}" if rec.get("note")
                                                                                   else ""), "",
        "## Wall time", "",
        *md_table(["run", "pipeline wall time", f"vs {labels[0]}"], walls), "",
        "## Seconds per stage", "",
        *md_table(["stage", *labels], rows), "",
        "## The same figures", "",
        "Seeded stages with one thread each: load changes when a stage finishes, not what it computes.", "",
        *md_table(["figure", *labels], [[f, *(f"{runs[k]['figures'].get(f, float('nan')):.6g}" for k in labels)]
                                        for f in first["figures"]]), ""])


def render_hosts(root: Path) -> str:
    """``root/hosts.md``: the wall times of every host record under ``root`` (one row per CPU class)."""
    rows = []
    for path in sorted(root.glob("*/times.json")):
        rec = read_json(path)
        runs, h = rec["runs"], rec["host"]
        labels = list(runs)
        ref = runs[labels[0]]["total_seconds"]
        cells = [f"{r['total_seconds']:.0f} s ({r['total_seconds'] / 60:.1f} min)" for r in runs.values()]
        rows.append((labels, [f"{h['cpu']} ({h['isa_class']})", *cells,
                              *(f"{r['total_seconds'] / ref:.2f}x" for r in list(runs.values())[1:]),
                              f"[{path.parent.name}]({path.parent.name}/times.md)"]))
    if not rows:
        raise UserError(f"{root}: no */times.json host record")
    labels = rows[0][0]
    if any(lb != labels for lb, _ in rows):
        raise UserError(f"{root}: the host records label their runs differently: "
                        f"{sorted({tuple(lb) for lb, _ in rows})}")
    return "\n".join([
        "# How long `make demo`'s pipeline takes, per CPU class", "",
        "Each row one host of this project's 2-core machine kind (its CPU and INT8 ISA class), each run one "
        "uninterrupted `eegsine pipeline --preset tiny` from an empty folder (data already fetched); per stage "
        "seconds, the figures each run computed and how the runs were made are in the host's record. Written by "
        "`python -m eegsine.bench.pipeline.times`.", "",
        "## Wall time by CPU class", "",
        *md_table(["CPU (ISA class)", *labels, *(f"{lb} vs {labels[0]}" for lb in labels[1:]), "record"],
                  [r for _, r in rows]), ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eegsine.bench.pipeline.times", description=__doc__.split("\n")[0])
    p.add_argument("--run", action="append", metavar="LABEL=DIR",
                   help="a finished pipeline run folder and its label (the first is the reference)")
    p.add_argument("--out", help="folder of the host records: writes OUT/<ISA class>/times.json|md and OUT/hosts.md")
    p.add_argument("--summary", metavar="DIR", help="only rewrite DIR/hosts.md from the host records under DIR")
    p.add_argument("--note", default="", help="a sentence on how the runs were made (e.g. what the busy process was)")
    ns = p.parse_args(argv)
    if ns.summary:
        atomic_write_text(Path(ns.summary) / "hosts.md", render_hosts(Path(ns.summary)))
        return 0
    if not ns.run or not ns.out:
        p.error("--run and --out are required (or --summary DIR)")
    runs = {}
    for item in ns.run:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            raise UserError(f"--run {item!r}: expected LABEL=DIR")
        runs[label] = read_run(Path(folder))
    h = this_host()
    rec = {"host": {"cpu": h["cpu"], "isa_class": h["isa_class"], "int8_features": h["int8_features"],
                    "cpus": usable_cpus()}, "runs": runs, "note": ns.note}
    out = Path(ns.out) / h["isa_class"]
    write_json(out / "times.json", rec)
    atomic_write_text(out / "times.md", render(rec))
    atomic_write_text(Path(ns.out) / "hosts.md", render_hosts(Path(ns.out)))
    print(render(rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
