"""Where INT8 starts to pay on a CPU: the (batch, model size) crossover of the portable INT8 files vs FP32.

Issue #28 measured the shipped INT8 files (portable target: 7-bit weights, s8 activations) 0.6x the speed of
FP32 at batch 1 on the tiny models, and u8 activations faster than s8. This experiment asks from which batch
and model size INT8 is faster, on one host, one thread:

* models, random weights from fixed seeds (this measures speed and quantization error, not accuracy):
  the EEG encoder file at EEGCVPR40's geometry (128 channels x 440 samples; the ``paper`` encoder preset's
  transformer, 0.37 M parameters, with the tiny diffusion preset's 4 x 64 token mapper, as ``eeg_encoder.onnx``
  ships it: the paper diffusion preset's 77 x 768 mapper would be a 45 M-parameter MLP that swamps it), and
  diffusers UNets (``UNet2DConditionModel`` built by :func:`eegsine.models.diffusion.build_unet`, cross-attention
  at every level, one ResNet layer per block, 4 latent channels) of three sizes: ``tiny`` (32/64 channels,
  8 x 8 latents, 4 tokens of 64: the demo's), ``medium`` (64/128/256, 16 x 16, 16 tokens of 256) and ``large``
  (128/256/512, 32 x 32, 77 tokens of 768: Stable-Diffusion-like conditioning): 1.1, 17 and 70 M parameters
  (Stable Diffusion 1.x's UNet: 860 M);
* each exported to ONNX FP32 with a dynamic batch (:func:`eegsine.export.onnx_export.export_onnx` with the
  model's contract, the project's opset) and quantized by :func:`eegsine.export.quantize.quantize` twice:
  ``Int8Config(target="portable", act_type="s8")`` (the shipped file) and ``act_type="u8"``, on
  ``--calib`` random feeds of the contract's shapes (batch 2);
* timed in ONNX Runtime (CPUExecutionProvider, 1 intra-op and 1 inter-op thread, sequential) and, where
  ``openvino`` imports, in OpenVINO (the runtime's own session: f32 hint, no pinning, LATENCY, 1 thread), FP32,
  INT8-s8 and INT8-u8 at each batch: one untimed call of each, then the variants of one (model, batch) are
  called round-robin in a fresh random order each round (so load drift falls on all alike), at least
  ``--min-calls`` and at most ``--max-calls`` rounds, no new round after ``--cell-seconds``; each cell reports
  the median and the 25-75 % range of its calls. Batch is the graph's batch axis (the UNet's rows: with
  guidance, two per image). The sessions of a batch are opened for it and closed after it; a batch whose
  sessions, estimated from the last batch's, would leave less than ``--min-free-gib`` of the host's memory
  available is skipped and named (ONNX Runtime runs the UNets' attention unfused: the large UNet's FP32 session
  took ~1 GiB more at batch 8 than at batch 1 on the development host, so ~4 GiB at 32, per session);
* SQNR (dB) of every output vs ONNX Runtime FP32 on each cell's input (random, drawn apart from the
  calibration feeds), the lowest over a model's outputs;
* the crossover per model and backend: the smallest batch at which the backend's faster INT8 file (lower
  median) beats the same backend's FP32 beyond the interquartile ranges (INT8's 75th percentile below FP32's
  25th).

Run (writes ``crossover.json``, ``crossover.md``, ``crossover.png``, rewritten after every batch so a stopped run
keeps what it measured; the ONNX files go to a scratch folder in ``--out``, removed at the end, unless
``--work DIR``)::

    OMP_NUM_THREADS=1 python -m eegsine.bench.experiments.int8_crossover --out docs/results/int8-crossover

At the defaults (5-200 rounds per cell, 30 s per cell) that is roughly 35-60 minutes at one thread on this project's
2-core Xeon (estimated from short runs, not run whole), most of it the large UNet at batches 16 and 32: ONNX
Runtime FP32 took ~0.3 s per call there at batch 1 and ~5 s at batch 8, so ~20 s at 32, and every round calls
all six variants.

``--quick`` is the test's size (an 8 x 64 encoder and the tiny UNet at batches 1 and 4, a few calls: seconds).

What it does not show: accuracy (random weights; a trained model's activation ranges, and so its SQNR, differ),
other CPUs (INT8 speed depends on the ISA: see ``isa_class`` in the JSON) or thread counts, whole sampling
loops, TensorRT or GPUs, memory use (the growth recorded per batch is the guard's rough figure), INT8 attention
products (``MatMulConstBOnly``: QK^T and AV stay float in both files), or a quiet machine: the cells are
interleaved so that other load falls on every variant alike, not removed. The quantization's calibration runs
in ONNX Runtime's own session (its default thread count); it is not timed.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

import eegsine
from eegsine.bench.report.doc import md_table
from eegsine.data.eegcvpr40 import N_CHANS, SFREQ, T_HIGH, T_LOW
from eegsine.errors import UserError, importable
from eegsine.export.onnx_export import export_onnx
from eegsine.export.quantize import Int8Config, quantize
from eegsine.io import atomic_write_text, scratch_dir, write_json
from eegsine.models.configs import DiffusionConfig
from eegsine.models.diffusion import EEGToTokens, UNetForExport, build_unet
from eegsine.models.eeg_encoder import EEGTokenMapper, build_encoder
from eegsine.runs.plots import plt, save_figure
from eegsine.runtime.backends import open_session
from eegsine.runtime.contracts import ExportContract, eeg_encoder_contract, unet_contract
from eegsine.runtime.isa import this_host
from eegsine.runtime.verify import sqnr
from eegsine.training.configs import encoder_preset

PROG = "python -m eegsine.bench.experiments.int8_crossover"
ENCODER = f"{N_CHANS}x{T_HIGH - T_LOW}"   # EEGCVPR40: 128 channels x 440 samples at 1 kHz
TOKENS, TOKEN_DIM = 4, 64                 # the encoder file's token mapper: the tiny diffusion preset's
LATENT_CHANNELS = 4
# name -> CHANNELS/LATENT/CROSS_DIM/TOKENS
UNETS = {"tiny": "32,64/8/64/4", "medium": "64,128,256/16/256/16", "large": "128,256,512/32/768/77"}
BATCHES = (1, 2, 4, 8, 16, 32)
FULL = {"encoder": ENCODER, "unet": list(UNETS), "batches": ",".join(map(str, BATCHES)), "min_calls": 5,
        "max_calls": 200, "cell_seconds": 30.0, "calib": 16}
QUICK = {"encoder": "8x64", "unet": ["tiny"], "batches": "1,4", "min_calls": 3, "max_calls": 5, "cell_seconds": 0.2,
         "calib": 4}
PRECISIONS = ("fp32", "s8", "u8")
INT8 = PRECISIONS[1:]                     # activation types of the portable INT8 files
BACKENDS = {"ort": "ONNX Runtime", "openvino": "OpenVINO"}
CALIB_BATCH = 2
HOLDOUT_SEED = 10_000                     # timing/SQNR inputs: seeds 10_000 + batch; calibration: 0 .. calib-1
NOTE = ("random weights from fixed seeds: this measures speed and quantization error (SQNR vs FP32), "
        "not accuracy")


# -- flags ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class UNetSpec:
    name: str
    channels: tuple[int, ...]
    latent: int
    cross_dim: int
    tokens: int

    @property
    def text(self) -> str:
        return f"{','.join(map(str, self.channels))}/{self.latent}/{self.cross_dim}/{self.tokens}"


@dataclasses.dataclass
class Settings:
    out: Path
    encoder: tuple[int, int] | None
    unets: list[UNetSpec]
    batches: list[int]
    backends: list[str]
    min_calls: int
    max_calls: int
    cell_seconds: float
    calib: int
    seed: int
    min_free_gib: float
    work: Path | None
    quick: bool
    argv: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"encoder": f"{self.encoder[0]}x{self.encoder[1]}" if self.encoder else None,
                "unets": {u.name: u.text for u in self.unets}, "batches": self.batches, "backends": self.backends,
                "min_calls": self.min_calls, "max_calls": self.max_calls, "cell_seconds": self.cell_seconds,
                "calibration_feeds": self.calib, "calibration_batch": CALIB_BATCH, "seed": self.seed,
                "min_free_gib": self.min_free_gib, "quick": self.quick, "threads": 1,
                "int8": {k: int8_config(k, self.calib).to_dict() for k in INT8}, "argv": self.argv}


def int8_config(precision: str, calib: int) -> Int8Config:
    """The shipped portable target with ``precision``'s activations, quantizing from all ``calib`` feeds."""
    return Int8Config(target="portable", act_type=precision, calib_samples=calib)


