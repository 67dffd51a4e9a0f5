"""The committed encoder table (issue #18): aligned / CE-trained encoders beside the shrinkage-LDA reference.

``python -m eegsine.bench.experiments.encoder_table collect LABEL=RUN ... --out docs/results/encoder/table.json``
reads each encoder run's ``config.json`` and ``metrics.json`` (section ``encoder``: test split, seen
classes, the epoch chosen on validation) and keeps what the table shows; the LDA reference and the
controls come from a run that computed them (``--controls``) on the same data and split, matched by
the data set's generator config, or from ``reference RUN`` (the same LDA, computed for a run without
controls: it regenerates the run's data from its config, writes ``RUN/reference.json``). ``render
table.json`` prints the markdown (``table.md`` is exactly
that output: a test re-renders it), so no number in the table is typed by hand. ``baselines RUN`` fits the
strong decoders of :mod:`eegsine.metrics.eeg_baselines` (xDAWN + LDA, ERP / xDAWN covariances in the tangent
space, MiniRocket, MultiRocket) on the run's train split, scores its test split and writes ``RUN/baselines.json``
one baseline at a time (a killed run resumes); ``collect`` shows them beside the runs of the same data and says
whether each aligned encoder's linear probe is level with the strongest (within one binomial SE).

The goal: linear probe and NCM of the aligned encoder >= 0.9 x the LDA accuracy on the same split
and preprocessing, with the controls at chance. The interval is Wilson's (95 %) on the test trials;
trials of one stimulus are correlated (one image is seen by every subject), so it is optimistic.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

from eegsine.bench.report.data import wilson
from eegsine.bench.report.doc import md_table
from eegsine.errors import UserError
from eegsine.io import atomic_write_text, read_json as _read
from eegsine.metrics.eeg_baselines import ENCODER_LDA_WIN_MS, REGISTRY, STRONG, lda_baseline, run_all
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
    if (run / BASELINES).is_file():
        row["baselines"] = _read(run / BASELINES)
        wrong = {k: v["n_test"] for k, v in row["baselines"].items() if v["n_test"] != row["n_test"]}
        if wrong:
            raise UserError(f"{run / BASELINES}: test trials {wrong}, the run has {row['n_test']}")
    if "lda_windows" not in row and (run / REFERENCE).is_file():
        ref = _read(run / REFERENCE)
        if ref["n_test"] != row["n_test"]:
            raise UserError(f"{run / REFERENCE}: {ref['n_test']} test trials, the run has {row['n_test']}")
        row["lda_windows"] = {"top1": ref["top1"], "features": ref["features"]}
    return row


REFERENCE = "reference.json"
BASELINES = "baselines.json"
SHARED_NOTE = "the machine was shared by several workers: no timing is claimed"


def _isa_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    return sorted(f for f in ("amx_int8", "avx512_vnni", "avx2") if f in text)


def baselines(run: str | Path, names=STRONG, redo: bool = False, threads: int = 1) -> dict:
    """The strong baselines of an encoder run, on its data and split exactly: fitted on the train split only
    (their parameters chosen on validation trials carved from it), scored on the test split (seen classes).
    ``RUN/baselines.json`` is written after each one; one already there is kept unless ``redo``."""
    from eegsine.training.encoder import load_data, split_indices

    run = Path(run)
    cfg = EncoderTrainConfig.load(run)
    if cfg.heldout_classes:
        raise UserError(f"{run}: baselines of runs with held-out classes are not supported (seen-class split)")
    done = _read(run / BASELINES) if (run / BASELINES).is_file() else {}
    todo = [n for n in names if redo or n not in done]
    if not todo:
        return done
    ds = load_data(cfg)
    train, _, test = split_indices(ds, cfg)
    x_tr, y_tr, x_te, y_te, sfreq = ds.x[train], ds.y[train], ds.x[test], ds.y[test], ds.sfreq
    del ds  # the default set is 2.7 GB as float32: keep only the two splits
    for name in todo:
        res = run_all(x_tr, y_tr, x_te, y_te, sfreq, cfg.seed, names=[name])[name]
        res.update(split=f"train {len(train)} -> test {len(test)} (the run's split)", n_train=int(len(train)),
                   host={"machine": platform.machine(), "isa_flags": _isa_flags(), "threads": threads,
                         "date_utc": time.strftime("%Y-%m-%d", time.gmtime()), "note": SHARED_NOTE})
        done[name] = res
        atomic_write_text(run / BASELINES, json.dumps(done, indent=1) + "\n")
        print(f"{run}: {name} {res['top1']:.3f} on {res['n_test']} test trials", flush=True)
    return done


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
        if "baselines" not in r:
            ref = next((o for o in rows if "baselines" in o and _same_data(o, r)), None)
            if ref is not None:
                r["baselines"], r["baselines_from"] = ref["baselines"], ref["label"]
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
    if any("baselines" in r for r in table["rows"]):
        out += ["", *_baselines_section(table["rows"]), *_verdict_section(table["rows"])]
    return "\n".join(out) + "\n"


def _data_label(r: dict) -> str:
    d = r["data"]
    snr = f", snr {r['snr']:g}" if r.get("snr") else ""
    return f"{d['name']} {d['n_chans']}x{d['n_times']} @ {d['sfreq']:g} Hz{snr}"


def _strongest(r: dict) -> tuple[str, float]:
    """The best test accuracy among the LDA reference and the strong baselines of ``r``'s data: (label, top-1)."""
    cands = {"40 ms window means + shrinkage LDA (the reference)": r["lda_windows"]["top1"]}
    cands.update({REGISTRY[k].label if k in REGISTRY else k: v["top1"] for k, v in r.get("baselines", {}).items()})
    best = max(cands, key=lambda k: cands[k])
    return best, cands[best]


