"""Data set registry: ``load_images(name)``, ``load_eeg(name, options)``, ``describe_eeg(name)``, ``fetch(name)``.

Every data set registers a :class:`~eegsine.data.base.DataSpec` with its typed loader options (a
:class:`~eegsine.data.options.DataOptions` dataclass); ``eegsine data list`` shows them. Loaders are
numpy-only. Options reach a loader only through ``load_images`` / ``load_eeg``, which build the dataclass
(from itself, or a dict of its keys) and check it before anything is loaded or generated.
"""
from __future__ import annotations

from eegsine.data import images as _images  # noqa: F401  (registers image sets)
from eegsine.data.base import (REGISTRY, DataSpec, EEGInfo, EEGSet, ImageSet, data_root, describe_eeg, fetch, get_spec,
                               load_eeg, load_images)
from eegsine.data.options import DataOptions

__all__ = ["REGISTRY", "DataSpec", "DataOptions", "EEGInfo", "EEGSet", "ImageSet", "data_root", "get_spec",
           "load_images", "load_eeg", "describe_eeg", "fetch"]

from eegsine.data import eeg as _eeg  # noqa: F401,E402  (registers EEG sets)
