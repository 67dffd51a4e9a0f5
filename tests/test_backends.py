"""Issue #28: OpenVINO as the runtime's peer backend, the same gates per backend, and the per-host choice.

* the OpenVINO session is built against the traps the issue measured (bf16 default precision, pinned threads);
* ``eegsine-verify --backend openvino`` runs the same gates, its record names the backend and proves files for
  that backend only; OpenVINO FP32 equals ORT FP32 within the FP32 gate, INT8 files pass their gates too;
* :func:`eegsine.runtime.tuning.choose` on fake timings: a failing combination is never chosen however fast,
  ties go to the simpler default, a record of another host or of changed files is ignored;
* :class:`Bundle` runs this host's recorded choice by default, and an explicit argument overrides it.
"""
from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import export_helpers as h
from eegsine.errors import UserError
from eegsine.runtime import Bundle, EEGDecoder, EEGToImage, ImageClassifier
from eegsine.runtime import backends as be
from eegsine.runtime.isa import this_host
from eegsine.runtime.records import RECORDS, append_record, load_records, proven_classes
from eegsine.runtime.tuning import TUNE_KIND, Candidate, choose, tuned_candidates
from eegsine.runtime.verify import (DeviceVerifyConfig, combination_passed, sqnr, tune_on_device,
                                    verify_on_device)

pytest.importorskip("openvino")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / RECORDS).unlink()  # no records: the runtime's default, unless the test writes some
    return dst


def _images(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, 8, 8), dtype=np.float32)


# -- the OpenVINO session ----------------------------------------------------------------------------------
def test_openvino_session_guards_the_traps():
    b = Bundle(h.clf_bundle(), threads=1, backend="openvino")
    sess = b.session("classifier", "fp32")
    assert sess.backend == "openvino" and sess.input_names == ["images"] and sess.output_names == ["logits"]
    # f32, not the bf16 OpenVINO picks by default on AVX-512/AMX hosts; unpinned; the thread count honoured
    assert str(sess.config("INFERENCE_PRECISION_HINT")) in ("<Type: 'float32'>", "f32")
    assert sess.config("ENABLE_CPU_PINNING") is False
    assert int(sess.config("INFERENCE_NUM_THREADS")) == 1
    assert "LATENCY" in str(sess.config("PERFORMANCE_HINT"))


def test_openvino_fp32_equals_ort_within_the_gate_and_int8_too():
    x = _images()
    for p, limit in (("fp32", DeviceVerifyConfig().min_sqnr_fp32_db),
                     ("int8", DeviceVerifyConfig().min_sqnr_classifier_db)):
        ort = ImageClassifier(h.clf_bundle(), p, threads=1, backend="ort")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ov = ImageClassifier(h.clf_bundle(), p, threads=1, backend="openvino")
        # the export's record proves the INT8 file on ORT only: OpenVINO's INT8 is not proven until verified there
        assert [str(w.message).count("with openvino") for w in caught] == ([1] if p == "int8" else []), p
        assert sqnr(ort.scores(x), ov.scores(x)) >= limit, p
        assert ort.bundle.session("classifier", p).backend == "ort"
        assert ov.bundle.session("classifier", p).backend == "openvino"


def test_backend_arguments_are_checked():
    with pytest.raises(UserError, match="backend must be one of auto, ort, openvino"):
        Bundle(h.clf_bundle(), backend="tensorflow")
    b = Bundle(h.clf_bundle(), backend="ort")
    with pytest.raises(UserError, match="backend='openvino' with an open Bundle"):
        ImageClassifier(b, "fp32", backend="openvino")
    assert ImageClassifier(b, "fp32", backend="ort").bundle is b
    with pytest.raises(UserError, match="not auto"):
        verify_on_device(h.clf_bundle(), backend="auto", append=False, log=lambda s: None)


