"""Export contracts, ONNX parity, INT8 quantization, the TensorRT checker and the export CLI.

Thresholds (measured on these tiny models, 1 CPU thread, then set with margin):
ORT vs torch max abs error <= 1e-4 (measured <= 1.1e-6); INT8 SQNR on held-out real inputs:
classifier logits >= 25 dB (measured 37.7), UNet noise_pred >= 20 dB (31.7 along DDIM
trajectories), VAE decoder image >= 25 dB (43.8), EEG tokens >= 20 dB (33.2).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import export_helpers as h
from eegsine.runtime.contracts import ExportContract, classifier_contract, unet_contract
from eegsine.errors import UserError
from eegsine.export.onnx_export import ExportConfig, export_onnx, get_contract, ort_session, parity
from eegsine.export.quantize import (Int8Config, check_unique_names, nodes_matching, quantize, sqnr,
                                     untie_shared_initializers)
from eegsine.export.tensorrt import check_trt_compatible, trt_unavailable_reason

SQNR_MIN = {"classifier": {"logits": 25.0}, "unet": {"noise_pred": 20.0}, "vae_decoder": {"image": 25.0},
            "eeg_encoder": {"tokens": 20.0}}


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


# -- contracts ----------------------------------------------------------------------------------
def test_contract_roundtrip_and_profile():
    c = unet_contract(4, 8, 4, 16, max_batch=3)
    d = json.loads(json.dumps(c.to_dict()))
    c2 = ExportContract.from_dict(d)
    assert c2 == c
    assert c.dims["batch2"] == (1, 2, 6)  # CFG doubles the user's batch
    assert c.profile()["latents"] == ((1, 4, 8, 8), (2, 4, 8, 8), (6, 4, 8, 8))
    assert c.dynamic_axes()["encoder_hidden_states"] == {0: "batch2"}
    feeds = c.sample_inputs("max")
    assert feeds["timestep"].dtype == np.float32 and feeds["latents"].shape == (6, 4, 8, 8)
    c.check_inputs(feeds)


@pytest.mark.parametrize("mutate, msg", [
    (lambda f: f.update(images=f["images"].astype(np.float64)), "must be float32"),
    (lambda f: f.update(images=f["images"][:, :, :4]), "must have shape"),
    (lambda f: f.update(images=np.zeros((9, 1, 8, 8), np.float32)), "outside the exported range"),
    (lambda f: f["images"].__setitem__((0, 0, 0, 0), np.nan), "NaN"),
    (lambda f: f.update(extra=f["images"]), "unexpected"),
])
def test_contract_rejects_bad_inputs(mutate, msg):
    c = classifier_contract(1, 8, 10, max_batch=8)
    feeds = c.sample_inputs("opt", batch=2)
    mutate(feeds)
    with pytest.raises(UserError, match=msg):
        c.check_inputs(feeds)


def test_contract_rejects_malformed_json():
    with pytest.raises(UserError, match="malformed"):
        ExportContract.from_dict({"name": "x", "inputs": [{"name": "a"}], "outputs": [], "dims": {}})
    with pytest.raises(UserError, match="min <= opt <= max"):
        ExportContract.from_dict({"name": "x", "inputs": [], "outputs": [], "dims": {"batch": [4, 2, 8]}})


# -- export parity (every model kind, from the bundles' real modules) ---------------------------------
@pytest.mark.parametrize("kind", ["classifier", "eeg_encoder", "unet", "vae_decoder"])
def test_bundle_models_match_torch_and_contract(kind):
    bundle = h.clf_bundle() if kind == "classifier" else h.eeg_bundle()
    entry = _manifest(bundle)["models"][kind]
    par = entry["parity_ort_vs_torch"]
    assert max(v for k, v in par.items() if k.endswith("max_abs")) <= 1e-4, par
    model = onnx.load(str(bundle / entry["files"]["fp32"]))
    contract = ExportContract.from_dict(entry["contract"])
    assert get_contract(model) == contract
    assert [i.name for i in model.graph.input] == contract.input_names
    assert [o.name for o in model.graph.output] == contract.output_names
    # the batch axis is symbolic in the file, the rest fixed as the contract says
    first = model.graph.input[0].type.tensor_type.shape.dim
    assert first[0].dim_param == contract.inputs[0].shape[0]
    assert [d.dim_value for d in first[1:]] == list(contract.inputs[0].shape[1:])


def test_dynamo_exporter_parity_classifier(tmp_path):
    from eegsine.models.classifier import Classifier

    model = Classifier.from_pretrained(h.classifier_run())
    c = classifier_contract(1, 8, 10, max_batch=8)
    p = export_onnx(model, c, tmp_path / "clf.onnx", exporter="dynamo")
    err = parity(model, c, p)
    assert err["logits.max_abs"] <= 1e-4
    assert not list(tmp_path.glob("*.data"))  # one self-contained file


# -- INT8 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["classifier", "eeg_encoder", "unet", "vae_decoder"])
def test_int8_loads_and_keeps_sqnr(kind):
    bundle = h.clf_bundle() if kind == "classifier" else h.eeg_bundle()
    q = _manifest(bundle)["models"][kind]["quantization"]
    for out, lo in SQNR_MIN[kind].items():
        assert q[f"{out}_sqnr_db"] >= lo, (kind, q)
    int8 = bundle / f"{kind}.int8.onnx"
    m = onnx.load(str(int8))
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert check_unique_names(m) == []
    keys = [p.key for p in m.metadata_props]
    assert len(keys) == len(set(keys)), keys  # each metadata key once: onnx's checker rejects duplicates
    onnx.checker.check_model(m)
    ort_session(int8)  # loads


def test_int8_keeps_sensitive_unet_layers_float():
    m = onnx.load(str(h.eeg_bundle() / "unet.int8.onnx"))
    producers = {o: n for n in m.graph.node for o in n.output}
    conv_in = [n for n in m.graph.node if n.op_type == "Conv" and "conv_in" in n.name]
    conv_out = [n for n in m.graph.node if n.op_type == "Conv" and "conv_out" in n.name]
    assert conv_in and conv_out
    for n in conv_in + conv_out:
        assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in n.input), n.name
    # and the body is quantized: most Convs read dequantized int8 weights
    q = [n for n in m.graph.node if n.op_type == "Conv"
         and any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)]
    assert len(q) >= 10
    unet = _manifest(h.eeg_bundle())["models"]["unet"]["quantization"]
    assert unet["bytes_int8"] < 0.8 * unet["bytes_fp32"]


def _shared_weight_model(path: Path) -> Path:
    """Two Convs share weight W; a tensor already carries the name untie would naively pick next."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "B")
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["W__tied2"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["W__tied2"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "W", "B"], ["y"], pads=[1, 1, 1, 1], name="c2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])], [w, b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(m, str(path))
    return path


def test_untie_avoids_name_collision_and_quantized_result_loads(tmp_path):
    src = _shared_weight_model(tmp_path / "shared.onnx")
    m = onnx.load(str(src))
    assert untie_shared_initializers(m) == 2  # W and B each get a copy for c2
    names = [i.name for i in m.graph.initializer]
    assert len(names) == len(set(names)) and "W__tied2" not in names  # the taken name was skipped
    assert check_unique_names(m) == []
    feeds = [{"x": np.random.default_rng(i).standard_normal((2, 4, 8, 8)).astype(np.float32)} for i in range(8)]
    rep = quantize(src, tmp_path / "q.onnx", Int8Config(keep_float=[]), feeds)
    q = ort_session(tmp_path / "q.onnx")
    ref = ort_session(src).run(None, feeds[0])[0]
    assert sqnr(ref, q.run(None, feeds[0])[0]) > 25.0
    assert rep["untied_initializers"] == 2


def test_quantize_leaves_working_directory_clean(tmp_path, monkeypatch):
    src = _shared_weight_model(tmp_path / "m.onnx")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    feeds = [{"x": np.ones((1, 4, 8, 8), np.float32)}]
    quantize(src, tmp_path / "q.onnx", Int8Config(), feeds)
    assert list(cwd.iterdir()) == []
    assert Path.cwd() == cwd


def test_keep_float_patterns_match_node_or_input_names(tmp_path):
    m = onnx.load(str(_shared_weight_model(tmp_path / "m.onnx")))
    assert nodes_matching(m, ["^c2$"]) == ["c2"]
    assert nodes_matching(m, ["^W$"], ["Conv"]) == ["c1", "c2"]  # via the weight's name
    with pytest.raises(UserError, match="keep_float"):
        Int8Config(keep_float=["("])


# -- TensorRT checker (runs everywhere) -----------------------------------------------------------------
def test_trt_checker_accepts_symmetric_int8_bundle():
    for kind in ("unet", "vae_decoder", "eeg_encoder"):
        assert check_trt_compatible(h.eeg_bundle() / f"{kind}.int8.onnx") == []
    assert check_trt_compatible(h.clf_bundle() / "classifier.int8.onnx") == []


def test_trt_checker_catches_nonzero_zero_point_and_uint8(tmp_path):
    src = h.clf_bundle() / "classifier.int8.onnx"
    m = onnx.load(str(src))
    dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and len(n.input) == 3)
    zp = next(i for i in m.graph.initializer if i.name == dq.input[2])
    arr = numpy_helper.to_array(zp).copy()
    arr.flat[0] = 3
    zp.CopyFrom(numpy_helper.from_array(arr, zp.name))
    onnx.save(m, str(tmp_path / "bad.onnx"))
    problems = check_trt_compatible(tmp_path / "bad.onnx")
    assert len(problems) >= 1 and "not all zero" in problems[0]
    # uint8 activations (--act-type u8) are flagged as well
    feeds = [{"x": np.ones((1, 4, 8, 8), np.float32)}]
    quantize(_shared_weight_model(tmp_path / "m.onnx"), tmp_path / "u8.onnx", Int8Config(act_type="u8"), feeds)
    assert any("uint8" in p for p in check_trt_compatible(tmp_path / "u8.onnx"))


