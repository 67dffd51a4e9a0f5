"""The committed encoder table (issue #18): aligned / CE-trained encoders beside the shrinkage-LDA reference.

``python -m eegsine.bench.experiments.encoder_table collect LABEL=RUN ... --out docs/results/encoder/table.json``
reads each encoder run's ``config.json`` and ``metrics.json`` (section ``encoder``: test split, seen
classes, the epoch chosen on validation) and keeps what the table shows; the LDA reference and the
controls come from a run that computed them (``--controls``) on the same data and split, matched by
the data set's generator config, or from ``reference RUN`` (the same LDA, computed for a run without
controls: it regenerates the run's data from its config, writes ``RUN/reference.json``). ``render
table.json`` prints the markdown (``table.md`` is exactly
that output: a test re-renders it), so no number in the table is typed by hand.

The goal: linear probe and NCM of the aligned encoder >= 0.9 x the LDA accuracy on the same split
and preprocessing, with the controls at chance. The interval is Wilson's (95 %) on the test trials;
trials of one stimulus are correlated (one image is seen by every subject), so it is optimistic.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eegsine.bench.report.data import wilson
from eegsine.bench.report.doc import md_table
from eegsine.errors import UserError
from eegsine.io import atomic_write_text, read_json as _read
from eegsine.metrics.eeg_baselines import ENCODER_LDA_WIN_MS, lda_baseline
from eegsine.runtime.isa import this_host
from eegsine.training.configs import EncoderTrainConfig

GOAL = 0.9  # x the LDA reference


def run_row(label: str, run: str | Path) -> dict:
    """One table row from an encoder run folder."""
    run = Path(run)
    cfg, met = _read(run / "config.json"), _read(run / "metrics.json")
    if "encoder" not in met:
        raise UserError(f"{run}/metrics.json: no 'encoder' section")
    enc, seen = cfg["encoder"], met["encoder"]["seen"]
    aligned = seen["aligned"]
    row = {
        "label": label, "run": run.as_posix(),
        "arch": enc["arch"], "center": enc["center"], "d_model": enc["d_model"], "patch": enc["patch"],
        "kernel": enc["kernel"], "emb_dim": enc["emb_dim"],
        "losses": {k: cfg[k] for k in ("w_proto", "w_clip", "w_cls")},
        "epochs": cfg["epochs"], "seed": cfg["seed"], "best_epoch": met["encoder"]["train"]["best_epoch"],
        "shuffled_labels_run": bool(cfg.get("shuffle_labels", False)),
        "best_val_score": met["encoder"]["train"].get("best_val_score"),
        "wall_s": round(met["encoder"]["train"]["wall_s"], 1),
        "data": {k: met["encoder"]["data"][k] for k in ("name", "n_train", "n_val", "n_test", "n_chans", "n_times",
                                                         "sfreq")},
        "data_options": cfg["data_options"], "image_set": cfg["image_set"],
        "snr": _snr(met["encoder"]["data"].get("info", {})),
        "n_test": seen["n_trials"], "chance": seen["chance_top1"],
        "aligned": {"probe": aligned["linear_probe_top1"], "ncm": aligned["ncm_top1"],
                    "kmeans": aligned["kmeans_acc"], "retrieval_top1": aligned.get("retrieval", {}).get("top1")},
    }
    for name, key in (("shuffled_labels", "shuffled"), ("class_only", "class_only")):
        if name in seen:
            row[key] = {"probe": seen[name]["linear_probe_top1"], "ncm": seen[name]["ncm_top1"],
                        "retrieval_top1": seen[name].get("retrieval", {}).get("top1")}
    for name in ("lda_windows", "bandpower_logreg"):
        if name in seen:
            row[name] = {"top1": seen[name]["top1"], "features": seen[name]["features"]}
    if "lda_windows" not in row and (run / REFERENCE).is_file():
        ref = _read(run / REFERENCE)
        if ref["n_test"] != row["n_test"]:
            raise UserError(f"{run / REFERENCE}: {ref['n_test']} test trials, the run has {row['n_test']}")
        row["lda_windows"] = {"top1": ref["top1"], "features": ref["features"]}
    return row


REFERENCE = "reference.json"


def reference(run: str | Path) -> dict:
    """The shrinkage-LDA reference of an encoder run, on its data and split exactly (train -> test, seen classes)."""
    from eegsine.training.encoder import load_data, split_indices

    run = Path(run)
    cfg = EncoderTrainConfig.load(run)
    if cfg.heldout_classes:
        raise UserError(f"{run}: reference of runs with held-out classes is not supported (seen-class split)")
    ds = load_data(cfg)
    train, _, test = split_indices(ds, cfg)
    ref = lda_baseline(ds.x[train], ds.y[train], ds.x[test], ds.y[test], ds.sfreq, win_ms=ENCODER_LDA_WIN_MS)
    ref["split"] = "train -> test (the run's split)"
    ref["n_train"] = int(len(train))

    atomic_write_text(run / REFERENCE, json.dumps(ref, indent=1) + "\n")
    return ref


def _snr(info: dict) -> float | None:
    """synthetic-vep's SNR as generated (signal RMS / background RMS); None for other data."""
    s, n = info.get("signal_rms_uv"), info.get("noise_rms_uv")
    return round(s / n, 4) if s and n else None


