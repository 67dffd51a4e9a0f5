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
import time
from pathlib import Path
from typing import Any

import numpy as np

from eegsine.config import check_value
from eegsine.data.base import EEGInfo, EEGSet, describe_eeg, get_spec, load_eeg
from eegsine.data.options import DataOptions
from eegsine.errors import UserError
from eegsine.io import read_json, write_json
from eegsine.runtime.decoders import MANIFEST
from eegsine.runtime.preprocessing import PreprocessingSpec, standard_montage, unit_factor
from eegsine.runtime.recordings import SIDECAR_FORMAT, board_descr, import_brainflow, sidecar_path


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


def pick_stratified(idx: np.ndarray, y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` of the trials ``idx`` (labels ``y[idx]``), even across classes: class counts differ by at most 1
    where every class has enough trials (a class that runs out leaves its share to the others). Seeded: the
    trials drawn within each class, which classes get one more, and the order (shuffled, so a stream does not
    see one class after another as a set stored by class would give). All of ``idx`` in its order if n >= len."""
    idx = np.asarray(idx, np.int64)
    if n >= len(idx):
        return idx
    rng = np.random.default_rng([seed, 1])  # its own stream: the ISIs and noise drawn from ``seed`` stay as they were
    labels = y[idx]
    pools = [rng.permutation(idx[labels == c]) for c in rng.permutation(np.unique(labels))]
    depth = max(len(p) for p in pools)
    rounds = [p[d] for d in range(depth) for p in pools if d < len(p)]  # round robin: one per class per round
    return rng.permutation(np.asarray(rounds[:n], np.int64))


def continuous_recording(ds: EEGSet, split: str = "test", n_trials: int = 0, isi: float = 0.5,
                         isi_jitter: float = 0.2, lead: float = 1.0, seed: int = 0) -> Recording:
    """The trials of ``split`` ("all" for every trial) as one recording: all of them in stored order, or
    ``n_trials`` > 0 of them picked by :func:`pick_stratified` (every class, seeded)."""
    check_recording_args(n_trials=n_trials, isi=isi, isi_jitter=isi_jitter, lead=lead, seed=seed)
    idx = np.arange(len(ds.x)) if split == "all" else ds.split(split)
    if n_trials > 0:
        idx = pick_stratified(idx, ds.y, n_trials, seed)
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


def check_board(board: str, sfreq: float, n_chans: int) -> str:
    """The BrainFlow master board a recording of ``n_chans`` at ``sfreq`` is written for (``auto``:
    :func:`playback_board`), or a one-line error: cheap, so callers ask before they make the data."""
    if board == "auto":
        board = playback_board(sfreq, n_chans)
    _, name, descr = board_descr(board)
    if float(descr["sampling_rate"]) != float(sfreq):
        raise UserError(f"board {name} samples at {descr['sampling_rate']} Hz, the recording at {sfreq:g} Hz: "
                        f"generate it at that rate (e.g. -o sfreq={descr['sampling_rate']}) or pick another --board")
    if n_chans > len(descr["eeg_channels"]):
        raise UserError(f"board {name} has {len(descr['eeg_channels'])} EEG channels, the recording {n_chans}: "
                        "pick a board with more (e.g. FREEEEG128_BOARD at 256 Hz) or fewer channels")
    return name


def write_brainflow_csv(rec: Recording, path: str | Path, board: str = "synthetic") -> Path:
    """BrainFlow playback file for the master ``board`` (same sampling rate, at least as many EEG rows;
    ``auto``: :func:`playback_board`)."""
    bf = import_brainflow()
    bid, name, descr = board_descr(check_board(board, rec.sfreq, len(rec.ch_names)))
    eeg_rows = list(descr["eeg_channels"])
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


def _write_sidecar(rec: Recording, path: Path, extra: dict) -> None:
    write_json(sidecar_path(path), {
        "kind": SIDECAR_FORMAT, "version": 1, **extra, "sfreq": rec.sfreq, "ch_names": rec.ch_names,
        "units": rec.units, "tmin": rec.tmin, "n_samples": int(rec.data.shape[1]),
        "events": rec.events.tolist(), "classes": rec.classes, "event_code": "class index + 1",
        "trials": rec.trials.tolist()})


def export_recording(ds: EEGSet, out: str | Path, board: str = "synthetic", **kw) -> tuple[Path, Recording]:
    """Write ``ds`` as a recording: ``.csv`` -> BrainFlow playback file, ``.fif`` -> MNE FIF."""
    out = Path(out)
    rec = continuous_recording(ds, **kw)
    if out.suffix.lower() == ".csv":
        return write_brainflow_csv(rec, out, board), rec
    if out.suffix.lower() == ".fif":
        return write_fif(rec, out), rec
    raise UserError(f"{out}: the recording's name must end with .csv (BrainFlow playback) or .fif (MNE)")


def bundle_data(bundle: str | Path) -> tuple[str, dict[str, Any], PreprocessingSpec]:
    """(data set name, loader options, input spec) of a bundle's EEG encoder: ``models.eeg_encoder.data`` and
    ``.preprocessing`` of its manifest (``eegsine export`` writes both; the options are the encoder's provenance)."""
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise UserError(f"{bundle}: not a bundle (no {MANIFEST})")
    m = read_json(path)
    models = m.get("models") if isinstance(m, dict) else None
    entry = models.get("eeg_encoder") if isinstance(models, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("preprocessing"), dict):
        raise UserError(f"{bundle}: no EEG encoder with a preprocessing spec (an EEG bundle's channels, rate, epoch)")
    try:
        spec = PreprocessingSpec.from_dict(entry["preprocessing"])
    except UserError as e:
        raise UserError(f"{path}: models.eeg_encoder.preprocessing: {e}") from None
    data = entry.get("data")
    if data is None:
        raise UserError(f"{bundle}: its manifest does not name the encoder's data set (exported before eegsine "
                        "recorded it): re-export the bundle, or name the data set and its -o options "
                        "(`eegsine stream --source synthetic` makes trials at the bundle's geometry)")
    if not (isinstance(data, dict) and isinstance(data.get("name"), str) and data["name"]
            and isinstance(data.get("options", {}), dict)):
        raise UserError(f"{path}: models.eeg_encoder.data must be an object with a name and options, got {data!r}")
    return data["name"], dict(data.get("options", {})), spec


def check_fits(info: EEGInfo, spec: PreprocessingSpec, bundle: str | Path) -> None:
    """A set described by ``info`` makes epochs the bundle takes: its channels (by name), rate and epoch."""
    have = info.preprocessing
    for what, a, b in (("channels", have.ch_names, spec.ch_names), ("sfreq", have.sfreq, spec.sfreq),
                       ("n_times", have.n_times, spec.n_times), ("tmin", have.tmin, spec.tmin)):
        if a != b:
            show = (lambda v: f"{len(v)} ({', '.join(v[:4])}...)") if what == "channels" else repr
            raise UserError(f"{info.name} with these options has {what} {show(a)}, the bundle {bundle} takes "
                            f"{show(b)}: drop the -o that changes it")


def record_data_set(name: str, options: DataOptions, out: str | Path, board: str = "synthetic",
                    like: str | Path | None = None, **kw: Any) -> tuple[Path, Recording, EEGInfo]:
    """Data set ``name`` with ``options`` written as a recording (:func:`export_recording`; ``kw``: its split,
    n_trials, isi, isi_jitter, seed), after every check its metadata allows, before a trial is made: the
    file's suffix, the BrainFlow board (``.csv``) and, with ``like``, the bundle's channels, rate and epoch.
    synthetic-vep's metadata costs nothing; a set without a ``describe`` is loaded once to answer."""
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".fif"):
        raise UserError(f"{out}: the recording's name must end with .csv (BrainFlow playback) or .fif (MNE)")
    check_recording_args(n_trials=kw.get("n_trials", 0), isi=kw.get("isi", 0.5), isi_jitter=kw.get("isi_jitter", 0.2),
                         seed=kw.get("seed", 0))
    ds = None if get_spec(name).describe is not None else load_eeg(name, options)  # loaded once, if it must be
    info = describe_eeg(name, options) if ds is None else EEGInfo.of(ds)
    if like is not None:
        check_fits(info, bundle_data(like)[2], like)
    if out.suffix.lower() == ".csv":
        board = check_board(board, info.preprocessing.sfreq, info.preprocessing.n_chans)
    ds = load_eeg(name, options) if ds is None else ds
    path, rec = export_recording(ds, out, board=board, **kw)
    return path, rec, info


def options_like(bundle: str | Path, pairs: list[str] | tuple[str, ...] = ()) -> tuple[str, DataOptions]:
    """The data set and options a bundle's encoder was trained on, ``pairs`` (``-o KEY=VALUE``) on top."""
    name, stored, _ = bundle_data(bundle)
    return name, get_spec(name).parse(name, pairs, base=stored)


def recording_like(spec: Any, out: str | Path, n_trials: int, seed: int = 0, snr: float = 0.5) -> Path:
    """A synthetic-vep recording (digits) at a bundle's geometry: ``spec`` is its
    :class:`~eegsine.runtime.preprocessing.PreprocessingSpec` (channels by name, rate, epoch): the set's first
    ``n_trials`` trials, written as FIF (or a BrainFlow CSV by the suffix). The board-free live source of
    ``eegsine stream --source synthetic`` and the stream bench's input."""
    per = -(-n_trials // 10)
    ds = load_eeg("synthetic-vep", image_set="digits", n_chans=spec.n_chans, n_times=spec.n_times, sfreq=spec.sfreq,
                  tmin=spec.tmin, n_images_per_class=max(3, per), n_subjects=1, snr=snr, progress=False)
    if list(ds.ch_names) != list(spec.ch_names):  # e.g. EEGCVPR40's E1..E128: the bundle's names, not the montage's
        if len(ds.ch_names) != len(spec.ch_names):
            raise UserError(f"synthetic-vep made {len(ds.ch_names)} channels for a {spec.n_chans}-channel bundle")
        ds = dataclasses.replace(ds, ch_names=list(spec.ch_names))
    path, _ = export_recording(ds, out, split="all", n_trials=n_trials, isi=0.2, isi_jitter=0.1, seed=seed)
    return path
