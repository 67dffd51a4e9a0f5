"""TensorRT engines from the bundle's Q/DQ ONNX models (TensorRT 10 / 11 Python API).

* Strongly typed networks: precision comes from the ONNX graph itself (Q/DQ pairs mark the
  INT8 regions; the other tensors keep their ONNX type). TensorRT 11 removed the INT8
  builder flag and calibrators, and always builds strongly typed; on 10.x the
  ``STRONGLY_TYPED`` creation flag asks for the same behaviour.
* "FP16 where INT8 hurts": the layers quantization left in float (``Int8Config.keep_float``:
  conv_in/conv_out, time embedding, final norm) run in FP16 when ``TRTConfig.fp16`` is set,
  by converting the float part of the graph to FP16 before parsing (onnxruntime's
  ``convert_float_to_float16``, Q/DQ nodes and graph I/O left in FP32). A strongly typed
  network cannot take a builder FP16 flag, so the types must be in the graph.
* One optimisation profile per engine, from the model's export contract (min/opt/max).
* A timing cache file shared by all builds on one machine (rebuilds reuse tactic timings).
* Engines are cached under a key of TensorRT version, GPU name and compute capability,
  profile, ONNX file hash, quantization config and build config: a cached engine is reused
  only when all match.
* ``sine_plugin``: the fused sine-head plugin of :mod:`eegsine.kernels.trt_plugin` is
  registered with TensorRT's plugin registry before parsing (the classifier graph then
  carries the plugin node instead of MatMul + Add + Mul + Sin).

:func:`check_trt_compatible` needs only ``onnx`` and runs everywhere: it lists what would
stop TensorRT's explicit-quantization path (non-zero or unsigned zero points, ops TensorRT
does not parse, opset out of range).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from eegsine.config import Config
from eegsine.runtime.manifest import DERIVED_MODELS
from eegsine.runtime.contracts import ExportContract
from eegsine.errors import UserError
from eegsine.io import atomic_path, atomic_write_bytes, read_json, scratch_dir, sha256_file, writable_dir
from eegsine.runtime import MANIFEST

TRT_OPSET_RANGE = (13, 22)  # per-axis Q/DQ needs 13; TensorRT 10.x parses up to 22
# ONNX ops (default domain) TensorRT's ONNX parser supports and our four graphs use or may use.
TRT_SUPPORTED_OPS = frozenset("""
Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast Ceil Clip Concat Constant ConstantOfShape Conv
ConvTranspose Cos CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand Flatten Floor
Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual GroupNormalization
HardSigmoid HardSwish Identity If InstanceNormalization LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax MatMul Max MaxPool Mean Min Mod Mul Neg Not OneHot Or Pad Pow PRelu QuantizeLinear Range Reciprocal
ReduceL1 ReduceL2 ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape
Resize Round ScatterElements ScatterND Selu Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())


@dataclasses.dataclass
class TRTConfig(Config):
    KIND = "tensorrt"
    VERSION = 1

    fp16: bool = dataclasses.field(default=True, metadata={"help": "run the layers kept in float in FP16"})
    workspace_mb: int = dataclasses.field(default=2048, metadata={"help": "TensorRT builder workspace limit, MiB"})
    optimization_level: int = dataclasses.field(default=3, metadata={
        "help": "TensorRT builder optimization level, 0-5 (higher: longer builds, maybe faster engines)"})
    cache_dir: str = dataclasses.field(default="", metadata={"help": "timing cache folder ('' = ~/.cache/eegsine/trt)"})
    sine_plugin: bool = dataclasses.field(default=False, metadata={"help": "use the fused sine-head TensorRT plugin"})

    def validate(self) -> None:
        if self.workspace_mb < 64:
            raise UserError(f"TRTConfig.workspace_mb: must be >= 64, got {self.workspace_mb}")
        if not 0 <= self.optimization_level <= 5:
            raise UserError(f"TRTConfig.optimization_level: must be in [0, 5], got {self.optimization_level}")