def _same_data(a: dict, b: dict) -> bool:
    return (a["data"], sorted(a["data_options"]), a["image_set"]) == (b["data"], sorted(b["data_options"]),
                                                                     b["image_set"])


def collect(pairs: list[str], host: dict) -> dict:
    rows = []
    for p in pairs:
        if "=" not in p:
            raise UserError(f"{p!r}: give LABEL=RUN_FOLDER")
        label, run = p.split("=", 1)
        rows.append(run_row(label, run))
    for r in rows:  # the reference of a run without controls: a run on the same data that has them
        if "lda_windows" not in r:
            ref = next((o for o in rows if "lda_windows" in o and _same_data(o, r)), None)
            if ref is None:
                raise UserError(f"{r['label']}: no LDA reference (run it, or a run on the same data, with --controls)")
            r["lda_windows"], r["reference_from"] = ref["lda_windows"], ref["label"]
    return {"goal": f"linear probe and NCM >= {GOAL} x shrinkage LDA on the same split and preprocessing",
            "split": "test split, seen classes; model chosen on validation", "host": host, "rows": rows}


def _pct(p: float | None, n: int | None = None) -> str:
    if p is None:
        return "—"
    if n is None:
        return f"{p:.3f}"
    lo, hi = wilson(p, n)
    return f"{p:.3f} [{lo:.2f}, {hi:.2f}]"


def render(table: dict) -> str:
    h = table["host"]
    out = [f"Goal: {table['goal']}. {table['split']}; 95 % Wilson intervals on the test trials. "
           f"Host: {h.get('cpu', '?')} ({h.get('isa', '?')}), {h.get('threads', '?')} thread(s).", ""]
    head = ["encoder", "data", "n test", "linear probe", "NCM", "LDA reference", "probe / LDA", "NCM / LDA",
            "goal", "retrieval top-1", "shuffled labels: retrieval · probe", "class-only: retrieval · probe",
            "val score", "epochs (best)", "wall s"]
    rows = []
    for r in table["rows"]:
        n, lda = r["n_test"], r["lda_windows"]["top1"]
        a = r["aligned"]
        rp, rn = a["probe"] / lda, a["ncm"] / lda
        loss = "+".join(f"{k[2:]} {v:g}" for k, v in r["losses"].items() if v)
        d = r["data"]
        snr = f", snr {r['snr']:g}" if r.get("snr") else ""
        ctrl = ["—" if k not in r else f"{_pct(r[k]['retrieval_top1'])} · {_pct(r[k]['probe'])}"
                for k in ("shuffled", "class_only")]
        shuf = "; trained on shuffled labels" if r.get("shuffled_labels_run") else ""
        rows.append([
            f"{r['label']}: {r['arch']} ({loss}; center {r['center']}; seed {r['seed']}{shuf})",
            f"{d['name']} {d['n_chans']}x{d['n_times']} @ {d['sfreq']:g} Hz{snr}, {d['n_train']} train",
            str(n), _pct(a["probe"], n), _pct(a["ncm"], n),
            _pct(lda, n) + (f" (from {r['reference_from']})" if "reference_from" in r else ""),
            f"{rp:.2f}", f"{rn:.2f}",
            "(control)" if r.get("shuffled_labels_run") else "met" if min(rp, rn) >= GOAL else "not met",
            _pct(a["retrieval_top1"]), *ctrl, _pct(r.get("best_val_score")),
            f"{r['epochs']} ({r['best_epoch']})", f"{r['wall_s']:.0f}"])
    out += md_table(head, rows)
    chance = ", ".join(sorted({f"{r['chance']:.2f}" for r in table["rows"]}))
    out += ["", f"Chance: {chance}. LDA: {table['rows'][0]['lda_windows']['features']}, fitted on the train split."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eegsine.bench.experiments.encoder_table",
                                description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="read encoder runs into table.json (and write table.md beside it)")
    c.add_argument("runs", nargs="+", metavar="LABEL=RUN", help="an encoder run folder and its row label")
    c.add_argument("--out", required=True, help="table.json to write")
    c.add_argument("--threads", type=int, default=1, help="threads the runs used (recorded)")
    r = sub.add_parser("render", help="print the markdown of a table.json")
    r.add_argument("table", help="the table.json to render")
    f = sub.add_parser("reference", help="compute RUN/reference.json: the LDA reference of a run without controls")
    f.add_argument("run", help="an encoder run folder")
    ns = p.parse_args(argv)
    try:
        if ns.cmd == "collect":
            facts = this_host()
            host = {"cpu": facts["cpu"], "isa": ", ".join(f for f in facts["int8_features"]
                                                          if f in ("avx2", "avx512_vnni", "avx512f")) or "?",
                    "threads": ns.threads}
            table = collect(ns.runs, host)
            out = Path(ns.out)
            atomic_write_text(out, json.dumps(table, indent=1) + "\n")
            atomic_write_text(out.with_suffix(".md"), render(table))
            print(f"{out}: {len(table['rows'])} rows; {out.with_suffix('.md')}")
            return 0
        if ns.cmd == "reference":
            ref = reference(ns.run)
            print(f"{ns.run}/{REFERENCE}: LDA top-1 {ref['top1']:.3f} on {ref['n_test']} test trials")
            return 0
        print(render(_read(Path(ns.table))), end="")
        return 0
    except UserError as e:
        print(f"eegsine encoder-table: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