def test_missing_openvino_is_one_line_naming_pip(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    monkeypatch.setattr(be, "_CORE", [])
    with pytest.raises(UserError, match="pip install openvino") as e:
        ImageClassifier(h.clf_bundle(), "fp32", backend="openvino").scores(_images(1))
    assert "\n" not in str(e.value)


# -- the same gates per backend ------------------------------------------------------------------------------
def test_verify_with_openvino_runs_the_same_gates_and_proves_for_openvino_only(tmp_path):
    b = _copy(h.clf_bundle(), tmp_path / "b")
    ort = verify_on_device(b, threads=1, log=lambda s: None)
    ov = verify_on_device(b, threads=1, log=lambda s: None, backend="openvino")
    assert ort["backend"] == "ort" and ov["backend"] == "openvino" and ov["provider"] == "CPU"
    assert [g["gate"] for g in ov["gates"]] == [g["gate"] for g in ort["gates"]]  # the same gates
    assert ov["passed"], [g for g in ov["gates"] if not g["passed"]]
    # FP32 on the two backends: the same numbers to far better than the FP32 gate
    assert ov["models"]["classifier"]["fp32"]["logits_sqnr_db"] >= DeviceVerifyConfig().min_sqnr_fp32_db
    recs = load_records(b)
    sha = json.loads((b / "manifest.json").read_text())["files"]["classifier.int8.onnx"]["sha256"]
    host = this_host()["isa_class"]
    assert proven_classes(recs, sha, "ort") == {host} and proven_classes(recs, sha, "openvino") == {host}
    assert proven_classes(recs[:1], sha, "openvino") == set()  # ORT's record proves nothing for OpenVINO


def test_eeg_bundle_gates_per_backend(tmp_path):
    """Every model file through OpenVINO: FP32 passes the same FP32 gates; each INT8 file is judged by its own
    gates there, and a file failing them (the issue saw the transformer encoder's INT8 at 3.6 dB on OpenVINO)
    is neither proven for OpenVINO nor a candidate, while its ORT proof stands."""
    b = _copy(h.eeg_bundle(), tmp_path / "b")
    ort = verify_on_device(b, threads=1, log=lambda s: None)
    ov = verify_on_device(b, threads=1, log=lambda s: None, backend="openvino")
    manifest = json.loads((b / "manifest.json").read_text())
    for m in ("eeg_encoder", "unet", "vae_decoder"):
        assert combination_passed(ov, m, "fp32"), (m, [g for g in ov["gates"] if g["model"] == m])
        sha = manifest["files"][manifest["models"][m]["files"]["int8"]]["sha256"]
        proven_ov = this_host()["isa_class"] in proven_classes(load_records(b), sha, "openvino")
        assert proven_ov == combination_passed(ov, m, "int8"), m
        assert combination_passed(ort, m, "int8"), m  # the ORT record is unaffected
    # Whether a given INT8 file passes on OpenVINO is the host's fact, not the software's (the bundle's UNet INT8
    # reached 10.3 dB on an AMD EPYC with AVX-512 VNNI and passed on an Intel Xeon with AMX): the record above is
    # judged against the gates either way; each INT8 file gets its own gate result on OpenVINO
    for m in ("eeg_encoder", "unet", "vae_decoder"):
        assert any(g["model"] == m and "int8" in g["gate"] for g in ov["gates"]), m


# -- the choice: fake timings -----------------------------------------------------------------------------------
def C(backend: str, precision: str, threads: int, ms: float, passed: bool = True) -> Candidate:
    return Candidate(backend, precision, threads, ms, passed, 100)


def test_a_failing_combination_is_never_chosen_even_if_fastest():
    cands = [C("ort", "fp32", 1, 1.00), C("openvino", "int8", 1, 0.40, passed=False), C("ort", "int8", 2, 0.80)]
    assert choose(cands) == cands[2]
    assert choose(cands, backend="openvino") is None  # nothing passing there: the caller keeps its default
    assert choose([c for c in cands if not c.passed]) is None


def test_ties_go_to_the_simpler_default():
    # within 3 %: ORT before OpenVINO, FP32 before INT8, fewer threads before more
    assert choose([C("openvino", "fp32", 1, 1.00), C("ort", "fp32", 1, 1.02)]).backend == "ort"
    assert choose([C("ort", "int8", 1, 1.00), C("ort", "fp32", 1, 1.02)]).precision == "fp32"
    assert choose([C("ort", "fp32", 2, 1.00), C("ort", "fp32", 1, 1.02)]).threads == 1
    # beyond the tie the faster one wins
    assert choose([C("openvino", "fp32", 1, 1.00), C("ort", "fp32", 1, 1.10)]).backend == "openvino"
    assert choose([C("openvino", "fp32", 1, 1.00), C("ort", "fp32", 1, 1.02)], tie=0.0).backend == "openvino"


def test_explicit_constraints_and_what_this_host_can_run():
    cands = [C("openvino", "int8", 2, 0.5), C("openvino", "fp32", 1, 0.7), C("ort", "fp32", 1, 0.9),
             C("ort", "int8", 1, 0.8)]
    assert choose(cands) == cands[0]
    assert choose(cands, precision="fp32") == cands[1]
    assert choose(cands, backend="ort") == cands[3]
    assert choose(cands, threads=1) == cands[1]
    assert choose(cands, backends=["ort"]) == cands[3]   # openvino not installed here
    assert choose(cands, max_threads=1) == cands[1]      # this process may use one CPU


def _tune_record(host: dict, files: dict, cands: list[Candidate], model: str = "classifier") -> dict:
    return {"kind": TUNE_KIND, "host": host, "files": files, "gates": [], "passed": True, "passed_files": {},
            "tuning": {model: {"candidates": [c.to_dict() for c in cands], "chosen": None}}}


def test_a_record_of_another_host_or_of_changed_files_is_ignored():
    host = {"isa_class": "x86-amx", "cpu": "Xeon A"}
    files = {"classifier.fp32.onnx": "aa"}
    cands = [C("openvino", "fp32", 1, 0.5)]
    recs = [_tune_record(host, files, cands)]
    assert tuned_candidates(recs, host, "classifier", files) == cands
    assert tuned_candidates(recs, {**host, "cpu": "Xeon B"}, "classifier", files) == []
    assert tuned_candidates(recs, {**host, "isa_class": "x86-avx2"}, "classifier", files) == []  # e.g. emulated
    assert tuned_candidates(recs, host, "classifier", {"classifier.fp32.onnx": "bb"}) == []
    assert tuned_candidates(recs, host, "unet", files) == []
    newer = [C("ort", "fp32", 2, 0.4)]
    assert tuned_candidates(recs + [_tune_record(host, files, newer)], host, "classifier", files) == newer


def _bundle_files(b: Path, model: str) -> dict[str, str]:
    m = json.loads((b / "manifest.json").read_text())
    return {rel: m["files"][rel]["sha256"] for rel in m["models"][model]["files"].values()}


def test_the_runtime_runs_this_hosts_recorded_choice_and_explicit_arguments_override(tmp_path):
    b = _copy(h.clf_bundle(), tmp_path / "b")
    assert Bundle(b).plan("classifier") == ("ort", "fp32", None)  # no record: today's default
    cands = [C("openvino", "fp32", 1, 0.5), C("ort", "fp32", 1, 0.9), C("ort", "int8", 1, 0.3, passed=False)]
    other = {**this_host(), "cpu": this_host()["cpu"] + " (another)"}
    append_record(b, _tune_record(other, _bundle_files(b, "classifier"), [C("ort", "fp32", 1, 0.1)]))
    assert Bundle(b).plan("classifier") == ("ort", "fp32", None)  # another host's record: ignored
    append_record(b, _tune_record(this_host(), _bundle_files(b, "classifier"), cands))
    clf = ImageClassifier(b)
    assert clf.precision == "fp32" and clf.bundle.plan("classifier") == ("openvino", "fp32", 1)
    x = _images(2)
    clf.scores(x)
    assert clf.bundle.session("classifier", "fp32").backend == "openvino"
    assert ImageClassifier(b, backend="ort").bundle.plan("classifier") == ("ort", "fp32", 1)
    assert ImageClassifier(b, threads=2).bundle.plan("classifier") == ("ort", "fp32", 2)  # none timed at 2
    assert ImageClassifier(b, providers=["CPUExecutionProvider"]).bundle.plan("classifier")[0] == "ort"
    assert Bundle(b, backend="ort").plan("classifier", "int8") == ("ort", "int8", None)  # no INT8 timing passed
    assert not Bundle(b).tuned("classifier")[2].passed  # the failing INT8 stays a record, never the choice


def test_tune_records_the_fastest_passing_combination_and_the_runtime_uses_it(tmp_path):
    b = _copy(h.clf_bundle(), tmp_path / "b")
    cfg = DeviceVerifyConfig(tune_calls=8, tune_max_seconds=5.0)
    verified, rec = tune_on_device(b, cfg, threads=[1], log=lambda s: None)
    assert sorted(verified) == sorted(be.available_backends())
    recs = load_records(b)
    assert [r.get("backend") for r in recs[:-1]] == list(verified) and recs[-1]["kind"] == TUNE_KIND
    cands = [Candidate.from_dict(c) for c in rec["tuning"]["classifier"]["candidates"]]
    combos = {(c.backend, c.precision, c.threads) for c in cands}
    assert combos == {(bk, p, 1) for bk in verified for p in ("fp32", "int8")}
    assert all(c.calls >= 5 and c.p50_ms > 0 for c in cands)
    chosen = Candidate.from_dict(rec["tuning"]["classifier"]["chosen"])
    assert chosen == choose(cands) and chosen.passed
    assert Bundle(b).plan("classifier") == (chosen.backend, chosen.precision, chosen.threads)
    sha = json.loads((b / "manifest.json").read_text())["files"]["classifier.int8.onnx"]["sha256"]
    assert proven_classes(recs[-1:], sha, chosen.backend) == set()  # the tune record itself proves nothing


def test_every_high_level_class_takes_backend():
    b = h.eeg_bundle()
    for cls in (EEGDecoder, EEGToImage):
        obj = cls(b, "fp32", threads=1, backend="openvino")
        assert obj.bundle.backend == "openvino"
    dec = EEGDecoder(b, "fp32", threads=1, backend="openvino")
    ref = EEGDecoder(b, "fp32", threads=1, backend="ort")
    x = np.random.default_rng(1).standard_normal((3, h.N_CHANS, h.N_TIMES)).astype(np.float32)
    assert sqnr(ref.embed(x), dec.embed(x)) >= DeviceVerifyConfig().min_sqnr_fp32_db


def test_verify_command_takes_backend_and_tune(tmp_path, capsys):
    from eegsine.commands.verify import main

    b = _copy(h.clf_bundle(), tmp_path / "b")
    assert main([str(b), "--backend", "openvino", "--threads", "1", "--no-record"]) == 0
    out = capsys.readouterr().out
    assert "backend openvino on CPU" in out and "overall: PASSED" in out and not (b / RECORDS).exists()
    assert main([str(b), "--tune", "--threads", "1", "--tune-calls", "5", "--backend", "ort"]) == 0
    out = capsys.readouterr().out
    assert out.count("<- chosen") == 1 and "openvino" not in out.split("tuned on")[1]  # --backend limits the tune
    kinds = [r.get("kind", r.get("backend")) for r in load_records(b)]
    assert kinds == ["ort", TUNE_KIND]
    assert main([str(b), "--tune-tie-pct", "100"]) == 2  # a tie of 100 % would make every timing a tie
