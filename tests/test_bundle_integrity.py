"""A bundle is trusted only as far as it is checked: manifest schema, the bytes ORT loads, the graph vs its contract."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import export_helpers as h
from eegsine.errors import UserError
from eegsine.runtime import Bundle, EEGToImage, SineClassifier


def _copy(src: Path, dst: Path, mutate=None) -> Path:
    shutil.copytree(src, dst)
    if mutate is not None:
        m = json.loads((dst / "manifest.json").read_text())
        mutate(m)
        (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def _set(path: str, value):
    def mutate(m):
        keys = path.split("/")
        d = m
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return mutate


def _first_file(m) -> str:
    return next(iter(m["files"]))


MANIFEST_CASES = [
    ("sha_not_hex", lambda m: m["files"][_first_file(m)].update(sha256="xyz"), r"sha256 must be 64 lowercase hex"),
    ("bytes_negative", lambda m: m["files"][_first_file(m)].update(bytes=-1), r"bytes must be a non-negative integer"),
    ("models_not_object", _set("models", []), r"'models' must be a non-empty object"),
    ("unknown_model", lambda m: m["models"].update(gan=m["models"]["unet"]), r"unknown model 'gan'"),
    ("wrong_contract", lambda m: m["models"]["unet"].update(contract=m["models"]["vae_decoder"]["contract"]),
     r"models\.unet\.contract is the contract of 'vae_decoder'"),
    ("unknown_precision", lambda m: m["models"]["unet"]["files"].update(fp16="unet.fp32.onnx"),
     r"unknown precision 'fp16'"),
    ("unlisted_file", lambda m: m["models"]["unet"]["files"].update(int8="other.onnx"), r"not listed under 'files'"),
    ("guidance_string", _set("generation/guidance", "2"), r"generation\.guidance must be a finite number"),
    ("steps_zero", _set("generation/steps", 0), r"generation\.steps must be an integer >= 1"),
    ("uncond_wrong_size", _set("generation/uncond_tokens", [0.0, 1.0]), r"uncond_tokens has 2 values"),
    ("uncond_nan", _set("generation/uncond_tokens", ["nan"]),
     r"uncond_tokens must be null or a list of finite numbers"),
    ("unknown_target", _set("models/unet/quantization/target", "avx2"), r"not a known INT8 target"),
    ("golden_unlisted", _set("golden/unet/file", "golden/x.npz"), r"golden\.unet\.file must name a file"),
    ("decision_from_another_file", _set("models/decision/built_from/fp32", "unet.fp32.onnx"),
     r"models\.decision: built_from\.fp32 names 'unet\.fp32\.onnx', the encoder's fp32 file is"),
]


@pytest.mark.parametrize("name,mutate,msg", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_malformed_manifest_is_a_one_line_error(tmp_path, name, mutate, msg):
    b = _copy(h.eeg_bundle(), tmp_path / "b", mutate)
    with pytest.raises(UserError, match=msg) as e:
        EEGToImage(b, "fp32")
    assert "\n" not in str(e.value)


def test_file_swapped_after_opening_is_refused(tmp_path):
    b = _copy(h.clf_bundle(), tmp_path / "b")
    clf = SineClassifier(b, "fp32")  # hashes checked here ...
    shutil.copy(h.clf_bundle() / "classifier.int8.onnx", b / "classifier.fp32.onnx")  # ... then the file changes
    with pytest.raises(UserError, match=r"classifier\.fp32\.onnx: sha256 .* changed since the bundle was opened"):
        clf.predict(np.full((1, 1, 8, 8), 0.5, np.float32))


def test_contract_that_does_not_fit_the_graph_is_refused(tmp_path):
    def rename(m):
        m["models"]["classifier"]["contract"]["inputs"][0]["name"] = "pixels"
    b = _copy(h.clf_bundle(), tmp_path / "b", rename)
    with pytest.raises(UserError, match=r"graph has no input 'pixels'"):
        Bundle(b).session("classifier", "fp32")

    def rank(m):
        m["models"]["classifier"]["contract"]["outputs"][0]["shape"].append(1)
    b2 = _copy(h.clf_bundle(), tmp_path / "b2", rank)
    with pytest.raises(UserError, match=r"output 'logits' is float32 of rank 2 in the graph, "
                                        r"the contract says float32 of rank 3"):
        Bundle(b2).session("classifier", "fp32")
