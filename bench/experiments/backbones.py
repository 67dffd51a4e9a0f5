"""Backbones for the aligned encoder, chosen on validation, then scored on test (issue #26 item 4).

    python -m eegsine.bench.experiments.backbones validate --seeds 0 --out docs/results/uea   # val only
    python -m eegsine.bench.experiments.backbones test --seeds 0 1 2 --out docs/results/uea   # the chosen one
    python -m eegsine.bench.experiments.backbones merge --out docs/results/uea                # into results.json

For each UEA problem of :data:`eegsine.bench.experiments.uea_table.PROBLEMS`, every candidate of
:func:`candidates` (eegsine's own architecture of the preset and the field's decoders of
``eegsine.models.eeg_backbones``, each without and with Euclidean alignment) is trained with the preset's
losses, episodes and optimizer steps on the trainer's train split and scored on its validation split
(nearest class mean top-1, the trainer's selection score): ``validate``, test never touched. ``test``
takes, per problem, the candidate with the best mean validation score over the validation seeds (ties: the
earlier in :func:`candidates`' order) and trains it with each test seed on the same split, then reads it out on
the official TEST split exactly as the uea table's encoder rows are (``uea_table.run_encoder``). Every
(problem, candidate, seed) record is one JSON file written atomically under ``OUT/backbones/``; a rerun skips
the records that exist (resumable). ``merge`` puts the selection and the chosen candidate's test read-outs into
``OUT/results.json`` (``backbones`` of each problem) and re-renders ``table.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from eegsine.bench.experiments import uea_table
from eegsine.bench.experiments.uea_table import PROBLEMS, run_encoder, sweep_one
from eegsine.config import threads_type
from eegsine.errors import UserError
from eegsine.io import atomic_write_text
from eegsine.training.configs import encoder_preset

FIELD = ("eegnet-v4", "shallow-convnet", "eeg-conformer", "minirocket")
# the committed validation-sweep rows (docs/results/uea/validation_sweep.jsonl) that trained exactly each preset
PRESET_SWEEP_ROWS = {"SelfRegulationSCP1": "scp_tf_1k", "FingerMovements": "fm_tf_1k",
                     "HandMovementDirection": "hmd_spatial_1k"}
ALIGNS = ("none", "euclidean")


def candidates(preset: str) -> dict[str, dict]:
    """name -> {"encoder": fields replaced in the preset's encoder, "train": run fields}: the preset's own arch
    and the field's decoders, each as it is and Euclidean-aligned (``+ea``)."""
    own = encoder_preset(preset).encoder.arch
    out = {}
    for align in ALIGNS:
        for arch in (own, *FIELD):
            out[arch + ("+ea" if align == "euclidean" else "")] = {"encoder": {"arch": arch}, "train": {"align": align}}
    return out


def _path(out: Path, stage: str, problem: str, name: str, seed: int) -> Path:
    return out / "backbones" / stage / problem / f"{name}-s{seed}.json"


def _write(path: Path, rec: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(rec, indent=1, sort_keys=True) + "\n")


def validate(out: Path, problems: list[str], seeds: list[int], names: list[str] | None, work: Path) -> None:
    """Validation-only training of every candidate (or ``names``) per problem and seed; resumable."""
    for problem in problems:
        preset = PROBLEMS[problem]
        for name, c in candidates(preset).items():
            if names and name not in names:
                continue
            for seed in seeds:
                path = _path(out, "val", problem, name, seed)
                if path.is_file():
                    continue
                rec = sweep_one(f"{problem}-{name}-s{seed}", preset, c["encoder"], dict(c["train"], seed=seed), work)
                rec.update(problem=problem, candidate=name, align=c["train"]["align"])
                _write(path, rec)
                print(f"{problem} {name} seed {seed}: val {rec['best_val']:.3f} (epoch {rec['best_epoch']})",
                      flush=True)


def selection(out: Path, problem: str) -> dict:
    """The validation records of ``problem`` -> per candidate its mean val score, and the chosen candidate."""
    order = list(candidates(PROBLEMS[problem]))
    recs = [json.loads(p.read_text()) for p in sorted((out / "backbones" / "val" / problem).glob("*.json"))]
    if not recs:
        raise UserError(f"{out}/backbones/val/{problem}: no validation records (run `validate` first)")
    by: dict[str, list[dict]] = {}
    for r in recs:
        by.setdefault(r["candidate"], []).append(r)
    rows = {n: {"val_mean": float(np.mean([r["best_val"] for r in rs])), "seeds": sorted(r["seed"] for r in rs),
                "values": [r["best_val"] for r in sorted(rs, key=lambda r: r["seed"])], "n_val": rs[0]["n_val"],
                "arch": rs[0]["arch"], "align": rs[0]["align"], "optimizer_steps": rs[0]["optimizer_steps"],
                "source": rs[0].get("source", "backbones validate")}
            for n, rs in by.items()}
    names = sorted(rows, key=lambda n: (-rows[n]["val_mean"], order.index(n) if n in order else len(order)))
    return {"candidates": {n: rows[n] for n in names}, "chosen": names[0]}


def import_sweep(out: Path, sweep: Path) -> None:
    """Validation records for the presets' own candidates from the committed sweep rows that trained exactly the
    preset (:data:`PRESET_SWEEP_ROWS`; same code path, ``sweep_one``; training is deterministic per seed on a
    host: the README of docs/results/uea checks one such row against the seed-0 table run)."""
    rows = {json.loads(x)["name"]: json.loads(x) for x in sweep.read_text().splitlines() if x.strip()}
    for problem, row in PRESET_SWEEP_ROWS.items():
        rec = dict(rows[row], problem=problem, candidate=encoder_preset(PROBLEMS[problem]).encoder.arch,
                   align="none", source=f"{sweep.name} row {row}")
        path = _path(out, "val", problem, rec["candidate"], rec["seed"])
        if not path.is_file():
            _write(path, rec)


def is_preset(problem: str, name: str) -> bool:
    """True when candidate ``name`` is the preset itself (its own arch, no alignment): its test runs are the
    table's encoder rows, same config and seeds, and are not trained again."""
    own = encoder_preset(PROBLEMS[problem]).encoder.arch
    return candidates(PROBLEMS[problem])[name] == {"encoder": {"arch": own}, "train": {"align": "none"}}


def test(out: Path, problems: list[str], seeds: list[int], runs: Path) -> None:
    """Train the validation-chosen candidate of each problem with each seed and read it out on test; resumable."""
    for problem in problems:
        preset = PROBLEMS[problem]
        name = selection(out, problem)["chosen"]
        if is_preset(problem, name):
            print(f"{problem}: {name} chosen, the preset itself: its test runs are the table's encoder rows")
            continue
        c = candidates(preset)[name]
        for seed in seeds:
            path = _path(out, "test", problem, name, seed)
            if path.is_file():
                continue
            rec = run_encoder(preset, seed, runs / f"{preset}-{name}-s{seed}", c["encoder"], c["train"])
            rec.update(problem=problem, candidate=name, host=uea_table.baseline_host(torch.get_num_threads()))
            _write(path, rec)
            print(f"{problem} {name} seed {seed}: probe {rec['linear_probe']:.3f}", flush=True)


def merge(out: Path) -> dict:
    """Each problem of ``out/results.json`` gets ``backbones`` (selection + the chosen one's test runs)."""
    results = uea_table._load(out)
    for r in results["problems"]:
        if not (out / "backbones" / "val" / r["problem"]).is_dir():
            uea_table.judge(r)
            continue
        sel = selection(out, r["problem"])
        runs = [json.loads(p.read_text()) for p in
                sorted((out / "backbones" / "test" / r["problem"]).glob(f"{sel['chosen']}-s*.json"))]
        if is_preset(r["problem"], sel["chosen"]):
            h = results["host"]
            host = {"machine": h["machine"], "isa_flags": h["isa_flags"], "threads": h["torch_threads"],
                    "date_utc": h["date_utc"], "note": "the preset's encoder runs of this table"}
            runs = [dict(x, host=host) for x in r["encoder_runs"]]
        sel["test_runs"] = sorted(runs, key=lambda x: x["seed"])
        sel["test"] = {k: uea_table.mean_sd([x[k] for x in runs]) for k in uea_table.ENCODER_READOUTS
                       if runs and all(k in x for x in runs)}
        r["backbones"] = sel
        uea_table.judge(r)
    uea_table._write(out, results)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eegsine.bench.experiments.backbones",
                                 description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    helps = {"validate": "validation-only training of the candidates (test never read); resumable",
             "test": "train the validation-chosen candidate with each seed, read it out on TEST; resumable",
             "merge": "put the selection and the chosen one's test rows into results.json, re-render table.md",
             "import-sweep": "validation records of the presets themselves from their committed sweep rows"}
    for cmd in ("validate", "test", "merge", "import-sweep"):
        p = sub.add_parser(cmd, help=helps[cmd])
        p.add_argument("--out", default="docs/results/uea", help="results folder (results.json, backbones/)")
        if cmd == "import-sweep":
            p.add_argument("--sweep", default="docs/results/uea/validation_sweep.jsonl", help="the sweep rows")
        if cmd in ("merge", "import-sweep"):
            continue
        p.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS),
                       help="UEA problems (official splits)")
        p.add_argument("--seeds", nargs="+", type=int, default=[0] if cmd == "validate" else [0, 1, 2],
                       help="training seeds (validation: each candidate's; test: the chosen one's)")
        p.add_argument("--threads", type=threads_type, default=1, help="torch threads")
        if cmd == "validate":
            p.add_argument("--names", nargs="+", default=None, help="only these candidates (default: all)")
            p.add_argument("--work", default="runs/uea-backbones-val", help="scratch folder of the val runs")
        else:
            p.add_argument("--runs", default="runs/uea-backbones", help="folder of the test run folders")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if a.cmd in ("validate", "test"):
        torch.set_num_threads(a.threads)
    try:
        if a.cmd == "validate":
            validate(out, a.problems, a.seeds, a.names, Path(a.work))
        elif a.cmd == "import-sweep":
            import_sweep(out, Path(a.sweep))
        elif a.cmd == "test":
            test(out, a.problems, a.seeds, Path(a.runs))
        else:
            merge(out)
    except UserError as e:
        print(f"backbones: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