def _baselines_section(rows: list[dict]) -> list[str]:
    """The strong baselines once per data set: test top-1 with its Wilson interval, n, split, what was chosen."""
    out = ["## Strong baselines on the same split", "",
           "Fitted on the train split only, each free parameter chosen on validation trials carved from it "
           "(`core/metrics/eeg_baselines.py`: 5-fold CV, or one stratified 80 / 20 hold-out above 2,000 trials), "
           "scored once on the test split.", ""]
    seen, body, hosts = set(), [], set()
    for r in rows:
        if "baselines" not in r or r.get("baselines_from") or _data_label(r) in seen:
            continue
        seen.add(_data_label(r))
        for k, v in r["baselines"].items():
            chosen = ", ".join(f"{a} {b:.3g}" if isinstance(b, float) else f"{a} {b}" for a, b in v["chosen"].items())
            h = v.get("host", {})
            if h:
                hosts.add(f"{h['machine']} ({', '.join(h['isa_flags'])}), {h['threads']} thread(s), "
                          f"{h['date_utc']}; {h['note']}")
            body.append([REGISTRY[k].label if k in REGISTRY else k, _data_label(r), str(v["n_test"]),
                         _pct(v["top1"], v["n_test"]), v.get("split", "train -> test"), chosen])
    out += md_table(["baseline", "data", "n test", "top-1 [95 % Wilson]", "split", "chosen (val_top1: validation)"],
                    body)
    return out + (["", "Computed on " + "; ".join(sorted(hosts)) + "."] if hosts else [])


def _verdict_section(rows: list[dict]) -> list[str]:
    """Per aligned encoder row with baselines: level with the strongest (within one binomial SE) or short by how
    much. The encoder README includes this section, rendered."""
    out = ["", "## Encoder linear probe vs the strongest baseline", ""]
    for r in rows:
        if "baselines" not in r or r.get("shuffled_labels_run"):
            continue
        name, best = _strongest(r)
        n, p = r["n_test"], r["aligned"]["probe"]
        se = math.sqrt(best * (1 - best) / n)
        short = best - p
        out.append(f"* **{r['label']}** ({_data_label(r)}, test n {n}): strongest {name} {_pct(best, n)} "
                   f"(SE {se:.3f}); linear probe {_pct(p, n)}: "
                   + ("**level** (within one SE)." if p >= best - se else
                      f"**not level**: {short:.3f} below it ({short / se:.1f} SE)."))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eegsine.bench.experiments.encoder_table",
                                description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="read encoder runs into table.json (and write table.md beside it)")
    c.add_argument("runs", nargs="+", metavar="LABEL=RUN", help="an encoder run folder and its row label")
    c.add_argument("--out", required=True, help="table.json to write")
    c.add_argument("--threads", type=int, default=1, help="threads the runs used (recorded)")
    c.add_argument("--keep-host", action="store_true",
                   help="keep the host recorded in the existing --out file (the runs were measured there; only "
                        "their baselines were added since)")
    r = sub.add_parser("render", help="print the markdown of a table.json")
    r.add_argument("table", help="the table.json to render")
    f = sub.add_parser("reference", help="compute RUN/reference.json: the LDA reference of a run without controls")
    f.add_argument("run", help="an encoder run folder")
    b = sub.add_parser("baselines", help="compute RUN/baselines.json: the strong baselines on a run's split "
                                         "(resumable, one baseline at a time)")
    b.add_argument("run", help="an encoder run folder")
    b.add_argument("--names", nargs="+", default=list(STRONG), choices=list(REGISTRY),
                   help="baselines to compute (default: the strong decoders)")
    b.add_argument("--redo", action="store_true", help="recompute a baseline already in baselines.json")
    b.add_argument("--threads", type=int, default=1, help="threads (recorded; set OMP/NUMBA_NUM_THREADS to match)")
    ns = p.parse_args(argv)
    try:
        if ns.cmd == "collect":
            out = Path(ns.out)
            if ns.keep_host:
                if not out.is_file():
                    raise UserError(f"--keep-host: {out} does not exist")
                host = _read(out)["host"]
            else:
                facts = this_host()
                host = {"cpu": facts["cpu"], "isa": ", ".join(f for f in facts["int8_features"]
                                                              if f in ("avx2", "avx512_vnni", "avx512f")) or "?",
                        "threads": ns.threads}
            table = collect(ns.runs, host)
            atomic_write_text(out, json.dumps(table, indent=1) + "\n")
            atomic_write_text(out.with_suffix(".md"), render(table))
            print(f"{out}: {len(table['rows'])} rows; {out.with_suffix('.md')}")
            return 0
        if ns.cmd == "baselines":
            done = baselines(ns.run, ns.names, ns.redo, ns.threads)
            print(f"{ns.run}/{BASELINES}: " + ", ".join(f"{k} {v['top1']:.3f}" for k, v in done.items()))
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
