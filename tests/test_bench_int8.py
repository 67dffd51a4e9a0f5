"""Bench: one INT8 row per quantization target, judged against ORT FP32 in the same run, host ISA named."""
from __future__ import annotations

import onnx

import export_helpers as h
from eegsine.bench.speed.bench import INT8_BACKENDS, BenchConfig, Case, bench_case, render_markdown
from eegsine.export.bundle import classifier_item
from eegsine.export.quantize import max_abs_int8_weight
from eegsine.runtime.isa import describe, this_host


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
