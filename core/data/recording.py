"""Continuous recordings made from an epoched EEG set: what an amplifier would have streamed.

:func:`continuous_recording` lays a set's trials end to end in one signal: trial ``i``'s
stimulus marker (code = class index + 1; BrainFlow reserves 0 for "no marker") at sample
``s_i``, its samples at ``s_i + round(tmin * sfreq)`` onwards (the set's preprocessing spec
gives ``tmin``), and between trials an inter-stimulus interval of ``isi`` + U(0, ``isi_jitter``)
seconds filled with Gaussian noise of each channel's RMS over the trials (the set has no
background recording to take it from; the joints are discontinuous, a filter rings there).
Cutting the recording at its markers returns the trials exactly.

Writers: :func:`write_fif` (MNE; volts, a ``STI 014`` stim channel with the codes, annotations
named by class, standard 10-05 positions where the names match) and
:func:`write_brainflow_csv` (the file BrainFlow's ``DataFilter.write_file`` writes and the
PLAYBACK_FILE_BOARD replays: the master board's rows, EEG in its first EEG rows in microvolts,
codes in its marker row, timestamps in its timestamp row; ``board="auto"``: the board that has
the recording's rate and channels, :func:`playback_board`) plus a ``.json`` sidecar naming the
channels, board and events (BrainFlow files carry no channel names).

Readers check before a sample is decoded (one-line :class:`~eegsine.errors.UserError` s naming the file
and the line/column): :func:`read_sidecar` checks the sidecar field by field; :func:`read_brainflow_csv`
(``eegsine stream``'s ``file:`` and ``brainflow:playback:`` sources) checks every line's columns against
the master board's rows and every cell for a number, at least 2 samples, timestamps that never go back
nor step more than :data:`MAX_TIMESTAMP_STEP_S` forward and advance at the board's rate (within
:data:`RATE_TOLERANCE`), and the sidecar against the file (board, rate, channel count, sample count,
markers); the sidecar's channel names and ``units_in_file`` are what the stream uses.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from eegsine.config import check_value
from eegsine.data.base import EEGSet
from eegsine.errors import UserError
from eegsine.io import read_json, write_json

SIDECAR_FORMAT = "eegsine-recording"
SIDECAR_VERSION = 1
# Timestamps of a BrainFlow CSV: a longer step between two rows is lost samples (an epoch across it is cut from
# the wrong signal) and BrainFlow's playback board sleeps through it (a 1e6 s step replayed "for ever").
MAX_TIMESTAMP_STEP_S = 1.0
RATE_TOLERANCE = 0.05   # samples/s of the timestamps vs the board's rate: more apart is another board or lost data


@dataclasses.dataclass
class Recording:
    data: np.ndarray            # (C, S) float32, in ``units``
    sfreq: float
    ch_names: list[str]
    units: str
    events: np.ndarray          # (n, 2) int64: marker sample, code
    classes: list[str]          # code k is classes[k - 1]
    trials: np.ndarray          # (n,) index of each event's trial in the source set
    tmin: float


def check_recording_args(n_trials: int = 0, isi: float = 0.5, isi_jitter: float = 0.2, lead: float = 1.0,
                         seed: int = 0) -> None:
    """:func:`continuous_recording`'s arguments, typed and in range (the CLI checks them before loading a set)."""
    if check_value("recording: n_trials", int, n_trials) < 0:
        raise UserError(f"recording: n_trials must be >= 0 (0: every trial of the split), got {n_trials}")
    if check_value("recording: seed", int, seed) < 0:  # numpy's default_rng refuses it with a traceback
        raise UserError(f"recording: seed must be >= 0, got {seed}")
    for name, v in (("isi", isi), ("isi_jitter", isi_jitter), ("lead", lead)):
        if check_value(f"recording: {name}", float, v) < 0:  # a finite number: nan would become a garbage gap
            raise UserError(f"recording: {name} must be >= 0 s, got {v}")


