"""Issue #28 item 3: the INT8 crossover experiment, run at its quick size (an 8 x 64 encoder, the tiny UNet,
batches 1 and 4), and its rules (the crossover, the memory guard, the flags) on numbers made up here."""
from __future__ import annotations

import json
import math

import pytest

from eegsine.bench.experiments import int8_crossover as X

BATCHES = [1, 4]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("crossover")
    assert X.main(["--quick", "--out", str(out)]) == 0
    return out, json.loads((out / "crossover.json").read_text()), (out / "crossover.md").read_text()


def test_quick_run_writes_json_md_png_and_removes_its_onnx_files(quick):
    out, doc, md = quick
    assert sorted(p.name for p in out.iterdir()) == ["crossover.json", "crossover.md", "crossover.png"]
    assert (out / "crossover.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"cpu", "isa_class", "int8_features", "emulated"} <= set(doc["host"])
    assert doc["versions"]["onnxruntime"] and doc["versions"]["torch"]
    assert "not accuracy" in doc["note"] and "not accuracy" in md
    assert doc["settings"]["batches"] == BATCHES and doc["settings"]["threads"] == 1
    assert {k: v["act_type"] for k, v in doc["settings"]["int8"].items()} == {"s8": "s8", "u8": "u8"}
    assert all(v["target"] == "portable" for v in doc["settings"]["int8"].values())


def test_every_model_has_fp32_s8_u8_cells_at_every_batch(quick):
    _, doc, _ = quick
    assert list(doc["models"]) == ["eeg_encoder_8x64", "unet_tiny"]
    assert doc["settings"]["backends"][0] == "ort"
    for name, m in doc["models"].items():
        assert m["skipped"] == [] and m["params"] > 0
        assert m["bytes"]["s8"] < m["bytes"]["fp32"] and m["bytes"]["u8"] < m["bytes"]["fp32"], name
        assert all(r["max_abs_int8_weight"] <= 64 and r["quantized_ops"] > 0 for r in m["quantization"].values())
        for backend in doc["settings"]["backends"]:
            for b in BATCHES:
                have = sorted(c["precision"] for c in m["cells"] if c["backend"] == backend and c["batch"] == b)
                assert have == ["fp32", "s8", "u8"], (name, backend, b)
        for c in m["cells"]:
            assert 0 < c["p25_ms"] <= c["median_ms"] <= c["p75_ms"], c
            assert 3 <= c["calls"] <= 5 and c["ms_per_item"] == pytest.approx(c["median_ms"] / c["batch"])


def test_int8_sqnr_is_finite_and_above_10_db_and_fp32_backends_agree(quick):
    _, doc, _ = quick
    for m in doc["models"].values():
        for c in m["cells"]:
            if c["variant"] == "ort-fp32":
                assert c["sqnr_db"] is None   # the reference
            elif c["precision"] == "fp32":
                assert c["sqnr_db"] > 60, c   # OpenVINO FP32 vs ONNX Runtime FP32: the same model
            elif c["backend"] == "ort":  # the quantized files are sound: the runtime eegsine ships reads them well
                assert math.isfinite(c["sqnr_db"]) and c["sqnr_db"] > 10, c
            else:  # what OpenVINO's INT8 kernels make of them is the host's measurement (the tiny UNet with s8
                # activations: 3.7 dB on an AMD EPYC with AVX-512 VNNI, above 20 dB on a Xeon with AMX; verify's
                # gates keep such a combination from being proven or chosen)
                assert math.isfinite(c["sqnr_db"]), c
                assert c["sqnr_db"] == min(c["sqnr_db_per_output"].values())
                assert c["sqnr_db"] < 60      # quantized: not the FP32 model again
    assert set(doc["models"]["eeg_encoder_8x64"]["cells"][1]["sqnr_db_per_output"]) == {"tokens", "embedding"}


def test_speedups_are_the_fp32_median_over_the_variants_in_the_json_and_in_the_md(quick):
    _, doc, md = quick
    for name, m in doc["models"].items():
        section = md.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for c in m["cells"]:
            fp = next(f for f in m["cells"] if (f["backend"], f["batch"], f["precision"]) ==
                      (c["backend"], c["batch"], "fp32"))
            assert c["speedup_vs_fp32"] == pytest.approx(fp["median_ms"] / c["median_ms"], rel=1e-12)
            row = next(r for r in section.splitlines() if r.startswith(f"| {c['batch']} | {c['variant']} |"))
            assert row.split(" | ")[5] == f"{c['speedup_vs_fp32']:.2f}x", row


def test_the_md_names_one_crossover_line_per_model_and_backend_as_the_json_has_it(quick):
    _, doc, md = quick
    for name, m in doc["models"].items():
        for backend, label in X.BACKENDS.items():
            lines = [ln for ln in md.splitlines() if ln.startswith(f"- Crossover, {label}, {name}:")]
            assert len(lines) == 1, (name, backend)
            x = m["crossover"][backend]
            assert x == json.loads(json.dumps(X.crossover(m["cells"], backend)))   # the rule, on the JSON's cells
            if backend not in doc["settings"]["backends"]:
                assert "not measured" in lines[0]
            elif x["batch"] is None:
                assert x["paid_at"] == [] and f"INT8 never paid up to batch {BATCHES[-1]}" in lines[0]
            else:
                assert f"INT8 pays from batch {x['batch']}" in lines[0] and x["batch"] == x["paid_at"][0]


def _cells(batch, fp32, s8, u8, backend="ort"):
    """Cells with the given (p25, median, p75) per precision, speed-ups as measure_batch computes them."""
    out = []
    for p, (lo, med, hi) in (("fp32", fp32), ("s8", s8), ("u8", u8)):
        out.append({"batch": batch, "backend": backend, "precision": p, "variant": X.variant((backend, p)),
                    "p25_ms": lo, "median_ms": med, "p75_ms": hi, "speedup_vs_fp32": fp32[1] / med})
    return out


def test_crossover_needs_the_faster_int8_beyond_the_interquartile_ranges():
    cells = (_cells(1, (9, 10, 11), (14, 15, 16), (11, 12, 13))       # slower
             + _cells(2, (9, 10, 11), (8, 9, 10), (8.5, 8.8, 9.5))     # faster in the median, IQRs overlap
             + _cells(4, (19, 20, 21), (17, 18, 19), (12, 14, 15))     # u8 p75 15 < FP32 p25 19: pays
             + _cells(8, (39, 40, 41), (35, 37, 39.5), (38, 39, 40)))  # s8 is the faster, its IQR overlaps
    x = X.crossover(cells, "ort")
    assert x["batch"] == 4 and x["paid_at"] == [4] and x["batches"] == [1, 2, 4, 8]
    assert [(v["variant"], v["paid"]) for v in x["best"]] == [("ort-int8-u8", False), ("ort-int8-u8", False),
                                                             ("ort-int8-u8", True), ("ort-int8-s8", False)]
    line = X.crossover_line("m", x)
    assert "INT8 pays from batch 4 (ort-int8-u8: 1.43x" in line and "not beyond the IQRs at batch 8" in line
    never = X.crossover(cells[:6], "ort")
    assert never["batch"] is None
    assert X.crossover_line("m", never).startswith("Crossover, ONNX Runtime, m: INT8 never paid up to batch 2")
    assert X.crossover_line("m", X.crossover(cells, "openvino")).endswith("not measured (openvino was not run)")


def test_a_batch_whose_sessions_would_not_fit_in_memory_is_skipped_with_its_estimate(monkeypatch):
    s = X.settings(X.build_parser().parse_args(["--quick", "--out", "o"]), [])
    last = (8, {"sessions": 1.0, "calls": 2.0})
    monkeypatch.setattr(X, "_gib", lambda what: 20.0)
    assert X.memory_check(None, 1, s) is None and X.memory_check(last, 32, s) is None  # 1 + 2 * 4 = 9 GiB of 18
    monkeypatch.setattr(X, "_gib", lambda what: 10.0)
    why = X.memory_check(last, 32, s)
    assert why and "~9.0 GiB" in why and "10.0 GiB is available" in why
    assert X.memory_check(last, 16, s) is None                                        # 5 GiB of 8


@pytest.mark.parametrize("argv", [["--batches", "0,4"], ["--batches", "1,x"], ["--unet", "huge"],
                                  ["--unet", "odd=32,64/7/64/4"], ["--unet", "w=30,60/8/64/4"], ["--unet", "a=1/2"],
                                  ["--encoder", "128-440"], ["--encoder", "8x16"], ["--backends", "tensorrt"],
                                  ["--backends", "openvino"], ["--min-calls", "5", "--max-calls", "2"],
                                  ["--cell-seconds", "0"], ["--calib", "65"], ["--encoder", "none", "--unet", "none"]])
def test_bad_flags_are_one_line_errors_before_anything_runs(argv, tmp_path, capsys):
    assert X.main(["--quick", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("int8_crossover: --") or err.startswith("int8_crossover: nothing"), err
    assert "\n" not in err and not (tmp_path / "out").exists()
