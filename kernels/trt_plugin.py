"""ONNX export of the sine head, and the TensorRT plugin that runs its Triton kernel.

Two export paths (``export_onnx_head``):
  * plain (default): the torch reference traces to MatMul/Gemm + Add, Mul, Sin, Mul. Every
    runtime runs it: onnxruntime, TensorRT 10.3 on Jetson, TensorRT with its own INT8.
  * plugin: one ``eegsine.SineHead`` node (custom domain "eegsine", attributes omega and
    amplitude, plus plugin_namespace/plugin_version so TensorRT's ONNX parser finds the
    quick-deployable plugin ``eegsine::SineHead``). Only TensorRT >= 10.9 with
    ``register_trt_plugin()`` called before parsing can run that graph.
    The node comes from the torch custom op ``eegsine::sine_head_plugin``, which
    ``sine_head()`` emits while ``plugin_export()`` is active, so whole models that call
    ``sine_head`` export unchanged; both exporters are covered (dynamo via
    ``onnx_translation_table()``, TorchScript via a registered symbolic).

TensorRT plugin (``register_trt_plugin``): tensorrt.plugin (QDP) ``@trtp.register`` shape
function, ``@trtp.autotune`` (fp32/fp16, linear) and ``@trtp.aot_impl`` that compiles
``sine_head._fwd_kernel`` to PTX ahead of time (``compile_plugin_ptx``), so the engine runs
the Triton kernel without Python. TensorRT hands an AOT kernel (inputs, int scalars,
outputs); omega/amplitude are floats, so they are compiled in as constexprs (the AOT
plugin cannot pass float scalars), and Triton's unused trailing scratch pointers are
stripped from the PTX entry. tensorrt is imported only inside ``register_trt_plugin``.
Hand-written: no library ships this op.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch

from . import sine_head as _sh

PLUGIN_DOMAIN = "eegsine"
PLUGIN_OP = "SineHead"
PLUGIN_ID = f"{PLUGIN_DOMAIN}::{PLUGIN_OP}"
PLUGIN_VERSION = "1"


# --------------------------------------------------------------------------- torch custom op
@torch.library.custom_op("eegsine::sine_head_plugin", mutates_args=())
def sine_head_plugin_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        omega: float, amplitude: float) -> torch.Tensor:
    """Opaque op that exports as one eegsine.SineHead node; eager it is the reference."""
    return _sh.reference_sine_head(x, weight, bias, omega, amplitude)


@sine_head_plugin_op.register_fake
def _(x, weight, bias, omega, amplitude):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@contextlib.contextmanager
def plugin_export():
    """While active, ``sine_head`` emits the eegsine::SineHead custom node under ONNX export."""
    with _sh.export_as(sine_head_plugin_op):
        yield


def _plugin_attrs(omega: float, amplitude: float) -> dict:
    return {"omega": float(omega), "amplitude": float(amplitude),
            "plugin_namespace": PLUGIN_DOMAIN, "plugin_version": PLUGIN_VERSION}


def _register_onnx_schema() -> None:
    from onnx import defs

    if defs.has(PLUGIN_OP, PLUGIN_DOMAIN):
        return
    P = defs.OpSchema.FormalParameter
    A = defs.OpSchema.Attribute
    Ty = defs.OpSchema.AttrType
    T = ["tensor(float)", "tensor(float16)"]
    schema = defs.OpSchema(
        PLUGIN_OP, PLUGIN_DOMAIN, 1,
        doc="amplitude * sin(omega * (X @ W^T + B)); runs as the TensorRT plugin eegsine::SineHead",
        inputs=[P("X", "T", "(..., K)"), P("W", "T", "(N, K)"),
                P("B", "T", "(N,)", param_option=defs.OpSchema.FormalParameterOption.Optional)],
        outputs=[P("Y", "T", "(..., N)")],
        type_constraints=[("T", T, "float tensors")],
        attributes=[A("omega", Ty.FLOAT, "frequency"), A("amplitude", Ty.FLOAT, "output scale"),
                    A("plugin_namespace", Ty.STRING, "TensorRT plugin namespace", required=False),
                    A("plugin_version", Ty.STRING, "TensorRT plugin version", required=False)])
    defs.register_schema(schema)


def onnx_translation_table() -> dict:
    """custom_translation_table for torch.onnx.export(dynamo=True)."""
    import onnxscript

    _register_onnx_schema()  # onnxscript builds nodes only for ops with a schema
    node = getattr(onnxscript.values.Opset(PLUGIN_DOMAIN, 1), PLUGIN_OP)

    def translate(x, weight, bias=None, omega: float = 1.0, amplitude: float = 1.0):
        inputs = (x, weight) if bias is None else (x, weight, bias)
        return node(*inputs, **_plugin_attrs(omega, amplitude))

    return {torch.ops.eegsine.sine_head_plugin.default: translate}


def _torchscript_symbolic(g, x, weight, bias, omega, amplitude):
    from torch.onnx import symbolic_helper as sh

    inputs = [x, weight] if sh._is_none(bias) else [x, weight, bias]
    attrs = _plugin_attrs(sh._parse_arg(omega, "f"), sh._parse_arg(amplitude, "f"))
    kw = {f"{k}_f" if isinstance(v, float) else f"{k}_s": v for k, v in attrs.items()}
    return g.op(f"{PLUGIN_DOMAIN}::{PLUGIN_OP}", *inputs, **kw)


_symbolic_registered = {"done": False}


def _register_torchscript_symbolic(opset: int) -> None:
    if not _symbolic_registered["done"]:
        torch.onnx.register_custom_op_symbolic("eegsine::sine_head_plugin", _torchscript_symbolic, 9)
        _symbolic_registered["done"] = True


def export_onnx_head(model: torch.nn.Module, sample: torch.Tensor, path: str | Path, *,
                     plugin: bool = False, dynamo: bool = False, opset: int = 18,
                     input_name: str = "x", output_name: str = "out",
                     dynamic_batch: bool = True) -> Path:
    """Export ``model`` (anything whose head calls ``sine_head``/``SineHead``) to ONNX.

    plugin=False: plain ops; plugin=True: the head becomes one eegsine.SineHead node (custom
    opset ``eegsine`` v1). dynamo selects the exporter; TorchScript (default) is ~10x faster
    here and enough for these graphs. The batch axis is dynamic unless dynamic_batch=False.
    Weights stay inside the .onnx file (head-sized models; no external data).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    model = model.eval()
    ctx = plugin_export() if plugin else contextlib.nullcontext()
    kwargs: dict = dict(input_names=[input_name], output_names=[output_name], opset_version=opset)
    if dynamo:
        if dynamic_batch:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1)},)
        if plugin:
            kwargs["custom_translation_table"] = onnx_translation_table()
        with ctx, torch.no_grad():
            prog = torch.onnx.export(model, (sample,), dynamo=True, **kwargs)
        prog.save(str(tmp))
    else:
        if dynamic_batch:
            kwargs["dynamic_axes"] = {input_name: {0: "batch"}, output_name: {0: "batch"}}
        if plugin:
            _register_torchscript_symbolic(opset)
            kwargs["custom_opsets"] = {PLUGIN_DOMAIN: 1}
        with ctx, torch.no_grad():
            torch.onnx.export(model, (sample,), str(tmp), dynamo=False, **kwargs)
    tmp.replace(path)
    return path