def continuous_recording(ds: EEGSet, split: str = "test", n_trials: int = 0, isi: float = 0.5,
                         isi_jitter: float = 0.2, lead: float = 1.0, seed: int = 0) -> Recording:
    """The trials of ``split`` ("all" for every trial; the first ``n_trials`` if > 0) as one recording."""
    check_recording_args(n_trials=n_trials, isi=isi, isi_jitter=isi_jitter, lead=lead, seed=seed)
    idx = np.arange(len(ds.x)) if split == "all" else ds.split(split)
    if n_trials > 0:
        idx = idx[:n_trials]
    if len(idx) == 0:
        raise UserError(f"{ds.name}: split {split!r} has no trials to record")
    sf = ds.sfreq
    tmin = ds.preprocessing.tmin if ds.preprocessing is not None else 0.0
    offset = int(round(tmin * sf))
    T = ds.n_times
    rng = np.random.default_rng(seed)
    gaps = np.round((isi + rng.uniform(0.0, isi_jitter, len(idx))) * sf).astype(np.int64)
    span = T + gaps                                                     # epoch + the gap after it
    starts = int(round(lead * sf)) + max(0, -offset) + np.concatenate([[0], np.cumsum(span[:-1])])  # epoch starts
    total = int(starts[-1] + span[-1] + max(0, offset))
    rms = np.sqrt((ds.x[idx].astype(np.float64) ** 2).mean(axis=(0, 2)))              # (C,)
    data = (rng.standard_normal((ds.n_chans, total)) * rms[:, None]).astype(np.float32)
    for s, i in zip(starts, idx):
        data[:, s:s + T] = ds.x[i]
    units = ds.preprocessing.units if ds.preprocessing is not None else str(ds.info.get("units", "a.u."))
    events = np.stack([starts - offset, ds.y[idx] + 1], axis=1).astype(np.int64)
    return Recording(data, float(sf), list(ds.ch_names), units, events, list(ds.classes), idx.astype(np.int64), tmin)


def write_fif(rec: Recording, path: str | Path) -> Path:
    """MNE ``.fif``: EEG in volts, stim channel ``STI 014``, annotations named by class."""
    import mne

    from eegsine.preprocessing import standard_montage, unit_factor

    path = Path(path)
    if not path.name.endswith((".fif", "_raw.fif", "_eeg.fif", ".fif.gz")):
        raise UserError(f"{path}: a FIF recording's name ends with .fif")
    info = mne.create_info(rec.ch_names + ["STI 014"], rec.sfreq, ch_types=["eeg"] * len(rec.ch_names) + ["stim"])
    stim = np.zeros((1, rec.data.shape[1]))
    stim[0, rec.events[:, 0]] = rec.events[:, 1]
    scale = unit_factor(rec.units, "V") if rec.units != "a.u." else 1e-6   # a.u. is written as if uV
    raw = mne.io.RawArray(np.concatenate([rec.data.astype(np.float64) * scale, stim]), info, verbose="error")
    raw.set_montage(standard_montage(), on_missing="ignore", match_case=False)
    raw.set_annotations(mne.Annotations(rec.events[:, 0] / rec.sfreq, 0.0,
                                        [rec.classes[c - 1] for c in rec.events[:, 1]]))
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.save(path, overwrite=True, verbose="error")
    _write_sidecar(rec, path, {"format": "fif"})
    return path


def playback_board(sfreq: float, n_chans: int) -> str:
    """The BrainFlow board a recording of ``n_chans`` at ``sfreq`` can be written for (``--board auto``):
    SYNTHETIC_BOARD if it fits (250 Hz, 16 EEG rows), else the board at that rate with the fewest EEG rows
    that still holds them all (32 ch @ 250 Hz: EXPLORE_PLUS_32_CHAN_BOARD)."""
    from eegsine.stream_sources import import_brainflow

    bf = import_brainflow()
    fits = []
    for b in bf.BoardIds:
        try:
            d = bf.BoardShim.get_board_descr(b.value)
        except bf.BrainFlowError:
            continue                                    # PLAYBACK_FILE_BOARD, STREAMING_BOARD: no rows of their own
        if (float(d.get("sampling_rate", 0)) == float(sfreq) and len(d.get("eeg_channels", [])) >= n_chans
                and "marker_channel" in d and "timestamp_channel" in d):
            fits.append((b.name != "SYNTHETIC_BOARD", len(d["eeg_channels"]), int(d["num_rows"]), b.name))
    if not fits:
        raise UserError(f"no BrainFlow board samples {n_chans} EEG channels at {sfreq:g} Hz (e.g. FREEEEG128_BOARD: "
                        "128 at 256 Hz, EXPLORE_PLUS_32_CHAN_BOARD: 32 at 250 Hz): write a .fif instead")
    return min(fits)[3]