def test_trt_checker_catches_unsupported_op_and_opset(tmp_path):
    g = helper.make_graph([helper.make_node("FusedGemm", ["a", "a"], ["y"], domain="com.microsoft", name="f")], "g",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(m, str(tmp_path / "m.onnx"))
    problems = check_trt_compatible(tmp_path / "m.onnx")
    assert any("opset 11" in p for p in problems) and any("com.microsoft.FusedGemm" in p for p in problems)


# -- CLI -----------------------------------------------------------------------------------------------
def test_cli_trt_without_tensorrt_exits_2_before_writing(tmp_path, capsys):
    from eegsine.commands.main import export_main

    reason = trt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are available here; the no-TensorRT path cannot be exercised")
    out = tmp_path / "b"
    rc = export_main(["--classifier", str(h.classifier_run()), "--out", str(out), "--trt"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--trt" in err and reason in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_export_int8_verify_classifier(tmp_path, capsys):
    from eegsine.commands.main import main

    out = tmp_path / "bundle"
    args = ["export", "--classifier", str(h.classifier_run()), "--out", str(out), "--int8", "--export-max-batch", "4",
            "--calib-images", "128", "--verify", "--verify-n-eval", "300", "--verify-n-eval-square", "60",
            "--verify-square-queries", "40", "--verify-pgd-steps", "5"]
    rc = main(args)
    res = json.loads((out / "verify.json").read_text())
    acc = res["classifier"]["accuracy"]
    # ORT FP32 is the torch model: identical predictions on clean and transferred examples
    assert acc["ort_fp32"]["clean"] == acc["torch"]["clean"] and acc["torch"]["clean"] > 80.0
    assert acc["ort_fp32"]["transfer_pgd"] == acc["torch"]["transfer_pgd"]
    assert acc["ort_fp32"]["transfer_pgd"] < acc["ort_fp32"]["clean"]  # the attack does something
    assert res["classifier"]["data"]["n_eval"] == 300 and res["classifier"]["data"]["eps"] == 0.1
    assert rc == (0 if res["passed"] else 1)
    assert {g["gate"] for g in res["classifier"]["gates"]} >= {"classifier ort_int8 clean accuracy drop",
                                                                "classifier ort_int8 square accuracy drop"}
    assert "Verification after compression" in (out / "verify.md").read_text()
    # a second export onto the existing bundle is refused (exit 2) and rewrites nothing
    before = (out / "classifier.int8.onnx").stat().st_mtime_ns
    rc2 = main(args)
    assert rc2 == 2 and "already exists" in capsys.readouterr().err
    assert (out / "classifier.int8.onnx").stat().st_mtime_ns == before


def test_verify_gate_failure_exits_1_and_names_gate(tmp_path, capsys):
    from eegsine.commands.export import report_verification
    from eegsine.export.verify import VerifyConfig, verify_bundle

    b = h.copy_bundle(h.clf_bundle(), tmp_path / "b")
    vcfg = VerifyConfig(n_eval=100, n_eval_square=20, square_queries=10, pgd_steps=2, max_clean_drop=-1.0)
    rc = report_verification(verify_bundle(b, vcfg, classifier_run=str(h.classifier_run())), b)
    assert rc == 1
    err = capsys.readouterr().err
    assert "verification FAILED" in err and "clean accuracy drop" in err
    assert json.loads((b / "verify.json").read_text())["passed"] is False


def test_export_refuses_existing_out_and_cleans_up_on_failure(tmp_path):
    from eegsine.export.bundle import classifier_item, export_bundle

    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    cfg = h.small_cfg(int8=False)
    item = classifier_item(h.classifier_run(), cfg)
    with pytest.raises(UserError, match="already exists"):
        export_bundle([item], out, cfg, log=lambda *a: None)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    # a failing export (parity tolerance 0) leaves neither the bundle nor its temp folder
    bad = h.small_cfg(int8=False, export=ExportConfig(max_batch=4, parity_atol=0.0))
    with pytest.raises(UserError, match="differs from torch"):
        export_bundle([item], tmp_path / "new", bad, log=lambda *a: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]


@pytest.mark.tensorrt
def test_tensorrt_engine_build_and_run(tmp_path):
    reason = trt_unavailable_reason()
    if reason:
        pytest.skip(f"TensorRT path needs TensorRT and a CUDA GPU: {reason}")
    from eegsine.export.tensorrt import TRTConfig, TRTRunner, build_bundle_engines
    from eegsine.runtime import Bundle

    b = h.copy_bundle(h.clf_bundle(), tmp_path / "b")
    engines = build_bundle_engines(b, TRTConfig(cache_dir=str(tmp_path / "cache")), log=lambda *a: None)
    bundle = Bundle(b)  # engine files are hashed into the manifest
    c = bundle.contract("classifier")
    feeds = c.sample_inputs("opt", batch=4)
    ref = ort_session(b / "classifier.fp32.onnx").run(None, feeds)[0]
    got = TRTRunner(b / engines["classifier"]["int8"]["file"], c)(feeds)[0]
    assert sqnr(ref, got) > 20.0
    again = build_bundle_engines(b, TRTConfig(cache_dir=str(tmp_path / "cache")), log=lambda *a: None)
    assert again["classifier"]["int8"]["cached"] is True


def test_verify_eeg_sqnr_per_timestep_and_fid_gate(tmp_path):
    from eegsine.export.verify import VerifyConfig, domain_scorer, verify_eeg, write_report
    from eegsine.metrics.images import DomainCNN, DomainCNNConfig
    from eegsine.runtime import DDIM

    torch.manual_seed(0)
    # an untrained domain CNN: this test checks the wiring (same seeds, gates, report), not image quality
    net = DomainCNN(DomainCNNConfig(dataset="digits", image_size=8, width=4, feat_dim=8)).eval()
    score = domain_scorer(net, "domain-cnn-test", n_boot=0)
    ds = h.eeg_set()
    test = ds.splits["test"]
    real = ds.images[ds.image[test]]
    same = score(real, real, ds.y[test])
    assert same["fid_domain"] == pytest.approx(0.0, abs=1e-6) and same["lpips_domain"] == pytest.approx(0.0, abs=1e-9)
    b = h.copy_bundle(h.eeg_bundle(), tmp_path / "b")
    cfg = VerifyConfig(n_gen=6, steps=4)
    res = verify_eeg(Bundle_(b), ds.x[test], ds.y[test], real, cfg, metrics=score, log=lambda *a: None)
    sched = DDIM(json.loads((b / "manifest.json").read_text())["generation"]["scheduler"])
    assert list(res["unet_sqnr_db_per_timestep"]) == [str(t) for t in sched.set_timesteps(4)]
    assert min(res["unet_sqnr_db_per_timestep"].values()) > 15.0
    assert res["metrics"]["fp32"]["n"] == 6 and res["metrics"]["fp32"]["feature_network"] == "domain-cnn-test"
    (gate,) = res["gates"]
    assert gate["gate"].endswith("fid_domain relative increase") and gate["passed"] == (gate["value"] <= 0.10)
    write_report(b, {"eeg": res})
    md = (b / "verify.md").read_text()
    assert "UNet output SQNR per timestep" in md and "fid_domain" in md


def Bundle_(path):
    from eegsine.runtime import Bundle

    return Bundle(path)


def test_engine_cache_key_changes_with_trt_gpu_profile_and_quantization():
    from eegsine.export.tensorrt import TRTConfig, engine_key

    c = classifier_contract(1, 8, 10, max_batch=8)
    ident = {"tensorrt": "10.13.0", "gpu": "NVIDIA H100", "compute_capability": "9.0"}
    q = Int8Config().to_dict()
    base = engine_key("abc", c, q, TRTConfig(), ident)
    assert base == engine_key("abc", c, q, TRTConfig(), dict(ident))
    variants = [engine_key("abc", c, q, TRTConfig(), {**ident, "tensorrt": "11.0.0"}),
                engine_key("abc", c, q, TRTConfig(), {**ident, "gpu": "NVIDIA L4"}),
                engine_key("abc", classifier_contract(1, 8, 10, max_batch=16), q, TRTConfig(), ident),
                engine_key("abc", c, Int8Config(calibrate_method="entropy").to_dict(), TRTConfig(), ident),
                engine_key("abd", c, q, TRTConfig(), ident),
                engine_key("abc", c, q, TRTConfig(fp16=False), ident)]
    assert len({base, *variants}) == 7


def test_fp16_rewrite_for_strongly_typed_build_keeps_qdq_fp32(tmp_path):
    """TensorRT's strongly typed FP16 path: float layers become FP16 in the graph, Q/DQ stay FP32."""
    from eegsine.export.tensorrt import _fp16_graph

    src = h.eeg_bundle() / "unet.int8.onnx"
    out = _fp16_graph(src, tmp_path / "fp16.onnx")
    m = onnx.load(str(out))
    conv_in = next(n for n in m.graph.node if n.op_type == "Conv" and "conv_in" in n.name)
    inits = {i.name: i for i in m.graph.initializer}
    assert inits[conv_in.input[1]].data_type == TensorProto.FLOAT16  # kept-float layer now runs in FP16
    scales = [inits[n.input[1]] for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits]
    assert scales and all(s.data_type == TensorProto.FLOAT for s in scales)
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # I/O types unchanged
    c = ExportContract.from_dict(_manifest(h.eeg_bundle())["models"]["unet"]["contract"])
    feeds = c.sample_inputs("opt", seed=3)
    ref = ort_session(h.eeg_bundle() / "unet.fp32.onnx").run(None, feeds)[0]
    assert sqnr(ref, ort_session(out).run(None, feeds)[0]) > 15.0
    assert check_trt_compatible(out) == []


def test_int8_timestep_limit():
    from eegsine.export.bundle import int8_timestep_limit

    per_t = {999: -1.3, 899: 21.5, 799: 27.6, 99: 37.0}
    assert int8_timestep_limit(per_t, 20.0) == 899
    assert int8_timestep_limit(per_t, 25.0) == 799  # 899 misses 25 dB: INT8 stops below it
    assert int8_timestep_limit({999: 30.0, 99: 10.0}, 20.0) == -1  # bad at low t: INT8 nowhere
    assert int8_timestep_limit(per_t, 0.0) == 999  # 0 disables the fallback


def test_int8_generation_uses_fp32_unet_above_the_measured_limit():
    from eegsine.runtime import EEGToImage

    m = _manifest(h.eeg_bundle())
    limit = m["generation"]["int8_unet_max_timestep"]
    per_t = m["models"]["unet"]["quantization"]["sqnr_db_per_timestep"]
    assert all(v >= 20.0 for t, v in per_t.items() if int(t) <= limit)
    g = EEGToImage(h.eeg_bundle(), "int8")
    assert g.unet_precision(limit) == "int8"
    assert g.unet_precision(limit + 1) == "fp32"
    assert EEGToImage(h.eeg_bundle(), "fp32").unet_precision(limit + 1) == "fp32"
