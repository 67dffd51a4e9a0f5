"""Backend runners for the benchmark table: torch eager, torch.compile, ONNX Runtime, OpenVINO, TensorRT.

Each ``make_*`` returns a :class:`Runner` (a zero-argument callable per batch size plus
metadata) or raises :class:`BackendUnavailable` with the reason, which the table records
instead of a number. Thread counts are fixed by the caller and written into every row.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np

from eegsine.errors import importable
from eegsine.export.tensorrt import TRTRunner
from eegsine.runtime.backends import open_session


class BackendUnavailable(Exception):
    """This backend cannot run here; the message says why (recorded in the table)."""


@dataclasses.dataclass
class Runner:
    backend: str                    # e.g. "torch-eager", "onnxruntime-int8-portable"
    precision: str                  # fp32, fp16, int8
    call: Callable[[dict[str, np.ndarray]], list[np.ndarray]]  # feeds -> outputs (numpy)
    file_bytes: int | None = None
    note: str = ""


def make_torch_eager(module: Any, input_names: list[str], backend: str = "torch-eager") -> Runner:
    import torch

    module = module.eval()

    def call(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(*[torch.from_numpy(feeds[n]) for n in input_names])
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.numpy() for o in outs]

    nbytes = sum(p.numel() * p.element_size() for p in module.parameters())
    return Runner(backend, "fp32", call, nbytes, "parameters in memory")


def make_torch_compile(module: Any, input_names: list[str], *samples: dict[str, np.ndarray]) -> Runner:
    """``torch.compile`` (inductor), compiled here for every sample's shapes so no compile is timed.

    ``dynamic=False`` specialises on shapes: each batch size is its own graph. Dynamo's caches
    are reset first, since they are keyed by the forward's code object and shared by every
    instance of a class; without the reset, models benchmarked earlier use up the recompile
    limit and later shapes silently run in eager mode.
    """
    import torch

    try:
        torch._dynamo.reset()
        compiled = torch.compile(module.eval(), dynamic=False)
        with torch.inference_mode():
            for sample in samples:
                compiled(*[torch.from_numpy(sample[n]) for n in input_names])
    except Exception as e:  # noqa: BLE001 - any compiler failure means "does not work here": record why
        raise BackendUnavailable(f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
    runner = make_torch_eager(compiled, input_names, backend="torch-compile")
    runner.note = "inductor, compiled for each timed shape before timing"
    return runner


def make_onnxruntime(path: str | Path, threads: int, backend: str, precision: str,
                     providers: list[str] | None = None) -> Runner:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailable(f"onnxruntime not installed ({e})") from None
    path = Path(path)
    if not path.exists():
        raise BackendUnavailable(f"{path.name} not in the bundle")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])

    def call(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return sess.run(None, feeds)

    total = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + ".data"))
    return Runner(backend, precision, call, total, ",".join(sess.get_providers()))


def make_openvino(path: str | Path, threads: int, backend: str, precision: str) -> Runner:
    """OpenVINO on the CPU with the runtime's own settings (:func:`eegsine.runtime.backends.open_session`: f32
    precision hint, no pinning, LATENCY, ``threads``), so its row times what the runtime would run."""
    if not importable("openvino"):
        raise BackendUnavailable("openvino not installed (pip install openvino)")
    path = Path(path)
    if not path.exists():
        raise BackendUnavailable(f"{path.name} not in the bundle")
    sess = open_session("openvino", path.read_bytes(), threads, where=str(path))
    return Runner(backend, precision, lambda feeds: sess.run(feeds), path.stat().st_size,
                  "OpenVINO CPU, f32 hint, unpinned, LATENCY")


def make_tensorrt(engine_path: str | Path | None, contract: Any, backend: str, precision: str) -> Runner:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise BackendUnavailable("TensorRT not installed (NVIDIA GPU machines only; see README)") from None
    try:
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA GPU")
    except ImportError:
        raise BackendUnavailable("torch missing") from None
    if engine_path is None or not Path(engine_path).exists():
        raise BackendUnavailable("no engine in the bundle (export with --trt)")
    runner = TRTRunner(engine_path, contract)
    return Runner(backend, precision, runner, Path(engine_path).stat().st_size, "TensorRT engine")
