"""``raw:<path>``: a user's continuous EEG recording (EDF, BDF, FIF, BrainVision, ...) epoched at its events.

MNE-Python reads the file (``mne.io.read_raw``: the format follows the extension) and finds
the events: annotations first (``mne.events_from_annotations``; BAD/EDGE ones skipped; each
description is a class), else a stim channel (``mne.find_events``; each code is a class).
Then, in this order, exactly what the stream runtime does to a live signal
(:mod:`eegsine.runtime.stream`): pick the EEG channels (``picks`` or all), convert MNE's volts to
``units``, re-reference, filter the *continuous* signal (:mod:`eegsine.runtime.preprocessing`,
causal by default, starting from the steady state of the first sample) and cut
``[tmin, tmax)`` around each event. A model trained on this set therefore sees what
``eegsine stream`` hands it from the same amplifier, up to where the stream starts.

Splits: per class, a seeded random ``val_fraction`` / ``test_fraction`` of the trials.
No stimulus images (``image`` is -1).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np

from eegsine.data.base import EEGSet
from eegsine.data.options import DataOptions
from eegsine.errors import UserError
from eegsine.runtime.recordings import channel_kinds, read_recording, recording_events
from eegsine.runtime.preprocessing import PreprocessingSpec, apply_filters, rereference, unit_factor

log = logging.getLogger(__name__)
HOW_TO_GET = "your own recording: raw:/path/to/file.{edf,bdf,fif,vhdr} (read with MNE-Python)"


# EDF/BDF carry no channel types: a trigger channel written there comes back as "eeg"


@dataclasses.dataclass
class RawOptions(DataOptions):
    """``raw:<path>``'s loader options (:func:`load_raw`'s keyword arguments; the path is the name's tail)."""

    KIND = "raw-options"

    tmin: float = dataclasses.field(default=0.0, metadata={"help": "epoch start relative to each event (s)"})
    tmax: float = dataclasses.field(default=0.5, metadata={"help": "epoch end relative to each event (s, exclusive)"})
    l_freq: float = dataclasses.field(default=0.0, metadata={"help": "high-pass edge (Hz), 0 = none"})
    h_freq: float = dataclasses.field(default=0.0, metadata={"help": "low-pass edge (Hz), 0 = none"})
    order: int = dataclasses.field(default=4, metadata={"help": "Butterworth order"})
    notch: list[float] | None = dataclasses.field(default=None, metadata={"help": "notch frequencies (Hz)"})
    phase: Literal["causal", "zero-phase"] = dataclasses.field(default="causal", metadata={
        "help": "filters: causal (what the stream runs) or zero-phase (offline only)"})
    reference: str = dataclasses.field(default="as-recorded", metadata={
        "help": "as-recorded | average | a channel name"})
    picks: list[str] | None = dataclasses.field(default=None, metadata={"help": "channels to keep (None: all EEG)"})
    units: Literal["V", "uV"] = dataclasses.field(default="uV", metadata={"help": "units of the epochs"})
    events: Literal["auto", "annotations", "stim"] = dataclasses.field(default="auto", metadata={
        "help": "where the events are: annotations, a stim channel, or auto (annotations first)"})
    stim_channel: str = dataclasses.field(default="", metadata={"help": "the stim channel ('' = MNE's guess)"})
    val_fraction: float = dataclasses.field(default=0.15, metadata={"help": "trials per class in val"})
    test_fraction: float = dataclasses.field(default=0.15, metadata={"help": "trials per class in test"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the split"})


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("mne") is not None


def load_raw(path: str | os.PathLike | None = None, tmin: float = 0.0, tmax: float = 0.5, l_freq: float = 0.0,
             h_freq: float = 0.0, order: int = 4, notch: list[float] | None = None,
             phase: Literal["causal", "zero-phase"] = "causal", reference: str = "as-recorded",
             picks: list[str] | None = None, units: Literal["V", "uV"] = "uV",
             events: Literal["auto", "annotations", "stim"] = "auto", stim_channel: str = "",
             val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0) -> EEGSet:
    """Load ``raw:<path>`` (see the module docstring)."""
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
