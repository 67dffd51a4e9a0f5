"""Data set registry: ``load_images(name)``, ``load_eeg(name, ...)``, ``fetch(name)``.

Every data set registers a :class:`~eegsine.data.base.DataSpec`; ``eegsine data list``
shows them. Loaders are numpy-only. Options reach a loader only through ``load_images`` /
``load_eeg``, which type-check them against its signature (:func:`~eegsine.data.base.check_options`).
"""
from __future__ import annotations

from eegsine.data import images as _images  # noqa: F401  (registers image sets)
from eegsine.data.base import (REGISTRY, DataSpec, EEGSet, ImageSet, data_root, fetch, get_spec, load_eeg,
                               load_images)

__all__ = ["REGISTRY", "DataSpec", "EEGSet", "ImageSet", "data_root", "get_spec", "load_images", "load_eeg", "fetch"]

from eegsine.data import eeg as _eeg  # noqa: F401,E402  (registers EEG sets)
