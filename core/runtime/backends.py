"""The runtime's backends as peers: ONNX Runtime and OpenVINO run the same ONNX files behind one small protocol.

A backend session (:class:`BackendSession`) takes the feeds of one model call and returns its outputs in the
graph's order; it names its inputs and outputs (:class:`IOSpec`: name, shape with ``None`` for a dynamic axis,
numpy dtype name), so :class:`eegsine.runtime.Bundle` checks every file against its contract the same way
whichever backend runs it. :func:`open_session` builds one from the verified bytes of an ONNX file.

OpenVINO's CPU plugin is configured against the traps measured on a 2-core AMX Xeon (issue #28):

* ``INFERENCE_PRECISION_HINT`` f32: its default on AVX-512/AMX hosts is bf16, whose outputs sat 40-58 dB from
  FP32, below the golden set's FP32 floor;
* ``ENABLE_CPU_PINNING`` False: pinned threads took p99 from 0.5 to 5.2 ms when another process shared the
  cores, which an edge device always has;
* ``PERFORMANCE_HINT`` LATENCY (one stream: batch-1 calls, one at a time) and ``INFERENCE_NUM_THREADS`` the
  caller's thread count where it gives one.

numpy only at import: onnxruntime and openvino are imported when a session is opened, and a missing one is a
one-line :class:`~eegsine.errors.UserError` naming its pip line.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np

from eegsine.errors import UserError, importable, require

# the backends, simplest first: where two combinations time alike, the earlier one is the default
BACKENDS = ("ort", "openvino")
BACKEND_CHOICES = ("auto",) + BACKENDS
# ORT's type strings -> numpy dtype names (what a contract's TensorSpec.dtype holds)
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
               "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}


@dataclasses.dataclass(frozen=True)
class IOSpec:
    """One graph input or output as the backend sees it."""

    name: str
    shape: tuple[int | None, ...]   # None: a dynamic axis
    dtype: str                      # numpy dtype name ("float32"), or the backend's own where numpy has none


class BackendSession(Protocol):
    """What :class:`eegsine.runtime.Bundle` needs of a backend: run one call, name the graph's inputs/outputs."""

    backend: str                    # one of BACKENDS
    device: str                     # "CPUExecutionProvider", "CPU", ...: what the record names
    inputs: list[IOSpec]
    outputs: list[IOSpec]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Feeds by input name -> outputs in the graph's output order."""
        ...

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]: ...


def check_backend(backend: Any) -> str:
    """``backend`` as given: one of :data:`BACKEND_CHOICES`, else a one-line UserError."""
    if not isinstance(backend, str) or backend not in BACKEND_CHOICES:
        raise UserError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    return backend


def available_backends() -> list[str]:
    """The backends installed here (looked up, not imported: a device without openvino runs ORT alone)."""
    return [b for b in BACKENDS if importable("onnxruntime" if b == "ort" else "openvino")]


def _dim(d: Any) -> int | None:
    return d if isinstance(d, int) and d >= 1 else None


class _NamedIO:
    """The protocol's name lists, from ``inputs`` (IOSpec) and the output names cached at open."""

    inputs: list[IOSpec]
    _names: list[str]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return self._names  # not a copy: Bundle.run compares it on every call


class OrtSession(_NamedIO):
    """An ``onnxruntime.InferenceSession`` behind the protocol. Anything else (``get_providers()``,
    ``get_session_options()``) is the InferenceSession's, so callers of the older API keep working."""

    backend = "ort"

    def __init__(self, sess: Any):
        self.session = sess
        self.device = sess.get_providers()[0]
        self.inputs = [IOSpec(a.name, tuple(_dim(d) for d in a.shape), _ORT_DTYPES.get(a.type, a.type))
                       for a in sess.get_inputs()]
        self.outputs = [IOSpec(a.name, tuple(_dim(d) for d in a.shape), _ORT_DTYPES.get(a.type, a.type))
                        for a in sess.get_outputs()]
        self._names = [o.name for o in self.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self._names, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


class OpenVINOSession(_NamedIO):
    """An OpenVINO ``CompiledModel`` on the CPU plugin with one infer request, behind the protocol."""

    backend = "openvino"
    device = "CPU"

    def __init__(self, compiled: Any, model: Any):
        self.compiled = compiled
        self.request = compiled.create_infer_request()

        def spec(port: Any, read: Any) -> IOSpec:
            shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            try:
                dtype = np.dtype(port.get_element_type().to_dtype()).name
            except (TypeError, RuntimeError):  # bf16, u4, ...: no numpy dtype; the contract check names it
                dtype = port.get_element_type().get_type_name()
            # the name the ONNX graph gave it, from the model as read: compiling merges the names of fused tensors
            # into a port's set ({'images', '/Div_output_0'}), of which get_any_name() may return any
            return IOSpec(read.get_any_name(), shape, dtype)

        self.inputs = [spec(p, r) for p, r in zip(compiled.inputs, model.inputs)]
        self.outputs = [spec(p, r) for p, r in zip(compiled.outputs, model.outputs)]
        self._names = [o.name for o in self.outputs]
        self._ports = list(compiled.outputs)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        # share_outputs=False (the default): the arrays are copies, not views the next call overwrites
        res = self.request.infer(feeds)
        return [np.asarray(res[p]) for p in self._ports]

    def config(self, key: str) -> Any:
        """A property of the compiled model as the plugin applied it (``"INFERENCE_PRECISION_HINT"``, ...)."""
        return self.compiled.get_property(key)


def openvino_config(threads: int | None) -> dict[str, Any]:
    """The CPU plugin's properties (module docstring: the traps they guard against)."""
    cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False,
                           "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    return cfg


_CORE: list[Any] = []  # one ov.Core per process: each Core loads its plugins anew (OpenVINO's advice)


def _openvino_core() -> Any:
    ov = require("openvino", "the runtime's OpenVINO backend")
    if not _CORE:
        _CORE.append(ov.Core())
    return _CORE[0]


def open_session(backend: str, data: bytes, threads: int | None = None, providers: list[str] | None = None,
                 provider_options: list[dict[str, str]] | None = None, where: str = "model") -> BackendSession:
    """A session of ``backend`` on the ONNX bytes ``data`` (the bytes whose sha256 was checked, not the file
    re-read). ``threads``: intra-op threads (None: the backend's default); ``providers`` and
    ``provider_options``: ONNX Runtime's, in order. A file the backend cannot load is one line naming ``where``."""
    if backend == "ort":
        ort = require("onnxruntime", "the runtime")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        try:
            return OrtSession(ort.InferenceSession(data, so, providers=providers or ["CPUExecutionProvider"],
                                                   provider_options=provider_options))
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types (Fail, InvalidProtobuf, ...)
            raise UserError(f"{where}: not a loadable ONNX model "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if backend == "openvino":
        core = _openvino_core()
        try:
            model = core.read_model(data)
            compiled = core.compile_model(model, "CPU", openvino_config(threads))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own per frontend
            raise UserError(f"{where}: OpenVINO cannot load it "
                            f"({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]})") from None
        return OpenVINOSession(compiled, model)
    raise UserError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