def _ints(text: str, flag: str, sep: str = ",") -> list[int]:
    try:
        vals = [int(t) for t in text.split(sep)]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected integers separated by {sep!r}") from None
    if not vals or min(vals) < 1:
        raise UserError(f"{flag} {text!r}: every value must be >= 1")
    return vals


def parse_unet(text: str) -> UNetSpec:
    """``tiny`` | ``medium`` | ``large`` or ``NAME=C1,C2,.../LATENT/CROSS_DIM/TOKENS``."""
    name, sep, spec = text.partition("=")
    if not sep:
        if text not in UNETS:
            raise UserError(f"--unet {text!r}: one of {', '.join(UNETS)}, or NAME=C1,C2,.../LATENT/CROSS_DIM/TOKENS")
        spec = UNETS[text]
    parts = spec.split("/")
    if not name or len(parts) != 4:
        raise UserError(f"--unet {text!r}: expected NAME=C1,C2,.../LATENT/CROSS_DIM/TOKENS, "
                        f"e.g. medium={UNETS['medium']}")
    channels = _ints(parts[0], f"--unet {name}: channels")
    latent, cross_dim, tokens = (_ints(p, f"--unet {name}")[0] for p in parts[1:])
    if latent % 2 ** (len(channels) - 1):
        raise UserError(f"--unet {text!r}: latent {latent} must be divisible by 2^{len(channels) - 1} "
                        f"({len(channels)} levels)")
    if any(c % 8 for c in channels):
        raise UserError(f"--unet {text!r}: channels must be multiples of 8 (the UNet's 8 GroupNorm groups)")
    return UNetSpec(f"unet_{name}", tuple(channels), latent, cross_dim, tokens)


