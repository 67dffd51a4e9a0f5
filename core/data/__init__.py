"""Data set registry: ``load_images(name)``, ``load_eeg(name, ...)``, ``fetch(name)``.

Every data set registers a :class:`~eegsine.data.base.DataSpec`; ``eegsine data list``
shows them. Loaders are numpy-only. Options reach a loader only through ``load_images`` /
``load_eeg``, which type-check them against its signature (:func:`~eegsine.data.base.check_options`).
"""
from __future__ import annotations

from eegsine.data import images as _images  # noqa: F401  (registers image sets)
from eegsine.data.base import REGISTRY, DataSpec, EEGSet, ImageSet, check_options, data_root, get_spec

__all__ = ["REGISTRY", "DataSpec", "EEGSet", "ImageSet", "data_root", "get_spec", "load_images", "load_eeg", "fetch"]

from eegsine.data import eeg as _eeg  # noqa: F401,E402  (registers EEG sets)


def load_images(name: str, **kwargs) -> ImageSet:
    spec = get_spec(name)
    if spec.kind != "image":
        from eegsine.errors import UserError
        raise UserError(f"{name!r} is an {spec.kind} data set, not an image set")
    return spec.load(**check_options(name, spec.load, kwargs))  # type: ignore[return-value]


def load_eeg(name: str, **kwargs) -> EEGSet:
    spec = get_spec(name)
    if spec.kind != "eeg":
        from eegsine.errors import UserError
        raise UserError(f"{name!r} is an {spec.kind} data set, not an EEG set")
    if name.startswith("uea:"):
        kwargs.setdefault("problem", name.split(":", 1)[1])
    if name.startswith("raw:"):
        kwargs.setdefault("path", name.split(":", 1)[1])
    return spec.load(**check_options(name, spec.load, kwargs))  # type: ignore[return-value]


def fetch(name: str) -> str:
    spec = get_spec(name)
    if spec.fetch is None:
        return f"{name}: nothing to fetch ({spec.how_to_get or 'always available'})"
    return spec.fetch()
