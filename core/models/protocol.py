"""The one model protocol: typed config, ``save_pretrained`` / ``from_pretrained``, provenance, export contract.

diffusers' ``ModelMixin`` + ``ConfigMixin`` and braindecode's ``EEGModuleMixin`` are the anchors: a
model folder is ``config.json`` (the model's own :class:`~eegsine.config.Config`, with kind and version),
``model.safetensors`` and ``provenance.json`` (:class:`Provenance`: what it was trained on and how), plus
what a model keeps beside them (an EEG encoder's ``preprocessing.json``). ``config.json`` is written
last, so a folder with one is complete. A run folder keeps its deployable model in ``<run>/model``;
:func:`model_folder` accepts either. Consumers (export, bench, verify) read a model's data set, training
eps and image encoder from ``model.provenance``, never from a training config.

Hand-written rather than ``ModelMixin``: that mixin registers ``__init__`` arguments as its config,
and these models take one typed, validated config object instead (the diffusion model, whose parts
*are* diffusers models, is a real ``DiffusionPipeline``: :mod:`eegsine.models.diffusion`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from eegsine.config import CONFIG_FILE, Config
from eegsine.errors import UserError
from eegsine.data import load_eeg, load_images
from eegsine.io import read_json
from eegsine.models.registry import REGISTRY, get_entry

if TYPE_CHECKING:
    import torch.nn as nn

    from eegsine.runtime.contracts import ExportContract

WEIGHTS_FILE = "model.safetensors"
PROVENANCE_FILE = "provenance.json"
MODEL_DIR = "model"  # a run's deployable model: <run>/model


@dataclasses.dataclass
class Provenance(Config):
    """Where a model's weights came from: enough to rebuild its data set and judge its numbers."""

    KIND = "provenance"
    VERSION = 1

    trained_by: str = dataclasses.field(default="", metadata={
        "help": "the training run's config kind (classifier-train, encoder-train, ...); '' = built in memory"})
    data: str = dataclasses.field(default="", metadata={"help": "registry name of the training data set"})
    data_options: dict = dataclasses.field(default_factory=dict, metadata={
        "help": "the loader options it was loaded with (load_images / load_eeg keyword arguments)"})
    train_eps: float | None = dataclasses.field(default=None, metadata={
        "help": "a classifier run's L-inf eps, [0, 1] pixel units: its training attack's (its validation "
                "attacks' under natural training); None = not a classifier run"})
    train_attack: str = dataclasses.field(default="", metadata={
        "help": "a classifier run's training mode: natural, fgsm_rs or pgd"})
    image_encoder: str = dataclasses.field(default="", metadata={
        "help": "alignment target of an EEG encoder: cnn (in-project) or hf:<local folder>; '' = none"})
    image_cond_frac: float | None = dataclasses.field(default=None, metadata={
        "help": "diffusion: share of training steps conditioned on image embeddings instead of EEG"})
    seed: int = dataclasses.field(default=0, metadata={"help": "the training run's seed"})

    def validate(self) -> None:
        if self.train_eps is not None and not 0.0 <= self.train_eps <= 1.0:
            raise UserError(f"Provenance.train_eps: must be in [0, 1] ([0, 1] pixel units), got {self.train_eps}")
        if self.image_cond_frac is not None and not 0.0 <= self.image_cond_frac <= 1.0:
            raise UserError(f"Provenance.image_cond_frac: must be in [0, 1], got {self.image_cond_frac}")
        if self.data_options and not self.data:
            raise UserError("Provenance.data_options: given without a data set name")

    def require_data(self, where: str, flag: str) -> str:
        """The data set name, or a one-line error naming the flag that supplies one."""
        if not self.data:
            raise UserError(f"{where}: the model's provenance names no training data set; pass {flag}")
        return self.data

    def load_images(self):
        return load_images(self.data, **self.data_options)

    def load_eeg(self):
        return load_eeg(self.data, **self.data_options).check()