export_head_onnx = export_onnx_head  # name export/tensorrt.py already imports


# --------------------------------------------------------------------------- AOT PTX
_TRT_DTYPES = {"float32": "fp32", "float16": "fp16"}




_FLOAT_ARGS = ("omega", "amplitude", "x_scale")


def compile_ptx(kernel: str, ptr_types: dict, constexprs: dict, *, num_warps: int = 4,
                num_stages: int = 3, arch: int = 80):
    """Compile one sine-head kernel (``_fwd_kernel``, ``_bwd_dx_kernel``, ``_bwd_dw_kernel``)
    ahead of time for sm_<arch>; needs triton, not a GPU. Arguments named in constexprs are
    baked in, pointers take ptr_types (e.g. "*fp16"), other scalars are i32 (fp32 for
    omega/amplitude/x_scale). Returns triton's CompiledKernel (.asm["ptx"], .metadata)."""
    import triton
    from triton.backends.compiler import GPUTarget

    if _sh.interpreter_enabled():
        raise RuntimeError("compiling PTX needs compiled Triton: unset TRITON_INTERPRET (fresh process)")
    fn = _sh._kernels()[kernel]
    sig = {a: "constexpr" if a in constexprs else ptr_types.get(a, "fp32" if a in _FLOAT_ARGS else "i32")
           for a in fn.arg_names}
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages,
                                   "enable_fp_fusion": True})


