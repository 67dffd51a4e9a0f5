"""INT8 targets, the bundle's golden set, ``eegsine-verify`` and the runtime's proof check.

The INT8 tests judge the quantization scheme, not this host: the emulated-CPU tests run
ONNX Runtime under ``qemu-x86_64 -cpu Haswell-v4`` (AVX2, no AVX-512 / VNNI), whose CPUID
makes ORT pick its non-VNNI int8 kernels whatever the real CPU is (`make qemu` installs
Debian's qemu-user). Both ISA classes are thus exercised on every x86 machine.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import export_helpers as h
from eegsine.runtime.records import RECORDS, load_records
from eegsine.runtime.verify import load_npz, verify_on_device
from eegsine.errors import UserError
from eegsine.export.quantize import Int8Config, max_abs_int8_weight
from eegsine.runtime.isa import SATURATING_CLASSES, this_host
from eegsine.runtime import SineClassifier

QEMU = shutil.which("qemu-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None or platform.machine() != "x86_64",
                                reason="needs qemu-user on x86_64 (`make qemu` installs Debian's qemu-user)")
EMULATED_CPU = "Haswell-v4"  # AVX2, FMA; no AVX-512, no VNNI

# a process that cannot import anything the runtime must not need
TORCH_FREE = (
    "import sys, importlib.abc\n"
    "BLOCK = {'torch', 'onnx', 'onnxscript', 'scipy', 'sklearn', 'diffusers', 'safetensors', 'torchattacks',\n"
    "         'transformers', 'matplotlib', 'accelerate', 'peft', 'torchmetrics', 'triton'}\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name.split('.')[0] in BLOCK:\n"
    "            raise ImportError('blocked in the torch-free test: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
    "from eegsine.commands.verify import main\n"
    "sys.exit(main(sys.argv[1:]))\n")


def _verify(bundle: Path, *args: str, emulate: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", TORCH_FREE, str(bundle), "--threads", "1", *args]
    if emulate:
        cmd = [QEMU, "-cpu", EMULATED_CPU] + cmd
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def _copy(src: Path, dst: Path, keep_records: bool = True) -> Path:
    shutil.copytree(src, dst)
    if not keep_records:
        (dst / RECORDS).unlink()
    return dst


def _int8_sqnr(rec: dict, model: str) -> float:
    return min(v for k, v in rec["models"][model]["int8"].items() if k.endswith("_sqnr_db"))


# -- targets ----------------------------------------------------------------------------------------
def test_int8_target_sets_the_weight_range_and_is_recorded():
    portable = h.clf_bundle()
    full = h.clf_bundle_target("x86-vnni")
    assert max_abs_int8_weight(onnx.load(str(portable / "classifier.int8.onnx"))) <= 64
    assert max_abs_int8_weight(onnx.load(str(full / "classifier.int8.onnx"))) > 64
    for b, target in ((portable, "portable"), (full, "x86-vnni")):
        q = json.loads((b / "manifest.json").read_text())["models"]["classifier"]["quantization"]
        assert q["target"] == target and q["scheme"]["target"] == target
        assert q["scheme"]["reduce_range"] is (target == "portable")


def test_int8_config_versions_and_tensorrt_constraints():
    assert Int8Config().target == "portable"
    # v1 = full range
    assert Int8Config.from_dict({"kind": "int8", "version": 1, "act_type": "u8"}).target == "x86-vnni"
    with pytest.raises(UserError, match="tensorrt.*s8 activations"):
        Int8Config(target="tensorrt", act_type="u8")
    with pytest.raises(UserError, match="target"):
        Int8Config.from_dict({"kind": "int8", "version": 2, "target": "avx2"})


# -- golden set and the build host's record ------------------------------------------------------------
def test_golden_set_is_hashed_and_holds_real_labelled_and_adversarial_images():
    from eegsine.data import load_images

    b = h.clf_bundle()
    m = json.loads((b / "manifest.json").read_text())
    ev = m["golden"]["classifier_eval"]
    assert ev["file"] in m["files"] and m["golden"]["classifier"]["file"] in m["files"]
    arr = load_npz(b / ev["file"])
    ds = load_images("digits")
    n = min(500, len(ds.test_x))
    assert ev["n"] == n and np.array_equal(arr["labels"], ds.test_y[:n])
    assert np.array_equal(arr["images"], ds.test_x[:n])
    delta = np.abs(arr["adv_images"] - arr["images"]).max()
    assert 0.0 < delta <= ev["eps"] + 1e-6 and arr["adv_images"].min() >= 0.0 and arr["adv_images"].max() <= 1.0
    assert ev["torch_adv_accuracy"] < ev["torch_clean_accuracy"] - 10  # the attack is real
    g = load_npz(b / m["golden"]["classifier"]["file"])
    assert g["feed0.in.images"].shape[0] == 8 and g["feed0.out.logits"].shape == (8, 10)


def test_export_proves_int8_on_the_build_host():
    for b in (h.clf_bundle(), h.eeg_bundle()):
        m = json.loads((b / "manifest.json").read_text())
        (rec,) = load_records(b)
        assert rec["passed"] and rec["host"]["isa_class"] == this_host()["isa_class"]
        for model, entry in m["models"].items():
            assert rec["files"][entry["files"]["int8"]] == m["files"][entry["files"]["int8"]]["sha256"]
            if model == "decision":  # judged against the numpy decoder on the same encoder file, not torch
                assert rec["models"][model]["int8"]["prob_max_abs_diff"] <= rec["config"]["max_decision_prob_diff"]
                continue
            # the golden check (vs torch) and the export's own check (vs ORT FP32) measure the same error
            main = entry["contract"]["outputs"][0]["name"]
            assert rec["models"][model]["int8"][f"{main}_sqnr_db"] == pytest.approx(
                entry["quantization"][f"{main}_sqnr_db"], abs=0.5), model


# -- eegsine-verify ---------------------------------------------------------------------------------
def test_eegsine_verify_runs_torch_free_and_appends_its_record(tmp_path):
    b = _copy(h.clf_bundle(), tmp_path / "b")
    r = _verify(b)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "overall: PASSED" in r.stdout and f"ISA class {this_host()['isa_class']}" in r.stdout
    recs = load_records(b)
    assert len(recs) == 2  # the export's + this one
    new = recs[-1]
    assert new["provider"] == "CPUExecutionProvider" and new["host"]["onnxruntime"] == this_host()["onnxruntime"]
    assert new["models"]["classifier"]["fp32"]["logits_sqnr_db"] > 60  # ORT FP32 vs the torch outputs
    task = new["classifier_task"]
    assert task["n"] == 360 and task["fp32"]["clean"] == pytest.approx(task["torch"]["clean"], abs=0.3)
    assert {g["gate"] for g in new["gates"]} >= {"classifier int8 SQNR vs torch", "classifier int8 clean accuracy drop",
                                                 "classifier int8 transfer_pgd accuracy drop"}


def test_eegsine_verify_gate_failure_exits_1_and_is_recorded(tmp_path):
    b = _copy(h.clf_bundle(), tmp_path / "b", keep_records=False)
    r = _verify(b, "--min-sqnr-classifier-db", "99")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "FAIL classifier int8 SQNR vs torch" in r.stdout and "overall: FAILED" in r.stdout
    (rec,) = load_records(b)
    assert rec["passed"] is False
    with pytest.warns(RuntimeWarning, match="no passing verification"):  # a failed record proves nothing
        SineClassifier(b, "int8").predict(np.full((2, 1, 8, 8), 0.5, np.float32))


@pytest.mark.parametrize("case", ["not_a_bundle", "no_int8", "tampered_golden"])
def test_eegsine_verify_bad_input_is_one_line_exit_2(tmp_path, case):
    from eegsine.commands.verify import main

    if case == "not_a_bundle":
        b, msg = tmp_path, "not an eegsine bundle"
    elif case == "no_int8":
        b = _copy(h.clf_bundle(), tmp_path / "b")
        m = json.loads((b / "manifest.json").read_text())
        del m["models"]["classifier"]["files"]["int8"]
        (b / "manifest.json").write_text(json.dumps(m))
        msg = "has no INT8 model"
    else:
        b = _copy(h.clf_bundle(), tmp_path / "b")
        with open(b / "golden" / "classifier_eval.npz", "ab") as fh:
            fh.write(b"x")
        msg = r"classifier_eval\.npz: sha256 .* does not match"
    with pytest.raises(UserError, match=msg):
        verify_on_device(b, log=lambda s: None)
    assert main([str(b)]) == 2


def test_eegsine_verify_subcommand_matches_the_script(tmp_path, capsys):
    from eegsine.commands.main import main

    b = _copy(h.clf_bundle(), tmp_path / "b")
    assert main(["--threads", "1", "verify", str(b), "--no-record"]) == 0
    assert "overall: PASSED" in capsys.readouterr().out
    assert len(load_records(b)) == 1  # --no-record appended nothing


# -- the runtime knows where it was proven ------------------------------------------------------------
def _records_elsewhere(b: Path, isa: str) -> None:
    data = json.loads((b / RECORDS).read_text())
    for r in data["records"]:
        r["host"]["isa_class"] = isa
    (b / RECORDS).write_text(json.dumps(data))


def test_runtime_warns_once_on_an_unproven_isa_and_strict_refuses(tmp_path, recwarn):
    b = _copy(h.clf_bundle(), tmp_path / "b")
    other = "arm-dotprod" if this_host()["isa_class"] != "arm-dotprod" else "x86-vnni"
    _records_elsewhere(b, other)
    x = np.full((2, 1, 8, 8), 0.5, np.float32)
    SineClassifier(b, "fp32").predict(x)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]  # FP32 needs no proof
    clf = SineClassifier(b, "int8")
    clf.predict(x)
    clf.predict(x)
    warned = [str(w.message) for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert len(warned) == 1 and f"eegsine-verify {b}" in warned[0] and f"proven on: {other}" in warned[0]
    with pytest.raises(UserError, match=f"ISA class {this_host()['isa_class']}"):
        SineClassifier(b, "int8", strict=True).predict(x)
    # after verifying here, the same bundle loads strictly
    assert verify_on_device(b, log=lambda s: None)["passed"]
    SineClassifier(b, "int8", strict=True).predict(x)


def test_strict_refuses_at_construction_not_at_the_first_call(tmp_path):
    """On a device the refusal comes at start-up: no decoder object exists for an unproven INT8 file."""
    from eegsine.runtime import EEGToImage

    b = _copy(h.clf_bundle(), tmp_path / "b", keep_records=False)
    with pytest.raises(UserError, match="proven on: none"):
        SineClassifier(b, "int8", strict=True)
    SineClassifier(b, "fp32", strict=True)  # FP32 needs no proof
    e = _copy(h.eeg_bundle(), tmp_path / "e", keep_records=False)
    with pytest.raises(UserError, match="eeg_encoder"):
        EEGToImage(e, "int8", strict=True)


def test_a_failing_model_leaves_the_models_that_passed_proven(tmp_path):
    """The VAE fails its gate, the encoder passes: the record says which file is proven, and a strict decoder
    that uses only the encoder in INT8 starts (the VAE in INT8 is refused, at construction)."""
    from eegsine.runtime import EEGToImage
    from eegsine.runtime.verify import DeviceVerifyConfig, render

    b = _copy(h.eeg_bundle(), tmp_path / "b", keep_records=False)
    rec = verify_on_device(b, DeviceVerifyConfig(min_sqnr_vae_db=1000.0), log=lambda s: None)
    files = json.loads((b / "manifest.json").read_text())["models"]
    enc, vae = files["eeg_encoder"]["files"]["int8"], files["vae_decoder"]["files"]["int8"]
    failed = {g["model"] for g in rec["gates"] if not g["passed"]}
    assert not rec["passed"] and failed == {"vae_decoder"}, rec["gates"]
    assert enc in rec["passed_files"] and vae not in rec["passed_files"]
    assert load_records(b)[-1]["passed_files"] == rec["passed_files"]  # stored, and the schema reads it
    assert "proven here despite the failure: " in render(rec) and enc in render(rec)
    fp32 = {"unet": "fp32", "vae_decoder": "fp32"}
    g = EEGToImage(b, "int8", precisions=fp32, strict=True)
    assert g.encode(np.zeros((1, *g.bundle.contract("eeg_encoder").inputs[0].shape[1:]), np.float32)) is not None
    with pytest.raises(UserError, match=f"{vae}: INT8 .* has no passing verification"):
        EEGToImage(b, "int8", precisions={"unet": "fp32"}, strict=True)


def test_eeg_verify_gates_decisions_on_labelled_golden_trials(tmp_path, monkeypatch):
    """An EEG bundle's golden set carries labelled test trials; verify decodes them in FP32 and INT8 and gates the
    label agreement and the accuracy drop (with n). INT8 embeddings that decode other labels fail the gate, and
    only the encoder loses its proof."""
    from eegsine.runtime.decoders import Bundle
    from eegsine.runtime.verify import render

    b = _copy(h.eeg_bundle(), tmp_path / "b", keep_records=False)
    m = json.loads((b / "manifest.json").read_text())
    ev = m["golden"]["eeg_encoder_eval"]
    arrays = load_npz(b / ev["file"])
    assert ev["split"] == "test" and ev["n"] == len(arrays["labels"]) == len(arrays["eeg"]) > 0
    rec = verify_on_device(b, log=lambda s: None)
    t = rec["eeg_task"]
    assert t["n"] == ev["n"] and 0 <= t["label_agreement"] <= 100
    names = [g["gate"] for g in rec["gates"] if g["model"] == "eeg_encoder"]
    assert f"eeg_encoder int8 label agreement with fp32 (n={ev['n']}; 95 % upper bound)" in names
    assert f"eeg_encoder int8 decisions fp32 got right and int8 wrong (n={ev['n']}; 95 % lower bound)" in names
    assert "labelled golden test trials" in render(rec)

    real = Bundle.run

    def other_labels(self, model, feeds, precision="fp32"):  # -z: its nearest prototype is z's farthest
        out = real(self, model, feeds, precision)
        if model == "eeg_encoder" and precision == "int8":
            out = [-o for o in out]
        return out

    monkeypatch.setattr(Bundle, "run", other_labels)
    assert len(m["models"]["eeg_encoder"]["prototypes"]["classes"]) >= 2
    rec = verify_on_device(b, log=lambda s: None)
    agree = next(g for g in rec["gates"] if g["gate"].startswith("eeg_encoder int8 label agreement"))
    assert not agree["passed"] and agree["value"] < 95.0 and agree["measured"] < 50.0, agree
    enc = m["models"]["eeg_encoder"]["files"]["int8"]
    assert not rec["passed"] and enc not in rec["passed_files"]


def test_runtime_names_saturation_for_full_range_weights_on_a_non_vnni_host(tmp_path, monkeypatch):
    import eegsine.runtime.decoders

    fake = dict(this_host(), isa_class="x86-avx2", u8s8_saturates=True)
    monkeypatch.setattr(eegsine.runtime.decoders, "this_host", lambda: fake)  # what the Bundle's check calls
    full = _copy(h.clf_bundle_target("x86-vnni"), tmp_path / "full")
    with pytest.raises(UserError, match="saturate int16 products on x86-avx2.*--target portable"):
        SineClassifier(full, "int8", strict=True).predict(np.full((1, 1, 8, 8), 0.5, np.float32))
    portable = _copy(h.clf_bundle(), tmp_path / "portable")
    with pytest.raises(UserError) as e:
        SineClassifier(portable, "int8", strict=True).predict(np.full((1, 1, 8, 8), 0.5, np.float32))
    assert "saturate" not in str(e.value)  # portable weights do not saturate: only "not verified here"


# -- the same software on a CPU without VNNI (emulated) -----------------------------------------------
@needs_qemu
@pytest.mark.parametrize("which", ["classifier", "eeg"])
def test_portable_int8_is_isa_independent_on_an_emulated_avx2_cpu(tmp_path, which):
    src = h.clf_bundle() if which == "classifier" else h.eeg_bundle()
    b = _copy(src, tmp_path / "b")
    r = _verify(b, emulate=True)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-2000:])
    native, emulated = load_records(b)
    feats = emulated["host"]["int8_features"]
    assert "avx2" in feats and "avx512_vnni" not in feats and "avx512bw" not in feats  # the emulation is real
    # the class of the CPU the process runs on, even on an AMX host whose cpuinfo the emulator passes through
    assert emulated["host"]["isa_class"] == "x86-avx2" and emulated["host"]["u8s8_saturates"]
    for model in native["models"]:
        if model == "decision":  # vs the numpy decoder on the same host, each record: its gates passed
            continue
        # 7-bit weights: the same integer results with and without VNNI, so the same SQNR to rounding
        assert _int8_sqnr(emulated, model) == pytest.approx(_int8_sqnr(native, model), abs=0.05), model
    if which == "classifier":
        assert emulated["classifier_task"]["int8"] == native["classifier_task"]["int8"]


@needs_qemu
def test_full_range_int8_fails_its_gate_on_an_emulated_avx2_cpu(tmp_path):
    b = _copy(h.clf_bundle_target("x86-vnni"), tmp_path / "b")
    r = _verify(b, emulate=True)
    assert r.returncode == 1, (r.stdout[-3000:], r.stderr[-2000:])
    emulated = load_records(b)[-1]
    assert not emulated["passed"]
    gate = next(g for g in emulated["gates"] if g["gate"] == "classifier int8 SQNR vs torch")
    assert not gate["passed"], gate
    portable = load_records(h.clf_bundle())[0]
    assert _int8_sqnr(emulated, "classifier") < _int8_sqnr(portable, "classifier") - 10
    if this_host()["isa_class"] not in SATURATING_CLASSES:  # on a VNNI host the same file passes natively
        assert load_records(b)[0]["passed"]
