"""The deployable runtime: loads an export bundle with numpy + onnxruntime only (no torch).

A bundle is a folder written by ``eegsine export``: ``manifest.json`` plus ``.onnx`` files
(FP32 and INT8). :class:`Bundle` reads the manifest, refuses file paths that leave the
folder, checks every file's sha256 before anything runs, and opens ONNX Runtime sessions
with the best available provider (TensorRT > CUDA > CPU) and a fixed intra-op thread
count when asked, or OpenVINO sessions on the same files (:mod:`eegsine.runtime.backends`,
``backend=``). Left to ``auto``, each model runs this host's recorded (backend, precision,
threads) of ``eegsine-verify --tune`` (:mod:`eegsine.runtime.tuning`), else ORT in FP32.

INT8 accuracy depends on the CPU (:mod:`eegsine.runtime.isa`). Opening an INT8 model on a host
whose ISA class has no passing record for that file in ``verifications.json``
(``eegsine-verify BUNDLE`` writes them; export writes the build host's) warns once and
names the command; ``strict=True`` refuses instead.

Every argument is checked before anything runs (``threads`` bounded by the CPUs this process may
use, ``providers`` a list this onnxruntime has one of, step counts and seeds integers, guidance a finite
number, inputs float32 arrays of the contract's shape), and each session's graph against its contract: bad
input is one :class:`~eegsine.errors.UserError` line, never numpy's or onnxruntime's traceback.

* :class:`ImageClassifier` (older name ``SineClassifier``) -- ``predict(images)`` -> labels,
  ``scores(images)`` -> logits, for either head.
* :class:`EEGDecoder` -- ``decode(epochs)`` -> labels, confidence, embeddings: the EEG encoder and
  the bundle's class prototypes (nearest prototype, softmax over negative squared distances).
* :class:`EEGToImage` -- ``gen(eeg, num_inference_steps=25, guidance_scale=..., generator=seed).images``, the
  torch pipeline's vocabulary and, for the same seed, its initial noise (:mod:`eegsine.runtime.noise`): EEG
  encoder + token mapper -> DDIM loop over the UNet with classifier-free guidance -> VAE decoder.
* :class:`DDIM` -- diffusers' ``DDIMScheduler`` (eta = 0) in numpy: same beta schedules,
  timestep spacings, prediction types and x0 clipping; tested against diffusers.

Hand-written: diffusers' schedulers are torch code and the point of this module is to
run where torch is not installed (edge/BCI devices); the DDIM update is ~30 lines.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
import os
import reprlib
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from eegsine.progress import tqdm
from eegsine.config import check_threads, usable_cpus
from eegsine.runtime.backends import BackendSession, available_backends, check_backend, open_session
from eegsine.runtime.contracts import ExportContract
from eegsine.runtime.isa import SATURATING_CLASSES, this_host
from eegsine.runtime.preprocessing import PreprocessingSpec
from eegsine.runtime.records import load_records, proven_classes
from eegsine.errors import UserError, require
from eegsine.io import read_json, sha256_file
from eegsine.runtime.manifest import PRECISIONS, check_manifest
from eegsine.runtime.noise import check_seed, initial_latents
from eegsine.runtime.tuning import Candidate, choose, tuned_candidates

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "eegsine-bundle"
BUNDLE_VERSION = 1


# -- DDIM in numpy ------------------------------------------------------------------------------------
class DDIM:
    """Deterministic DDIM (eta = 0) following diffusers' DDIMScheduler config keys."""

    def __init__(self, config: dict[str, Any]):
        c = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
             "trained_betas": None, "clip_sample": True, "clip_sample_range": 1.0, "set_alpha_to_one": True,
             "steps_offset": 0, "prediction_type": "epsilon", "thresholding": False,
             "timestep_spacing": "leading", "rescale_betas_zero_snr": False}
        c.update({k: v for k, v in config.items() if k in c})
        if c["thresholding"]:
            raise UserError("scheduler: dynamic thresholding is not supported by the numpy runtime")
        if c["prediction_type"] not in ("epsilon", "sample", "v_prediction"):
            raise UserError(f"scheduler: unknown prediction_type {c['prediction_type']!r}")
        self.config = c
        n = int(c["num_train_timesteps"])
        if c["trained_betas"] is not None:
            betas = np.asarray(c["trained_betas"], np.float32)
        elif c["beta_schedule"] == "linear":
            betas = np.linspace(c["beta_start"], c["beta_end"], n, dtype=np.float32)
        elif c["beta_schedule"] == "scaled_linear":
            betas = np.linspace(c["beta_start"] ** 0.5, c["beta_end"] ** 0.5, n, dtype=np.float32) ** 2
        elif c["beta_schedule"] == "squaredcos_cap_v2":
            f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
            betas = np.array([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)], np.float32)
        else:
            raise UserError(f"scheduler: unsupported beta_schedule {c['beta_schedule']!r}")
        if c["rescale_betas_zero_snr"]:
            s = np.sqrt(np.cumprod(1.0 - betas, dtype=np.float32))
            s0, sT = s[0].copy(), s[-1].copy()
            s = (s - sT) * (s0 / (s0 - sT))
            ab = s ** 2
            betas = 1.0 - np.concatenate([ab[:1], ab[1:] / ab[:-1]]).astype(np.float32)
        self.alphas_cumprod = np.cumprod(1.0 - betas, dtype=np.float32)
        self.final_alpha_cumprod = np.float32(1.0) if c["set_alpha_to_one"] else self.alphas_cumprod[0]
        self.num_train_timesteps = n
        self.timesteps = np.zeros(0, np.int64)
        self.num_inference_steps = 0

    def set_timesteps(self, steps: int) -> np.ndarray:
        n, c = self.num_train_timesteps, self.config
        if not 1 <= steps <= n:
            raise UserError(f"steps must be in [1, {n}], got {steps}")
        if c["timestep_spacing"] == "linspace":
            ts = np.linspace(0, n - 1, steps).round()[::-1].copy().astype(np.int64)
        elif c["timestep_spacing"] == "leading":
            ts = (np.arange(0, steps) * (n // steps)).round()[::-1].copy().astype(np.int64) + int(c["steps_offset"])
        elif c["timestep_spacing"] == "trailing":
            ts = np.round(np.arange(n, 0, -n / steps)).astype(np.int64) - 1
        else:
            raise UserError(f"scheduler: unsupported timestep_spacing {c['timestep_spacing']!r}")
        self.timesteps, self.num_inference_steps = ts, steps
        return ts

    def step(self, model_output: np.ndarray, t: int, sample: np.ndarray) -> np.ndarray:
        """x_t -> x_{t-1} (DDIM, eta = 0). All arrays (B, C, h, w) float32."""
        prev = t - self.num_train_timesteps // self.num_inference_steps
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final_alpha_cumprod
        b_t = 1 - a_t
        pt = self.config["prediction_type"]
        if pt == "epsilon":
            x0 = (sample - b_t ** 0.5 * model_output) / a_t ** 0.5
            eps = model_output
        elif pt == "sample":
            x0 = model_output
            eps = (sample - a_t ** 0.5 * x0) / b_t ** 0.5
        else:  # v_prediction
            x0 = a_t ** 0.5 * sample - b_t ** 0.5 * model_output
            eps = a_t ** 0.5 * model_output + b_t ** 0.5 * sample
        if self.config["clip_sample"]:
            r = float(self.config["clip_sample_range"])
            x0 = np.clip(x0, -r, r)
        return (a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps).astype(np.float32)


# -- bundle -----------------------------------------------------------------------------------------
def safe_path(root: Path, rel: str, what: str = "manifest") -> Path:
    """``root / rel`` if it stays inside ``root`` (no absolute paths, ``..`` or escaping symlinks)."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        raise UserError(f"{what}: file path {rel!r} must be relative to the bundle folder")
    if ".." in Path(rel).parts:
        raise UserError(f"{what}: file path {rel!r} escapes the bundle folder")
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise UserError(f"{what}: file path {rel!r} resolves outside the bundle folder ({path})")
    return path


def select_providers(preferred: list[str] | None = None) -> list[str]:
    """Providers in order TensorRT > CUDA > CPU, keeping those this onnxruntime has."""
    ort = require("onnxruntime", "the runtime")

    have = ort.get_available_providers()
    order = preferred or ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = [p for p in order if p in have]
    if not chosen:
        raise UserError(f"none of the providers {order} is available (this onnxruntime has {have})")
    return chosen


class Bundle:
    """An export bundle folder: manifest, verified files, backend sessions (ONNX Runtime or OpenVINO)."""

    def __init__(self, path: str | Path, verify: bool = True, threads: int | None = None,
                 providers: list[str] | None = None, strict: bool = False, check_proven: bool = True,
                 backend: str = "auto"):
        if not isinstance(path, (str, os.PathLike)):
            raise UserError(f"bundle: expected a folder path, got {_describe(path)}")
        self.root = Path(path)
        self.threads = None if threads is None else check_threads(threads, "threads")
        self.backend = check_backend(backend)
        self.strict = strict
        self.check_proven = check_proven
        self._proven_checked: set[str] = set()
        mpath = self.root / MANIFEST
        if not mpath.is_file():
            raise UserError(f"{self.root}: not an eegsine bundle (no {MANIFEST})")
        m = read_json(mpath)
        if not isinstance(m, dict) or m.get("format") != BUNDLE_FORMAT:
            fmt = m.get("format") if isinstance(m, dict) else None
            raise UserError(f"{mpath}: not an eegsine bundle manifest (format {fmt!r})")
        if m.get("version") != BUNDLE_VERSION:
            raise UserError(f"{mpath}: bundle version {m.get('version')!r} is not supported "
                            f"(this runtime reads {BUNDLE_VERSION})")
        check_manifest(m, str(mpath))
        self.manifest = m
        self.providers = _check_providers(providers)
        if self.providers is not None:
            select_providers(self.providers)  # none of them in this onnxruntime: refused here, not at the first call
        self.verify = verify
        files = m["files"]
        self.files: dict[str, Path] = {rel: safe_path(self.root, rel, str(mpath)) for rel in files}
        if verify:
            for rel, path in self.files.items():
                if not path.is_file():
                    raise UserError(f"{self.root}: {rel} is listed in the manifest but missing")
                want = files[rel].get("sha256") if isinstance(files[rel], dict) else None
                if not want:
                    raise UserError(f"{mpath}: {rel} has no sha256")
                got = sha256_file(path)
                if got != want:
                    raise UserError(f"{self.root / rel}: sha256 {got[:12]}... does not match the manifest's "
                                    f"{want[:12]}... (file changed or corrupted)")
        self._sessions: dict[tuple[str, str], BackendSession] = {}
        self._tuned: dict[str, list[Candidate]] = {}  # read once: this host's tune record, per model
        self._contracts: dict[str, ExportContract] = {}  # parsed once: run() is on a device's per-decision path

    # -- models ------------------------------------------------------------------------------
    def has(self, model: str, precision: str = "fp32") -> bool:
        return precision in self.manifest.get("models", {}).get(model, {}).get("files", {})

    def contract(self, model: str) -> ExportContract:
        if model in self._contracts:
            return self._contracts[model]
        try:
            c = self._contracts[model] = ExportContract.from_dict(self.manifest["models"][model]["contract"])
            return c
        except KeyError:
            raise UserError(f"{self.root}: bundle has no {model} model "
                            f"(has {sorted(self.manifest.get('models', {}))})") from None

    def model_path(self, model: str, precision: str) -> Path:
        if precision not in PRECISIONS:
            raise UserError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        entry = self.manifest.get("models", {}).get(model)
        if entry is None:
            raise UserError(f"{self.root}: bundle has no {model} model (has {sorted(self.manifest.get('models', {}))})")
        rel = entry.get("files", {}).get(precision)
        if rel is None:
            raise UserError(f"{self.root}: {model} has no {precision} file (has {sorted(entry.get('files', {}))}); "
                            "export with --int8 for INT8")
        return self.files[rel]

    def check_int8_proven(self, model: str) -> str | None:
        """Why ``model``'s INT8 file is not proven on this host's ISA class (None if it is); warns or refuses.

        Warns once per model (``strict=True``: raises :class:`UserError`)."""
        rel = self.manifest["models"][model]["files"]["int8"]
        host = this_host()["isa_class"]
        backend = self.plan(model, "int8")[0]
        proven = proven_classes(load_records(self.root), self.manifest["files"][rel]["sha256"], backend)
        if host in proven:
            return None
        target = self.manifest["models"][model].get("quantization", {}).get("target", "x86-vnni")
        on = "" if backend == "ort" else f" with {backend}"
        flag = "" if backend == "ort" else f" --backend {backend}"
        why = (f"{self.root / rel}: INT8 (target {target}) has no passing verification{on} on this host's ISA class "
               f"{host} (proven on: {', '.join(sorted(proven)) or 'none'}); run `eegsine-verify{flag} {self.root}`")
        if target != "portable" and host in SATURATING_CLASSES:
            why += (f"; its full-range weights saturate int16 products on {host} (no VNNI): "
                    "expect degraded accuracy, re-export with --target portable")
        if self.strict:
            raise UserError(why)
        if model not in self._proven_checked:
            self._proven_checked.add(model)
            warnings.warn(why, RuntimeWarning, stacklevel=3)
        return why

    def check_at_start(self, model: str, precision: str) -> None:
        """At a decoder's construction, not at its first call: an INT8 file unproven on this host's ISA class
        warns there, or (``strict=True``) refuses there, before a device starts its session."""
        if precision == "int8" and self.check_proven:
            self.check_int8_proven(model)

    def plan(self, model: str, precision: str | None = None) -> tuple[str, str, int | None]:
        """(backend, precision, threads) ``model`` runs with: the fastest passing combination of this host's tune
        record (:mod:`eegsine.runtime.tuning`) within the explicit ``backend``/``threads`` of the Bundle and the
        ``precision`` given; without a record for them, today's default (ORT, FP32, ORT's thread count)."""
        backend = None if self.backend == "auto" else self.backend
        if backend is None and self.providers is not None:
            backend = "ort"  # providers are ONNX Runtime's: naming them picks it
        c = choose(self.tuned(model), backend=backend, precision=precision, threads=self.threads,
                   backends=available_backends(), max_threads=usable_cpus())
        if c is None:
            return backend or "ort", precision or "fp32", self.threads
        return c.backend, c.precision, c.threads

    def tuned(self, model: str) -> list[Candidate]:
        """The candidates this host's newest tune record holds for ``model``'s files ([] without one)."""
        if model not in self._tuned:
            entry = self.manifest.get("models", {}).get(model, {})
            files = {rel: self.manifest["files"][rel]["sha256"] for rel in entry.get("files", {}).values()}
            recs = load_records(self.root) if files else []
            self._tuned[model] = tuned_candidates(recs, this_host(), model, files)
        return self._tuned[model]

    def model_bytes(self, model: str, precision: str) -> bytes:
        """The ONNX file's bytes, checked against the manifest's sha256 (``verify=True``) as they are read: the
        bytes a backend is given, not the file as it was at Bundle(), so a file swapped in between construction
        and first use does not run (check-then-use)."""
        path = self.model_path(model, precision)
        data = path.read_bytes()
        if self.verify:
            rel = self.manifest["models"][model]["files"][precision]
            got, want = hashlib.sha256(data).hexdigest(), self.manifest["files"][rel]["sha256"]
            if got != want:
                raise UserError(f"{path}: sha256 {got[:12]}... does not match the manifest's {want[:12]}... "
                                "(file changed since the bundle was opened)")
        return data

    def session(self, model: str, precision: str = "fp32") -> BackendSession:
        """The backend session of ``model``'s ``precision`` file (:meth:`plan` picks backend and threads), opened
        once. An ORT session also answers the InferenceSession's own methods (``get_providers()``, ...)."""
        key = (model, precision)
        if key not in self._sessions:
            backend, _, threads = self.plan(model, precision)
            path = self.model_path(model, precision)
            if precision == "int8" and self.check_proven:
                self.check_int8_proven(model)
            providers = opts = None
            if backend == "ort":
                providers = select_providers(self.providers)
                opts = [self._provider_options(p, model) for p in providers]
            sess = open_session(backend, self.model_bytes(model, precision), threads, providers, opts, str(path))
            self._check_graph(model, precision, sess)
            self._sessions[key] = sess
        return self._sessions[key]

    def _check_graph(self, model: str, precision: str, sess: BackendSession) -> None:
        """The ONNX graph's inputs/outputs, as the backend reads them, must match the contract (names, rank,
        dtype, fixed axes; no input the contract does not feed), or the backend fails deep in a call with its own
        traceback."""
        c = self.contract(model)
        for kind, specs, have in (("input", c.inputs, sess.inputs), ("output", c.outputs, sess.outputs)):
            got = {a.name: a for a in have}
            for s in specs:
                a = got.get(s.name)
                if a is None:
                    raise UserError(f"{self.root}: {model} ({precision}) graph has no {kind} {s.name!r} "
                                    f"(graph {kind}s: {sorted(got)}); the manifest's contract does not fit the file")
                if len(a.shape) != len(s.shape) or a.dtype != s.dtype:
                    raise UserError(f"{self.root}: {model} ({precision}) {kind} {s.name!r} is {a.dtype} of rank "
                                    f"{len(a.shape)} in the graph, the contract says {s.dtype} of rank {len(s.shape)}")
                for axis, (want, fixed) in enumerate(zip(s.shape, a.shape)):
                    if not isinstance(fixed, int) or fixed < 1:
                        continue  # a dynamic axis of the graph takes whatever the contract allows
                    lo, hi = (want, want) if isinstance(want, int) else (c.dims[want][0], c.dims[want][2])
                    if (lo, hi) != (fixed, fixed):  # ORT would refuse the first call with its own traceback
                        allowed = want if isinstance(want, int) else f"{want} in [{lo}, {hi}]"
                        raise UserError(f"{self.root}: {model} ({precision}) {kind} {s.name!r} axis {axis} is "
                                        f"{fixed} in the graph, the contract says {allowed}; the manifest's contract "
                                        "does not fit the file")
            unfed = sorted(set(got) - {s.name for s in specs}) if kind == "input" else []
            if unfed:  # ORT refuses every call without it
                raise UserError(f"{self.root}: {model} ({precision}) graph needs input {unfed[0]!r}, which the "
                                f"contract does not list (contract inputs: {c.input_names}); the manifest's contract "
                                "does not fit the file")

    def _provider_options(self, provider: str, model: str) -> dict[str, str]:
        if provider != "TensorrtExecutionProvider":
            return {}
        prof = self.contract(model).profile()
        fmt = lambda i: ",".join(f"{n}:{'x'.join(map(str, s[i]))}" for n, s in prof.items())  # noqa: E731
        cache = Path(os.environ.get("EEGSINE_CACHE", Path.home() / ".cache" / "eegsine")) / "ort-trt"
        return {"trt_fp16_enable": "True", "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": "True", "trt_profile_min_shapes": fmt(0),
                "trt_profile_opt_shapes": fmt(1), "trt_profile_max_shapes": fmt(2)}

    def run(self, model: str, feeds: dict[str, np.ndarray], precision: str = "fp32") -> list[np.ndarray]:
        """Run one model on feeds checked against its contract; returns the outputs in contract order."""
        c = self.contract(model)
        for name, a in (feeds.items() if isinstance(feeds, dict) else ()):
            if not isinstance(a, np.ndarray):
                raise UserError(f"{model} ({precision}): {name} must be a numpy array, got {_describe(a)}")
        c.check_inputs(feeds, what=f"{model} ({precision})")
        sess = self.session(model, precision)
        out = sess.run(feeds)
        if sess.output_names == c.output_names:
            return out
        by = dict(zip(sess.output_names, out))  # the contract's order, whatever order the backend keeps
        return [by[n] for n in c.output_names]


def _open(bundle: Bundle | str | Path, threads: int | None = None, providers: list[str] | None = None,
          backend: str | None = None, **kw: Any) -> Bundle:
    if not isinstance(bundle, Bundle):
        return Bundle(bundle, threads=threads, providers=providers, backend=backend or "auto", **kw)
    if backend is not None and check_backend(backend) != bundle.backend:
        raise UserError(f"backend={backend!r} with an open Bundle (backend={bundle.backend!r}): pass backend to "
                        "Bundle(...) instead, its sessions use the Bundle's")
    if threads is not None and check_threads(threads, "threads") != bundle.threads:
        raise UserError(f"threads={threads} with an open Bundle (threads={bundle.threads}): pass threads to "
                        "Bundle(...) instead, its sessions use the Bundle's")
    if providers is not None and _check_providers(providers) != bundle.providers:
        raise UserError(f"providers={providers} with an open Bundle (providers={bundle.providers}): pass providers "
                        "to Bundle(...) instead, its sessions use the Bundle's")
    return bundle


def _check_providers(providers: Any) -> list[str] | None:
    """None (the default order) or a non-empty list of provider names, else one line."""
    if providers is None:
        return None
    if (isinstance(providers, str) or not isinstance(providers, (list, tuple)) or not providers
            or not all(isinstance(p, str) for p in providers)):
        raise UserError("providers must be a non-empty list of ONNX Runtime provider names such as "
                        f"['CPUExecutionProvider'], got {_describe(providers)}")
    return list(providers)


def _describe(x: Any) -> str:
    """What a wrong argument is, for an error message: "a numpy float32 scalar, shape ()", "list [1.0, 2.0]"."""
    if isinstance(x, np.generic):
        return f"a numpy {x.dtype} scalar, shape ()"
    if isinstance(x, np.ndarray):
        return f"a {x.dtype} array of shape {x.shape}"
    return f"{type(x).__name__} {reprlib.repr(x)}"


def _count(name: str, value: Any, lo: int) -> int:
    """An integer argument (a numpy integer is one; bool and 2.5 are not) >= ``lo``, else a one-line UserError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{name} must be an integer, got {_describe(value)}")
    if value < lo:
        raise UserError(f"{name} must be >= {lo}, got {value}")
    return int(value)


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


# -- classifier ---------------------------------------------------------------------------------------
class ImageClassifier:
    """Image classifier from a bundle, either head (sine-bounded or standard): images in [0, 1] -> labels.

    ``SineClassifier`` is its older name. ``providers``: ONNX Runtime execution providers in order of preference
    (default TensorRT > CUDA > CPU, those this onnxruntime has; :func:`select_providers`). ``backend``: ``ort``,
    ``openvino`` or ``auto`` (default: this host's recorded choice, ``eegsine-verify --tune``, else ORT);
    ``precision`` and ``threads`` left out take the recorded choice too (else FP32 and the backend's default)."""

    def __init__(self, bundle: Bundle | str | Path, precision: str | None = None, threads: int | None = None,
                 strict: bool = False, providers: list[str] | None = None, backend: str | None = None):
        self.bundle = _open(bundle, threads=threads, providers=providers, strict=strict, backend=backend)
        self.precision = precision if precision is not None else self.bundle.plan("classifier")[1]
        self.contract = self.bundle.contract("classifier")
        self.bundle.model_path("classifier", self.precision)
        self.bundle.check_at_start("classifier", self.precision)
        self.classes: list[str] = self.bundle.manifest["models"]["classifier"].get("classes", [])

    def scores(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 in [0, 1] -> logits (N, n_classes)."""
        spec = self.contract.inputs[0]
        if not isinstance(images, np.ndarray) or images.dtype != np.float32:
            raise UserError(f"classifier: images must be a float32 numpy array (N, "
                            f"{', '.join(map(str, spec.shape[1:]))}), got {_describe(images)}")
        if images.ndim != 4 or images.shape[1:] != tuple(spec.shape[1:]):
            raise UserError(f"classifier: images must have shape (N, {', '.join(map(str, spec.shape[1:]))}), "
                            f"got {images.shape}")
        if not np.isfinite(images).all():
            raise UserError("classifier: images contain NaN or inf")
        if images.size and (images.min() < 0.0 or images.max() > 1.0):
            raise UserError(f"classifier: images must lie in [0, 1], got [{images.min():.3g}, {images.max():.3g}]")
        hi = self.contract.dims["batch"][2]
        out = [self.bundle.run("classifier", {"images": np.ascontiguousarray(images[s])}, self.precision)[0]
               for s in _batches(len(images), hi)]
        return np.concatenate(out) if out else np.zeros((0, self.contract.outputs[0].shape[1]), np.float32)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N,) int64 labels."""
        return self.scores(images).argmax(axis=1).astype(np.int64)


SineClassifier = ImageClassifier  # its name before the standard head shipped in bundles too; kept for callers


# -- EEG ----------------------------------------------------------------------------------------------
def check_eeg(eeg: Any, n_chans: int, n_times: int) -> np.ndarray:
    """A float32 (batch, n_chans, n_times) array of finite samples, or a one-line :class:`UserError`."""
    if not isinstance(eeg, np.ndarray):
        raise UserError(f"EEG: expected a numpy array (batch, {n_chans}, {n_times}) of float32, got {_describe(eeg)}")
    if eeg.dtype != np.float32:
        raise UserError(f"EEG: expected float32, got {eeg.dtype} (convert with eeg.astype(np.float32))")
    if eeg.ndim != 3 or eeg.shape[1:] != (n_chans, n_times):
        raise UserError(f"EEG: expected shape (batch, n_chans={n_chans}, n_times={n_times}), got {eeg.shape}")
    if len(eeg) == 0:
        raise UserError("EEG: empty batch")
    bad = ~np.isfinite(eeg).reshape(len(eeg), -1).all(axis=1)
    if bad.any():
        raise UserError(f"EEG: {int(bad.sum())} trial(s) contain NaN/inf (first: trial {int(np.argmax(bad))})")
    return eeg


def encode_eeg(bundle: Bundle, eeg: np.ndarray, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """Checked EEG (N, C, T) -> tokens (N, n_tokens, d), embedding (N, emb_dim), in batches of the contract's max."""
    hi = bundle.contract("eeg_encoder").dims["batch"][2]
    parts = [bundle.run("eeg_encoder", {"eeg": np.ascontiguousarray(eeg[s])}, precision)
             for s in _batches(len(eeg), hi)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class Decoded(NamedTuple):
    labels: np.ndarray       # (N,) int64 class index into EEGDecoder.classes
    confidence: np.ndarray   # (N,) float32 softmax probability of the label
    embeddings: np.ndarray   # (N, emb_dim) float32 unit vectors


class EEGDecoder:
    """The bundle's EEG encoder + class prototypes: preprocessed epochs -> labels, confidence, embeddings.

    Nearest prototype: the label is the class whose prototype (the L2-normalised mean embedding of
    its training trials, computed at export) is closest to the trial's embedding; ``confidence`` is
    its probability under softmax(-scale / 2 * ||z - p_c||^2) over the classes, z and p_c unit vectors
    (= softmax(scale * cos(z, p_c)), the prototypical loss's logits), ``scale`` fitted at export on the
    validation split (manifest ``models.eeg_encoder.prototypes``). Epochs must already be preprocessed
    as ``self.preprocessing`` says (:mod:`eegsine.runtime.stream` does that to a live signal). ``providers``,
    ``backend``, ``precision`` and ``threads`` as for :class:`ImageClassifier`.
    """

    def __init__(self, bundle: Bundle | str | Path, precision: str | None = None, threads: int | None = None,
                 strict: bool = False, providers: list[str] | None = None, backend: str | None = None):
        self.bundle = _open(bundle, threads=threads, providers=providers, strict=strict, backend=backend)
        self.precision = precision if precision is not None else self.bundle.plan("eeg_encoder")[1]
        self.contract = self.bundle.contract("eeg_encoder")
        self.bundle.model_path("eeg_encoder", self.precision)
        self.bundle.check_at_start("eeg_encoder", self.precision)
        entry = self.bundle.manifest["models"]["eeg_encoder"]
        pre = entry.get("preprocessing")
        self.preprocessing = PreprocessingSpec.from_dict(pre) if pre is not None else None
        pro = entry.get("prototypes")
        if pro is None:
            raise UserError(f"{self.bundle.root}: the bundle has no class prototypes (exported by an older eegsine); "
                            "re-export it to decode")
        arrays = self._read_npz(pro["file"])
        self.prototypes = np.asarray(arrays["prototypes"], np.float32)            # (K, emb_dim)
        self.classes: list[str] = list(pro["classes"])
        self.scale = float(pro["scale"])
        emb = self.contract.spec("embedding").shape[1]
        if self.prototypes.shape != (len(self.classes), emb):
            raise UserError(f"{self.bundle.root / pro['file']}: prototypes {self.prototypes.shape} do not fit "
                            f"{len(self.classes)} classes x {emb}-dim embeddings")

    def _read_npz(self, rel: str) -> dict[str, np.ndarray]:
        import io

        data = self.bundle.files[rel].read_bytes()
        want = self.bundle.manifest["files"][rel]["sha256"]
        if self.bundle.verify and hashlib.sha256(data).hexdigest() != want:
            raise UserError(f"{self.bundle.root / rel}: sha256 does not match the manifest (file changed or corrupted)")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (ValueError, OSError) as e:
            raise UserError(f"{self.bundle.root / rel}: not a readable .npz ({e})") from None

    @property
    def n_chans(self) -> int:
        return int(self.contract.meta["n_chans"])

    @property
    def n_times(self) -> int:
        return int(self.contract.meta["n_times"])

    def embed(self, epochs: np.ndarray) -> np.ndarray:
        """(N, n_chans, n_times) float32 -> (N, emb_dim) embeddings."""
        return encode_eeg(self.bundle, check_eeg(epochs, self.n_chans, self.n_times), self.precision)[1]

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, emb_dim) -> (N, n_classes): softmax(-scale / 2 * squared distance to each prototype)."""
        d2 = ((embeddings[:, None, :].astype(np.float64) - self.prototypes[None].astype(np.float64)) ** 2).sum(-1)
        logits = -0.5 * self.scale * d2
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def decode(self, epochs: np.ndarray) -> Decoded:
        """Preprocessed epochs (N, n_chans, n_times) float32 -> labels, confidence, embeddings."""
        z = self.embed(epochs)
        p = self.probabilities(z)
        labels = p.argmax(axis=1).astype(np.int64)
        return Decoded(labels, p[np.arange(len(p)), labels], z)


# -- EEG to image -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ImageOutput:
    """What :class:`EEGToImage` returns, as diffusers' ``ImagePipelineOutput``: ``images`` (N, C, H, W) float32 in
    [0, 1] (``output_type="latent"``: the final latents (N, c, h, w))."""

    images: np.ndarray


def _steps_shown(ts: np.ndarray, progress: bool) -> Iterator[tuple[int, int]]:
    """``enumerate(ts)``, with a tqdm bar when ``progress``; without tqdm (a runtime-only install has none) one
    plain line on stderr, rewritten at each step."""
    if not progress:
        yield from enumerate(ts)
        return
    try:
        import tqdm as _installed  # noqa: F401 - a runtime-only install has no tqdm
    except ImportError:
        for i, t in enumerate(ts):
            print(f"\rDDIM step {i + 1}/{len(ts)}", end="" if i + 1 < len(ts) else "\n", file=sys.stderr, flush=True)
            yield i, t
        return
    yield from enumerate(tqdm(ts, desc="DDIM", unit="step"))


class EEGToImage:
    """EEG trials -> images: encoder/token mapper -> DDIM over the UNet (CFG) -> VAE decoder.

    ``precision`` picks the files of every model (``precisions`` overrides it per model; left out, each model's
    recorded choice for this host, else FP32); ``providers`` and ``backend`` as for :class:`ImageClassifier`.
    Call it (or :meth:`generate`, the same) with the torch pipeline's arguments.
    """

    def __init__(self, bundle: Bundle | str | Path, precision: str | None = None, threads: int | None = None,
                 precisions: dict[str, str] | None = None, strict: bool = False, providers: list[str] | None = None,
                 backend: str | None = None):
        self.bundle = _open(bundle, threads=threads, providers=providers, strict=strict, backend=backend)
        if precisions is not None and not isinstance(precisions, dict):
            raise UserError(f"precisions must be a dict of model -> precision, got {_describe(precisions)}")
        self.precisions = {m: (precisions or {}).get(m, precision if precision is not None
                                                      else self.bundle.plan(m)[1])
                           for m in ("eeg_encoder", "unet", "vae_decoder")}
        for m in ("eeg_encoder", "unet", "vae_decoder"):
            self.bundle.model_path(m, self.precisions[m])  # fails early, naming the missing file
            self.bundle.check_at_start(m, self.precisions[m])
        gen = self.bundle.manifest.get("generation", {})
        self.scheduler_config: dict[str, Any] = gen.get("scheduler", {})
        self.default_guidance = float(gen.get("guidance", 1.0))
        self.default_steps = int(gen.get("steps", 25))
        self.int8_max_t = int(gen.get("int8_unet_max_timestep", 10 ** 9))
        if self.precisions["unet"] == "int8" and self.int8_max_t < 10 ** 9:
            self.bundle.model_path("unet", "fp32")  # the noisy steps need it
        self.enc = self.bundle.contract("eeg_encoder")
        self.unet_c = self.bundle.contract("unet")
        uncond = gen.get("uncond_tokens")
        shape = self.unet_c.shape("encoder_hidden_states", "min")[1:]
        self.uncond = (np.zeros(shape, np.float32) if uncond is None
                       else np.asarray(uncond, np.float32).reshape(shape))

    def check_eeg(self, eeg: Any) -> np.ndarray:
        return check_eeg(eeg, self.enc.meta["n_chans"], self.enc.meta["n_times"])

    def encode(self, eeg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, n_chans, n_times) -> tokens (N, n_tokens, d), embedding (N, emb_dim)."""
        return encode_eeg(self.bundle, self.check_eeg(eeg), self.precisions["eeg_encoder"])

    def unet_precision(self, t: int) -> str:
        """INT8 only at timesteps where the export measured it good enough (manifest
        ``generation.int8_unet_max_timestep``); the noisiest steps run FP32."""
        p = self.precisions["unet"]
        if p == "int8" and t > self.int8_max_t:
            return "fp32"
        return p

    def unet(self, latents: np.ndarray, t: np.ndarray, tokens: np.ndarray, precision: str | None = None) -> np.ndarray:
        feeds = {"latents": latents, "timestep": t.astype(np.float32), "encoder_hidden_states": tokens}
        return self.bundle.run("unet", feeds, precision or self.unet_precision(int(t[0])))[0]

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(c, h, w) of one image's latents."""
        return tuple(self.unet_c.shape("latents", "min")[1:])

    def initial_latents(self, n: int, seed: int | np.random.Generator = 0, offset: int = 0) -> np.ndarray:
        """(n, c, h, w) float32: :func:`eegsine.runtime.noise.initial_latents`, what the torch pipeline draws."""
        return initial_latents(n, self.latent_shape, seed, offset)

    def __call__(self, eeg: np.ndarray, num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 generator: int | np.random.Generator | None = None, latents: np.ndarray | None = None,
                 output_type: str = "np", return_dict: bool = True,
                 callback: Callable[[int, int, dict], None] | None = None, progress: bool = False, *,
                 seed: int | None = None, steps: int | None = None,
                 guidance: float | None = None) -> "ImageOutput | tuple[np.ndarray]":
        """EEG (N, n_chans, n_times) float32 -> :class:`ImageOutput`, ``.images`` (N, C, H, W) float32 in [0, 1].

        The torch pipeline's vocabulary (:class:`~eegsine.models.diffusion.EEGDiffusionPipeline`, diffusers'):
        ``num_inference_steps`` and ``guidance_scale`` default to the bundle's; the trajectory starts from
        ``latents`` (N, c, h, w), else from ``generator`` (an int seed or a ``numpy.random.Generator``) or
        ``seed`` (default 0) through :func:`eegsine.runtime.noise.initial_latents`, the torch pipeline's draw for
        the same seed. ``output_type`` ``np`` (images) or ``latent`` (the final latents, no VAE decode);
        ``return_dict=False`` returns the tuple ``(images,)``. ``callback(i, t, state)`` sees the UNet inputs and
        output of each step (verification uses it). ``steps`` and ``guidance`` are the older names of the first two.
        """
        # every argument checked before the encoder runs: nan steps, seed -1 or guidance "x" is one line, not numpy's
        n_steps, g = self._steps_and_guidance(num_inference_steps, steps, guidance_scale, guidance)
        if generator is not None and seed is not None:
            raise UserError("give one of generator= or seed=, not both")
        rng = check_seed(generator, "generator") if generator is not None else check_seed(0 if seed is None else seed)
        if latents is not None and not (isinstance(latents, np.ndarray) and np.issubdtype(latents.dtype, np.floating)):
            raise UserError(f"latents must be a float numpy array (N, C, h, w), got {_describe(latents)}")
        if latents is not None and not np.isfinite(latents).all():
            raise UserError("latents contain NaN or inf")
        if callback is not None and not callable(callback):
            raise UserError(f"callback must be callable, got {_describe(callback)}")
        if output_type not in ("np", "latent"):
            raise UserError(f"output_type must be np or latent, got {_describe(output_type)}")
        tokens, _ = self.encode(eeg)
        n = len(tokens)
        x = self.initial_latents(n, rng) if latents is None else latents.astype(np.float32)
        if x.shape != (n,) + self.latent_shape:
            raise UserError(f"latents: expected shape {(n,) + self.latent_shape}, got {x.shape}")
        x = self._denoise(x, tokens, n_steps, g, callback, progress)
        images = x if output_type == "latent" else self.decode(x)
        return ImageOutput(images) if return_dict else (images,)

    generate = __call__

    def _steps_and_guidance(self, num_inference_steps: Any, steps: Any, guidance_scale: Any,
                            guidance: Any) -> tuple[int, float]:
        """Checked (steps, guidance), each under the name the caller used, defaults from the bundle."""
        if num_inference_steps is not None and steps is not None:
            raise UserError("give one of num_inference_steps= or steps= (its older name), not both")
        if guidance_scale is not None and guidance is not None:
            raise UserError("give one of guidance_scale= or guidance= (its older name), not both")
        s_name, s = ("steps", steps) if steps is not None else ("num_inference_steps", num_inference_steps)
        g_name, g = ("guidance", guidance) if guidance is not None else ("guidance_scale", guidance_scale)
        n_steps = self.default_steps if s is None else _count(s_name, s, 1)
        if g is not None and (isinstance(g, bool) or not isinstance(g, numbers.Real)):
            raise UserError(f"{g_name} must be a finite number >= 0, got {_describe(g)}")
        scale = self.default_guidance if g is None else float(g)
        if not math.isfinite(scale) or scale < 0:
            raise UserError(f"{g_name} must be a finite number >= 0, got {g}")
        return n_steps, scale

    def _denoise(self, x: np.ndarray, tokens: np.ndarray, steps: int, g: float,
                 callback: Callable[[int, int, dict], None] | None, progress: bool) -> np.ndarray:
        """The DDIM loop with classifier-free guidance: latents (N, c, h, w) -> final latents."""
        sched = DDIM(self.scheduler_config)
        ts = sched.set_timesteps(steps)
        n = len(tokens)
        cfg = g != 1.0
        half = max(1, self.unet_c.dims["batch2"][2] // (2 if cfg else 1))
        uncond = np.broadcast_to(self.uncond, tokens.shape).astype(np.float32)
        for i, t in _steps_shown(ts, progress):
            eps = np.empty_like(x)
            for s in _batches(n, half):
                lat, tok = x[s], tokens[s]
                if cfg:
                    lat, tok = np.concatenate([lat, lat]), np.concatenate([uncond[s], tok])
                tt = np.full(len(lat), t, np.float32)
                out = self.unet(np.ascontiguousarray(lat), tt, np.ascontiguousarray(tok))
                if callback is not None:
                    callback(i, int(t), {"latents": lat, "timestep": tt, "encoder_hidden_states": tok,
                                         "noise_pred": out})
                if cfg:
                    u, c = np.split(out, 2)
                    out = u + g * (c - u)
                eps[s] = out
            x = sched.step(eps, int(t), x)
        return x

    def decode(self, latents: np.ndarray) -> np.ndarray:
        c = self.bundle.contract("vae_decoder")
        hi = c.dims["batch"][2]
        p = self.precisions["vae_decoder"]
        out = [self.bundle.run("vae_decoder", {"latents": np.ascontiguousarray(latents[s])}, p)[0]
               for s in _batches(len(latents), hi)]
        return np.concatenate(out)