def parse_encoder(text: str) -> tuple[int, int] | None:
    if text == "none":
        return None
    c, sep, t = text.partition("x")
    if not sep:
        raise UserError(f"--encoder {text!r}: expected CHANNELSxSAMPLES (e.g. {ENCODER}) or none")
    n_chans, n_times = _ints(c, "--encoder channels")[0], _ints(t, "--encoder samples")[0]
    if n_times < 41:
        raise UserError(f"--encoder {text!r}: the paper preset's 41-sample kernel needs >= 41 samples")
    return n_chans, n_times


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for crossover.json, crossover.md and crossover.png")
    p.add_argument("--encoder", default=None,
                   help=f"EEG encoder geometry CHANNELSxSAMPLES, or none (default {ENCODER})")
    p.add_argument("--unet", action="append", default=None, metavar="SPEC",
                   help=f"a UNet: {' | '.join(UNETS)} or NAME=C1,C2,.../LATENT/CROSS_DIM/TOKENS; repeat "
                        f"(default: {' '.join(UNETS)}; none: no UNet)")
    p.add_argument("--batches", default=None,
                   help=f"batch sizes, comma-separated (default {','.join(map(str, BATCHES))})")
    p.add_argument("--backends", default=None,
                   help="ort and/or openvino, comma-separated (default: ort, and openvino where it imports)")
    p.add_argument("--min-calls", type=int, default=None,
                   help=f"rounds of calls per cell at least (default {FULL['min_calls']})")
    p.add_argument("--max-calls", type=int, default=None,
                   help=f"rounds of calls per cell at most (default {FULL['max_calls']})")
    p.add_argument("--cell-seconds", type=float, default=None,
                   help="time budget of one (model, batch): no new round after it once --min-calls ran "
                        f"(default {FULL['cell_seconds']:g})")
    p.add_argument("--calib", type=int, default=None,
                   help=f"random calibration feeds per model, at most 64 (default {FULL['calib']})")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights (torch) and of the round order")
    p.add_argument("--min-free-gib", type=float, default=2.0,
                   help="skip a batch whose sessions, estimated from the last batch, would leave less memory available "
                        "than this, GiB (default 2)")
    p.add_argument("--work", default=None, help="keep the ONNX files in this folder (default: a scratch folder)")
    p.add_argument("--quick", action="store_true",
                   help="the test's size: an 8x64 encoder, the tiny UNet, batches 1,4, 3-5 calls per cell")
    return p


