"""``eegsine stream``: a live EEG signal -> the bundle's preprocessing -> one decision per stimulus marker.

Torch-free (numpy + onnxruntime + the source's library). Per chunk from the source
(:mod:`eegsine.runtime.sources`), in the order the training loaders use (:mod:`eegsine.data.raw`):

1. pick the bundle's channels (by name, case-insensitively, where the source names its channels: one
   missing name refuses the stream, listing them; by position only with ``--channel-map by-position`` or,
   with a warning, from a source that names none and has exactly the bundle's count), convert the
   source's units to the spec's and multiply by its scale, re-reference;
2. filter with the spec's SOS coefficients (:class:`~eegsine.runtime.preprocessing.SOSFilter`, causal,
   state carried across chunks, started from the first sample's steady state) -- so the stream's
   epochs equal those cut from the whole recording filtered in one call;
3. append to a ring buffer; every marker at sample m waits for samples
   ``[m + round(tmin * sfreq), ... + n_times)``, then that epoch (all epochs ready in the same chunk
   as one batch) goes through :class:`~eegsine.runtime.EEGDecoder` (optionally also
   :class:`~eegsine.runtime.EEGToImage`: a PNG per decision). ``window_step`` > 0 adds sliding-window
   decisions without markers.

Every marker yields exactly one JSONL event: ``decision``, or ``dropped_marker`` with the reason
(its epoch left the ring buffer, started before the stream, or the stream ended first; with
``--marker-labels``, a live marker whose code is no class code, counted apart as ``unknown_markers``:
a recording holding such codes is refused before streaming). The ring buffer holds at least the
source's largest chunk plus one epoch (grown past ``--buffer-s``, with a warning, where needed), so no
chunk can push a marker's epoch out before it is decided. Latency
is measured from the arrival of the chunk holding the epoch's last sample to the decision
(``latency_ms``, perf_counter); sources with timestamps on this host's clock (BrainFlow, LSL) also
give ``latency_from_sample_ms``, from the last sample's acquisition timestamp (board buffering
and polling included). The summary (last JSONL line, ``--summary`` file, one line on stderr) has
p50/p99 latencies, dropped samples (source counters), deadline misses, buffer overruns and
channels that were flat or carried NaN/inf (replaced by 0 before filtering, flagged per epoch);
beside the ``--summary`` file go ``stream.md`` (a short table for the pipeline report) and
``latency_hist.png`` (matplotlib, imported only then; skipped with a logged note without it).
Recordings replay at real time, ``--speed S`` times faster, or (``file:``) as fast as the loop
runs (``--fast``). Ctrl-C (or SIGTERM) stops the source, decides the epochs already complete, and
flushes; a source that stops delivering (LSL: no sample for ``--lsl-timeout`` s) ends the stream
the same way, its reason in ``stopped``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np

from eegsine.config import Config
from eegsine.errors import UserError, require
from eegsine.io import atomic_path, atomic_write_text, one_line_os_errors, write_json
from eegsine.runtime import Bundle, EEGDecoder, EEGToImage
from eegsine.runtime.preprocessing import SOSFilter, rereference, unit_factor
from eegsine.runtime.sources import open_source

STREAM_LOG_VERSION = 1
log = logging.getLogger(__name__)


@dataclasses.dataclass
class StreamConfig(Config):
    """Everything ``eegsine stream`` does; flags mirror the fields."""

    KIND = "stream"
    VERSION = 1

    source: str = dataclasses.field(default="", metadata={
        "help": "brainflow:synthetic | brainflow:BOARD | brainflow:playback:FILE | lsl:NAME | "
                "file:PATH (.fif/.edf/.bdf/.vhdr/.csv)", "required": True})
    bundle: str = dataclasses.field(default="", metadata={"help": "bundle folder (eegsine export)", "required": True})
    precision: Literal["fp32", "int8"] = dataclasses.field(default="fp32", metadata={"help": "the encoder file to run"})
    log: str = dataclasses.field(default="-", metadata={"help": "JSONL event log ('-' = stdout)"})
    summary: str = dataclasses.field(default="", metadata={"help": "also write the summary JSON here (default: none)"})
    fast: bool = dataclasses.field(default=False, metadata={
        "help": "file: replay as fast as possible, not at real time"})
    speed: float = dataclasses.field(default=1.0, metadata={
        "help": "file: and brainflow:playback: replay at S x real time (the playback board paces by the file's "
                "timestamps: a copy 1/S apart is replayed)"})
    chunk_ms: float = dataclasses.field(default=32.0, metadata={"help": "file: replay chunk length (ms)"})
    board: str = dataclasses.field(default="", metadata={
        "help": "BrainFlow master board of a playback/CSV file (default: the file's sidecar, else synthetic)"})
    board_params: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "BrainFlowInputParams fields as KEY=VALUE (serial_port=/dev/ttyUSB0, ip_address=...)"})
    channel_map: Literal["auto", "by-position"] = dataclasses.field(default="auto", metadata={
        "help": "auto: by name (case-insensitive) where the source names its channels, refused with the list of "
                "missing names if any is missing; a source that names none is mapped by position, with a warning, "
                "only when it has exactly the bundle's channel count; by-position: the source's first N rows"})
    lsl_markers: str = dataclasses.field(default="", metadata={
        "help": "LSL marker stream name (default: any of type Markers)"})
    lsl_timeout: float = dataclasses.field(default=5.0, metadata={
        "help": "seconds to wait for the LSL streams to appear; no sample for that long ends the stream"})
    window_step: float = dataclasses.field(default=0.0, metadata={
        "help": "sliding-window decisions every S seconds (0: off)"})
    buffer_s: float = dataclasses.field(default=10.0, metadata={
        "help": "ring buffer length (s); grown, with a warning, to hold the source's largest chunk plus one epoch"})
    deadline_ms: float = dataclasses.field(default=100.0, metadata={
        "help": "a decision later than this counts as a miss"})
    max_markers: int = dataclasses.field(default=0, metadata={"help": "stop after this many markers (0: no limit)"})
    duration: float = dataclasses.field(default=0.0, metadata={
        "help": "stop after this many seconds of signal (0: no limit)"})
    embeddings: bool = dataclasses.field(default=False, metadata={
        "help": "write each decision's embedding into the log"})
    images: str = dataclasses.field(default="", metadata={
        "help": "folder: also generate the image of each decision (PNG)"})
    image_steps: int = dataclasses.field(default=0, metadata={"help": "DDIM steps of those images (0: the bundle's)"})
    marker_labels: bool = dataclasses.field(default=False, metadata={
        "help": "markers are class index + 1 (as `eegsine data export-recording` writes): report accuracy. A "
                "recording (file:, brainflow:playback:) with any other code (99, -1, 2.5) is refused; on a live "
                "source such a marker is not decided nor scored: a dropped_marker event, counted as unknown_markers"})
    threads: int = dataclasses.field(default=0, metadata={
        "help": "intra-op threads (0: this host's recorded choice, eegsine-verify --tune, else the backend's)"})
    backend: Literal["auto", "ort", "openvino"] = dataclasses.field(default="auto", metadata={
        "help": "ort, openvino, or auto: this host's recorded choice (eegsine-verify --tune), else ort"})

    def validate(self) -> None:
        if self.precision not in ("fp32", "int8"):
            raise UserError(f"StreamConfig.precision must be fp32 or int8, got {self.precision!r}")
        for name in ("chunk_ms", "buffer_s", "deadline_ms", "lsl_timeout", "speed"):
            if getattr(self, name) <= 0:
                raise UserError(f"StreamConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("window_step", "duration", "max_markers", "image_steps", "threads"):
            if getattr(self, name) < 0:
                raise UserError(f"StreamConfig.{name} must be >= 0, got {getattr(self, name)}")
        for kv in self.board_params:
            if "=" not in kv:
                raise UserError(f"StreamConfig.board_params: {kv!r} is not KEY=VALUE")


class RingBuffer:
    """The last ``capacity`` samples of (C,) frames, addressed by absolute sample index."""

    def __init__(self, n_chans: int, capacity: int):
        self.buf = np.zeros((n_chans, capacity), np.float32)
        self.bad = np.zeros(capacity, bool)             # a NaN/inf was replaced in this frame
        self.capacity = capacity
        self.total = 0                                  # samples written so far

    @property
    def oldest(self) -> int:
        return max(0, self.total - self.capacity)

    def write(self, x: np.ndarray, bad: np.ndarray) -> None:
        n = x.shape[1]
        if n >= self.capacity:
            x, bad = x[:, -self.capacity:], bad[-self.capacity:]
            self.total += n - self.capacity
            n = self.capacity
        i = self.total % self.capacity
        k = min(n, self.capacity - i)
        self.buf[:, i:i + k], self.bad[i:i + k] = x[:, :k], bad[:k]
        self.buf[:, :n - k], self.bad[:n - k] = x[:, k:], bad[k:]
        self.total += n

    def read(self, start: int, n: int) -> tuple[np.ndarray, bool]:
        if start < self.oldest or start + n > self.total:
            raise IndexError(start)
        idx = np.arange(start, start + n) % self.capacity
        return self.buf[:, idx], bool(self.bad[idx].any())


def _percentiles(v: list[float]) -> dict[str, float] | None:
    if not v:
        return None
    a = np.asarray(v)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3), "mean": round(float(a.mean()), 3), "n": len(v)}


def write_png(path: Path, image: np.ndarray) -> None:
    """(C, H, W) float in [0, 1] -> 8-bit PNG (zlib; no imaging library on the device)."""
    import struct
    import zlib

    img = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    c, h, w = img.shape
    mode = {1: 0, 3: 2}[c]
    rows = np.transpose(img, (1, 2, 0)).reshape(h, w * c)
    raw = b"".join(b"\x00" + r.tobytes() for r in rows)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, mode, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    path.write_bytes(png)


class _Monitor:
    """Per-channel NaN/inf counts and flat seconds (std 0, or < 1e-3 x the median channel's)."""

    def __init__(self, names: list[str], sfreq: float):
        self.names = names
        self.n = max(1, int(round(sfreq)))
        self.nan = np.zeros(len(names), np.int64)
        self.flat = np.zeros(len(names), np.int64)
        self.acc: list[np.ndarray] = []
        self.filled = 0
        self.reported: set[str] = set()

    def add(self, x: np.ndarray, finite: np.ndarray) -> list[str]:
        self.nan += (~finite).sum(axis=1)
        self.acc.append(np.where(finite, x, 0.0))
        self.filled += x.shape[1]
        new = []
        if self.filled >= self.n:
            block = np.concatenate(self.acc, axis=1)
            sd = block.std(axis=1)
            med = float(np.median(sd))
            flat = (sd == 0) | (sd < 1e-3 * med)
            self.flat += flat
            self.acc, self.filled = [], 0
            for i in np.flatnonzero(flat | (self.nan > 0)):
                if self.names[i] not in self.reported:
                    self.reported.add(self.names[i])
                    new.append(self.names[i])
        return new

    def report(self) -> dict[str, dict[str, int]]:
        return {"flat_channels_s": {self.names[i]: int(v) for i, v in enumerate(self.flat) if v},
                "nan_samples": {self.names[i]: int(v) for i, v in enumerate(self.nan) if v}}


class StreamRunner:
    """One stream session (see the module docstring); :meth:`run` returns the summary."""

    def __init__(self, cfg: StreamConfig, out: TextIO | None = None):
        if not cfg.source:
            raise UserError("stream: --source is required (brainflow:synthetic, brainflow:playback:FILE, lsl:NAME, "
                            "file:PATH)")
        if not cfg.bundle:
            raise UserError("stream: --bundle is required")
        self.cfg = cfg
        self.warnings: list[str] = []
        self.bundle = Bundle(cfg.bundle, threads=cfg.threads or None, backend=cfg.backend)
        entry = self.bundle.manifest["models"].get("eeg_encoder")
        if entry is None:
            raise UserError(f"{cfg.bundle}: the bundle has no EEG encoder")
        if entry.get("preprocessing") is None:
            raise UserError(f"{cfg.bundle}: the bundle carries no preprocessing (sfreq, channels, epoch window, "
                            "filters); re-export it from an encoder trained by this eegsine")
        self.decoder = EEGDecoder(self.bundle, cfg.precision)
        spec = self.decoder.preprocessing
        if spec is not None:  # open the ONNX session now: the first decision must not pay for it (~45 ms, measured)
            self.decoder.embed(np.zeros((1, spec.n_chans, spec.n_times), np.float32))
        self.spec = spec
        if spec.phase == "zero-phase" and spec.has_filters:
            self._warn(f"the bundle was trained on zero-phase ({spec.describe()}) filtered data; a stream can only "
                       "filter causally, so its epochs differ from the training data's (re-train with phase=causal)")
        self.generator = None
        if cfg.images:
            self.generator = EEGToImage(self.bundle, cfg.precision)
            Path(cfg.images).mkdir(parents=True, exist_ok=True)
        params = dict(kv.split("=", 1) for kv in cfg.board_params)
        self.source = open_source(cfg.source, fast=cfg.fast, board=cfg.board, board_params=params,
                                  lsl_markers=cfg.lsl_markers, lsl_timeout=cfg.lsl_timeout, chunk_s=cfg.chunk_ms / 1000,
                                  speed=cfg.speed)
        info = self.source.info
        if not math.isclose(info.sfreq, spec.sfreq, rel_tol=1e-6):
            raise UserError(f"{info.description} samples at {info.sfreq:g} Hz, the bundle needs {spec.sfreq:g} Hz "
                            "(no resampling at run time)")
        if info.total_samples is not None and info.total_samples < spec.n_times:
            raise UserError(f"{info.description}: {info.total_samples} samples, shorter than one epoch of the bundle "
                            f"({spec.n_times} samples at {spec.sfreq:g} Hz): nothing to decide")
        self.pick, self.mapping = self._channel_map(info.ch_names, info.n_chans)
        idx = self.bundle.manifest["models"]["eeg_encoder"]["prototypes"].get(
            "class_index", list(range(len(self.decoder.classes))))
        self.class_of_code = {int(i) + 1: name for name, i in zip(self.decoder.classes, idx)}
        if cfg.marker_labels and info.marker_codes is not None:
            foreign = [c for c in info.marker_codes if not self._is_class_code(c)]
            if foreign:
                raise UserError(f"{info.description}: --marker-labels: {len(foreign)} of {len(info.marker_codes)} "
                                f"markers have codes that are no class of the bundle "
                                f"({', '.join(map(str, sorted(set(foreign), key=float)[:6]))}; class codes: "
                                f"{self._codes_text()}); stream without --marker-labels to decide them unscored")
        self.ref_index = None
        if spec.reference not in ("as-recorded", "average"):
            if not info.ch_names or spec.reference not in info.ch_names:
                raise UserError(f"{info.description}: the bundle's reference channel {spec.reference!r} is not in the "
                                "stream")
            self.ref_index = info.ch_names.index(spec.reference)
        if info.units == "a.u." and spec.units != "a.u." or spec.units == "a.u." and info.units != "a.u.":
            self._warn(f"units: the stream is in {info.units}, the bundle's input in {spec.units}; no conversion "
                       "applied (check the scale)")
        self.gain = unit_factor(info.units, spec.units) * spec.scale
        self.filter = SOSFilter(spec.sos_array()) if spec.has_filters else None
        # a marker's epoch must still be in the buffer when the chunk completing it has been written: the largest
        # chunk plus one epoch (and the part of it before the marker)
        need = info.max_chunk + spec.n_times + max(0, -spec.offset)
        capacity = max(int(cfg.buffer_s * spec.sfreq), 2 * spec.n_times)
        if capacity < need:
            self._warn(f"ring buffer grown from {cfg.buffer_s:g} s to {need / spec.sfreq:.6g} s: it holds the "
                       f"source's largest chunk ({info.max_chunk} samples) and one epoch")
            capacity = need
        self.ring = RingBuffer(spec.n_chans, capacity)
        self.arrival = np.zeros(self.ring.capacity)        # perf_counter when each sample arrived
        self.stamp = np.full(self.ring.capacity, np.nan)   # the source's timestamp of each sample
        self.monitor = _Monitor(spec.ch_names, spec.sfreq)
        self.out = out

    def _channel_map(self, names: list[str] | None, n_src: int) -> tuple[np.ndarray, str]:
        """Source row of each bundle channel: by name (exact, else the one name equal but for case; MNE's
        ``pick`` refuses missing names, so does this) unless ``--channel-map by-position`` or the source names none."""
        want, desc = self.spec.ch_names, self.source.info.description
        if names is not None and self.cfg.channel_map != "by-position":
            exact = {n: i for i, n in enumerate(names)}
            folded: dict[str, list[int]] = {}
            for i, n in enumerate(names):
                folded.setdefault(n.lower(), []).append(i)
            rows = [exact.get(w, folded[w.lower()][0] if len(folded.get(w.lower(), [])) == 1 else None) for w in want]
            missing = [w for w, r in zip(want, rows) if r is None]
            if missing:
                raise UserError(f"{desc}: the bundle needs channels {', '.join(missing[:6])}"
                                f"{' ...' if len(missing) > 6 else ''} ({len(missing)} of {len(want)} missing; the "
                                f"stream has {len(names)}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}; "
                                f"--channel-map by-position takes its first {len(want)} rows instead)")
            return np.array(rows), "by name"
        if n_src < len(want):
            raise UserError(f"{desc}: {n_src} channels, the bundle needs {len(want)}")
        if names is None and self.cfg.channel_map != "by-position":
            if n_src > len(want):
                raise UserError(f"{desc}: the stream names none of its {n_src} channels and the bundle needs "
                                f"{len(want)}: --channel-map by-position takes its first {len(want)} rows")
            self._warn(f"the stream names none of its channels: its {n_src} rows mapped by position to the bundle's "
                       f"{', '.join(want[:4])}{' ...' if len(want) > 4 else ''}")
            return np.arange(len(want)), "by position (unnamed)"
        if n_src > len(want):
            self._warn(f"the stream's {n_src} channels mapped by position: the first {len(want)} are used")
        return np.arange(len(want)), "by position"

    def _is_class_code(self, code: Any) -> bool:
        return (isinstance(code, (int, float)) and not isinstance(code, bool) and math.isfinite(code)
                and float(code).is_integer() and int(code) in self.class_of_code)

    def _codes_text(self) -> str:
        codes = sorted(self.class_of_code)
        contiguous = codes == list(range(codes[0], codes[-1] + 1))
        return f"{codes[0]}..{codes[-1]}" if contiguous and len(codes) > 2 else ", ".join(map(str, codes))

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)

    # -- output ------------------------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        if self.out is not None:
            self.out.write(json.dumps(event, allow_nan=False,
                                      default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n")
            self.out.flush()

    # -- the loop ------------------------------------------------------------------------------------
    def _preprocess(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raw = x[self.pick] * self.gain
        if self.ref_index is not None:
            raw = raw - x[[self.ref_index]] * self.gain
        finite = np.isfinite(raw)
        bad = ~finite.all(axis=0)
        raw = np.where(finite, raw, 0.0)
        if self.spec.reference == "average":
            raw = rereference(raw, "average", self.spec.ch_names, axis=0)
        for name in self.monitor.add(raw, finite):
            msg = (f"channel {name}: {int(self.monitor.nan[self.spec.ch_names.index(name)])} NaN/inf samples"
                   if self.monitor.nan[self.spec.ch_names.index(name)] else f"channel {name} is flat")
            self.emit({"type": "warning", "message": msg, "sample": self.ring.total})
            self.warnings.append(msg)
        y = self.filter(raw) if self.filter is not None else raw
        return y.astype(np.float32), bad

    def run(self) -> dict[str, Any]:
        cfg, spec = self.cfg, self.spec
        st = {"markers": 0, "decisions": 0, "windows": 0, "dropped_markers": 0, "dropped_samples": 0,
              "deadline_misses": 0, "correct": 0, "scored": 0, "overruns": 0, "unknown_markers": 0}
        self.latency_ms, self.latency_from_sample_ms = [], []
        self.pending: list[dict[str, Any]] = []       # markers waiting for their epoch
        self.next_window = spec.n_times
        stopped = "end of stream"
        wall0 = time.perf_counter()
        prev_handler = signal.getsignal(signal.SIGTERM)

        def on_term(signum, frame):  # noqa: ARG001
            raise KeyboardInterrupt

        try:
            signal.signal(signal.SIGTERM, on_term)
        except ValueError:  # not the main thread
            prev_handler = None
        info = self.source.info
        self.emit({"type": "start", "log_version": STREAM_LOG_VERSION, "source": cfg.source,
                   "description": info.description, "bundle": str(cfg.bundle), "precision": cfg.precision,
                   "sfreq": spec.sfreq, "n_chans": spec.n_chans, "n_times": spec.n_times, "tmin": spec.tmin,
                   "tmax": spec.tmax, "preprocessing": spec.describe(),
                   "channel_mapping": self.mapping, "classes": self.decoder.classes, "speed": cfg.speed,
                   "warnings": list(self.warnings)})
        try:
            self.source.start()
            while True:
                chunk = self.source.read()
                if chunk is None:
                    stopped = self.source.end_reason or stopped
                    break
                if self._ingest(chunk, st):
                    stopped = "max markers"
                if stopped == "max markers" and not self.pending:
                    break
                if cfg.duration and self.ring.total >= cfg.duration * spec.sfreq:
                    stopped = "duration"
                    break
        except KeyboardInterrupt:
            stopped = "interrupted"
        finally:
            try:
                self.source.stop()
            finally:
                if prev_handler is not None:
                    signal.signal(signal.SIGTERM, prev_handler)
        for m in self.pending:
            self._dropped(m, "the stream ended before its epoch was complete", st)
        if self.source.end_reason:
            self.warnings.append(f"the stream ended early: {self.source.end_reason}")
        summary = self._summary(stopped, st, time.perf_counter() - wall0)
        self.emit(summary)
        return summary

    def _ingest(self, chunk: Any, st: dict[str, int]) -> bool:
        """One chunk: preprocess into the ring buffer, register its markers, decide what is complete.
        True once ``max_markers`` markers have come in."""
        cfg, spec = self.cfg, self.spec
        n = chunk.data.shape[1]
        base = self.ring.total
        if n:
            t_arr = time.perf_counter()
            st["dropped_samples"] += chunk.dropped
            y, bad = self._preprocess(chunk.data)
            self.ring.write(y, bad)
            idx = np.arange(base, base + n) % self.ring.capacity
            self.arrival[idx] = t_arr
            self.stamp[idx] = chunk.timestamps if chunk.timestamps is not None else np.nan
        full = False
        for off, code in chunk.markers:             # off < 0: a marker that came after its sample (LSL)
            st["markers"] += 1
            m = {"sample": base + off, "marker": code}
            if cfg.marker_labels and not self._is_class_code(code):   # reported apart: neither decided nor scored
                st["unknown_markers"] += 1
                self._dropped(m, f"marker code {code!r} is no class of the bundle (--marker-labels: class codes "
                                 f"{self._codes_text()})", st)
            else:
                self.pending.append(m)
            full = full or bool(cfg.max_markers and st["markers"] >= cfg.max_markers)
        ready, keep = [], []
        for m in self.pending:
            (ready if m["sample"] + spec.offset + spec.n_times <= self.ring.total else keep).append(m)
        self.pending = keep
        step = int(round(cfg.window_step * spec.sfreq)) if cfg.window_step > 0 else 0
        while step and self.next_window <= self.ring.total:
            ready.append({"sample": self.next_window - spec.n_times - spec.offset, "marker": None})
            self.next_window += step
        if ready:
            self._decide(ready, st, self.latency_ms, self.latency_from_sample_ms)
        return full

    def _summary(self, stopped: str, st: dict[str, int], wall: float) -> dict[str, Any]:
        cfg, spec, info = self.cfg, self.spec, self.source.info
        return {
            "type": "summary", "stopped": stopped, "source": cfg.source, "description": info.description,
            "bundle": str(cfg.bundle), "precision": cfg.precision, "speed": cfg.speed, "sfreq": spec.sfreq,
            "n_chans": spec.n_chans, "n_times": spec.n_times, "channel_mapping": self.mapping,
            "samples": int(self.ring.total), "signal_s": round(self.ring.total / spec.sfreq, 3),
            "wall_s": round(wall, 3),
            "markers": st["markers"], "decisions": st["decisions"], "windows": st["windows"],
            "dropped_markers": st["dropped_markers"], "unknown_markers": st["unknown_markers"],
            "dropped_samples": st["dropped_samples"], "buffer_s": round(self.ring.capacity / spec.sfreq, 6),
            "deadline_ms": cfg.deadline_ms, "deadline_misses": st["deadline_misses"],
            "buffer_overruns": st["overruns"],
            "latency_ms": _percentiles(self.latency_ms),
            "latency_from_sample_ms": _percentiles(self.latency_from_sample_ms),
            **self.monitor.report(), "warnings": self.warnings, "cpu": _cpu_name(),
            "threads": cfg.threads or None,
            "accuracy": round(st["correct"] / st["scored"], 4) if st["scored"] else None,
            "n_classes": len(self.decoder.classes),
        }

    def _dropped(self, m: dict[str, Any], reason: str, st: dict[str, int]) -> None:
        st["dropped_markers"] += 1
        self.emit({"type": "dropped_marker", "marker": m["marker"], "sample": int(m["sample"]), "reason": reason})

    def _decide(self, ready: list[dict[str, Any]], st: dict[str, int], lat: list[float], lat_ts: list[float]) -> None:
        spec, cfg = self.spec, self.cfg
        epochs, meta = [], []
        for m in ready:
            start = m["sample"] + spec.offset
            if start < 0:
                self._dropped(m, "its epoch starts before the stream did", st)
                continue
            try:
                x, bad = self.ring.read(start, spec.n_times)
            except IndexError:
                st["overruns"] += 1
                self._dropped(m, f"its epoch left the {cfg.buffer_s:g} s ring buffer (processing fell behind)", st)
                continue
            epochs.append(x)
            meta.append((m, start, bad))
        if not epochs:
            return
        dec = self.decoder.decode(np.stack(epochs).astype(np.float32))
        t_dec = time.perf_counter()
        t_unix = time.time()
        clock = self.source.info.clock
        for k, (m, start, bad) in enumerate(meta):
            last = (start + spec.n_times - 1) % self.ring.capacity
            latency = (t_dec - self.arrival[last]) * 1e3
            ts = float(self.stamp[last])
            ev: dict[str, Any] = {
                "type": "decision" if m["marker"] is not None else "window", "marker": m["marker"],
                "sample": int(m["sample"]), "time_s": round(m["sample"] / spec.sfreq, 6),
                "epoch": [int(start), int(start + spec.n_times)], "label": int(dec.labels[k]),
                "class": self.decoder.classes[int(dec.labels[k])], "confidence": round(float(dec.confidence[k]), 6),
                "latency_ms": round(latency, 3), "nan_in_epoch": bad}
            if math.isfinite(ts) and clock:
                now = t_unix if clock == "unix" else _lsl_clock()
                ev["latency_from_sample_ms"] = round((now - ts) * 1e3, 3)
                lat_ts.append(ev["latency_from_sample_ms"])
            if cfg.embeddings:
                ev["embedding"] = [float(v) for v in dec.embeddings[k]]
            lat.append(latency)
            if latency > cfg.deadline_ms:
                st["deadline_misses"] += 1
            if m["marker"] is None:
                st["windows"] += 1
            else:
                st["decisions"] += 1
                if cfg.marker_labels:                   # only class codes get here (see _ingest)
                    st["scored"] += 1
                    truth = self.class_of_code[int(m["marker"])]
                    st["correct"] += int(self.decoder.classes[int(dec.labels[k])] == truth)
            if self.generator is not None:
                t0 = time.perf_counter()
                img = self.generator(epochs[k][None].astype(np.float32), num_inference_steps=cfg.image_steps or None,
                                     generator=int(m["sample"])).images[0]
                path = Path(cfg.images) / f"{int(m['sample']):010d}.png"
                write_png(path, img)
                ev["image"], ev["image_ms"] = str(path), round((time.perf_counter() - t0) * 1e3, 1)
            self.emit(ev)


def _lsl_clock() -> float:
    return require("pylsl", "LSL timestamps").local_clock()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def render_summary(s: dict[str, Any]) -> str:
    lat = s.get("latency_ms")
    parts = [f"{s['decisions']} decisions / {s['markers']} markers", f"{s['dropped_markers']} dropped",
             f"latency p50 {lat['p50']:.2f} ms p99 {lat['p99']:.2f} ms" if lat else "no latency (nothing decided)",
             f"{s['dropped_samples']} dropped samples", f"{s['deadline_misses']} over {s['deadline_ms']:g} ms"]
    if s.get("windows"):
        parts.insert(1, f"{s['windows']} windows")
    if s.get("unknown_markers"):
        parts.insert(2, f"{s['unknown_markers']} of them with codes outside the classes")
    if s.get("accuracy") is not None:
        parts.append(f"accuracy {s['accuracy']:.3f}")
    for k in ("flat_channels_s", "nan_samples"):
        if s.get(k):
            parts.append(f"{k.split('_')[0]}: {', '.join(list(s[k])[:6])}")
    return f"stream ({s['stopped']}): " + ", ".join(parts)


def report_paths(summary_path: str | Path) -> tuple[Path, Path]:
    """The markdown and the latency histogram written next to ``--summary``: ``stream.md`` and
    ``latency_hist.png`` in its folder (what the pipeline report shows; one stream per folder)."""
    p = Path(summary_path)
    return p.with_name("stream.md"), p.with_name("latency_hist.png")


def latency_histogram(lat: list[float], lat_ts: list[float], path: Path, description: str) -> Path | None:
    """Histogram of the decisions' latencies (log-spaced bins); None without matplotlib or decisions.

    ``lat``: from the arrival of the chunk holding the epoch's last sample; ``lat_ts`` (BrainFlow, LSL):
    from that sample's acquisition timestamp, drawn on the same axis when the source gives one.
    """
    if not lat:
        return None
    try:
        import matplotlib
    except ImportError:
        log.warning("stream: matplotlib is not installed: no latency histogram (pip install matplotlib, or the "
                    'toolkit: pip install ".[cpu]")')
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    series = [(np.asarray(lat), "from the arrival of the chunk holding that sample")]
    if lat_ts:
        series.append((np.asarray(lat_ts), "from that sample's acquisition timestamp"))
    lo = max(1e-3, min(float(v.min()) for v, _ in series))
    hi = max(lo * 1.01, max(float(v.max()) for v, _ in series))
    bins = np.geomspace(lo * 0.95, hi * 1.05, 40)
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    for (v, label), style in zip(series, ({"alpha": 0.75}, {"histtype": "step", "linewidth": 1.6})):
        p = np.percentile(v, [50, 99])
        ax.hist(np.clip(v, lo, None), bins=bins, label=f"{label}: p50 {p[0]:.2f}, p99 {p[1]:.2f} ms", **style)
    ax.set_xscale("log")
    ax.set_xlabel("latency from the epoch's last sample to the decision (ms)")
    ax.set_ylabel("count")
    p50, p99 = np.percentile(series[0][0], [50, 99])
    short = re.sub(r"\S*/([^/\s]+)", r"\1", description)          # paths by their file names: the title fits
    ax.set_title(f"eegsine stream: n = {len(lat)} decisions, p50 {p50:.2f} ms, p99 {p99:.2f} ms\n{short}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def render_markdown(s: dict[str, Any], png: Path | None) -> str:
    """A short markdown summary of a stream (what the pipeline report shows)."""
    def pct(d: dict | None) -> str:
        return f"p50 {d['p50']:.2f} ms, p99 {d['p99']:.2f} ms, max {d['max']:.2f} ms (n {d['n']})" if d else "-"

    acc = s.get("accuracy")
    chance = f", chance {1 / s['n_classes']:.2f}" if s.get("n_classes") else ""
    rows = [
        ("source", f"`{s['source']}`: {s['description']}"),
        ("bundle", f"`{s['bundle']}` ({s['precision']}), {s['n_chans']} ch x {s['n_times']} @ {s['sfreq']:g} Hz, "
                   f"channels {s['channel_mapping']}"),
        ("stopped", f"{s['stopped']} after {s['signal_s']:g} s of signal in {s['wall_s']:g} s"),
        ("markers", str(s["markers"])),
        ("decisions", f"{s['decisions']}" + (f" (accuracy {acc:.3f}{chance})" if acc is not None else "")
         + (f", {s['windows']} sliding windows" if s.get("windows") else "")),
        ("dropped markers", str(s["dropped_markers"]) + (f" ({s['unknown_markers']} with codes outside the classes)"
                                                         if s.get("unknown_markers") else "")),
        ("latency, chunk arrival to decision", pct(s.get("latency_ms"))),
        ("latency, sample timestamp to decision", pct(s.get("latency_from_sample_ms"))),
        ("dropped samples (source counters)", str(s["dropped_samples"])),
        (f"late decisions (> {s['deadline_ms']:g} ms)", str(s["deadline_misses"])),
        ("ring-buffer overruns", str(s["buffer_overruns"])),
        ("flat channels (s)", ", ".join(f"{k} {v}" for k, v in s.get("flat_channels_s", {}).items()) or "none"),
        ("NaN/inf samples", ", ".join(f"{k} {v}" for k, v in s.get("nan_samples", {}).items()) or "none"),
        ("warnings", "; ".join(s.get("warnings") or []) or "none"),
    ]
    md = "## Stream\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {str(v).replace('|', '/')} |\n" for k, v in rows)
    md += f"\nCPU: {s.get('cpu')}, ONNX Runtime threads: {s.get('threads') or 'default'}.\n"
    if png is not None:
        md += f"\n![decision latency histogram]({png.name})\n"
    elif s.get("latency_ms"):
        md += "\nNo latency histogram: matplotlib is not installed.\n"
    return md


def write_report(summary_path: str | Path, summary: dict[str, Any], lat: list[float], lat_ts: list[float]) -> Path:
    """``--summary`` JSON plus ``stream.md`` and ``latency_hist.png`` beside it; returns the markdown's path."""
    write_json(summary_path, summary)
    md, png = report_paths(summary_path)
    drawn = latency_histogram(lat, lat_ts, png, summary["description"])
    atomic_write_text(md, render_markdown(summary, drawn))
    return md


class _LogFile:
    """The ``--log`` file, line-buffered: a full disk mid-stream is the one-line error naming it, not a traceback
    from deep in the stream loop (the lines written so far stay in the file)."""

    def __init__(self, path: str):
        self.path = path
        self._f = open(path, "w", buffering=1)

    def write(self, text: str) -> int:
        with one_line_os_errors(self.path, atomic=False):
            return self._f.write(text)

    def flush(self) -> None:
        with one_line_os_errors(self.path, atomic=False):
            self._f.flush()

    def close(self) -> None:
        with one_line_os_errors(self.path, atomic=False):  # the last flush can meet the full disk too
            self._f.close()


def run_stream(cfg: StreamConfig, out: TextIO | None = None) -> dict[str, Any]:
    """Open the bundle and the source, stream until the end / a limit / Ctrl-C; returns the summary."""
    close = None
    if out is None:
        if cfg.log == "-":
            out = sys.stdout
        else:
            with one_line_os_errors(cfg.log, atomic=False):  # read-only, a file in the way: before the bundle
                Path(cfg.log).parent.mkdir(parents=True, exist_ok=True)
                out = close = _LogFile(cfg.log)
    try:
        runner = StreamRunner(cfg, out)
        summary = runner.run()
    finally:
        if close is not None:
            close.close()
    if cfg.summary:
        write_report(cfg.summary, summary, runner.latency_ms, runner.latency_from_sample_ms)
    return summary
