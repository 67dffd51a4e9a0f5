"""Recording files as a device reads them, checked before a sample is decoded (one-line errors naming the file).

* EDF/BDF, FIF, BrainVision, ...: :func:`read_recording` (MNE; an EDF/BDF holding fewer data records than its
  header declares is refused: :func:`check_edf_length`), its events (:func:`recording_events`) and channel kinds.
* BrainFlow CSV (``DataFilter.write_file``'s format) and its ``.json`` sidecar: :func:`read_brainflow_csv` checks
  every line's columns against the master board's rows and every cell for a number, at least 2 samples,
  timestamps that never go back nor step more than :data:`MAX_TIMESTAMP_STEP_S` forward and advance at the
  board's rate (within :data:`RATE_TOLERANCE`), and the sidecar (:func:`read_sidecar`) against the file;
  :func:`board_descr` is BrainFlow's description of a board.

numpy only at import; MNE and BrainFlow are imported when a file of theirs is read. The writers (a recording
made from an epoched set) are :mod:`eegsine.data.recording`; the stream's sources, :mod:`eegsine.runtime.sources`.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from eegsine.errors import DataMissingError, UserError, require
from eegsine.io import disk_error, read_json
from eegsine.runtime.preprocessing import UNITS

_STIM_NAME = re.compile(r"^(sti\b|sti\s*\d|status$|trig|trigger|marker|events?$)", re.IGNORECASE)




def channel_kinds(raw: object) -> dict[str, str]:
    """name -> MNE channel type, with trigger-named channels (STI 014, Status, TRIG...) typed "stim"."""
    return {n: ("stim" if _STIM_NAME.match(n) else t)
            for n, t in zip(raw.ch_names, raw.get_channel_types())}  # type: ignore[attr-defined]


def check_edf_length(path: Path) -> None:
    """An EDF/BDF file must hold the data records its header declares: MNE reads a truncated file as a shorter
    recording, with only a warning ("Inferring from the file size"), so a third of a file gave a third of the
    trials. A header MNE cannot parse is left to MNE's own error; a record count of -1 (unknown) is not checked."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
            n_signals = int(head[252:256])
            fh.seek(256 + n_signals * 216)                  # label 16, transducer 80, 5 x 8, prefilter 80 per signal
            per_record = [int(fh.read(8)) for _ in range(n_signals)]
        header_bytes, n_records, duration = int(head[184:192]), int(head[236:244]), float(head[244:252])
    except (OSError, ValueError):
        return
    width = 3 if head[:1] == b"\xff" else 2                 # BDF: 24-bit samples (its first byte is 255), EDF: 16-bit
    record = sum(per_record) * width
    size = path.stat().st_size
    if n_records >= 0 and record > 0 and size < header_bytes + n_records * record:
        raise UserError(f"{path}: truncated: its header declares {n_records} data records of {duration:g} s "
                        f"({header_bytes + n_records * record} bytes), the file holds "
                        f"{max(0, size - header_bytes) / record:.2f} ({size} bytes)")


