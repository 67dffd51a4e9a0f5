"""The bundle manifest's schema, checked before anything in a bundle is used (torch-free).

A manifest is JSON written by ``eegsine export``; a device may receive it from anywhere, so
every field the runtime reads is checked for type and range here, with one-line errors
naming the field: a malformed manifest must never surface as a KeyError or an
onnxruntime traceback deep in a generation loop. Hand-written: the schema is ~60 lines and a
JSON-schema package would be one more dependency for the numpy + onnxruntime runtime.
"""
from __future__ import annotations

import math
import re
from typing import Any

from eegsine.errors import UserError
from eegsine.runtime.contracts import ExportContract
from eegsine.runtime.preprocessing import PreprocessingSpec

MODEL_NAMES = ("eeg_encoder", "unet", "vae_decoder", "classifier")
# built at export from another model's graph, not exported or quantized on their own (not in BundleConfig.int8_models)
DERIVED_MODELS = ("decision",)
PRECISIONS = ("fp32", "int8")
_SHA = re.compile(r"^[0-9a-f]{64}$")


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise UserError(f"{where}: {msg}")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_manifest(m: Any, where: str) -> None:
    """Raise :class:`UserError` naming the first field of ``m`` that the runtime cannot trust."""
    _need(isinstance(m, dict), where, "manifest must be a JSON object")
    files = m.get("files")
    _need(isinstance(files, dict), where, "'files' must map file name -> {sha256, bytes}")
    for rel, f in files.items():
        _need(isinstance(f, dict), where, f"files[{rel!r}] must be an object with sha256 and bytes")
        _need(isinstance(f.get("sha256"), str) and bool(_SHA.match(f["sha256"])), where,
              f"files[{rel!r}].sha256 must be 64 lowercase hex digits, got {f.get('sha256')!r}")
        _need(isinstance(f.get("bytes"), int) and not isinstance(f.get("bytes"), bool) and f["bytes"] >= 0, where,
              f"files[{rel!r}].bytes must be a non-negative integer, got {f.get('bytes')!r}")
    models = m.get("models")
    _need(isinstance(models, dict) and bool(models), where, "'models' must be a non-empty object")
    for name, entry in models.items():
        known = MODEL_NAMES + DERIVED_MODELS
        _need(name in known, where, f"unknown model {name!r} (known: {', '.join(known)})")
        _need(isinstance(entry, dict), where, f"models.{name} must be an object")
        _need(isinstance(entry.get("contract"), dict), where, f"models.{name}.contract must be an object")
        c = ExportContract.from_dict(entry["contract"])
        _need(c.name == name, where, f"models.{name}.contract is the contract of {c.name!r}")
        mf = entry.get("files")
        _need(isinstance(mf, dict) and "fp32" in mf, where, f"models.{name}.files must name at least an fp32 file")
        for prec, rel in mf.items():
            _need(prec in PRECISIONS, where, f"models.{name}.files: unknown precision {prec!r}")
            _need(isinstance(rel, str) and rel in files, where,
                  f"models.{name}.files.{prec} names {rel!r}, which is not listed under 'files'")
        if name == "eeg_encoder":
            _check_eeg_extras(entry, c, files, f"{where}: models.eeg_encoder")
        if name == "decision":
            _check_decision(entry, models, f"{where}: models.decision")
        q = entry.get("quantization")
        if "int8" in mf:
            _need(isinstance(q, dict), where, f"models.{name}.quantization must be an object for an int8 file")
            _need(q.get("target", "x86-vnni") in ("portable", "x86-vnni", "tensorrt"), where,
                  f"models.{name}.quantization.target {q.get('target')!r} is not a known INT8 target")
    gen = m.get("generation")
    if gen is not None:
        _need(isinstance(gen, dict), where, "'generation' must be an object")
        _need(isinstance(gen.get("scheduler", {}), dict), where, "generation.scheduler must be an object")
        _need(_finite(gen.get("guidance", 1.0)) and gen.get("guidance", 1.0) >= 0, where,
              f"generation.guidance must be a finite number >= 0, got {gen.get('guidance')!r}")
        steps = gen.get("steps", 25)
        _need(isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1, where,
              f"generation.steps must be an integer >= 1, got {steps!r}")
        t = gen.get("int8_unet_max_timestep", 0)
        _need(isinstance(t, int) and not isinstance(t, bool), where,
              f"generation.int8_unet_max_timestep must be an integer, got {t!r}")
        u = gen.get("uncond_tokens")
        _need(u is None or (isinstance(u, list) and all(_finite(v) for v in u)), where,
              "generation.uncond_tokens must be null or a list of finite numbers")
        if u is not None and "unet" in models:
            shape = ExportContract.from_dict(models["unet"]["contract"]).shape("encoder_hidden_states", "min")[1:]
            _need(len(u) == math.prod(shape), where,
                  f"generation.uncond_tokens has {len(u)} values, the UNet's tokens need {math.prod(shape)} {shape}")
    golden = m.get("golden", {})
    _need(isinstance(golden, dict), where, "'golden' must be an object")
    for name, g in golden.items():
        _need(isinstance(g, dict) and isinstance(g.get("file"), str) and g["file"] in files, where,
              f"golden.{name}.file must name a file listed under 'files'")
    _need(isinstance(m.get("engines", {}), dict), where, "'engines' must be an object")


def _check_eeg_extras(entry: dict, contract: Any, files: dict, where: str) -> None:
    """``preprocessing`` (a PreprocessingSpec that fits the contract) and ``prototypes`` (a listed .npz + classes)."""
    pre = entry.get("preprocessing")
    if pre is not None:
        _need(isinstance(pre, dict), where, "preprocessing must be an object")
        try:
            spec = PreprocessingSpec.from_dict(pre)
        except UserError as e:
            raise UserError(f"{where}.preprocessing: {e}") from None
        want = (contract.meta.get("n_chans"), contract.meta.get("n_times"))
        _need((spec.n_chans, spec.n_times) == want, where,
              f"preprocessing describes {spec.n_chans} ch x {spec.n_times} samples, "
              f"the encoder takes {want[0]} x {want[1]}")
    pro = entry.get("prototypes")
    if pro is not None:
        _need(isinstance(pro, dict) and isinstance(pro.get("file"), str) and pro["file"] in files, where,
              "prototypes.file must name a file listed under 'files'")
        cls = pro.get("classes")
        _need(isinstance(cls, list) and bool(cls) and all(isinstance(c, str) for c in cls), where,
              "prototypes.classes must be a non-empty list of class names")
        _need(_finite(pro.get("scale")) and pro["scale"] > 0, where,
              f"prototypes.scale must be a finite number > 0, got {pro.get('scale')!r}")


def _check_decision(entry: dict, models: dict, where: str) -> None:
    """decision.onnx is the EEG encoder's graph + its prototype head: each of its files names the encoder file it
    was built from, and that file must be the encoder's of the same precision."""
    _need("eeg_encoder" in models, where, "a decision model needs the bundle's eeg_encoder")
    src = entry.get("built_from")
    enc = models["eeg_encoder"].get("files", {})
    _need(isinstance(src, dict) and set(src) == set(entry["files"]), where,
          "built_from must name the encoder file of each decision file's precision")
    for prec, rel in src.items():
        _need(enc.get(prec) == rel, where, f"built_from.{prec} names {rel!r}, the encoder's {prec} file is "
                                           f"{enc.get(prec)!r}")
