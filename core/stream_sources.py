"""Where ``eegsine stream`` gets samples from: BrainFlow boards and playback files, LSL, recordings.

A source is opened from its spec string (:func:`open_source`):

* ``brainflow:synthetic`` -- BrainFlow's SYNTHETIC_BOARD (250 Hz, 16 EEG rows); ``brainflow:BOARD``
  any other board by BoardIds name (its connection through ``--board-params KEY=VALUE``);
* ``brainflow:playback:FILE`` -- PLAYBACK_FILE_BOARD replaying a BrainFlow CSV in real time, the
  master board from the file's sidecar (:mod:`eegsine.data.recording`) or ``--board``;
* ``lsl:NAME`` -- an LSL EEG outlet by stream name, markers from an outlet of type ``Markers``
  (or named ``--lsl-markers``), timestamps aligned with LSL's clock offsets;
* ``file:PATH`` -- a FIF/EDF/BDF/BrainVision recording (MNE) or a BrainFlow CSV, replayed in
  chunks at real time, or as fast as possible with ``--fast``.

Each yields :class:`Chunk` s: samples (n_chans, n) float64 in the source's units (BrainFlow:
microvolts, MNE: volts, LSL: what the outlet declares), the markers that fall on them (sample
offset, code), the samples' timestamps where the source has them (time.time() for BrainFlow,
LSL's local_clock for LSL) and how many samples the source says it lost.

Libraries are imported when a source opens (the ``eegsine`` command must start without them).
BrainFlow 5.23 finds its libraries through ``importlib.resources.files(<module>)``, which needs
Python >= 3.12, and falls back to ``pkg_resources``, which setuptools >= 81 no longer ships:
:func:`import_brainflow` points its three modules at the package folder on older Pythons.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.resources
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from eegsine.errors import UserError


@dataclasses.dataclass
class SourceInfo:
    sfreq: float
    n_chans: int
    ch_names: list[str] | None      # None: unnamed rows (mapped by position)
    units: str                      # "V", "uV" or "a.u."
    description: str
    total_samples: int | None = None
    clock: str = ""                 # what Chunk.timestamps count: "unix" (time.time), "lsl" (local_clock) or ""


@dataclasses.dataclass
class Chunk:
    data: np.ndarray                            # (n_chans, n) float64
    markers: list[tuple[int, Any]]              # (sample offset in this chunk, code)
    timestamps: np.ndarray | None = None        # (n,)
    dropped: int = 0                            # samples the source reports lost before this chunk


class Source:
    info: SourceInfo

    def start(self) -> None: ...

    def read(self) -> Chunk | None:
        """The next chunk (possibly empty), or None once the stream has ended."""
        raise NotImplementedError

    def stop(self) -> None: ...


# -- BrainFlow --------------------------------------------------------------------------------------
def import_brainflow() -> SimpleNamespace:
    try:
        bs = importlib.import_module("brainflow.board_shim")
        df = importlib.import_module("brainflow.data_filter")
        ml = importlib.import_module("brainflow.ml_model")
    except ImportError as e:
        raise UserError(f"BrainFlow is not installed ({e}); pip install brainflow") from None
    if sys.version_info < (3, 12):
        package = lambda name: importlib.resources.files("brainflow")  # noqa: E731 - see the module docstring
        for m in (bs, df, ml):
            m.files = package  # type: ignore[attr-defined]
    bs.BoardShim.disable_board_logger()
    return SimpleNamespace(BoardShim=bs.BoardShim, BrainFlowInputParams=bs.BrainFlowInputParams, BoardIds=bs.BoardIds,
                           BrainFlowError=bs.BrainFlowError, DataFilter=df.DataFilter)


def board_descr(board: str | int) -> tuple[int, str, dict]:
    """(board id, BoardIds name, BrainFlow's description of its default preset) of ``board``: a BoardIds
    name with or without ``_BOARD`` (case-insensitive; ``synthetic`` = SYNTHETIC_BOARD) or an id."""
    bf = import_brainflow()
    names = {b.name: b.value for b in bf.BoardIds}
    key = str(board).strip().upper().replace("-", "_")
    if key.lstrip("-").isdigit() and int(key) in names.values():
        bid = int(key)
    elif key in names or key + "_BOARD" in names:
        bid = names[key] if key in names else names[key + "_BOARD"]
    else:
        raise UserError(f"unknown BrainFlow board {board!r} (e.g. synthetic, CYTON_DAISY, FREEEEG128; see BoardIds)")
    name = next(n for n, v in names.items() if v == bid)
    try:
        descr = bf.BoardShim.get_board_descr(bid)
    except bf.BrainFlowError as e:
        raise UserError(f"BrainFlow has no description of board {name} ({e})") from None
    if not descr.get("eeg_channels"):
        raise UserError(f"board {name} has no EEG channels")
    return bid, name, descr


class BrainFlowSource(Source):
    """A BrainFlow board (or PLAYBACK_FILE_BOARD with ``playback`` = the CSV path)."""

    def __init__(self, board: str, playback: str = "", params: dict[str, str] | None = None, poll_s: float = 0.004):
        self.bf = import_brainflow()
        self.playback = playback
        self.poll_s = poll_s
        p = self.bf.BrainFlowInputParams()
        sidecar = None
        if playback:
            from eegsine.data.recording import read_sidecar

            if not Path(playback).is_file():
                raise UserError(f"{playback}: playback file does not exist")
            sidecar = read_sidecar(playback)
            if sidecar is not None and sidecar.get("board") and board == "":
                board = sidecar["board"]
            p.file = str(playback)
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
        names = None
        if sidecar is not None:
            names = list(sidecar["ch_names"])
            self.rows = self.rows[: len(names)]
        else:
            try:
                names = list(self.bf.BoardShim.get_eeg_names(master))
            except self.bf.BrainFlowError:
                names = None
        total = None
        self.file_markers = np.zeros((0, 2))
        if playback:  # PLAYBACK_FILE_BOARD replays every row but overwrites the marker row with its own (empty)
            # marker queue (Board::push_package), so the file's markers are read here and placed by sample count
            rows = self.bf.DataFilter.read_file(str(playback))
            total = rows.shape[1]
            at = np.flatnonzero(rows[self.marker_row])
            self.file_markers = np.stack([at, rows[self.marker_row, at]], 1)
        self.info = SourceInfo(float(descr["sampling_rate"]), len(self.rows), names, "uV",
                               f"BrainFlow {name}" + (f" playback of {playback}" if playback else ""), total, "unix")
        self.shim = self.bf.BoardShim(self.board_id, p)
        self.received = 0
        self.last_pkg: int | None = None
        self._idle_since: float | None = None

    def start(self) -> None:
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
        d = self.shim.get_board_data()
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
        markers = [(i, int(v) if v.is_integer() else v) for i, v in sorted(found)]
        return Chunk(d[self.rows], markers, d[self.ts_row].copy(), dropped)

    def stop(self) -> None:
        try:
            if self.shim.is_prepared():
                self.shim.stop_stream()
                self.shim.release_session()
        except self.bf.BrainFlowError:
            pass


# -- LSL --------------------------------------------------------------------------------------------
_LSL_UNITS = {"microvolts": "uV", "uv": "uV", "µv": "uV", "volts": "V", "v": "V"}


class LSLSource(Source):
    """An LSL EEG outlet (by name) and, if found, a marker outlet; markers are placed on the first EEG
    sample whose (clock-corrected) timestamp is at or after theirs."""

    def __init__(self, name: str, markers: str = "", timeout: float = 5.0):
        try:
            import pylsl
        except ImportError as e:
            raise UserError(f"pylsl is not installed ({e}); pip install pylsl") from None
        self.lsl = pylsl
        found = pylsl.resolve_byprop("name", name, 1, timeout)
        if not found:
            raise UserError(f"lsl:{name}: no LSL stream of that name found within {timeout:g} s")
        self.inlet = pylsl.StreamInlet(found[0], max_buflen=60, processing_flags=pylsl.proc_clocksync)
        info = self.inlet.info()
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
            f" + markers {mfound[0].name()}" if mfound else " (no marker stream)"), None, "lsl")
        self.pending: list[tuple[float, Any]] = []
        self.last_ts: float | None = None

    def start(self) -> None:
        self.inlet.open_stream(timeout=5.0)
        if self.marker_inlet is not None:
            self.marker_inlet.open_stream(timeout=5.0)

    def read(self) -> Chunk | None:
        try:
            data, ts = self.inlet.pull_chunk(timeout=0.02)
            if self.marker_inlet is not None:
                mdata, mts = self.marker_inlet.pull_chunk(timeout=0.0)
                for v, t in zip(mdata, mts):
                    val = v[0]
                    try:
                        val = int(float(val))
                    except (TypeError, ValueError):
                        pass
                    self.pending.append((float(t), val))
        except self.lsl.LostError:
            return None
        if not ts:
            return Chunk(np.zeros((self.n, 0)), [])
        x = np.asarray(data, np.float64).T                             # (C, n)
        t = np.asarray(ts, np.float64)
        dropped = 0
        if self.last_ts is not None:
            gap = (t[0] - self.last_ts) * self.info.sfreq - 1
            dropped = max(0, int(round(gap)))
        self.last_ts = float(t[-1])
        markers, keep = [], []
        half = 0.5 / self.info.sfreq
        for mt, v in sorted(self.pending, key=lambda p: p[0]):
            if mt - half <= t[-1]:
                markers.append((int(np.searchsorted(t, mt - half)), v))  # a marker older than the chunk -> sample 0
            else:
                keep.append((mt, v))
        self.pending = keep
        return Chunk(x, markers, t, dropped)

    def stop(self) -> None:
        for inlet in (self.inlet, self.marker_inlet):
            if inlet is not None:
                inlet.close_stream()


# -- files ------------------------------------------------------------------------------------------
class FileSource(Source):
    """A recording replayed in chunks of ``chunk_s`` seconds, paced by the wall clock unless ``fast``."""

    def __init__(self, path: str, fast: bool = False, chunk_s: float = 0.032, board: str = ""):
        p = Path(path)
        if not p.is_file():
            raise UserError(f"{p}: recording does not exist")
        self.fast = fast
        if p.suffix.lower() == ".csv":
            data, names, sfreq, units, events = self._read_csv(p, board)
            desc = f"BrainFlow CSV {p}"
        else:
            from eegsine.data.raw import channel_kinds, read_recording, recording_events

            raw = read_recording(p)
            kinds = channel_kinds(raw)
            eeg = [n for n, t in kinds.items() if t not in ("stim", "misc")]
            has_stim = "stim" in kinds.values()
            ev, ids, _ = recording_events(raw, "stim" if has_stim else "annotations")
            data, names, sfreq, units = raw.get_data(picks=eeg), eeg, float(raw.info["sfreq"]), "V"
            events = ev[:, [0, 2]]
            desc = f"recording {p}"
        self.data, self.events = data, events[np.argsort(events[:, 0], kind="stable")]
        self.n = max(1, int(round(chunk_s * sfreq)))
        self.info = SourceInfo(sfreq, data.shape[0], names, units, desc + (" (fast)" if fast else " (real time)"),
                               data.shape[1], "")
        self.pos = 0
        self.t0 = 0.0

    @staticmethod
    def _read_csv(p: Path, board: str) -> tuple[np.ndarray, list[str] | None, float, str, np.ndarray]:
        from eegsine.data.recording import read_sidecar

        bf = import_brainflow()
        side = read_sidecar(p)
        _, _, descr = board_descr(board or (side or {}).get("board") or "synthetic")
        d = bf.DataFilter.read_file(str(p))
        rows = list(descr["eeg_channels"])
        names = list(side["ch_names"]) if side else None
        if names:
            rows = rows[: len(names)]
        mk = d[int(descr["marker_channel"])]
        at = np.flatnonzero(mk)
        events = np.stack([at, mk[at]], 1).astype(np.int64) if len(at) else np.zeros((0, 2), np.int64)
        return d[rows], names, float(descr["sampling_rate"]), (side or {}).get("units_in_file", "uV"), events

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def read(self) -> Chunk | None:
        total = self.data.shape[1]
        if self.pos >= total:
            return None
        a, b = self.pos, min(self.pos + self.n, total)
        if not self.fast:  # a chunk is delivered once its last sample would have been acquired
            due = self.t0 + b / self.info.sfreq
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        self.pos = b
        sel = (self.events[:, 0] >= a) & (self.events[:, 0] < b)
        markers = [(int(s - a), int(c)) for s, c in self.events[sel]]
        return Chunk(self.data[:, a:b], markers)


def open_source(spec: str, fast: bool = False, board: str = "", board_params: dict[str, str] | None = None,
                lsl_markers: str = "", lsl_timeout: float = 5.0, chunk_s: float = 0.032) -> Source:
    kind, _, rest = spec.partition(":")
    if kind == "brainflow" and rest.startswith("playback:"):
        return BrainFlowSource(board, playback=rest[len("playback:"):], params=board_params)
    if kind == "brainflow" and rest:
        if board and rest != "board":
            raise UserError(f"{spec}: give the board once (brainflow:BOARD or brainflow:board --board BOARD)")
        return BrainFlowSource(board if rest == "board" else rest, params=board_params)
    if kind == "lsl" and rest:
        return LSLSource(rest, lsl_markers, lsl_timeout)
    if kind == "file" and rest:
        return FileSource(rest, fast=fast, chunk_s=chunk_s, board=board)
    raise UserError(f"unknown stream source {spec!r}: use brainflow:synthetic, brainflow:playback:FILE, lsl:NAME or "
                    "file:PATH")