def read_recording(path: str | os.PathLike) -> "object":
    """``mne.io.Raw`` of ``path`` (preloaded), with one-line errors for a missing, truncated or unreadable file."""
    p = Path(path)
    if not p.is_file():
        raise DataMissingError(f"{p}: recording does not exist")
    mne = require("mne", f"{p}: reading a recording")
    if p.suffix.lower() in (".edf", ".bdf"):
        check_edf_length(p)
    try:
        return mne.io.read_raw(p, preload=True, verbose="error")
    except Exception as e:  # noqa: BLE001 - MNE raises ValueError/RuntimeError/... for foreign or broken files
        raise UserError(f"{p}: not a recording MNE can read "
                        f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None


def recording_events(raw: object, events: str = "auto",
                     stim_channel: str = "") -> tuple[np.ndarray, dict[str, int], str]:
    """(events (n, 3) with sample indices from the recording's start, {description: code}, "annotations" | "stim")."""
    mne = require("mne", "a recording's events")

    use_ann = events in ("auto", "annotations") and any(
        not d.lower().startswith(("bad", "edge")) for d in raw.annotations.description)  # type: ignore[attr-defined]
    if use_ann:
        ev, ids = mne.events_from_annotations(raw, verbose="error")
    elif events == "annotations":
        raise UserError(f"{raw.filenames[0]}: no (non-BAD) annotations to take events from")  # type: ignore[attr-defined]
    else:
        stims = [stim_channel] if stim_channel else [n for n, t in channel_kinds(raw).items() if t == "stim"]
        if not stims:
            raise UserError(f"{raw.filenames[0]}: no annotations and no stim channel to take events from")  # type: ignore[attr-defined]
        ev = mne.find_events(raw, stim_channel=stims, shortest_event=1, initial_event=True, verbose="error")
        ids = {str(c): int(c) for c in np.unique(ev[:, 2])}
    ev = ev.copy()
    ev[:, 0] -= raw.first_samp  # type: ignore[attr-defined]
    return ev, ids, "annotations" if use_ann else "stim"



# -- BrainFlow --------------------------------------------------------------------------------------
def import_brainflow() -> SimpleNamespace:
    bs = require("brainflow.board_shim", "a BrainFlow board or playback file")
    df = require("brainflow.data_filter", "a BrainFlow board or playback file")
    ml = require("brainflow.ml_model", "a BrainFlow board or playback file")
    if sys.version_info < (3, 12):
        package = lambda name: importlib.resources.files("brainflow")  # noqa: E731 - see the module docstring
        for m in (bs, df, ml):
            m.files = package  # type: ignore[attr-defined]
    bs.BoardShim.disable_board_logger()
    return SimpleNamespace(BoardShim=bs.BoardShim, BrainFlowInputParams=bs.BrainFlowInputParams, BoardIds=bs.BoardIds,
                           BrainFlowError=bs.BrainFlowError, DataFilter=df.DataFilter, MLModel=ml.MLModel,
                           BrainFlowModelParams=ml.BrainFlowModelParams, BrainFlowMetrics=ml.BrainFlowMetrics,
                           BrainFlowClassifiers=ml.BrainFlowClassifiers)


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

SIDECAR_FORMAT = "eegsine-recording"
SIDECAR_VERSION = 1


# Timestamps of a BrainFlow CSV: a longer step between two rows is lost samples (an epoch across it is cut from
# the wrong signal) and BrainFlow's playback board sleeps through it (a 1e6 s step replayed "for ever").
MAX_TIMESTAMP_STEP_S = 1.0
RATE_TOLERANCE = 0.05   # samples/s of the timestamps vs the board's rate: more apart is another board or lost data


def sidecar_path(path: str | Path) -> Path:
    return Path(str(path) + ".json")


def read_sidecar(path: str | Path) -> dict | None:
    """The sidecar of recording ``path`` (None without one), each field checked (unknown fields are kept)."""
    p = sidecar_path(path)
    if not p.is_file():
        return None
    d = read_json(p)
    if not isinstance(d, dict) or d.get("kind") != SIDECAR_FORMAT:
        raise UserError(f"{p}: not an eegsine recording sidecar")
    _check_sidecar(d, p)
    return d


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_sidecar(d: dict, p: Path) -> None:
    v = d.get("version")
    if not _is_int(v) or v < 1:
        raise UserError(f"{p}: version must be an integer >= 1, got {v!r}")
    if v > SIDECAR_VERSION:
        raise UserError(f"{p}: sidecar version {v} is newer than this eegsine reads ({SIDECAR_VERSION}); "
                        "upgrade eegsine")
    for key in ("sfreq", "ch_names"):
        if key not in d:
            raise UserError(f"{p}: no {key!r}")
    checks = {
        "sfreq": (lambda x: _is_num(x) and x > 0, "a sampling rate > 0 (Hz)"),
        "ch_names": (lambda x: isinstance(x, list) and x and all(isinstance(n, str) and n.strip() for n in x)
                     and len(set(x)) == len(x), "a list of distinct channel names"),
        "units": (lambda x: x in UNITS, f"one of {', '.join(UNITS)}"),
        "units_in_file": (lambda x: x in UNITS, f"one of {', '.join(UNITS)}"),
        "board": (lambda x: isinstance(x, str) and x.strip(), "a BrainFlow board name"),
        "n_samples": (lambda x: _is_int(x) and x >= 0, "a sample count >= 0"),
        "events": (lambda x: isinstance(x, list) and all(
            isinstance(e, list) and len(e) == 2 and _is_int(e[0]) and e[0] >= 0 and _is_num(e[1]) for e in x),
            "a list of [sample, code] pairs"),
    }
    for key, (ok, want) in checks.items():
        if key in d and not ok(d[key]):
            raise UserError(f"{p}: {key} must be {want}, got {str(d[key])[:60]!r}")


@dataclasses.dataclass
class BrainFlowRecording:
    """A BrainFlow CSV (and its sidecar) as :func:`read_brainflow_csv` checked it."""

    path: Path
    rows: np.ndarray            # (num_rows, n) float64: every row of the master board, as DataFilter.read_file gives
    board_id: int
    board: str                  # BoardIds name of the master board
    descr: dict                 # BrainFlow's description of that board (its default preset)
    eeg_rows: list[int]         # the rows of the recording's channels
    ch_names: list[str] | None  # the sidecar's, else the board's EEG names, else None
    sfreq: float
    units: str                  # of the EEG rows: the sidecar's units_in_file, else BrainFlow's uV
    sidecar: dict | None

    @property
    def markers(self) -> np.ndarray:
        """(k, 2) float64: sample, code of every non-zero cell of the marker row (codes may be non-integers)."""
        mk = self.rows[int(self.descr["marker_channel"])]
        at = np.flatnonzero(mk)
        return np.stack([at, mk[at]], 1).astype(np.float64) if len(at) else np.zeros((0, 2))


def _csv_rows(p: Path, n_cols: int, board: str) -> np.ndarray:
    """(n_cols, n) float64 of a tab-separated file, each line ``n_cols`` numbers (one-line errors otherwise)."""
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise disk_error(p, e) or UserError(f"{p}: cannot read the recording ({e.strerror})") from None
    if not raw.strip():
        raise UserError(f"{p}: empty file (a BrainFlow CSV has one line of {n_cols} numbers per sample)")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not a BrainFlow CSV (byte {e.start} is not text)") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    widths = [ln.count("\t") + 1 for ln in lines]
    bad = [i for i, w in enumerate(widths) if w != n_cols]
    if len(bad) == len(lines):
        raise UserError(f"{p}: {widths[0]} columns, a {board} file has {n_cols} (one per row of the board; "
                        "--board or the sidecar names the board)")
    if bad:
        raise UserError(f"{p}: line {bad[0] + 1} has {widths[bad[0]]} columns, a {board} file has {n_cols}")
    try:
        data = np.loadtxt(lines, delimiter="\t", dtype=np.float64, ndmin=2, comments=None)
    except ValueError as e:
        for i, ln in enumerate(lines, 1):
            for j, cell in enumerate(ln.split("\t"), 1):
                try:
                    float(cell)
                except ValueError:
                    raise UserError(f"{p}: line {i}, column {j}: {cell[:30]!r} is not a number") from None
        raise UserError(f"{p}: not a BrainFlow CSV ({' '.join(str(e).split())[:160]})") from None
    return np.ascontiguousarray(data.T)


def read_brainflow_csv(path: str | Path, board: str = "") -> BrainFlowRecording:
    """A BrainFlow CSV checked before a sample is used (see the module docstring); ``board``: the master board
    (default: the sidecar's, else SYNTHETIC_BOARD)."""
    p = Path(path)
    side = read_sidecar(p)
    side_board = (side or {}).get("board")
    bid, name, descr = board_descr(board or side_board or "synthetic")
    if board and side_board and board_descr(side_board)[1] != name:
        raise UserError(f"{p}: --board {board} but its sidecar says it was written for {side_board}")
    rows = _csv_rows(p, int(descr["num_rows"]), name)
    n, sfreq = rows.shape[1], float(descr["sampling_rate"])
    if n < 2:
        raise UserError(f"{p}: 1 sample; a recording has at least 2 (its timestamps pace the playback)")
    for what, r in (("timestamp", int(descr["timestamp_channel"])), ("marker", int(descr["marker_channel"]))):
        nonfinite = np.flatnonzero(~np.isfinite(rows[r]))
        if nonfinite.size:
            raise UserError(f"{p}: line {nonfinite[0] + 1}, column {r + 1}: {what} {rows[r, nonfinite[0]]} is not a "
                            "finite number")
    ts = rows[int(descr["timestamp_channel"])]
    step = np.diff(ts)
    back = np.flatnonzero(step < 0)
    if back.size:
        raise UserError(f"{p}: line {back[0] + 2}: the timestamp goes back {-step[back[0]]:.6g} s (timestamps must not "
                        "decrease)")
    jump = np.flatnonzero(step > MAX_TIMESTAMP_STEP_S)
    if jump.size:
        raise UserError(f"{p}: line {jump[0] + 2}: the timestamps jump {step[jump[0]]:.6g} s forward (more than "
                        f"{MAX_TIMESTAMP_STEP_S:g} s between two samples: samples lost; the playback board would wait "
                        "that long)")
    rate = (n - 1) / (ts[-1] - ts[0]) if ts[-1] > ts[0] else math.inf
    if not abs(rate / sfreq - 1) <= RATE_TOLERANCE:
        raise UserError(f"{p}: its timestamps advance {rate:.6g} samples/s, board {name} samples at {sfreq:g} Hz (more "
                        f"than {RATE_TOLERANCE:.0%} apart: another board's file, or samples lost)")
    eeg = list(descr["eeg_channels"])
    names: list[str] | None = None
    units = "uV"                                      # BrainFlow's EEG rows are microvolts
    if side is not None:
        if not math.isclose(side["sfreq"], sfreq, rel_tol=1e-9):
            raise UserError(f"{p}: its sidecar says {side['sfreq']:g} Hz, board {name} samples at {sfreq:g} Hz "
                            "(--board names the board the file was written for)")
        names = list(side["ch_names"])
        if len(names) > len(eeg):
            raise UserError(f"{p}: its sidecar names {len(names)} channels, board {name} has {len(eeg)} EEG rows")
        eeg = eeg[: len(names)]
        units = side.get("units_in_file", units)
        if "n_samples" in side and side["n_samples"] != n:
            raise UserError(f"{p}: {n} samples, its sidecar says {side['n_samples']} (a truncated file, or another "
                            "file's sidecar)")
        if "events" in side:
            mk = rows[int(descr["marker_channel"])]
            at = np.flatnonzero(mk)
            want = sorted((int(s), float(c)) for s, c in side["events"])
            got = [(int(s), float(mk[s])) for s in at]
            if got != want:
                k = next(i for i in range(max(len(got), len(want))) if got[i:i + 1] != want[i:i + 1])
                raise UserError(f"{p}: its marker row holds {len(got)} markers, its sidecar {len(want)} events; first "
                                f"difference at sample {(got[k:] or want[k:])[0][0]} (another file's sidecar?)")
    else:
        try:
            names = list(import_brainflow().BoardShim.get_eeg_names(bid))
        except Exception:  # noqa: BLE001 - BrainFlowError: the board names no electrodes
            names = None
    return BrainFlowRecording(p, rows, bid, name, descr, eeg, names, sfreq, units, side)
