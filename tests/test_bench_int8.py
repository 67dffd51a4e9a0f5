"""Bench: one INT8 row per quantization target, judged against ORT FP32 in the same run, host ISA named."""
from __future__ import annotations

import json

import onnx
import pytest

import export_helpers as h
from eegsine.bench.speed.bench import (INT8_BACKENDS, RUNTIME_ROWS, BenchConfig, Case, bench_case, render_markdown,
                                       runtime_verdicts)
from eegsine.export.bundle import classifier_item
from eegsine.export.quantize import max_abs_int8_weight
from eegsine.runtime import Bundle
from eegsine.runtime.isa import describe, this_host
from eegsine.runtime.records import append_record
from eegsine.runtime.tuning import TUNE_KIND, Candidate


def test_bench_has_a_row_per_int8_target_with_ratios_vs_ort_fp32(tmp_path):
    item = classifier_item(h.classifier_run(), h.small_cfg())
    x = item.holdout[0]["images"]
    case = Case("classifier", item.module, item.contract.input_names, {"images": x[:1]}, {"images": x[:4]},
                h.clf_bundle() / "classifier.fp32.onnx", item.calibration, contract=item.contract)
    cfg = BenchConfig(threads=1, warmup=1, iters=3, max_seconds=1.0,
                      backends=["torch-eager", "onnxruntime-fp32", *INT8_BACKENDS])
    rows = {r["backend"]: r for r in bench_case(case, cfg, tmp_path, log=lambda s: None)}
    fp32 = rows["onnxruntime-fp32"]
    for backend, (target, act) in INT8_BACKENDS.items():
        r = rows[backend]
        assert r["status"] == "ok" and r["precision"] == "int8", r
        assert r["speedup_p50_vs_ort_fp32"] == round(fp32["p50_ms"] / r["p50_ms"], 2)
        assert r["size_vs_ort_fp32"] > 1.0
        w = max_abs_int8_weight(onnx.load(str(tmp_path / f"classifier.{backend}.onnx")))
        assert (w <= 64) == (target == "portable"), (backend, w)
    assert rows["onnxruntime-int8-portable"]["sqnr_db_vs_torch"] >= 25.0  # the default target on any host
    md = render_markdown(list(rows.values()), {"machine": "m", "threads": 1, "iters": 3, "warmup": 1,
                                               "int8_host": describe()})
    assert f"ISA class {this_host()['isa_class']}" in md and "speedup_p50_vs_ort_fp32" in md


def test_bench_shows_both_backends_and_marks_the_recorded_and_the_fastest_passing(tmp_path):
    """Issue #28 item 5: ORT and OpenVINO rows for the bundle's FP32 and INT8 files side by side, their gates on
    this host, the runtime's recorded choice and the fastest passing row of the run marked."""
    import shutil

    pytest.importorskip("openvino")
    b = shutil.copytree(h.clf_bundle(), tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    files = {rel: m["files"][rel]["sha256"] for rel in m["models"]["classifier"]["files"].values()}
    # a tune record of this host: OpenVINO INT8 failed its gates (and is the fastest: never the choice)
    cands = [Candidate("ort", "fp32", 1, 0.20, True, 9), Candidate("ort", "int8", 1, 0.30, True, 9),
             Candidate("openvino", "fp32", 1, 0.25, True, 9), Candidate("openvino", "int8", 1, 0.10, False, 9)]
    append_record(b, {"kind": TUNE_KIND, "host": this_host(), "files": files, "gates": [], "passed": True,
                      "passed_files": {}, "tuning": {"classifier": {"candidates": [c.to_dict() for c in cands]}}})
    bundle = Bundle(b)
    passing, recorded = runtime_verdicts(bundle, "classifier")
    assert recorded == ("ort", "fp32", 1) and passing[("openvino", "int8")] is False
    item = classifier_item(h.classifier_run(), h.small_cfg())
    x = item.holdout[0]["images"]
    case = Case("classifier", item.module, item.contract.input_names, {"images": x[:1]}, {"images": x[:4]},
                b / "classifier.fp32.onnx", item.calibration, contract=item.contract,
                onnx_int8=b / "classifier.int8.onnx", passing=passing, recorded=recorded)
    cfg = BenchConfig(threads=1, warmup=1, iters=5, max_seconds=1.0, backends=["torch-eager", *RUNTIME_ROWS])
    rows = {r["backend"]: r for r in bench_case(case, cfg, tmp_path, log=lambda s: None)}
    for backend, (_, precision) in RUNTIME_ROWS.items():
        assert rows[backend]["status"] == "ok" and rows[backend]["precision"] == precision, rows[backend]
        floor = 40.0 if precision == "fp32" else 25.0  # the verify gates: OpenVINO agrees with torch like ORT
        assert rows[backend]["sqnr_db_vs_torch"] >= floor, rows[backend]
    assert rows["openvino-int8"]["gates"] == "failed" and rows["openvino-fp32"]["gates"] == "passed"
    assert rows["onnxruntime-fp32"]["choice"].startswith("recorded (1 thread)")
    fastest = min((r for r in rows.values() if r.get("gates") == "passed"), key=lambda r: r["p50_ms"])
    assert "fastest passing" in fastest["choice"]
    assert sum("fastest passing" in r.get("choice", "") for r in rows.values()) == 1
    assert "fastest passing" not in rows["openvino-int8"].get("choice", "")
    md = render_markdown(list(rows.values()), {"machine": "m", "threads": 1, "iters": 5, "warmup": 1,
                                               "int8_host": describe()})
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert "choice" in header and "gates" in header and "openvino-int8" in md
