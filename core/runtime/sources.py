"""Where ``eegsine stream`` gets samples from: BrainFlow boards and playback files, LSL, recordings.

A source is opened from its spec string (:func:`open_source`):

* ``brainflow:synthetic`` -- BrainFlow's SYNTHETIC_BOARD (250 Hz, 16 EEG rows); ``brainflow:BOARD``
  any other board by BoardIds name (its connection through ``--board-params KEY=VALUE``);
* ``brainflow:playback:FILE`` -- PLAYBACK_FILE_BOARD replaying a BrainFlow CSV in real time (or
  ``--speed`` times faster), the master board from the file's sidecar
  (:mod:`eegsine.data.recording`) or ``--board``;
* ``lsl:NAME`` -- an LSL EEG outlet by stream name, markers from an outlet of type ``Markers``
  (or named ``--lsl-markers``), both on this host's LSL clock (clock offsets applied);
* ``file:PATH`` -- a FIF/EDF/BDF/BrainVision recording (MNE) or a BrainFlow CSV, replayed in
  chunks at real time (or ``--speed`` times faster), or as fast as possible with ``--fast``.

Each yields :class:`Chunk` s: samples (n_chans, n) float64 in the source's units (BrainFlow:
microvolts, MNE: volts, LSL: what the outlet declares), the markers that fall on them (sample
offset, code), the samples' timestamps where the source has them (time.time() for BrainFlow,
LSL's local_clock for LSL) and how many samples the source says it lost. A marker's offset is
negative when it arrives after the chunk holding its sample (LSL delivers markers and samples on
separate connections). A source that stops delivering says why in :attr:`Source.end_reason`.
No read returns more than :attr:`SourceInfo.max_chunk` samples (the runner sizes its ring buffer by it:
BrainFlow and LSL hand out at most one second per read, the rest waits in their own buffers), and
recordings list their marker codes up front (:attr:`SourceInfo.marker_codes`). BrainFlow CSVs and their
sidecars are checked by :func:`eegsine.runtime.recordings.read_brainflow_csv` before anything is replayed.

BrainFlow's PLAYBACK_FILE_BOARD has no speed setting (5.23: ``config_board`` knows
``loopback_true/false``, ``new/old_timestamps`` and ``set_index_percentage:P``); its reader thread
sleeps the difference of consecutive rows' timestamps (``playback_file_board.cpp``), so ``--speed S``
replays a temporary copy of the file whose timestamps are ``1/S`` as far apart. With
``new_timestamps`` (its default) the rows it hands out carry the wall-clock time of their replay.

Libraries are imported when a source opens (the ``eegsine`` command must start without them).
BrainFlow 5.23 finds its libraries through ``importlib.resources.files(<module>)``, which needs
Python >= 3.12, and falls back to ``pkg_resources``, which setuptools >= 81 no longer ships:
:func:`import_brainflow` points its three modules at the package folder on older Pythons.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from eegsine.errors import UserError, require
from eegsine.runtime.recordings import (board_descr, channel_kinds, import_brainflow, read_brainflow_csv,
                                        read_recording, recording_events)


@dataclasses.dataclass
class SourceInfo:
    sfreq: float
    n_chans: int
    ch_names: list[str] | None      # None: unnamed rows (mapped by position)
    units: str                      # "V", "uV" or "a.u."
    description: str
    total_samples: int | None = None
    clock: str = ""                 # what Chunk.timestamps count: "unix" (time.time), "lsl" (local_clock) or ""
    max_chunk: int = 1              # the most samples one read() returns
    marker_codes: list | None = None   # recordings: every marker's code, known before streaming (live: None)


def marker_code(v: float) -> int | float:
    """A marker value as its code: an int where it is a whole number (BrainFlow stores markers as doubles)."""
    return int(v) if float(v).is_integer() else float(v)


@dataclasses.dataclass
class Chunk:
    data: np.ndarray                            # (n_chans, n) float64
    markers: list[tuple[int, Any]]              # (sample offset in this chunk, code)
    timestamps: np.ndarray | None = None        # (n,)
    dropped: int = 0                            # samples the source reports lost before this chunk


class Source:
    info: SourceInfo
    end_reason: str = ""            # why read() returned None, when it was not the end of a file

    def start(self) -> None: ...

    def read(self) -> Chunk | None:
        """The next chunk (possibly empty), or None once the stream has ended."""
        raise NotImplementedError

    def stop(self) -> None: ...


class BrainFlowSource(Source):
    """A BrainFlow board (or PLAYBACK_FILE_BOARD with ``playback`` = the CSV path, ``speed`` x real time)."""

    def __init__(self, board: str, playback: str = "", params: dict[str, str] | None = None, poll_s: float = 0.004,
                 speed: float = 1.0):
        self.bf = import_brainflow()
        self.playback = playback
        self.poll_s = poll_s
        self.tmp: Path | None = None
        p = self.bf.BrainFlowInputParams()
        rec = None
        if playback:
            if not Path(playback).is_file():
                raise UserError(f"{playback}: playback file does not exist")
            rec = read_brainflow_csv(playback, board)
            p.file = str(playback)
            master, name, descr = rec.board_id, rec.board, rec.descr
        else:
            master, name, descr = board_descr(board or "synthetic")
        for k, v in (params or {}).items():
            if not hasattr(p, k):
                raise UserError(f"--board-params: BrainFlowInputParams has no field {k!r}")
            setattr(p, k, type(getattr(p, k))(v))
        if playback:
            p.master_board = master
        self.board_id = self.bf.BoardIds.PLAYBACK_FILE_BOARD.value if playback else master
        self.rows = list(descr["eeg_channels"])
        self.marker_row = int(descr["marker_channel"])
        self.ts_row = int(descr["timestamp_channel"])
        self.pkg_row = descr.get("package_num_channel")
        total, units, codes = None, "uV", None
        self.file_markers = np.zeros((0, 2))
        self.file_rows: np.ndarray | None = None
        if rec is not None:  # PLAYBACK_FILE_BOARD replays every row but overwrites the marker row with its own
            # (empty) marker queue (Board::push_package), so the file's markers are placed here by sample count
            self.rows, names, units = rec.eeg_rows, rec.ch_names, rec.units
            self.file_rows, total, self.file_markers = rec.rows, rec.rows.shape[1], rec.markers
            codes = [marker_code(c) for c in self.file_markers[:, 1]]
        else:
            try:
                names = list(self.bf.BoardShim.get_eeg_names(master))
            except self.bf.BrainFlowError:
                names = None
        sfreq = float(descr["sampling_rate"])
        desc = f"BrainFlow {name}" + (f" playback of {playback}" if playback else "")
        self.info = SourceInfo(sfreq, len(self.rows), names, units,
                               desc + (f" at {speed:g}x real time" if playback and speed != 1.0 else ""), total, "unix",
                               max(1, int(round(sfreq))), codes)
        self.params, self.speed = p, speed
        self.shim: Any = None                            # made in start(): a faster copy of the file is made there
        self.received = 0
        self.last_pkg: int | None = None
        self._idle_since: float | None = None

    def _faster_copy(self) -> Path:
        """The playback file with its timestamps ``1 / speed`` as far apart (see the module docstring)."""
        import tempfile

        rows = self.file_rows.copy()
        ts = rows[self.ts_row]
        rows[self.ts_row] = ts[0] + (ts - ts[0]) / self.speed
        self.tmp = Path(tempfile.mkdtemp(prefix="eegsine-playback-"))
        path = self.tmp / Path(self.playback).name
        self.bf.DataFilter.write_file(np.ascontiguousarray(rows), str(path), "w")
        return path

    def start(self) -> None:
        if self.playback and self.speed != 1.0:
            self.params.file = str(self._faster_copy())
        self.shim = self.bf.BoardShim(self.board_id, self.params)
        try:
            self.shim.prepare_session()
            if self.playback:
                self.shim.config_board("loopback_false")
            self.shim.start_stream(450000)
        except self.bf.BrainFlowError as e:
            raise UserError(f"{self.info.description}: BrainFlow could not start the stream ({e})") from None

    def read(self) -> Chunk | None:
        if self.info.total_samples is not None and self.received >= self.info.total_samples:
            return None
        d = self.shim.get_board_data(self.info.max_chunk)     # the oldest samples first; the rest waits in BrainFlow
        if d.shape[1] == 0:
            now = time.monotonic()
            self._idle_since = self._idle_since or now
            if self.playback and now - self._idle_since > 3.0:  # the file ended short of its line count
                return None
            time.sleep(self.poll_s)
            return Chunk(np.zeros((len(self.rows), 0)), [])
        self._idle_since = None
        self.received += d.shape[1]
        dropped = 0
        if self.pkg_row is not None:
            pk = d[int(self.pkg_row)].astype(np.int64)
            seq = np.concatenate([[self.last_pkg], pk]) if self.last_pkg is not None else pk
            dropped = int(((np.diff(seq) - 1) % 256).sum())
            self.last_pkg = int(pk[-1])
        mk = d[self.marker_row]
        found = [(int(i), float(mk[i])) for i in np.flatnonzero(mk)]
        a = self.received - d.shape[1]
        fm = self.file_markers
        found += [(int(s - a), float(v)) for s, v in fm[(fm[:, 0] >= a) & (fm[:, 0] < self.received)]]
        markers = [(i, marker_code(v)) for i, v in sorted(found)]
        return Chunk(d[self.rows], markers, d[self.ts_row].copy(), dropped)

    def stop(self) -> None:
        try:
            if self.shim is not None and self.shim.is_prepared():
                self.shim.stop_stream()
                self.shim.release_session()
        except self.bf.BrainFlowError:
            pass
        finally:
            if self.tmp is not None:
                import shutil

                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None


# -- LSL --------------------------------------------------------------------------------------------
_LSL_UNITS = {"microvolts": "uV", "uv": "uV", "µv": "uV", "volts": "V", "v": "V"}


class LSLSource(Source):
    """An LSL EEG outlet (by name) and, if found, a marker outlet.

    Both inlets apply LSL's clock offsets (``proc_clocksync``), so marker and sample times are both on
    this host's ``local_clock``; the EEG inlet also keeps its timestamps ascending (``proc_monotonize``;
    markers may carry older timestamps than the one before, which that would clamp). A marker
    goes on the first sample at or after its timestamp minus half a sample period, looked up in the
    timestamps of the last ``history_s`` seconds: LSL delivers markers and samples on separate
    connections, so a marker may arrive a chunk or more after its sample (its offset is then negative;
    placing it in the chunk it arrived with put it on the wrong sample) or before it (kept until its
    sample comes). liblsl queues only what is pushed after ``open_stream`` (pylsl's docstring).

    Every wait is bounded: resolving, the full stream info and subscribing by ``timeout`` (one-line
    errors), each pull by 20 ms, and no sample for ``timeout`` seconds ends the stream
    (:attr:`end_reason`): an outlet that stopped or vanished (``recover`` keeps trying to reconnect
    behind that), or a marker whose sample never comes, cannot hang the runner. Markers still waiting
    then are handed over on extrapolated samples, so the runner reports them as dropped.
    """

    PULL_S = 0.02

    def __init__(self, name: str, markers: str = "", timeout: float = 5.0, history_s: float = 60.0):
        pylsl = require("pylsl", f"lsl:{name}")
        util = require("pylsl.util", f"lsl:{name}")
        self.errors = (util.LostError, util.TimeoutError)
        self.name, self.timeout = name, timeout
        found = pylsl.resolve_byprop("name", name, 1, timeout)
        if not found:
            raise UserError(f"lsl:{name}: no LSL stream of that name found within {timeout:g} s")
        self.inlet = pylsl.StreamInlet(found[0], max_buflen=60,
                                       processing_flags=pylsl.proc_clocksync | pylsl.proc_monotonize)
        info = self._call(lambda: self.inlet.info(timeout), "sent no stream description")
        sfreq = info.nominal_srate()
        if sfreq <= 0:
            raise UserError(f"lsl:{name}: the stream has an irregular rate; EEG needs a nominal sampling rate")
        names, units = [], set()
        ch = info.desc().child("channels").child("channel")
        for _ in range(info.channel_count()):
            names.append(ch.child_value("label"))
            units.add(_LSL_UNITS.get(ch.child_value("unit").strip().lower(), "a.u."))
            ch = ch.next_sibling()
        names = names if all(names) and len(set(names)) == len(names) else None
        unit = units.pop() if len(units) == 1 else "a.u."
        self.marker_inlet = None
        mfound = (pylsl.resolve_byprop("name", markers, 1, timeout) if markers
                  else pylsl.resolve_byprop("type", "Markers", 1, min(timeout, 2.0)))
        if markers and not mfound:
            raise UserError(f"lsl:{name}: no marker stream named {markers!r} found within {timeout:g} s")
        if mfound:
            self.marker_inlet = pylsl.StreamInlet(mfound[0], max_buflen=60, processing_flags=pylsl.proc_clocksync)
        self.n = info.channel_count()
        self.info = SourceInfo(float(sfreq), self.n, names, unit, f"LSL {name}" + (
            f" + markers {mfound[0].name()}" if mfound else " (no marker stream)"), None, "lsl", max(1, int(sfreq)))
        self.pending: list[tuple[float, Any]] = []      # (timestamp, code) of markers not placed yet
        self.hist: collections.deque[tuple[int, np.ndarray]] = collections.deque()   # (first sample, timestamps)
        self.keep = int(history_s * sfreq)
        self.total = 0                                  # samples delivered
        self.last_ts: float | None = None
        self.last_data = 0.0
        self.ended = False

    def _call(self, fn, what: str):
        try:
            return fn()
        except self.errors as e:
            raise UserError(f"lsl:{self.name}: the outlet {what} within {self.timeout:g} s "
                            f"({type(e).__name__}: {e})") from None

    def start(self) -> None:
        for inlet in (self.inlet, self.marker_inlet):
            if inlet is not None:
                self._call(lambda: inlet.open_stream(timeout=self.timeout), "accepted no subscription")
        self.last_data = time.monotonic()

    def _pull_markers(self) -> None:
        if self.marker_inlet is None:
            return
        mdata, mts = self.marker_inlet.pull_chunk(timeout=0.0)
        for v, t in zip(mdata, mts):
            val = v[0]
            try:
                val = int(float(val))
            except (TypeError, ValueError):
                pass
            self.pending.append((float(t), val))

    def _sample_at(self, mt: float) -> int:
        """Absolute index of the first sample at or after ``mt`` - half a period (extrapolated outside the history)."""
        x = mt - 0.5 / self.info.sfreq
        if self.hist and x > self.hist[-1][1][-1]:          # after the newest sample (the stream ended first)
            return self.total - 1 + int(math.ceil((x - self.hist[-1][1][-1]) * self.info.sfreq))
        for start, t in reversed(self.hist):
            if x > t[-1]:                       # between this chunk and the next one
                return start + len(t)
            if x >= t[0]:
                return start + int(np.searchsorted(t, x))
        start, t = self.hist[0] if self.hist else (self.total, np.array([x]))
        return start + int(math.ceil((x - t[0]) * self.info.sfreq))

    def _place(self, base: int, newest: float) -> list[tuple[int, Any]]:
        """Markers whose sample has arrived (all of them once the stream ended), as offsets from ``base``."""
        half = 0.5 / self.info.sfreq
        out, keep = [], []
        for mt, v in sorted(self.pending, key=lambda p: p[0]):
            if self.ended or mt - half <= newest:
                out.append((self._sample_at(mt) - base, v))
            else:
                keep.append((mt, v))
        self.pending = keep
        return out

    def read(self) -> Chunk | None:
        if self.ended:
            return None
        try:
            data, ts = self.inlet.pull_chunk(timeout=self.PULL_S, max_samples=self.info.max_chunk)
            self._pull_markers()
        except self.errors[0]:                  # LostError: not recoverable (no source_id)
            self.end_reason = f"lsl:{self.name}: the outlet was lost"
            return self._end()
        now = time.monotonic()
        if not ts:
            if now - self.last_data > self.timeout:
                self.end_reason = f"no samples from lsl:{self.name} for {self.timeout:g} s"
                return self._end()
            late = self._place(self.total, self.last_ts) if self.last_ts is not None else []
            return Chunk(np.zeros((self.n, 0)), late)       # markers of samples already delivered
        self.last_data = now
        x = np.asarray(data, np.float64).T                             # (C, n)
        t = np.asarray(ts, np.float64)
        dropped = 0
        if self.last_ts is not None:
            dropped = max(0, int(round((t[0] - self.last_ts) * self.info.sfreq - 1)))
        self.last_ts = float(t[-1])
        base = self.total
        self.hist.append((base, t))
        self.total += len(t)
        while len(self.hist) > 1 and self.total - self.hist[1][0] >= self.keep:
            self.hist.popleft()
        return Chunk(x, self._place(base, float(t[-1])), t, dropped)

    def _end(self) -> Chunk:
        """The markers still waiting, on the samples they would have had: the runner drops them."""
        self.ended = True
        return Chunk(np.zeros((self.n, 0)), self._place(self.total, math.inf))

    def stop(self) -> None:
        for inlet in (self.inlet, self.marker_inlet):
            if inlet is not None:
                inlet.close_stream()


# -- files ------------------------------------------------------------------------------------------
class FileSource(Source):
    """A recording replayed in chunks of ``chunk_s`` seconds, paced by the wall clock (``speed`` x real time)
    unless ``fast``."""

    def __init__(self, path: str, fast: bool = False, chunk_s: float = 0.032, board: str = "", speed: float = 1.0):
        p = Path(path)
        if not p.is_file():
            raise UserError(f"{p}: recording does not exist")
        self.fast, self.speed = fast, speed
        if p.suffix.lower() == ".csv":
            data, names, sfreq, units, events = self._read_csv(p, board)
            desc = f"BrainFlow CSV {p}"
        else:
            raw = read_recording(p)
            kinds = channel_kinds(raw)
            eeg = [n for n, t in kinds.items() if t not in ("stim", "misc")]
            has_stim = "stim" in kinds.values()
            ev, ids, _ = recording_events(raw, "stim" if has_stim else "annotations")
            data, names, sfreq, units = raw.get_data(picks=eeg), eeg, float(raw.info["sfreq"]), "V"
            events = ev[:, [0, 2]].astype(np.float64)
            desc = f"recording {p}"
        self.data, self.events = data, events[np.argsort(events[:, 0], kind="stable")]
        self.n = max(1, int(round(chunk_s * sfreq)))
        pace = " (fast)" if fast else " (real time)" if speed == 1.0 else f" ({speed:g}x real time)"
        self.info = SourceInfo(sfreq, data.shape[0], names, units, desc + pace, data.shape[1], "", self.n,
                               [marker_code(c) for c in self.events[:, 1]])
        self.pos = 0
        self.t0 = 0.0

    @staticmethod
    def _read_csv(p: Path, board: str) -> tuple[np.ndarray, list[str] | None, float, str, np.ndarray]:
        rec = read_brainflow_csv(p, board)
        return rec.rows[rec.eeg_rows], rec.ch_names, rec.sfreq, rec.units, rec.markers

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def read(self) -> Chunk | None:
        total = self.data.shape[1]
        if self.pos >= total:
            return None
        a, b = self.pos, min(self.pos + self.n, total)
        if not self.fast:  # a chunk is delivered once its last sample would have been acquired
            due = self.t0 + b / (self.info.sfreq * self.speed)
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        self.pos = b
        sel = (self.events[:, 0] >= a) & (self.events[:, 0] < b)
        markers = [(int(s - a), marker_code(c)) for s, c in self.events[sel]]
        return Chunk(self.data[:, a:b], markers)


def open_source(spec: str, fast: bool = False, board: str = "", board_params: dict[str, str] | None = None,
                lsl_markers: str = "", lsl_timeout: float = 5.0, chunk_s: float = 0.032, speed: float = 1.0) -> Source:
    kind, _, rest = spec.partition(":")
    if speed != 1.0 and not (kind == "file" or rest.startswith("playback:")):
        raise UserError(f"{spec}: --speed paces recordings (file:, brainflow:playback:), a live source has its own")
    if fast and kind != "file":
        raise UserError(f"{spec}: --fast replays file: recordings; BrainFlow playback paces itself (use --speed S)")
    if kind == "brainflow" and rest.startswith("playback:"):
        return BrainFlowSource(board, playback=rest[len("playback:"):], params=board_params, speed=speed)
    if kind == "brainflow" and rest:
        if board and rest != "board":
            raise UserError(f"{spec}: give the board once (brainflow:BOARD or brainflow:board --board BOARD)")
        return BrainFlowSource(board if rest == "board" else rest, params=board_params)
    if kind == "lsl" and rest:
        return LSLSource(rest, lsl_markers, lsl_timeout)
    if kind == "file" and rest:
        return FileSource(rest, fast=fast, chunk_s=chunk_s, board=board, speed=speed)
    raise UserError(f"unknown stream source {spec!r}: use brainflow:synthetic, brainflow:playback:FILE, lsl:NAME or "
                    "file:PATH")