def settings(ns: argparse.Namespace, argv: list[str]) -> Settings:
    """Validated settings from the flags; ``--quick`` fills whatever was not given with the test's size."""
    q = QUICK if ns.quick else FULL
    pick = {k: (getattr(ns, k) if getattr(ns, k) is not None else v) for k, v in q.items()}
    unets = [] if pick["unet"] == ["none"] else [parse_unet(u) for u in pick["unet"]]
    encoder = parse_encoder(pick["encoder"])
    if encoder is None and not unets:
        raise UserError("nothing to measure: --encoder none and --unet none")
    if len({u.name for u in unets}) != len(unets):
        raise UserError(f"--unet: a name is given twice ({[u.name for u in unets]})")
    batches = sorted(set(_ints(pick["batches"], "--batches")))
    backends = (ns.backends.split(",") if ns.backends
                else ["ort"] + (["openvino"] if importable("openvino") else []))
    bad = [b for b in backends if b not in BACKENDS]
    if bad or "ort" not in backends:
        raise UserError(f"--backends {ns.backends!r}: ort (the SQNR reference), optionally openvino")
    if pick["min_calls"] < 1 or pick["max_calls"] < pick["min_calls"]:
        raise UserError(f"--min-calls/--max-calls: need 1 <= min <= max, got {pick['min_calls']}/{pick['max_calls']}")
    if not (math.isfinite(pick["cell_seconds"]) and pick["cell_seconds"] > 0):
        raise UserError(f"--cell-seconds: must be > 0, got {pick['cell_seconds']}")
    if not 1 <= pick["calib"] <= 64:
        raise UserError(f"--calib: must be in [1, 64], got {pick['calib']}")
    if ns.seed < 0:
        raise UserError(f"--seed: must be >= 0, got {ns.seed}")
    if not (math.isfinite(ns.min_free_gib) and ns.min_free_gib >= 0):
        raise UserError(f"--min-free-gib: must be >= 0, got {ns.min_free_gib}")
    return Settings(Path(ns.out), encoder, unets, batches, list(dict.fromkeys(backends)), pick["min_calls"],
                    pick["max_calls"], float(pick["cell_seconds"]), pick["calib"], ns.seed, ns.min_free_gib,
                    Path(ns.work) if ns.work else None, ns.quick, argv)