def model_folder(path: str | Path) -> Path:
    """``path`` itself when it holds a model's ``config.json``, else ``path/model`` (a run folder)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such folder")
    for d in (path, path / MODEL_DIR):
        f = d / CONFIG_FILE
        if not f.exists():
            continue
        kind = read_json(f).get("kind") if f.stat().st_size < 1 << 20 else None
        if kind in REGISTRY:
            return d
        if d == path and (path / MODEL_DIR / CONFIG_FILE).exists():
            continue  # a run folder's own config.json: its model is in model/
        raise UserError(f"{f}: kind {kind!r} is not a model (model kinds: {', '.join(REGISTRY)}); "
                        f"a run folder keeps its model in {MODEL_DIR}/")
    raise UserError(f"{path}: not a model folder (no config.json here or in {MODEL_DIR}/)")


def read_provenance(directory: str | Path) -> Provenance:
    """A model folder's provenance; an empty one for a folder without the file (a model built in memory)."""
    directory = Path(directory)
    return Provenance.load(directory, PROVENANCE_FILE) if (directory / PROVENANCE_FILE).exists() else Provenance()


class PretrainedModel:
    """Mixin for ``nn.Module`` models: ``cfg`` (the typed config), ``provenance``, one folder layout.

    A subclass sets ``config_class`` and may override :meth:`from_config` (pick an architecture),
    :meth:`_save_extra` / :meth:`_load_extra` (files beside the weights) and :meth:`export_modules`.
    """

    config_class: ClassVar[type[Config]]
    cfg: Any
    provenance: Provenance = Provenance()  # replaced, never mutated: save_pretrained / from_pretrained set it
    saves_weights: ClassVar[bool] = True   # False: the weights live elsewhere (a user's local HF folder)

    @classmethod
    def from_config(cls, cfg: Config) -> "PretrainedModel":
        return cls(cfg)  # type: ignore[call-arg]

    def save_pretrained(self, directory: str | Path, provenance: Provenance | None = None) -> Path:
        """Write the model folder; ``provenance`` (default: the model's own) is kept on the model."""
        from eegsine.runs.checkpoint import save_weights

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if provenance is not None:
            self.provenance = provenance
        if self.saves_weights:
            save_weights(directory / WEIGHTS_FILE, self.state_dict(), metadata={"kind": self.cfg.KIND})  # type: ignore[attr-defined]
        self._save_extra(directory)
        self.provenance.save(directory, PROVENANCE_FILE)
        self.cfg.save(directory)  # last: marks the folder complete
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu"):
        """Read a model folder (or a run folder's ``model/``) -> the model in eval mode on ``device``."""
        from eegsine.runs.checkpoint import load_state_into

        directory = model_folder(directory)
        cfg = cls.config_class.load(directory)
        model = cls.from_config(cfg)
        if model.saves_weights:
            load_state_into(model, directory / WEIGHTS_FILE)
        model.provenance = read_provenance(directory)
        model._load_extra(directory)
        return model.to(device).eval()  # type: ignore[attr-defined]

    def _save_extra(self, directory: Path) -> None:
        pass

    def _load_extra(self, directory: Path) -> None:
        pass

    def export_modules(self, max_batch: int = 16,
                       opset: int | None = None) -> dict[str, tuple["ExportContract", "nn.Module"]]:
        """name -> (contract, contract-shaped module) of what this model deploys; {} for a training-only model."""
        return {}


__all__ = ["Provenance", "PretrainedModel", "load_pretrained", "model_folder", "read_provenance", "WEIGHTS_FILE",
           "PROVENANCE_FILE", "MODEL_DIR"]



def load_pretrained(path: str | Path, device: str = "cpu") -> Any:
    """Any registered model from its folder (or a run folder's ``model/``), in eval mode."""
    folder = model_folder(path)
    entry = get_entry(read_json(folder / CONFIG_FILE).get("kind"), str(folder))
    return entry.model_class().from_pretrained(folder, device)
