"""decision.onnx: the EEG encoder + prototype head as one graph a device without Python runs (ORT's C/C++/C#/Java
APIs, BrainFlow's MLModel), proven equal to the numpy decoder at export and by eegsine-verify."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import export_helpers as h
from eegsine.errors import UserError
from eegsine.export.bundle import prove_decision
from eegsine.export.decision import build_decision, downgrade
from eegsine.io import sha256_file
from eegsine.runtime import Bundle, EEGDecoder
from eegsine.runtime.contracts import DECISION_OPSET
from eegsine.runtime.recordings import import_brainflow
from eegsine.runtime.verify import DeviceVerifyConfig, combination_passed, golden_eeg, render, verify_on_device

TOL = DeviceVerifyConfig().max_decision_prob_diff  # why 1e-4 is an fp32 bound: the field's comment


def _golden() -> tuple[Path, np.ndarray]:
    b = h.eeg_bundle()
    return b, golden_eeg(Bundle(b, check_proven=False))


def test_every_precision_of_the_encoder_gets_a_decision_file_brainflow_can_load():
    b, x = _golden()
    m = json.loads((b / "manifest.json").read_text())
    d, enc = m["models"]["decision"], m["models"]["eeg_encoder"]
    assert d["built_from"] == enc["files"] and set(d["files"]) == {"fp32", "int8"}
    assert d["classes"] == enc["prototypes"]["classes"] and d["scale"] == enc["prototypes"]["scale"]
    for p, rel in d["files"].items():
        assert m["files"][rel]["sha256"] == sha256_file(b / rel)
        model = onnx.load(str(b / rel))
        # what BrainFlow 5.23's ONNX Runtime 1.11 loads: opset <= 16, IR <= 8, one input of fixed dims (it builds
        # its tensor from them), one float output it picks without an output_name
        assert model.ir_version <= 8 and {o.domain: o.version for o in model.opset_import}[""] == DECISION_OPSET
        for n in model.graph.node:
            onnx.defs.get_schema(n.op_type, DECISION_OPSET, n.domain)  # raises for an op newer than opset 16
        (inp,), (out,) = model.graph.input, model.graph.output
        assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, h.N_CHANS, h.N_TIMES]
        assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and out.name == "probabilities"
        assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, len(d["classes"])]
        proof = d["proof"][p]
        assert proof["n"] == len(x) > 0 and proof["prob_max_abs_diff"] <= TOL and proof["label_agreement"] == 100.0
    assert "LayerNormalization" not in d["graph"]["fp32"]["ops"]  # the transformer encoder's, written in opset 16


def test_brainflow_mlmodel_decides_as_the_numpy_decoder():
    """BrainFlow's MLModel (ONNX_CLASSIFIER: prepare/predict/release) on decision.fp32.onnx, fed as a device
    feeds it (the epoch flattened row-major, float64): each trial's probabilities equal EEGDecoder's to
    TOL = 1e-4, an fp32 bound: |dp| <= scale / 4 * |d(squared distance)|, and float32 moves a squared distance
    between unit vectors by ~1e-6 at most (ORT's batch-1 vs batched kernels, float32 sums), 7.5e-5 at the
    largest fitted scale (300); BrainFlow's own ORT (1.11) runs the fp32 graph, not ours."""
    b, x = _golden()
    dec = EEGDecoder(b, "fp32")
    ref = dec.decode(x)
    want = dec.probabilities(ref.embeddings)
    # the check can see a wrong head: the probabilities are far from uniform at this bundle's scale
    assert np.ptp(want, axis=1).max() > 100 * TOL
    bf = import_brainflow()
    params = bf.BrainFlowModelParams(bf.BrainFlowMetrics.USER_DEFINED, bf.BrainFlowClassifiers.ONNX_CLASSIFIER)
    params.file = str(b / "decision.fp32.onnx")
    model = bf.MLModel(params)
    model.prepare()
    try:
        got = np.stack([model.predict(np.ascontiguousarray(e.ravel(), np.float64)) for e in x])
    finally:
        model.release()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    np.testing.assert_array_equal(got.argmax(1), ref.labels)
    np.testing.assert_allclose(got[np.arange(len(x)), ref.labels], ref.confidence, rtol=0, atol=TOL)


def _wrong_decision(tmp_path: Path, scale_factor: float) -> Path:
    """A copy of the EEG bundle whose decision.fp32.onnx folds in another scale (hashes updated: only the gate can
    tell)."""
    b = shutil.copytree(h.eeg_bundle(), tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    pro = m["models"]["eeg_encoder"]["prototypes"]
    bundle = Bundle(b, check_proven=False)
    with np.load(b / pro["file"]) as z:
        protos = z["prototypes"]
    build_decision(b / "eeg_encoder.fp32.onnx", b / "decision.fp32.onnx", bundle.contract("decision"), protos,
                   pro["scale"] * scale_factor)
    m["files"]["decision.fp32.onnx"]["sha256"] = sha256_file(b / "decision.fp32.onnx")
    m["files"]["decision.fp32.onnx"]["bytes"] = (b / "decision.fp32.onnx").stat().st_size
    (b / "manifest.json").write_text(json.dumps(m))
    return b


def test_the_gates_refuse_a_decision_file_that_decides_otherwise(tmp_path):
    """The export's gate refuses a decision.fp32.onnx with another scale folded in; eegsine-verify records the failing
    file per precision, and the encoder stays proven."""
    b = _wrong_decision(tmp_path, 5.0)
    with pytest.raises(UserError, match=r"decision fp32 max \|probability - numpy decoder's\| \(n=\d+\)"):
        prove_decision(b, log=lambda s: None)
    rec = verify_on_device(b, append=False, log=lambda s: None)
    failed = {g["gate"] for g in rec["gates"] if not g["passed"]}
    assert failed and all(g.startswith("decision fp32") for g in failed), failed
    fig = rec["models"]["decision"]
    assert fig["fp32"]["prob_max_abs_diff"] > TOL >= fig["int8"]["prob_max_abs_diff"]
    assert "decision.fp32.onnx" not in rec["passed_files"] and "eeg_encoder.int8.onnx" in rec["passed_files"]
    assert f"decision.onnx int8 vs the numpy decoder on {fig['int8']['n']} golden trials" in render(rec)
    # --tune judges each file by its own precision's gates (INT8 by all of the model's, as its proof does)
    assert all(g["precision"] in ("fp32", "int8") for g in rec["gates"] if g["model"] == "decision")
    assert not combination_passed(rec, "decision", "fp32") and not combination_passed(rec, "decision", "int8")
    good = verify_on_device(h.eeg_bundle(), append=False, log=lambda s: None)
    assert combination_passed(good, "decision", "fp32") and combination_passed(good, "decision", "int8")


@pytest.mark.parametrize("arch,center", [("lstm", None), ("eegnet", None), ("spatial", None),
                                         ("spatial", "detrend")])  # the tiny preset's: a ReduceMean without axes
def test_every_encoder_kind_composes_into_an_opset16_decision(tmp_path, arch, center):
    """The downgrade is not the transformer's alone: each encoder kind, exported at the default opset (18), becomes
    an opset-16 decision graph whose probabilities are the numpy head's on that encoder's embeddings."""
    import onnxruntime as ort
    import torch

    from eegsine.export.onnx_export import export_onnx
    from eegsine.models.eeg_encoder import EEGEncoderConfig, build_encoder
    from eegsine.runtime.contracts import decision_contract, eeg_encoder_contract

    class Embed(torch.nn.Module):  # the contract's (tokens, embedding) from the encoder alone
        def __init__(self, enc):
            super().__init__()
            self.enc = enc

        def forward(self, eeg):
            z = self.enc(eeg)
            z = z[0] if isinstance(z, tuple) else z
            return z[:, None, :], z

    torch.manual_seed(0)
    extra = {"center": center} if center else {}
    enc = build_encoder(EEGEncoderConfig(arch=arch, n_chans=4, n_times=32, sfreq=64.0, emb_dim=8, dropout=0.0,
                                         **extra)).eval()
    export_onnx(Embed(enc), eeg_encoder_contract(4, 32, 8, 1, 8, max_batch=4), tmp_path / "enc.onnx")
    rng = np.random.default_rng(0)
    protos = rng.standard_normal((3, 8)).astype(np.float32)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    build_decision(tmp_path / "enc.onnx", tmp_path / "dec.onnx", decision_contract(4, 32, 3), protos, 20.0)
    x = rng.standard_normal((5, 4, 32)).astype(np.float32)
    z = ort.InferenceSession(str(tmp_path / "enc.onnx")).run(["embedding"], {"eeg": x})[0].astype(np.float64)
    logits = -10.0 * ((z[:, None] - protos[None]) ** 2).sum(-1)
    want = np.exp(logits - logits.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    sess = ort.InferenceSession(str(tmp_path / "dec.onnx"))
    got = np.concatenate([sess.run(None, {"eeg": e[None]})[0] for e in x])
    assert {o.domain: o.version for o in onnx.load(str(tmp_path / "dec.onnx")).opset_import}[""] == DECISION_OPSET
    assert np.ptp(want, axis=1).max() > 100 * TOL
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_downgrade_refuses_an_operator_with_no_opset16_form():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.INT32, [2])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.INT32, [2])
    g = helper.make_graph([helper.make_node("BitwiseNot", ["x"], ["y"], name="bn")], "g", [x], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(UserError, match=r"BitwiseNot node 'bn' \(opset 18\) has no opset-16 form"):
        downgrade(model)


@pytest.mark.parametrize("noop", [0, 1])
def test_downgrade_keeps_a_reduce_without_axes(noop):
    """Opset 18's Reduce* with no axes input reduces every axis (or, noop_with_empty_axes=1, passes x through):
    the opset-16 graph computes the same."""
    import onnxruntime as ort

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    node = helper.make_node("ReduceMean", ["x"], ["y"], name="rm", keepdims=1, noop_with_empty_axes=noop)
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    feed = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    want = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    downgrade(model)
    assert {o.domain: o.version for o in model.opset_import}[""] == DECISION_OPSET
    np.testing.assert_array_equal(ort.InferenceSession(model.SerializeToString()).run(None, feed)[0], want)