# -- compatibility check (no TensorRT needed) -----------------------------------------------------------
def _const_values(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    vals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    vals[n.output[0]] = numpy_helper.to_array(a.t)
    return vals


def check_trt_compatible(onnx_path: str | Path) -> list[str]:
    """Problems that would stop a strongly typed TensorRT build of this Q/DQ model ([] = none found)."""
    import onnx

    path = Path(onnx_path)
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and friends
        return [f"{path.name}: not a readable ONNX file ({type(e).__name__})"]
    problems: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    lo, hi = TRT_OPSET_RANGE
    if opset is None or not lo <= opset <= hi:
        problems.append(f"opset {opset} outside TensorRT's supported range [{lo}, {hi}]")
    consts = _const_values(model)
    unsupported: dict[str, int] = {}
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx"):
            unsupported[f"{n.domain}.{n.op_type}"] = unsupported.get(f"{n.domain}.{n.op_type}", 0) + 1
        elif n.op_type not in TRT_SUPPORTED_OPS:
            unsupported[n.op_type] = unsupported.get(n.op_type, 0) + 1
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            if len(n.input) < 3 or not n.input[2]:
                if n.op_type == "QuantizeLinear":  # without a zero point the output type defaults to uint8
                    problems.append(f"{n.name}: no zero point, so it quantizes to uint8 (TensorRT needs int8)")
                continue
            zp = consts.get(n.input[2])
            if zp is None:
                problems.append(f"{n.name}: zero point {n.input[2]!r} is not a constant")
                continue
            if zp.dtype != np.int8:
                problems.append(f"{n.name}: zero point is {zp.dtype} "
                                "(TensorRT needs int8 symmetric; export with --act-type s8)")
            elif np.any(zp != 0):
                problems.append(f"{n.name}: zero point {zp.ravel()[:4].tolist()} is not all zero "
                                "(TensorRT needs symmetric)")
    for op, k in sorted(unsupported.items()):
        problems.append(f"op {op} ({k} node{'s' if k > 1 else ''}) is not supported by TensorRT's ONNX parser")
    return problems


# -- availability -------------------------------------------------------------------------------------
def trt_unavailable_reason() -> str | None:
    """None when TensorRT and a CUDA GPU are usable here, else why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return ("TensorRT is not installed (on a machine with an NVIDIA GPU: pip install 'tensorrt>=10.9', or "
                "'.[gpu]' from a clone of eegsine)")
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    except ImportError:
        return "torch is needed to drive TensorRT engines here"
    return None


def require_trt() -> None:
    reason = trt_unavailable_reason()
    if reason:
        raise UserError(f"--trt: {reason}")


def gpu_identity() -> dict[str, str]:
    import tensorrt as trt
    import torch

    p = torch.cuda.get_device_properties(0)
    return {"tensorrt": trt.__version__, "gpu": p.name, "compute_capability": f"{p.major}.{p.minor}"}


def engine_key(onnx_sha256: str, contract: ExportContract, quant: dict | None, cfg: TRTConfig,
               identity: dict[str, str]) -> str:
    """Cache key: TensorRT version, GPU, profile, ONNX hash, quantization and build config."""
    shapes = {k: [list(s) for s in v] for k, v in contract.profile().items()}
    blob = json.dumps({"identity": identity, "profile": shapes, "onnx": onnx_sha256, "quant": quant,
                       "build": cfg.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# -- build --------------------------------------------------------------------------------------------
def _fp16_graph(onnx_path: Path, out: Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    m = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True,
                                 op_block_list=["QuantizeLinear", "DequantizeLinear", "InstanceNormalization",
                                                "LayerNormalization", "GroupNormalization", "Sin", "Cos"])
    onnx.save(m, str(out))
    return out


def register_sine_plugin() -> None:
    """Register the eegsine::SineHead plugin (Triton kernel compiled AOT) with TensorRT's registry."""
    try:
        from eegsine.kernels.trt_plugin import register_trt_plugin
    except ImportError:
        raise UserError("TRTConfig.sine_plugin: eegsine.kernels.trt_plugin is not available in this install") from None
    try:
        register_trt_plugin()
    except RuntimeError as e:
        raise UserError(f"TRTConfig.sine_plugin: {e}") from None


def export_plugin_classifier(model: Any, contract: ExportContract, path: str | Path) -> Path:
    """The classifier with its head as one eegsine.SineHead node (TensorRT only; ORT cannot run it)."""
    import torch

    from eegsine.kernels.trt_plugin import export_head_onnx

    sample = torch.from_numpy(contract.sample_inputs("opt", batch=min(2, contract.dims["batch"][2]))["images"])
    return export_head_onnx(model, sample, path, plugin=True, opset=contract.opset, input_name="images",
                            output_name="logits")


def build_engine(onnx_path: str | Path, contract: ExportContract, out_path: str | Path, cfg: TRTConfig,
                 timing_cache: str | Path) -> dict[str, Any]:
    """Build and write one serialized engine; returns build info (seconds, sizes)."""
    import time

    import tensorrt as trt


    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    if cfg.sine_plugin:
        register_sine_plugin()
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):  # always on (flag ignored) in 11
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with scratch_dir(out_path) as tmp:
        plugin_graph = Path(onnx_path).name.endswith(".plugin.onnx")  # custom op: no fp16 rewrite
        src = (_fp16_graph(Path(onnx_path), Path(tmp) / "fp16.onnx") if cfg.fp16 and not plugin_graph
               else Path(onnx_path))
        if not parser.parse_from_file(str(src)):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise UserError(f"{onnx_path}: TensorRT could not parse the model ({errs[:400]})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mb << 20)
    config.builder_optimization_level = cfg.optimization_level
    profile = builder.create_optimization_profile()
    for name, (mn, op, mx) in contract.profile().items():
        profile.set_shape(name, mn, op, mx)
    config.add_optimization_profile(profile)
    timing_cache = Path(timing_cache)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise UserError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    seconds = time.perf_counter() - t0
    atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    atomic_write_bytes(out_path, bytes(blob))
    return {"build_seconds": round(seconds, 2), "bytes": Path(out_path).stat().st_size}


def build_bundle_engines(bundle_dir: str | Path, cfg: TRTConfig, precisions: tuple[str, ...] = ("int8", "fp32"),
                         log: Any = print, classifier_model: Any = None) -> dict[str, Any]:
    """Build (or reuse cached) engines for every model/precision in a bundle; records them in the manifest.

    With ``cfg.sine_plugin`` the classifier (``classifier_model``, the torch module) is also
    exported with its head as the SineHead plugin node and built as precision ``plugin``.
    """
    import os
    import shutil

    from eegsine.export.bundle import update_manifest

    require_trt()
    bundle_dir = Path(bundle_dir)
    m = read_json(bundle_dir / MANIFEST)
    identity = gpu_identity()
    cache_dir = Path(cfg.cache_dir or Path(os.environ.get("EEGSINE_CACHE", Path.home() / ".cache" / "eegsine")) / "trt")
    writable_dir(cache_dir)
    timing = cache_dir / f"timing-{identity['tensorrt']}-{identity['gpu'].replace(' ', '_')}.cache"
    engines: dict[str, Any] = {}
    extra_files: list[str] = []
    if cfg.sine_plugin and "classifier" in m["models"]:
        if classifier_model is None:
            raise UserError("TRTConfig.sine_plugin: needs the classifier run (--classifier) to export the plugin graph")
        c = ExportContract.from_dict(m["models"]["classifier"]["contract"])
        export_plugin_classifier(classifier_model, c, bundle_dir / "classifier.plugin.onnx")
        m["models"]["classifier"]["files"]["plugin"] = "classifier.plugin.onnx"
        m["files"]["classifier.plugin.onnx"] = {"sha256": sha256_file(bundle_dir / "classifier.plugin.onnx")}
        extra_files.append("classifier.plugin.onnx")
        precisions = tuple(precisions) + ("plugin",)
    for name, entry in m["models"].items():
        if name in DERIVED_MODELS:  # decision.onnx is for devices without Python or a GPU; the encoder gets an engine
            continue
        contract = ExportContract.from_dict(entry["contract"])
        for prec in precisions:
            rel = entry["files"].get(prec)
            if rel is None:
                continue
            if prec == "int8":
                problems = check_trt_compatible(bundle_dir / rel)
                if problems:
                    raise UserError(f"{rel}: not TensorRT-compatible: {problems[0]} (+{len(problems) - 1} more)")
            key = engine_key(m["files"][rel]["sha256"], contract, entry.get("quantization", {}).get("config"), cfg,
                             identity)
            fname = f"engines/{name}.{prec}.{key}.engine"
            cached = cache_dir / f"{name}.{prec}.{key}.engine"
            if cached.is_file():
                log(f"tensorrt {name} ({prec}): cached engine {key}")
                info = {"cached": True}
            else:
                log(f"tensorrt {name} ({prec}): building (profile {contract.profile()})")
                info = build_engine(bundle_dir / rel, contract, cached, cfg, timing)
            with atomic_path(bundle_dir / fname) as tmp:
                shutil.copyfile(cached, tmp)
            shapes = {k: [list(s) for s in v] for k, v in contract.profile().items()}
            engines.setdefault(name, {})[prec] = {"file": fname, "key": key, **identity, **info,
                                                 "profile": shapes, "build": cfg.to_dict()}

    def mutate(man: dict) -> None:
        man["engines"] = engines
        for rel in extra_files:
            man["models"]["classifier"]["files"]["plugin"] = rel
            man["files"][rel] = {"sha256": sha256_file(bundle_dir / rel), "bytes": (bundle_dir / rel).stat().st_size}
        for per in engines.values():
            for e in per.values():
                p = bundle_dir / e["file"]
                man["files"][e["file"]] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}

    update_manifest(bundle_dir, mutate)
    return engines


# -- run ----------------------------------------------------------------------------------------------
class TRTRunner:
    """Runs one serialized engine on numpy inputs (torch CUDA tensors as device buffers)."""

    def __init__(self, engine_path: str | Path, contract: ExportContract):
        import tensorrt as trt

        require_trt()
        self.logger = trt.Logger(trt.Logger.WARNING)
        blob = Path(engine_path).read_bytes()
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(blob)
        if self.engine is None:
            raise UserError(f"{engine_path}: not a valid TensorRT engine for this TensorRT/GPU "
                            "(corrupt or built elsewhere)")
        self.context = self.engine.create_execution_context()
        self.contract = contract

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        self.contract.check_inputs(feeds)
        stream = torch.cuda.Stream()
        keep = []
        for name in self.contract.input_names:
            t = torch.from_numpy(np.ascontiguousarray(feeds[name])).cuda()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in self.contract.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            o = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, o.data_ptr())
            outs.append(o)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return [o.cpu().numpy() for o in outs]