def write_brainflow_csv(rec: Recording, path: str | Path, board: str = "synthetic") -> Path:
    """BrainFlow playback file for the master ``board`` (same sampling rate, at least as many EEG rows;
    ``auto``: :func:`playback_board`)."""
    from eegsine.preprocessing import unit_factor
    from eegsine.stream_sources import board_descr, import_brainflow

    bf = import_brainflow()
    if board == "auto":
        board = playback_board(rec.sfreq, len(rec.ch_names))
    bid, name, descr = board_descr(board)
    if float(descr["sampling_rate"]) != rec.sfreq:
        raise UserError(f"board {name} samples at {descr['sampling_rate']} Hz, the recording at {rec.sfreq:g} Hz: "
                        f"generate it at that rate (e.g. -o sfreq={descr['sampling_rate']}) or pick another --board")
    eeg_rows = list(descr["eeg_channels"])
    if len(rec.ch_names) > len(eeg_rows):
        raise UserError(f"board {name} has {len(eeg_rows)} EEG channels, the recording {len(rec.ch_names)}: "
                        "pick a board with more (e.g. FREEEEG128_BOARD at 256 Hz) or fewer channels")
    n = rec.data.shape[1]
    out = np.zeros((int(descr["num_rows"]), n))
    out[eeg_rows[: len(rec.ch_names)]] = rec.data * (unit_factor(rec.units, "uV") if rec.units != "a.u." else 1.0)
    out[int(descr["marker_channel"]), rec.events[:, 0]] = rec.events[:, 1]
    out[int(descr["timestamp_channel"])] = time.time() + np.arange(n) / rec.sfreq
    if "package_num_channel" in descr:
        out[int(descr["package_num_channel"])] = np.arange(n) % 256
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bf.DataFilter.write_file(np.ascontiguousarray(out), str(path), "w")
    _write_sidecar(rec, path, {"format": "brainflow-csv", "board": name, "board_id": bid,
                               "units_in_file": "uV" if rec.units != "a.u." else "a.u."})
    return path


def sidecar_path(path: str | Path) -> Path:
    return Path(str(path) + ".json")


def _write_sidecar(rec: Recording, path: Path, extra: dict) -> None:
    write_json(sidecar_path(path), {
        "kind": SIDECAR_FORMAT, "version": 1, **extra, "sfreq": rec.sfreq, "ch_names": rec.ch_names,
        "units": rec.units, "tmin": rec.tmin, "n_samples": int(rec.data.shape[1]),
        "events": rec.events.tolist(), "classes": rec.classes, "event_code": "class index + 1",
        "trials": rec.trials.tolist()})


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
    from eegsine.preprocessing import UNITS

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
    from eegsine.io import disk_error

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
    from eegsine.stream_sources import board_descr, import_brainflow

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


def export_recording(ds: EEGSet, out: str | Path, board: str = "synthetic", **kw) -> tuple[Path, Recording]:
    """Write ``ds`` as a recording: ``.csv`` -> BrainFlow playback file, ``.fif`` -> MNE FIF."""
    out = Path(out)
    rec = continuous_recording(ds, **kw)
    if out.suffix.lower() == ".csv":
        return write_brainflow_csv(rec, out, board), rec
    if out.suffix.lower() == ".fif":
        return write_fif(rec, out), rec
    raise UserError(f"{out}: the recording's name must end with .csv (BrainFlow playback) or .fif (MNE)")
