"""``raw:<path>``: a user's continuous EEG recording (EDF, BDF, FIF, BrainVision, ...) epoched at its events.

MNE-Python reads the file (``mne.io.read_raw``: the format follows the extension) and finds
the events: annotations first (``mne.events_from_annotations``; BAD/EDGE ones skipped; each
description is a class), else a stim channel (``mne.find_events``; each code is a class).
Then, in this order, exactly what the stream runtime does to a live signal
(:mod:`eegsine.stream`): pick the EEG channels (``picks`` or all), convert MNE's volts to
``units``, re-reference, filter the *continuous* signal (:mod:`eegsine.preprocessing`,
causal by default, starting from the steady state of the first sample) and cut
``[tmin, tmax)`` around each event. A model trained on this set therefore sees what
``eegsine stream`` hands it from the same amplifier, up to where the stream starts.

Splits: per class, a seeded random ``val_fraction`` / ``test_fraction`` of the trials.
No stimulus images (``image`` is -1).
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Literal

import numpy as np

from eegsine.data.base import EEGSet
from eegsine.errors import DataMissingError, UserError

log = logging.getLogger(__name__)
HOW_TO_GET = "your own recording: raw:/path/to/file.{edf,bdf,fif,vhdr} (read with MNE-Python)"


# EDF/BDF carry no channel types: a trigger channel written there comes back as "eeg"
_STIM_NAME = re.compile(r"^(sti\b|sti\s*\d|status$|trig|trigger|marker|events?$)", re.IGNORECASE)


def channel_kinds(raw: object) -> dict[str, str]:
    """name -> MNE channel type, with trigger-named channels (STI 014, Status, TRIG...) typed "stim"."""
    return {n: ("stim" if _STIM_NAME.match(n) else t)
            for n, t in zip(raw.ch_names, raw.get_channel_types())}  # type: ignore[attr-defined]


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("mne") is not None


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
    try:
        import mne
    except ImportError as e:
        raise UserError(f"{p}: MNE-Python reads recordings and is not installed ({e}); pip install mne") from None
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
    import mne

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


def load_raw(path: str | os.PathLike | None = None, tmin: float = 0.0, tmax: float = 0.5, l_freq: float = 0.0,
             h_freq: float = 0.0, order: int = 4, notch: list[float] | None = None,
             phase: Literal["causal", "zero-phase"] = "causal", reference: str = "as-recorded",
             picks: list[str] | None = None, units: Literal["V", "uV"] = "uV",
             events: Literal["auto", "annotations", "stim"] = "auto", stim_channel: str = "",
             val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0) -> EEGSet:
    """Load ``raw:<path>`` (see the module docstring)."""
    from eegsine.preprocessing import PreprocessingSpec, apply_filters, rereference, unit_factor

    if not path:
        raise UserError("raw: name the recording as raw:<path>, e.g. raw:sub-01.fif")
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= v < 1:
            raise UserError(f"raw: {name} must be in [0, 1), got {v}")
    if val_fraction + test_fraction >= 1:
        raise UserError("raw: val_fraction + test_fraction must be < 1")
    raw = read_recording(path)
    sfreq = float(raw.info["sfreq"])
    types = channel_kinds(raw)
    chans = list(picks) if picks else [n for n in raw.ch_names if types[n] == "eeg"]
    missing = [c for c in chans if c not in types]
    if missing:
        raise UserError(f"{path}: picks {missing[:4]} not in the recording "
                        f"(channels: {', '.join(raw.ch_names[:12])}...)")
    if not chans:
        raise UserError(f"{path}: no EEG channels (types: {sorted(set(types.values()))}); pass picks=[...]")
    spec = PreprocessingSpec.design(sfreq, chans, l_freq=l_freq, h_freq=h_freq, order=order, notch=notch or [],
                                    phase=phase, units=units, reference=reference, tmin=tmin, tmax=tmax,
                                    source=f"raw:{Path(path).name}: continuous recording filtered, "
                                           "then epoched at events")
    ev, ids, ev_source = recording_events(raw, events, stim_channel)
    x_cont = raw.get_data(picks=chans) * unit_factor("V", units)              # (C, S), MNE keeps volts
    x_cont = rereference(x_cont, reference, chans, axis=0)
    x_cont = apply_filters(x_cont, spec)                                       # (C, S) float32
    start = ev[:, 0] + spec.offset
    keep = (start >= 0) & (start + spec.n_times <= x_cont.shape[1])
    if not keep.any():
        raise UserError(f"{path}: no event has its whole epoch {tmin:g}..{tmax:g} s inside the recording")
    if (~keep).any():
        log.warning("raw:%s: %d event(s) too close to the recording's edges dropped", Path(path).name,
                    int((~keep).sum()))
    start, codes = start[keep], ev[keep, 2]
    x = np.stack([x_cont[:, s:s + spec.n_times] for s in start]).astype(np.float32)   # (N, C, T)
    by_code = {v: k for k, v in ids.items()}
    classes = sorted({by_code[int(c)] for c in codes}, key=lambda d: (ids[d], d))
    y = np.array([classes.index(by_code[int(c)]) for c in codes], np.int64)
    rng = np.random.default_rng(seed)
    split_of = np.full(len(y), "train", dtype=object)
    for c in range(len(classes)):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_te, n_va = int(round(len(idx) * test_fraction)), int(round(len(idx) * val_fraction))
        split_of[idx[:n_te]] = "test"
        split_of[idx[n_te:n_te + n_va]] = "val"
    splits = {k: np.flatnonzero(split_of == k) for k in ("train", "val", "test")}
    splits = {k: v for k, v in splits.items() if len(v) or k == "train"}
    info = {"file": str(path), "events": ev_source,
            "event_id": ids, "event_samples": start.tolist(), "dropped_events": int((~keep).sum()),
            "units": units, "preprocessing": spec.describe()}
    return EEGSet(name=f"raw:{Path(path).name}", x=x, y=y, subject=np.zeros(len(y), np.int64),
                  image=np.full(len(y), -1, np.int64), sfreq=sfreq, ch_names=chans, classes=classes, splits=splits,
                  info=info, preprocessing=spec).check()