def compile_plugin_ptx(dtype: str, n: int, omega: float, amplitude: float, *,
                       arch: int = 80, has_bias: bool = True):
    """Compile _fwd_kernel for the plugin: pointers x, w, b; int32 M, N, K, 4 strides;
    pointer out; everything else constexpr. dtype 'float32'|'float16'.
    Returns (kernel_name, ptx, shared_mem_bytes, (BLOCK_M, BLOCK_N, BLOCK_K, warps))."""
    if dtype not in _TRT_DTYPES:
        raise ValueError(f"plugin dtype must be one of {sorted(_TRT_DTYPES)}, got {dtype!r}")
    t = "*" + _TRT_DTYPES[dtype]
    # the launcher's large-batch tiles (TensorRT picks one kernel for the whole profile)
    bm, bn, bk, warps, stages = _sh.fwd_config(1 << 20, n, getattr(torch, dtype), fuse_row=False)
    consts = {"ws_ptr": None, "omega": float(omega), "amplitude": float(amplitude), "x_scale": 1.0,
              "z_ptr": None, "lsm_ptr": None, "pred_ptr": None, "HAS_BIAS": bool(has_bias),
              "QUANT": False, "STORE_Z": False, "FUSE_ROW": False, "PRECISION": "ieee",
              "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}
    compiled = compile_ptx("_fwd_kernel", {"x_ptr": t, "w_ptr": t, "b_ptr": t, "out_ptr": t}, consts,
                           num_warps=warps, num_stages=stages, arch=arch)
    md = compiled.metadata
    ptx = _strip_scratch_params(compiled.asm["ptx"], md.name, n_params=11,
                                unused=getattr(md, "global_scratch_size", 0) == 0
                                and getattr(md, "profile_scratch_size", 0) == 0)
    return md.name, ptx, md.shared, (bm, bn, bk, warps)


def _strip_scratch_params(ptx: str, name: str, n_params: int, unused: bool) -> str:
    """Triton >= 3.3 appends global/profile scratch pointers to every kernel; TensorRT launches
    with exactly (inputs, scalars, outputs). Drop them when the kernel never reads them."""
    extra = [i for i in range(n_params, n_params + 4) if f"{name}_param_{i}," in ptx
             or f"{name}_param_{i}\n" in ptx]
    if not extra:
        return ptx
    if not unused or any(f"[{name}_param_{i}]" in ptx for i in extra):
        raise RuntimeError("Triton kernel uses scratch memory; the TensorRT AOT plugin cannot pass it")
    lines = [ln for ln in ptx.split("\n")
             if not any(re.search(rf"\b{name}_param_{i}\b", ln) for i in extra)]
    out = "\n".join(lines)
    # the parameter list now ends at param_{n_params-1}: remove its trailing comma
    return re.sub(rf"({name}_param_{n_params - 1}),(\s*\))", r"\1\2", out)


# --------------------------------------------------------------------------- TensorRT
_trt_registered = {"done": False}


def register_trt_plugin() -> None:
    """Register eegsine::SineHead with TensorRT's plugin registry (idempotent). Call before
    parsing an ONNX graph exported with plugin=True. Needs tensorrt >= 10.9 and triton."""
    if _trt_registered["done"]:
        return
    try:
        import tensorrt as trt
        import tensorrt.plugin as trtp
    except ImportError as e:
        raise RuntimeError("the SineHead TensorRT plugin needs the `tensorrt` package (>= 10.9)") from e
    major, minor = (int(v) for v in trt.__version__.split(".")[:2])
    if (major, minor) < (10, 9):
        raise RuntimeError(f"the SineHead AOT plugin needs TensorRT >= 10.9, found {trt.__version__}")
    from typing import Tuple

    @trtp.register(PLUGIN_ID)
    def _desc(x: trtp.TensorDesc, weight: trtp.TensorDesc, bias: trtp.TensorDesc,
              omega: float, amplitude: float) -> Tuple[trtp.TensorDesc]:
        dims = tuple(x.shape_expr)[:-1] + (weight.shape_expr[0],)
        return trtp.from_shape_expr(dims, dtype=x.dtype)

    @trtp.autotune(PLUGIN_ID)
    def _tune(x: trtp.TensorDesc, weight: trtp.TensorDesc, bias: trtp.TensorDesc,
              outputs: Tuple[trtp.TensorDesc]) -> list:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR")]

    @trtp.aot_impl(PLUGIN_ID)
    def _aot(x: trtp.TensorDesc, weight: trtp.TensorDesc, bias: trtp.TensorDesc,
             omega: float, amplitude: float, outputs: Tuple[trtp.TensorDesc], tactic: int):
        dtype = {trt.float32: "float32", trt.float16: "float16"}[x.dtype]
        n_expr, k_expr = weight.shape_expr[0], weight.shape_expr[1]
        if not (n_expr.is_constant and k_expr.is_constant):
            raise RuntimeError("SineHead plugin: weight shape must be a build-time constant")
        n, k = n_expr.constant_value(), k_expr.constant_value()
        name, ptx, shared, (bm, bn, _, warps) = compile_plugin_ptx(dtype, n, omega, amplitude)
        m = x.shape_expr[0]
        for d in tuple(x.shape_expr)[1:-1]:
            m = m * d  # (B, T, K) heads flatten to (B*T, K)
        launch = trtp.KernelLaunchParams()
        launch.grid_x = (m + (bm - 1)) // bm
        launch.grid_y = (n + bn - 1) // bn
        launch.block_x = warps * 32
        launch.shared_mem = shared
        extra = trtp.SymIntExprs(7)
        for i, v in enumerate((m, n, k, k, 1, k, 1)):  # M, N, K, stride_xm, stride_xk, stride_wn, stride_wk
            extra[i] = trtp.SymInt32(v)
        return name, ptx, launch, extra

    _trt_registered["done"] = True
