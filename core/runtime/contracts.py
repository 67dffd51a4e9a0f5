"""Export contracts: each exportable model declares its ONNX interface once.

An :class:`ExportContract` names a model's inputs and outputs, their dtypes and shapes
(symbolic dimension names for the dynamic axes), and a min/opt/max value for every
symbolic dimension. The same object drives ``torch.onnx.export`` (input/output names,
dynamic axes, sample inputs), the TensorRT optimisation profile (min/opt/max shapes) and
the runtime (input validation, buffer shapes). It round-trips through the bundle's
``manifest.json``.

numpy only -- no torch: :mod:`eegsine.runtime` reads contracts.

Contracts (TensorRT's diffusion demo style, one per model):

* ``eeg_encoder``: ``eeg`` (batch, n_chans, n_times) -> ``tokens`` (batch, n_tokens, token_dim)
  and ``embedding`` (batch, emb_dim). Encoder + token mapper are one graph.
* ``unet``: ``latents`` (batch, C, h, w), ``timestep`` (batch,), ``encoder_hidden_states``
  (batch, n_tokens, token_dim) -> ``noise_pred`` (batch, C, h, w). With classifier-free
  guidance the runtime runs conditional and unconditional halves as one batch, so the
  UNet's batch range is twice the user's.
* ``vae_decoder``: ``latents`` (batch, C, h, w) (already multiplied by the VAE scaling
  factor, as the sampler produces them) -> ``image`` (batch, 3|1, H, W) in [0, 1].
* ``classifier``: ``images`` (batch, C, H, W) in [0, 1] -> ``logits`` (batch, n_classes).
* ``decision``: ``eeg`` (1, n_chans, n_times) -> ``probabilities`` (1, n_classes): the EEG encoder with the
  prototype head folded in (built from the encoder's graph at export, not exported from torch), for devices
  without Python. Batch fixed at 1 and opset :data:`DECISION_OPSET`: what BrainFlow's ``MLModel`` takes.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from eegsine.errors import UserError

DEFAULT_OPSET = 18  # QuantizeLinear/DequantizeLinear with per-axis scales + TensorRT 10 parser
Dim = int | str
# decision.onnx's opset: BrainFlow 5.23's MLModel (ONNX_CLASSIFIER) runs models on the ONNX Runtime 1.11 it ships,
# whose "official support for domain ai.onnx is till opset 16" (its error on an opset-17 model, measured)
DECISION_OPSET = 16


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One graph input/output: name, numpy dtype name, shape (ints fixed, strings symbolic)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorSpec":
        try:
            shape = tuple(int(s) if isinstance(s, int) else str(s) for s in d["shape"])
            np.dtype(d["dtype"])
            return cls(str(d["name"]), str(d["dtype"]), shape)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"tensor spec {d!r}: malformed ({e})") from None


@dataclasses.dataclass
class ExportContract:
    """The ONNX interface of one model; ``dims`` maps symbolic dim -> (min, opt, max)."""

    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    dims: dict[str, tuple[int, int, int]]
    opset: int = DEFAULT_OPSET
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for sym, mom in self.dims.items():
            if len(mom) != 3 or not (1 <= mom[0] <= mom[1] <= mom[2]):
                raise UserError(f"contract {self.name}: dim {sym!r} needs 1 <= min <= opt <= max, got {mom}")
        for spec in self.inputs + self.outputs:
            for s in spec.shape:
                if isinstance(s, str) and s not in self.dims:
                    raise UserError(f"contract {self.name}: {spec.name} uses dim {s!r} without a min/opt/max")

    # -- shapes --------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def spec(self, name: str) -> TensorSpec:
        for s in self.inputs + self.outputs:
            if s.name == name:
                return s
        raise KeyError(name)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``{tensor: {axis: dim name}}`` for ``torch.onnx.export(dynamic_axes=...)``."""
        out: dict[str, dict[int, str]] = {}
        for s in self.inputs + self.outputs:
            axes = {i: d for i, d in enumerate(s.shape) if isinstance(d, str)}
            if axes:
                out[s.name] = axes
        return out

    def shape(self, name: str, which: str = "opt", **fix: int) -> tuple[int, ...]:
        """Concrete shape of ``name`` at the ``min``/``opt``/``max`` profile point (``fix`` overrides dims)."""
        k = {"min": 0, "opt": 1, "max": 2}[which]
        return tuple(d if isinstance(d, int) else int(fix.get(d, self.dims[d][k])) for d in self.spec(name).shape)

    def profile(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """``{input: (min_shape, opt_shape, max_shape)}`` for a TensorRT optimisation profile."""
        return {s.name: (self.shape(s.name, "min"), self.shape(s.name, "opt"), self.shape(s.name, "max"))
                for s in self.inputs}

    def sample_inputs(self, which: str = "opt", seed: int = 0, **fix: int) -> dict[str, np.ndarray]:
        """Random inputs of the right shape/dtype/range (images in [0, 1], timesteps in range)."""
        rng = np.random.default_rng(seed)
        out: dict[str, np.ndarray] = {}
        for s in self.inputs:
            shp = self.shape(s.name, which, **fix)
            if s.name == "timestep":
                out[s.name] = rng.integers(0, int(self.meta.get("num_train_timesteps", 1000)), shp).astype(s.dtype)
            elif s.name == "images":
                out[s.name] = rng.random(shp, dtype=np.float32).astype(s.dtype)
            else:
                out[s.name] = rng.standard_normal(shp, dtype=np.float32).astype(s.dtype)
        return out

    def check_inputs(self, feeds: dict[str, np.ndarray], what: str | None = None) -> None:
        """Raise a one-line UserError unless ``feeds`` match the contract (names, dtype, shape, range, finite)."""
        what = what or self.name
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.input_names]
        if missing or extra:
            raise UserError(f"{what}: inputs must be {self.input_names}, missing {missing}, unexpected {extra}")
        batch: dict[str, int] = {}
        for s in self.inputs:
            a = feeds[s.name]
            if not isinstance(a, np.ndarray):
                raise UserError(f"{what}: {s.name} must be a numpy array, got {type(a).__name__}")
            if a.dtype != np.dtype(s.dtype):
                raise UserError(f"{what}: {s.name} must be {s.dtype}, got {a.dtype}")
            if a.ndim != len(s.shape):
                raise UserError(f"{what}: {s.name} must have shape {_shape(s.shape)}, got {a.shape}")
            for axis, (d, have) in enumerate(zip(s.shape, a.shape)):
                if isinstance(d, int) and d != have:
                    raise UserError(f"{what}: {s.name} must have shape {_shape(s.shape)}, got {a.shape} "
                                    f"(axis {axis})")
                if isinstance(d, str):
                    lo, _, hi = self.dims[d]
                    if not lo <= have <= hi:
                        raise UserError(f"{what}: {s.name} axis {axis} ({d}) = {have} is outside the exported "
                                        f"range [{lo}, {hi}]")
                    if batch.setdefault(d, have) != have:
                        raise UserError(f"{what}: inputs disagree on {d}: {batch[d]} vs {have} ({s.name})")
            if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
                raise UserError(f"{what}: {s.name} contains NaN or inf")

    # -- json ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "inputs": [s.to_dict() for s in self.inputs],
                "outputs": [s.to_dict() for s in self.outputs],
                "dims": {k: list(v) for k, v in self.dims.items()}, "opset": self.opset, "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExportContract":
        if not isinstance(d, dict):
            raise UserError(f"contract: expected an object, got {type(d).__name__}")
        try:
            return cls(name=str(d["name"]), inputs=[TensorSpec.from_dict(s) for s in d["inputs"]],
                       outputs=[TensorSpec.from_dict(s) for s in d["outputs"]],
                       dims={str(k): tuple(int(x) for x in v) for k, v in d["dims"].items()},  # type: ignore[misc]
                       opset=int(d.get("opset", DEFAULT_OPSET)), meta=dict(d.get("meta", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"contract {d.get('name', '?')!r}: malformed ({type(e).__name__}: {e})") from None


def _shape(dims: Any) -> str:
    """A contract shape as an error shows it: ``(batch, 1, 28, 28)``."""
    return "(" + ", ".join(str(d) for d in dims) + ")"


def _batch(max_batch: int, opt_batch: int | None = None) -> tuple[int, int, int]:
    if max_batch < 1:
        raise UserError(f"max_batch must be >= 1, got {max_batch}")
    return (1, min(max_batch, opt_batch or max_batch), max_batch)


# -- the four contracts ------------------------------------------------------------------------
def eeg_encoder_contract(n_chans: int, n_times: int, emb_dim: int, n_tokens: int, token_dim: int,
                         max_batch: int = 16, opt_batch: int = 1, opset: int = DEFAULT_OPSET) -> ExportContract:
    return ExportContract(
        name="eeg_encoder",
        inputs=[TensorSpec("eeg", "float32", ("batch", n_chans, n_times))],
        outputs=[TensorSpec("tokens", "float32", ("batch", n_tokens, token_dim)),
                 TensorSpec("embedding", "float32", ("batch", emb_dim))],
        dims={"batch": _batch(max_batch, opt_batch)}, opset=opset,
        meta={"n_chans": n_chans, "n_times": n_times, "emb_dim": emb_dim, "n_tokens": n_tokens, "token_dim": token_dim})


def unet_contract(latent_channels: int, latent_size: int, n_tokens: int, token_dim: int, max_batch: int = 16,
                  opt_batch: int = 2, num_train_timesteps: int = 1000, opset: int = DEFAULT_OPSET) -> ExportContract:
    """``max_batch`` is the user's batch; the UNet sees up to 2x that (classifier-free guidance)."""
    lat = ("batch2", latent_channels, latent_size, latent_size)
    return ExportContract(
        name="unet",
        inputs=[TensorSpec("latents", "float32", lat), TensorSpec("timestep", "float32", ("batch2",)),
                TensorSpec("encoder_hidden_states", "float32", ("batch2", n_tokens, token_dim))],
        outputs=[TensorSpec("noise_pred", "float32", lat)],
        dims={"batch2": _batch(2 * max_batch, opt_batch)}, opset=opset,
        meta={"latent_channels": latent_channels, "latent_size": latent_size, "n_tokens": n_tokens,
              "token_dim": token_dim, "num_train_timesteps": num_train_timesteps})


def vae_decoder_contract(latent_channels: int, latent_size: int, out_channels: int, image_size: int,
                         scaling_factor: float, max_batch: int = 16, opt_batch: int = 1,
                         opset: int = DEFAULT_OPSET) -> ExportContract:
    return ExportContract(
        name="vae_decoder",
        inputs=[TensorSpec("latents", "float32", ("batch", latent_channels, latent_size, latent_size))],
        outputs=[TensorSpec("image", "float32", ("batch", out_channels, image_size, image_size))],
        dims={"batch": _batch(max_batch, opt_batch)}, opset=opset,
        meta={"scaling_factor": float(scaling_factor), "image_size": image_size, "out_channels": out_channels})


def classifier_contract(in_channels: int, image_size: int, n_classes: int, max_batch: int = 256,
                        opt_batch: int = 1, opset: int = DEFAULT_OPSET) -> ExportContract:
    return ExportContract(
        name="classifier",
        inputs=[TensorSpec("images", "float32", ("batch", in_channels, image_size, image_size))],
        outputs=[TensorSpec("logits", "float32", ("batch", n_classes))],
        dims={"batch": _batch(max_batch, opt_batch)}, opset=opset,
        meta={"in_channels": in_channels, "image_size": image_size, "n_classes": n_classes})


def decision_contract(n_chans: int, n_times: int, n_classes: int) -> ExportContract:
    """decision.onnx: one preprocessed epoch -> class probabilities. Every axis fixed: BrainFlow's ONNX classifier
    builds its input tensor with the graph's declared dims (a dynamic batch, -1 there, is refused at predict)."""
    return ExportContract(
        name="decision",
        inputs=[TensorSpec("eeg", "float32", (1, n_chans, n_times))],
        outputs=[TensorSpec("probabilities", "float32", (1, n_classes))],
        dims={}, opset=DECISION_OPSET, meta={"n_chans": n_chans, "n_times": n_times, "n_classes": n_classes})


CONTRACTS = {"eeg_encoder": eeg_encoder_contract, "unet": unet_contract, "vae_decoder": vae_decoder_contract,
             "classifier": classifier_contract, "decision": decision_contract}
