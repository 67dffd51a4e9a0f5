"""INT8 post-training quantization with ``onnxruntime.quantization`` (static QDQ).

``quantize(onnx_path, out_path, Int8Config(...), calibration=feeds)``: weights int8,
per-channel, symmetric; activations int8 symmetric (zero point 0, what TensorRT's
explicit-quantization parser requires) or uint8 (``act_type="u8"``, ORT's fast path on
x86 CPUs, not TensorRT-compatible). Calibration feeds are real model inputs: EEG trials of
the training split for the encoder, UNet inputs recorded along real DDIM trajectories at
every timestep (activation ranges move with t), real images for the classifier.

The *target* (:data:`TARGETS`) decides the weight range, because INT8 accuracy on a CPU
depends on its ISA (:mod:`eegsine.runtime.isa`): x86 CPUs without VNNI add pairs of u8 x s8
products in saturating int16, so full-range weights degrade there and only there.

* ``portable`` (default): 7-bit weights (ORT's ``reduce_range``, |w_q| <= 64), so every
  pair sum fits int16 on every x86 kernel; ARM accumulates in 32 bits anyway. Measured on
  the test suite's digits classifier: 34.2 dB SQNR both on a VNNI host and under an
  emulated AVX2-only CPU (bit-identical outputs), vs 35.8 / 9.3 dB for full range.
* ``x86-vnni``: full 8-bit weights, for hosts with AVX-512 VNNI / AVX-VNNI / AMX only.
* ``tensorrt``: full-range symmetric Q/DQ with s8 activations and float bias, what
  TensorRT's explicit-quantization parser takes; on CPUs it behaves like ``x86-vnni``.

What ORT's tooling does not do, hand-written here:

* :func:`untie_shared_initializers` -- the dynamo exporter shares one initializer between
  many consumers (GroupNorm scale/bias via InstanceNormalization, shared reshape shapes);
  ``quantize_static`` refuses shared weights ("shared mode is not supported for weight"),
  and a naive copy named ``<name>_1`` may collide with a tensor the exporter already
  called that. Each extra consumer gets its own copy under a name checked against every
  name in the graph; the quantized result must load in ORT (checked before it is written).
* ``quant_pre_process`` (shape inference + ORT graph optimisation) runs inside a private
  temporary directory and the process's CWD is moved there meanwhile: it writes
  ``sym_shape_infer_temp.onnx`` and ``*.data`` files into the CWD and fails on the dynamo
  graph's symbolic shapes ("Incomplete symbolic shape inference"); on failure the
  un-pre-processed model is quantized and the reason recorded.
* sensitive layers kept in float by name pattern (node name or the name of any of its
  inputs, so the patterns match both exporters' naming).

Judge the result with :func:`sqnr` and task metrics, not ``allclose``. And measure speed:
on the test suite's tiny UNet (16/32 channels, 4x4x4 latents, batch 2, ORT CPU, 1 thread)
FP32 runs in 0.56 ms, INT8 s8 in 1.62 ms, u8 in 1.81 ms (median of 200) -- at that size the
Q/DQ overhead outweighs the int8 GEMMs; INT8 bought size (-27 % file) there, and speed is
a question for ``eegsine bench`` on the real model and backend (TensorRT).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import numpy as np

from eegsine.config import Config
from eegsine.runtime.verify import sqnr  # noqa: F401 - one torch-free definition, re-exported
from eegsine.errors import UserError
from eegsine.io import atomic_path, scratch_dir

QUANT_KEY = "eegsine.quantization"
# conv_in / conv_out / time embedding / final norm: the usual sensitive layers of a diffusion
# UNet (and the VAE decoder's first/last convs); harmless where no node matches.
DEFAULT_KEEP_FLOAT = ["conv_in", "conv_out", "time_embedding", "time_emb_proj", "conv_norm_out"]


# target -> scheme; "exact_on": ISA classes whose integer kernels compute this scheme without saturation
TARGETS: dict[str, dict[str, Any]] = {
    "portable": {"reduce_range": True, "weights": "int8 symmetric per-channel, 7-bit range [-64, 64]",
                 "exact_on": "any"},
    "x86-vnni": {"reduce_range": False, "weights": "int8 symmetric per-channel, full range [-127, 127]",
                 "exact_on": ["x86-vnni", "x86-amx"]},
    "tensorrt": {"reduce_range": False, "weights": "int8 symmetric per-channel, full range [-127, 127]",
                 "exact_on": ["x86-vnni", "x86-amx"]},
}


@dataclasses.dataclass
class Int8Config(Config):
    KIND = "int8"
    VERSION = 2  # 2: ``target`` (version 1 files were full-range weights: read as target x86-vnni)

    target: Literal["portable", "x86-vnni", "tensorrt"] = dataclasses.field(
        default="portable", metadata={"help": "portable: 7-bit weights, same accuracy on every CPU; x86-vnni: full "
                                              "range, for VNNI/AMX hosts only; tensorrt: symmetric Q/DQ for TensorRT"})
    act_type: Literal["s8", "u8"] = dataclasses.field(
        default="s8", metadata={"help": "activations: s8 symmetric (TensorRT) or u8 asymmetric (ORT x86)"})
    per_channel: bool = dataclasses.field(default=True, metadata={"help": "one weight scale per output channel"})
    calibrate_method: Literal["minmax", "percentile", "entropy"] = dataclasses.field(default="minmax", metadata={
        "help": "how activation ranges are read off the calibration feeds (ONNX Runtime's calibrators)"})
    percentile: float = dataclasses.field(default=99.999, metadata={
        "help": "calibrate_method percentile: the percentile of |activation| taken as its range"})
    op_types: list[str] = dataclasses.field(
        default_factory=lambda: ["Conv", "ConvTranspose", "MatMul", "Gemm"],
        metadata={"help": "ONNX op types quantized", "metavar": "OP"})
    matmul_const_b_only: bool = dataclasses.field(
        default=True, metadata={"help": "quantize only weight MatMuls (attention QK^T / AV stay float)"})
    keep_float: list[str] = dataclasses.field(
        default_factory=lambda: list(DEFAULT_KEEP_FLOAT),
        metadata={"help": "regex patterns; a node whose name or any input name matches stays float"})
    quantize_bias: bool = dataclasses.field(
        default=False,
        metadata={"help": "int32 bias Q/DQ (TensorRT's parser takes int8 Q/DQ only: keep False for --trt)"})
    calib_samples: int = dataclasses.field(default=64, metadata={"help": "calibration feeds used at most"})
    preprocess: bool = dataclasses.field(default=True, metadata={
        "help": "run ONNX Runtime's quant_pre_process (shape inference, graph optimisation) before quantizing"})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Int8Config":
        v1 = isinstance(data, dict) and type(data.get("version")) is int and data["version"] == 1  # not 1.0 / True
        if v1 and "target" not in data:
            data = {**data, "version": cls.VERSION, "target": "x86-vnni"}  # v1 quantized with full-range weights
        return super().from_dict(data)

    def scheme(self) -> dict[str, Any]:
        """What the target means for this config (recorded in the manifest next to the target)."""
        t = TARGETS[self.target]
        return {"target": self.target, "weights": t["weights"], "reduce_range": t["reduce_range"],
                "activations": "int8 symmetric (zero point 0)" if self.act_type == "s8" else "uint8 asymmetric",
                "bias": "int32 Q/DQ" if self.quantize_bias else "float", "exact_on_isa_classes": t["exact_on"]}

    def validate(self) -> None:
        if self.target == "tensorrt" and (self.act_type != "s8" or self.quantize_bias):
            raise UserError("Int8Config.target=tensorrt: TensorRT's parser needs s8 activations and float bias "
                            f"(got act_type={self.act_type!r}, quantize_bias={self.quantize_bias})")
        if not 90.0 <= self.percentile <= 100.0:
            raise UserError(f"Int8Config.percentile: must be in [90, 100], got {self.percentile}")
        if self.calib_samples < 1:
            raise UserError(f"Int8Config.calib_samples: must be >= 1, got {self.calib_samples}")
        for p in self.keep_float:
            try:
                re.compile(p)
            except re.error as e:
                raise UserError(f"Int8Config.keep_float: {p!r} is not a valid regex ({e})") from None


# -- graph fixes ------------------------------------------------------------------------------------
def _all_names(graph: Any) -> set[str]:
    names = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {o.name for o in graph.output}
    names |= {v.name for v in graph.value_info}
    for n in graph.node:
        names.update(n.input)
        names.update(n.output)
        names.add(n.name)
    return names


def untie_shared_initializers(model: Any, op_types: list[str] | None = None) -> int:
    """Give every consumer (of ``op_types``, default all) of a shared initializer its own copy; returns copies made.

    Restricted to the quantized op types, shape constants and norm parameters stay shared
    (untying everything grew a torchscript-exported UNet's INT8 file by 20 %, measured).
    """
    import onnx

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    taken = _all_names(graph)
    seen: dict[str, int] = {}
    made = 0
    for node in graph.node:
        if op_types is not None and node.op_type not in op_types:
            continue
        for k, name in enumerate(node.input):
            if name not in inits:
                continue
            seen[name] = seen.get(name, 0) + 1
            if seen[name] == 1:
                continue
            j = seen[name]
            new = f"{name}__tied{j}"
            while new in taken:
                j += 1
                new = f"{name}__tied{j}"
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[name])
            copy.name = new
            graph.initializer.append(copy)
            taken.add(new)
            node.input[k] = new
            made += 1
    return made


def check_unique_names(model: Any) -> list[str]:
    """Names produced twice (two initializers, or an initializer that is also a node output)."""
    produced: dict[str, int] = {}
    for i in model.graph.initializer:
        produced[i.name] = produced.get(i.name, 0) + 1
    for n in model.graph.node:
        for o in n.output:
            if o:
                produced[o] = produced.get(o, 0) + 1
    return sorted(k for k, v in produced.items() if v > 1)


def nodes_matching(model: Any, patterns: list[str], op_types: list[str] | None = None) -> list[str]:
    """Names of nodes (of ``op_types`` if given) whose name or any input name matches a pattern."""
    regs = [re.compile(p) for p in patterns]
    out = []
    for n in model.graph.node:
        if op_types and n.op_type not in op_types:
            continue
        if any(r.search(s) for r in regs for s in (n.name, *n.input)):
            out.append(n.name)
    return out


def _name_nodes(model: Any) -> None:
    """Nodes without a name cannot be excluded by name: give them one."""
    taken = {n.name for n in model.graph.node}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)


@contextlib.contextmanager
def _in_dir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# -- calibration ----------------------------------------------------------------------------------
class FeedReader:
    """``CalibrationDataReader`` over a list of ``{input name: array}`` feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


def quantize(onnx_path: str | Path, out_path: str | Path, cfg: Int8Config,
             calibration: Iterable[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Write a static-QDQ INT8 copy of ``onnx_path`` to ``out_path``; returns a report dict."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    onnx_path, out_path = Path(onnx_path).resolve(), Path(out_path).resolve()
    feeds = list(calibration)
    if len(feeds) > cfg.calib_samples:  # evenly spaced: UNet feeds are ordered by timestep, keep all of t's range
        feeds = [feeds[int(i)] for i in np.linspace(0, len(feeds) - 1, cfg.calib_samples).round()]
    if not feeds:
        raise UserError(f"{onnx_path.name}: no calibration data given")
    report: dict[str, Any] = {"source": onnx_path.name, "config": cfg.to_dict(), "target": cfg.target,
                              "scheme": cfg.scheme(), "calibration_feeds": len(feeds)}
    with scratch_dir(out_path) as tmpdir, _in_dir(Path(tmpdir)):
        tmp = Path(tmpdir)
        model = onnx.load(str(onnx_path))
        meta = {p.key: p.value for p in model.metadata_props}
        report["untied_initializers"] = untie_shared_initializers(model, list(cfg.op_types))
        _name_nodes(model)
        onnx.save(model, str(tmp / "untied.onnx"))
        src = tmp / "untied.onnx"
        report["preprocess"] = "skipped"
        if cfg.preprocess:
            src = _preprocess(src, tmp / "pre.onnx", report)
        pre = onnx.load(str(src))
        _name_nodes(pre)
        onnx.save(pre, str(tmp / "named.onnx"))
        keep = nodes_matching(pre, cfg.keep_float, cfg.op_types)
        report["kept_float"] = keep
        method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[cfg.calibrate_method]
        extra = {"ActivationSymmetric": cfg.act_type == "s8", "WeightSymmetric": True,
                 "MatMulConstBOnly": cfg.matmul_const_b_only, "QuantizeBias": cfg.quantize_bias}
        if cfg.calibrate_method == "percentile":
            extra["CalibPercentile"] = cfg.percentile
        quantize_static(str(tmp / "named.onnx"), str(tmp / "int8.onnx"), FeedReader(feeds),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(cfg.op_types),
                        per_channel=cfg.per_channel,
                        activation_type=QuantType.QInt8 if cfg.act_type == "s8" else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=keep, calibrate_method=method,
                        reduce_range=TARGETS[cfg.target]["reduce_range"], extra_options=extra)
        q = onnx.load(str(tmp / "int8.onnx"))
        dup = check_unique_names(q)
        if dup:
            raise RuntimeError(f"{onnx_path.name}: quantized graph defines {len(dup)} name(s) twice (first {dup[0]!r})")
        meta[QUANT_KEY] = json.dumps(cfg.to_dict(), sort_keys=True)
        _set_metadata(q, meta)
        onnx.save(q, str(tmp / "final.onnx"))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        ort.InferenceSession(str(tmp / "final.onnx"), so, providers=["CPUExecutionProvider"])  # must load
        report["max_abs_int8_weight"] = max_abs_int8_weight(q)
        report["qdq_nodes"] = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in q.graph.node)
        dq_out = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        report["quantized_ops"] = sum(n.op_type in cfg.op_types and any(i in dq_out for i in n.input)
                                      for n in q.graph.node)
        with atomic_path(out_path) as out:
            out.write_bytes((tmp / "final.onnx").read_bytes())
    report["bytes_fp32"] = onnx_path.stat().st_size
    report["bytes_int8"] = out_path.stat().st_size
    return report


def _preprocess(src: Path, dst: Path, report: dict[str, Any]) -> Path:
    """ORT's quantization pre-processing of ``src`` into ``dst`` (the file to quantize: ``dst``, or ``src`` when it
    failed); what happened goes to ``report["preprocess"]``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    errors = []
    for skip_symbolic in (False, True):  # symbolic shape inference fails on dynamic-batch UNets
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=skip_symbolic)
        except Exception as e:  # noqa: BLE001 - ORT raises bare Exception here; recorded in the report
            errors.append(f"{type(e).__name__}: {str(e)[:100]}")
            continue
        report["preprocess"] = "ok" if not skip_symbolic else f"ok without symbolic shapes ({errors[0]})"
        return dst
    report["preprocess"] = f"failed, quantized without it ({'; '.join(errors)})"
    return src


def _set_metadata(model: Any, meta: dict[str, str]) -> None:
    """``meta`` as the model's metadata, one entry per key: quantize_static may carry the source's metadata over
    already, and a key written twice makes onnx.checker.check_model reject the file (ORT loads it anyway)."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    for k, v in kept + sorted(meta.items()):
        e = model.metadata_props.add()
        e.key, e.value = k, v


def max_abs_int8_weight(model: Any) -> int:
    """Largest |q| over the int8 weights that feed a DequantizeLinear (64 for ``portable``, 127 for full range)."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    worst = 0
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == TensorProto.INT8:
            worst = max(worst, int(np.abs(numpy_helper.to_array(inits[n.input[0]]).astype(np.int32)).max(initial=0)))
    return worst
