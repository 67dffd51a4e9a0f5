"""The committed encoder table is rendered from its JSON, and the collector pairs runs with their LDA reference."""
import json
from pathlib import Path

import pytest

from eegsine.bench.experiments.encoder_table import collect, render
from eegsine.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "results" / "encoder" / "table.json"


def test_committed_table_md_is_rendered_from_its_json():
    table = json.loads(TABLE.read_text())
    assert TABLE.with_suffix(".md").read_text() == render(table)
    assert all("lda_windows" in r and r["n_test"] > 0 for r in table["rows"])


def _run(tmp: Path, name: str, probe: float, ncm: float, lda: float | None, options=("snr=0.06",)) -> str:
    d = tmp / name
    d.mkdir()
    cfg = {"encoder": {"arch": "spatial", "center": "detrend", "d_model": 32, "patch": 40, "kernel": 21,
                       "emb_dim": 128},
           "w_proto": 1.0, "w_clip": 1.0, "w_cls": 0.0, "epochs": 3, "seed": 0, "data_options": list(options),
           "image_set": "mnist"}
    data = {"name": "synthetic-vep", "n_train": 80, "n_val": 10, "n_test": 100, "n_chans": 8, "n_times": 40,
            "sfreq": 100.0}
    seen = {"n_trials": 100, "chance_top1": 0.1, "aligned": {"linear_probe_top1": probe, "ncm_top1": ncm,
                                                            "kmeans_acc": 0.2}}
    if lda is not None:
        seen["lda_windows"] = {"top1": lda, "features": "40 ms window means"}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "metrics.json").write_text(json.dumps({"encoder": {"data": data, "seen": seen,
                                                            "train": {"best_epoch": 2, "wall_s": 1.0}}}))
    return f"{name}={d}"


def test_collect_borrows_the_reference_of_the_same_data_and_judges_the_goal(tmp_path):
    table = collect([_run(tmp_path, "a", 0.30, 0.27, 0.30), _run(tmp_path, "b", 0.20, 0.31, None)],
                    {"cpu": "x", "isa": "avx2", "threads": 1})
    a, b = table["rows"]
    assert b["reference_from"] == "a" and b["lda_windows"]["top1"] == 0.30
    md = render(table).splitlines()
    row_a, row_b = (next(line for line in md if line.startswith(f"| {k}:")) for k in "ab")
    assert "| 1.00 | 0.90 | met |" in row_a           # 0.30 / 0.30 and 0.27 / 0.30: exactly at the goal
    assert "| 0.67 | 1.03 | not met |" in row_b       # the probe misses it
    with pytest.raises(UserError, match="no LDA reference"):
        collect([_run(tmp_path, "c", 0.3, 0.3, None, options=("snr=0.2",))], {})
    with pytest.raises(UserError, match="LABEL=RUN"):
        collect([str(tmp_path)], {})


def test_strong_baselines_are_shown_once_per_data_set_with_the_probe_verdict(tmp_path):
    a, b = _run(tmp_path, "a", 0.30, 0.27, 0.30), _run(tmp_path, "b", 0.20, 0.31, None)
    host = {"machine": "x86_64", "isa_flags": ["avx2"], "threads": 1, "date_utc": "d", "note": "shared"}
    (tmp_path / "a" / "baselines.json").write_text(json.dumps({
        "xdawn_lda": {"top1": 0.34, "n_test": 100, "chosen": {"win_ms": 20.0}, "split": "s", "host": host},
        "minirocket": {"top1": 0.32, "n_test": 100, "chosen": {"seed": 0}, "split": "s", "host": host}}))
    table = collect([a, b], {"cpu": "x", "isa": "avx2", "threads": 1})
    assert table["rows"][1]["baselines_from"] == "a"
    md = render(table)
    section = md.split("## Strong baselines on the same split")[1]
    assert section.count("| xDAWN (2/class)") == 1 and "0.340 [0.25, 0.44]" in section  # once, Wilson at n 100
    verdict = md.split("## Encoder linear probe vs the strongest baseline")[1]
    se = (0.34 * 0.66 / 100) ** 0.5  # 0.047: probe a (0.30) is within it, b (0.20) is 0.140 below
    assert "* **a** (" in verdict and "**level** (within one SE)" in verdict.split("* **b**")[0]
    assert f"**not level**: 0.140 below it ({0.14 / se:.1f} SE)" in verdict
    (tmp_path / "a" / "baselines.json").write_text(json.dumps({"xdawn_lda": {"top1": 0.3, "n_test": 99,
                                                                              "chosen": {}}}))
    with pytest.raises(UserError, match="test trials"):
        collect([a], {})