# -- models ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Model:
    name: str
    kind: str                   # eeg_encoder | unet
    module: torch.nn.Module
    contract: ExportContract
    info: dict[str, Any]

    @property
    def batch_dim(self) -> str:
        return next(iter(self.contract.dims))

    def feeds(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        """Random inputs of the contract's shapes and ranges (timesteps: integers in [0, 1000) as float)."""
        return self.contract.sample_inputs("opt", seed=seed, **{self.batch_dim: batch})


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def encoder_model(n_chans: int, n_times: int, seed: int, max_batch: int) -> Model:
    """The ``paper`` encoder preset's model at ``n_chans`` x ``n_times`` + a 4 x 64 token mapper, random weights."""
    cfg = encoder_preset("paper").encoder.fit_to(n_chans, n_times, SFREQ, what="the crossover geometry")
    torch.manual_seed(seed)
    module = EEGToTokens(build_encoder(cfg), EEGTokenMapper(cfg.emb_dim, TOKENS, TOKEN_DIM)).eval()
    contract = eeg_encoder_contract(n_chans, n_times, cfg.emb_dim, TOKENS, TOKEN_DIM, max_batch=max_batch)
    info = {"what": f"EEG encoder (paper preset: {cfg.arch}, d_model {cfg.d_model}, {cfg.n_layers} blocks, patch "
                    f"{cfg.patch}, kernel {cfg.kernel}, emb {cfg.emb_dim}) + {TOKENS} x {TOKEN_DIM} token mapper",
            "input": f"eeg (batch, {n_chans}, {n_times})", "params": _params(module), "encoder": cfg.to_dict()}
    return Model(f"eeg_encoder_{n_chans}x{n_times}", "eeg_encoder", module, contract, info)


def unet_model(spec: UNetSpec, seed: int, max_batch: int) -> Model:
    """A UNet2DConditionModel as eegsine builds it (:func:`build_unet`), random weights."""
    n = len(spec.channels)
    cfg = DiffusionConfig(image_size=spec.latent * 4, vae_channels=[32, 64, 64], resize="resize",
                          latent_channels=LATENT_CHANNELS, unet_channels=list(spec.channels),
                          unet_cross_attention=[True] * n, cross_attention_dim=spec.cross_dim, n_tokens=spec.tokens)
    torch.manual_seed(seed)
    module = UNetForExport(build_unet(cfg)).eval()
    contract = unet_contract(LATENT_CHANNELS, spec.latent, spec.tokens, spec.cross_dim,
                             max_batch=max(1, math.ceil(max_batch / 2)))
    info = {"what": f"UNet2DConditionModel {'/'.join(map(str, spec.channels))} channels, cross-attention at every "
                    f"level, {cfg.unet_layers} layer per block, {cfg.attention_head_dim} heads",
            "input": f"latents (batch, {LATENT_CHANNELS}, {spec.latent}, {spec.latent}), timestep (batch,), "
                     f"encoder_hidden_states (batch, {spec.tokens}, {spec.cross_dim})",
            "params": _params(module), "spec": spec.text}
    return Model(spec.name, "unet", module, contract, info)


def models(s: Settings) -> Iterator[Model]:
    """One model at a time (the large UNet's torch copy is freed before the next is built); the contracts' batch
    range covers every timed batch and the calibration's."""
    top = max(*s.batches, CALIB_BATCH)
    if s.encoder:
        yield encoder_model(*s.encoder, seed=s.seed, max_batch=top)
    for spec in s.unets:
        yield unet_model(spec, s.seed, top)


def export_files(model: Model, s: Settings, work: Path, log: Callable[[str], Any]) -> tuple[dict[str, Path], dict]:
    """FP32 ONNX + the two INT8 copies -> ({precision: path}, {precision: quantization report})."""
    paths = {p: work / f"{model.name}.{p}.onnx" for p in PRECISIONS}
    t0 = time.perf_counter()
    export_onnx(model.module, model.contract, paths["fp32"])
    log(f"{model.name}: exported in {time.perf_counter() - t0:.1f} s ({paths['fp32'].stat().st_size / 1e6:.1f} MB)")
    calib = [model.feeds(CALIB_BATCH, seed=i) for i in range(s.calib)]
    reports = {}
    for p in INT8:
        t0 = time.perf_counter()
        r = quantize(paths["fp32"], paths[p], int8_config(p, s.calib), calib)
        reports[p] = {k: r[k] for k in ("preprocess", "kept_float", "quantized_ops", "qdq_nodes",
                                        "max_abs_int8_weight", "calibration_feeds")}
        log(f"{model.name}: INT8-{p} in {time.perf_counter() - t0:.1f} s ({r['quantized_ops']} ops quantized)")
    return paths, reports


# -- timing ---------------------------------------------------------------------------------------------
Key = tuple[str, str]           # (backend, precision)


def variant(key: Key) -> str:
    return f"{key[0]}-{key[1]}" if key[1] == "fp32" else f"{key[0]}-int8-{key[1]}"


def round_robin(calls: dict[Key, Callable[[], Any]], s: Settings, rng: random.Random) -> dict[Key, list[float]]:
    """Milliseconds of single calls, every round calling each variant once in a fresh random order (the caller made
    one untimed call of each). Stops at ``max_calls`` rounds, or once ``min_calls`` ran and ``cell_seconds`` passed."""
    keys = list(calls)
    times: dict[Key, list[float]] = {k: [] for k in keys}
    start = time.perf_counter()
    for r in range(1, s.max_calls + 1):
        rng.shuffle(keys)
        for k in keys:
            t0 = time.perf_counter_ns()
            calls[k]()
            times[k].append((time.perf_counter_ns() - t0) / 1e6)
        if r >= s.min_calls and time.perf_counter() - start >= s.cell_seconds:
            break
    return times


def _gib(what: str) -> float | None:
    """``rss``: this process's resident memory; ``available``: the host's MemAvailable (GiB; None: unknown)."""
    try:
        if what == "rss":
            return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
        line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable:"))
        return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def memory_check(last: tuple[int, dict[str, float]] | None, batch: int, s: Settings) -> str | None:
    """Why ``batch`` is not run (None: it is): its sessions' memory, estimated from the last batch run (the
    sessions' own part plus the calls' part scaled by batch), would leave less than ``min_free_gib`` available."""
    avail = _gib("available")
    if last is None or avail is None:
        return None
    b0, mem = last
    need = mem["sessions"] + mem["calls"] * batch / b0
    if need <= avail - s.min_free_gib:
        return None
    return (f"its sessions would need ~{need:.1f} GiB (batch {b0}: {mem['sessions']:.2f} GiB to open, "
            f"{mem['calls']:.2f} GiB more to run), {avail:.1f} GiB is available and {s.min_free_gib:g} GiB "
            "is kept free")


def _sqnr_db(ref: list[np.ndarray], got: list[np.ndarray], names: list[str]) -> tuple[float, dict[str, float]]:
    per = {n: sqnr(r, g) for n, r, g in zip(names, ref, got)}
    return min(per.values()), per


def measure_batch(model: Model, files: dict[str, Path], batch: int, s: Settings,
                  rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Every variant of ``model`` at ``batch``: one untimed call each (its outputs: SQNR vs ORT FP32 on this held-out
    input), then timed round-robin -> (cells, GiB the sessions took to open and then to run). Sessions are opened
    for this batch and closed after it, so memory peaks at one batch's arenas."""
    feeds = model.feeds(batch, seed=HOLDOUT_SEED + batch)
    rss0 = _gib("rss")
    data = {p: f.read_bytes() for p, f in files.items()}
    sessions = {(b, p): open_session(b, data[p], threads=1, where=f"{model.name} {p}")
                for b in s.backends for p in PRECISIONS}
    del data
    rss1 = _gib("rss")
    outs = {k: sess.run(feeds) for k, sess in sessions.items()}
    rss2 = _gib("rss")
    names = sessions["ort", "fp32"].output_names
    times = round_robin({k: (lambda sess=sess: sess.run(feeds)) for k, sess in sessions.items()}, s, rng)
    del sessions
    cells = []
    for (backend, precision), t in times.items():
        q25, med, q75 = (float(v) for v in np.percentile(t, [25, 50, 75]))
        worst, per = _sqnr_db(outs["ort", "fp32"], outs[backend, precision], names)
        cells.append({"batch": batch, "backend": backend, "precision": precision,
                      "variant": variant((backend, precision)), "median_ms": med, "p25_ms": q25, "p75_ms": q75,
                      "calls": len(t), "ms_per_item": med / batch,
                      "sqnr_db": None if (backend, precision) == ("ort", "fp32") else worst, "sqnr_db_per_output": per})
    for c in cells:
        fp = next(f for f in cells if f["backend"] == c["backend"] and f["precision"] == "fp32")
        ort_fp = next(f for f in cells if f["variant"] == "ort-fp32")
        c["speedup_vs_fp32"] = fp["median_ms"] / c["median_ms"]
        c["speedup_vs_ort_fp32"] = ort_fp["median_ms"] / c["median_ms"]
    mem = ({"sessions": max(0.0, rss1 - rss0), "calls": max(0.0, rss2 - rss1)} if None not in (rss0, rss1, rss2)
           else {"sessions": 0.0, "calls": 0.0})
    return sorted(cells, key=lambda c: (list(BACKENDS).index(c["backend"]), PRECISIONS.index(c["precision"]))), mem


def crossover(cells: list[dict[str, Any]], backend: str) -> dict[str, Any]:
    """The smallest batch at which ``backend``'s faster INT8 file beats its FP32 beyond the interquartile ranges
    (INT8 p75 < FP32 p25), and every batch at which it does."""
    batches = sorted({c["batch"] for c in cells if c["backend"] == backend})
    best: list[dict[str, Any]] = []
    for b in batches:
        at = [c for c in cells if c["backend"] == backend and c["batch"] == b]
        fp = next(c for c in at if c["precision"] == "fp32")
        top = min((c for c in at if c["precision"] != "fp32"), key=lambda c: c["median_ms"])
        best.append({"batch": b, "variant": top["variant"], "speedup": top["speedup_vs_fp32"],
                     "int8_p75_ms": top["p75_ms"], "fp32_p25_ms": fp["p25_ms"], "paid": top["p75_ms"] < fp["p25_ms"]})
    paid = [x["batch"] for x in best if x["paid"]]
    return {"backend": backend, "batches": batches, "batch": paid[0] if paid else None, "paid_at": paid,
            "best": best}


def crossover_line(model: str, x: dict[str, Any]) -> str:
    head = f"Crossover, {BACKENDS[x['backend']]}, {model}:"
    if not x["batches"]:
        return f"{head} not measured ({x['backend']} was not run)"
    if x["batch"] is None:
        top = max(x["best"], key=lambda v: v["speedup"])
        return (f"{head} INT8 never paid up to batch {max(x['batches'])} (beyond the IQRs; best median speed-up "
                f"{top['speedup']:.2f}x, {top['variant']} at batch {top['batch']})")
    b = x["batch"]
    v = next(v for v in x["best"] if v["batch"] == b)
    missed = [c for c in x["batches"] if c > b and c not in x["paid_at"]]
    tail = (f"; not beyond the IQRs at batch {', '.join(map(str, missed))}" if missed
            else " and at every larger batch measured" if b < max(x["batches"]) else "")
    return (f"{head} INT8 pays from batch {b} ({v['variant']}: {v['speedup']:.2f}x, its p75 {v['int8_p75_ms']:.3g} ms "
            f"< FP32 p25 {v['fp32_p25_ms']:.3g} ms){tail}")


# -- one model ------------------------------------------------------------------------------------------
def measure_model(model: Model, s: Settings, work: Path, log: Callable[[str], Any],
                  save: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """Export, quantize and time ``model`` at every batch; ``save(entry)`` after each batch (a stopped run keeps
    the batches done). A batch whose sessions would not fit in memory is skipped, with the reason."""
    files, reports = export_files(model, s, work, log)
    entry: dict[str, Any] = {"kind": model.kind, **model.info, "bytes": {p: f.stat().st_size for p, f in files.items()},
                             "quantization": reports, "cells": [], "skipped": [], "memory_gib": {}, "crossover": {}}
    rng = random.Random(s.seed)
    last: tuple[int, dict[str, float]] | None = None
    for b in s.batches:
        why = memory_check(last, b, s)
        if why:
            entry["skipped"].append({"batch": b, "reason": why})
            log(f"{model.name} batch {b}: skipped, {why}")
            continue
        t0 = time.perf_counter()
        cells, mem = measure_batch(model, files, b, s, rng)
        entry["cells"] += cells
        entry["memory_gib"][str(b)] = mem
        entry["crossover"] = {k: crossover(entry["cells"], k) for k in BACKENDS}
        last = (b, mem)
        save(entry)
        fastest = min(cells, key=lambda c: c["median_ms"])
        log(f"{model.name} batch {b}: {time.perf_counter() - t0:.1f} s, fastest {fastest['variant']} "
            f"{fastest['median_ms']:.3g} ms")
    return entry


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "eegsine": eegsine.__version__}
    for pkg in ("numpy", "torch", "onnx", "onnxruntime", "diffusers", "openvino"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


@contextlib.contextmanager
def work_dir(s: Settings) -> Iterator[Path]:
    if s.work is not None:
        try:
            s.work.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--work {s.work}: cannot be made a folder ({e.strerror})") from None
        yield s.work
        return
    with scratch_dir(s.out / "models") as tmp:
        yield Path(tmp)


def run(s: Settings, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Every model in turn; the outputs are rewritten after each batch, so a stopped run keeps what it measured."""
    h = this_host()
    doc: dict[str, Any] = {
        "experiment": "int8-crossover", "note": NOTE,
        "host": {k: h[k] for k in ("cpu", "machine", "isa_class", "int8_features", "emulated", "u8s8_saturates")},
        "versions": versions(), "settings": s.to_dict(), "date_utc": time.strftime("%Y-%m-%d", time.gmtime()),
        "models": {}}
    torch.set_num_threads(1)
    with work_dir(s) as work:
        for model in models(s):
            def save(entry: dict[str, Any], name: str = model.name) -> None:
                doc["models"][name] = entry
                write_outputs(doc, s.out)

            save(measure_model(model, s, work, log, save))
            del model
    return doc


# -- outputs --------------------------------------------------------------------------------------------
def _ms(v: float) -> str:
    return f"{v:.3g}"


def model_table(name: str, m: dict[str, Any]) -> list[str]:
    rows = [[str(c["batch"]), c["variant"], _ms(c["median_ms"]), f"{_ms(c['p25_ms'])}-{_ms(c['p75_ms'])}",
             _ms(c["ms_per_item"]), f"{c['speedup_vs_fp32']:.2f}x",
             "ref" if c["sqnr_db"] is None else f"{c['sqnr_db']:.1f}", str(c["calls"])] for c in m["cells"]]
    mb = ", ".join(f"{p} {m['bytes'][p] / 1e6:.2f} MB" for p in PRECISIONS)
    return ([f"## {name}", "", f"{m['what']}; {m['params'] / 1e6:.2f} M parameters; input {m['input']}; "
             f"files {mb}.", ""]
            + md_table(["batch", "variant", "median ms", "25-75 % ms", "ms / item", "speed-up vs FP32", "SQNR dB",
                        "calls"], rows, align="rlrrrrrr") + [""]
            + [f"Batch {k['batch']} not run: {k['reason']}." for k in m.get("skipped", [])]
            + ([""] if m.get("skipped") else []))


def render(doc: dict[str, Any]) -> str:
    h, v, st = doc["host"], doc["versions"], doc["settings"]
    lines = ["# INT8 crossover: the batch and model size at which INT8 starts to pay", "",
             f"{NOTE[0].upper()}{NOTE[1:]}. Host: {h['cpu']} ({h['machine']}), ISA class {h['isa_class']}, int8 "
             f"features {', '.join(h['int8_features']) or 'none'}{' (emulated)' if h['emulated'] else ''}; "
             f"1 thread; {doc['date_utc']}.",
             "", "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".", "",
             f"Command: `{PROG} {' '.join(st['argv'])}`", "",
             "Each cell: the median and 25-75 % range of single calls, the variants of one (model, batch) called "
             "round-robin in random order; speed-up = the same backend's FP32 median / the variant's median; SQNR "
             "of the variant's outputs (the lowest over outputs) vs ONNX Runtime FP32 on the same held-out random "
             "input ('ref': the reference itself). INT8-s8 is the shipped portable file (7-bit weights, s8 "
             "activations), INT8-u8 the same weights with u8 activations. A crossover: the smallest batch at "
             "which the backend's faster INT8 file beats its FP32 beyond the interquartile ranges "
             "(INT8 p75 < FP32 p25).", "", "## Crossover", ""]
    for name, m in doc["models"].items():
        lines += [f"- {crossover_line(name, m['crossover'][b])}" for b in BACKENDS]
    lines.append("")
    for name, m in doc["models"].items():
        lines += model_table(name, m)
    lines += ["Not shown: accuracy (random weights), other CPUs or thread counts, whole sampling loops, TensorRT/GPU, "
              "memory, INT8 attention products (they stay float in both INT8 files).", ""]
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> Path:
    """Speed-up vs the same backend's FP32 against batch: one panel per backend, one line per model x INT8 file
    (bars: the speed-ups the interquartile ranges allow), a line at 1 (FP32)."""
    backends = [b for b in BACKENDS if any(c["backend"] == b for m in doc["models"].values() for c in m["cells"])]
    fig, axes = plt.subplots(1, max(1, len(backends)), figsize=(6 * max(1, len(backends)), 4.5), squeeze=False,
                             sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    batches = sorted({c["batch"] for m in doc["models"].values() for c in m["cells"]})
    for ax, backend in zip(axes[0], backends):
        for i, (name, m) in enumerate(doc["models"].items()):
            fp = {c["batch"]: c for c in m["cells"] if c["backend"] == backend and c["precision"] == "fp32"}
            for k, (p, style) in enumerate((("s8", "-o"), ("u8", "--s"))):
                cs = [c for c in m["cells"] if c["backend"] == backend and c["precision"] == p]
                x = [c["batch"] * (1 + 0.04 * (2 * i + k)) for c in cs]   # apart, so the bars do not hide each other
                y = np.array([c["speedup_vs_fp32"] for c in cs])
                lo = np.array([fp[c["batch"]]["p25_ms"] / c["p75_ms"] for c in cs])
                hi = np.array([fp[c["batch"]]["p75_ms"] / c["p25_ms"] for c in cs])
                ax.errorbar(x, y, yerr=[np.maximum(y - lo, 0), np.maximum(hi - y, 0)], fmt=style, ms=4, lw=1.2,
                            elinewidth=0.7, capsize=2, color=colors[i % len(colors)], label=f"{name} INT8-{p}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_xlabel("batch")
        ax.set_title(f"{BACKENDS[backend]}: INT8 vs its FP32, 1 thread", fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("speed-up (FP32 median / INT8 median)")
    fig.suptitle(f"{doc['host']['cpu']} ({doc['host']['isa_class']}); random weights", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def write_outputs(doc: dict[str, Any], out: Path) -> None:
    write_json(out / "crossover.json", doc)
    atomic_write_text(out / "crossover.md", render(doc))
    plot(doc, out / "crossover.png")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ns = build_parser().parse_args(argv)
    try:
        s = settings(ns, argv)
        doc = run(s)
        print(f"int8_crossover: {len(doc['models'])} model(s) -> {s.out / 'crossover.md'}")
        for name, m in doc["models"].items():
            for b in s.backends:
                print("  " + crossover_line(name, m["crossover"][b]))
        return 0
    except UserError as e:
        print(f"int8_crossover: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
