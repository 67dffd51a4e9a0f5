"""The export layer's config dataclasses whose home modules import torch, torch-free.

``eegsine export --help`` and the config checks read these without importing torch:
:class:`ExportConfig` (``onnx_export.py``), :class:`VerifyConfig` (``verify.py``) and
:class:`BundleConfig` (``bundle.py``) are re-exported there. ``Int8Config`` (``quantize.py``)
and ``TRTConfig`` (``tensorrt.py``) are torch-free where they are.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from eegsine.config import Config
from eegsine.errors import UserError
from eegsine.export.quantize import Int8Config
from eegsine.runtime.manifest import MODEL_NAMES


@dataclasses.dataclass
class ExportConfig(Config):
    KIND = "export"
    VERSION = 1

    exporter: Literal["torchscript", "dynamo"] = dataclasses.field(default="torchscript", metadata={
        "help": "torch.onnx exporter: torchscript (tracing) or dynamo (torch.export)"})
    opset: int = dataclasses.field(default=18, metadata={"help": "ONNX opset of the exported graphs (17-21)"})
    max_batch: int = dataclasses.field(default=16, metadata={
        "help": "largest batch of each model's declared shape range (the classifier's is at least 64)"})
    # fp32 ORT vs torch, max abs error on outputs of O(1)
    parity_atol: float = dataclasses.field(default=1e-4, metadata={
        "help": "export fails when ORT FP32 and torch outputs differ by more than this (max abs, outputs of O(1))"})

    def validate(self) -> None:
        if not 17 <= self.opset <= 21:
            raise UserError(f"ExportConfig.opset: supported 17..21, got {self.opset}")
        if self.max_batch < 1:
            raise UserError(f"ExportConfig.max_batch: must be >= 1, got {self.max_batch}")
        if self.parity_atol < 0:  # 0 asks for exact parity (the failure test uses it)
            raise UserError(f"ExportConfig.parity_atol: must be >= 0, got {self.parity_atol}")


@dataclasses.dataclass
class VerifyConfig(Config):
    KIND = "verify"
    VERSION = 1

    n_eval: int = dataclasses.field(default=500, metadata={"help": "classifier eval images (test split)"})
    n_eval_square: int = dataclasses.field(default=200, metadata={"help": "images attacked with Square per backend"})
    eps: float = dataclasses.field(default=-1.0, metadata={
        "help": "L-inf radius in [0,1] pixel units (-1 = the run's training eps)"})
    pgd_steps: int = dataclasses.field(default=20, metadata={
        "help": "PGD steps of the transfer examples crafted white-box on the torch model"})
    square_queries: int = dataclasses.field(default=300, metadata={
        "help": "Square queries per image against each backend"})
    n_gen: int = dataclasses.field(default=32, metadata={"help": "EEG test trials turned into images per precision"})
    steps: int = dataclasses.field(default=25, metadata={"help": "DDIM steps for verification images"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the attacks and the generation noise"})
    max_clean_drop: float = dataclasses.field(default=0.5, metadata={"help": "gate: clean accuracy drop, points"})
    max_adv_drop: float = dataclasses.field(default=1.0, metadata={"help": "gate: adversarial accuracy drop, points"})
    max_fid_increase: float = dataclasses.field(default=0.10, metadata={"help": "gate: relative fid_domain increase"})

    def validate(self) -> None:
        for name in ("n_eval", "n_eval_square", "pgd_steps", "square_queries", "n_gen", "steps"):
            if getattr(self, name) < 1:
                raise UserError(f"VerifyConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.eps != -1.0 and not 0.0 < self.eps <= 1.0:
            raise UserError(f"VerifyConfig.eps: must be in (0, 1] (pixel units) or -1, got {self.eps}")


@dataclasses.dataclass
class BundleConfig(Config):
    KIND = "bundle"
    VERSION = 1

    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    int8: bool = dataclasses.field(default=False, metadata={
        "help": "also write INT8 models, calibrated on real data and gated on the golden set on this host"})
    quant: Int8Config = dataclasses.field(default_factory=Int8Config)
    int8_models: list[str] = dataclasses.field(default_factory=lambda: list(MODEL_NAMES), metadata={
        "help": "models quantized with --int8: " + ", ".join(MODEL_NAMES), "metavar": "MODEL"})
    calib_images: int = dataclasses.field(default=256, metadata={"help": "classifier calibration images (train split)"})
    calib_trials: int = dataclasses.field(default=16, metadata={
        "help": "EEG trials (train split) for encoder/UNet calibration"})
    calib_steps: int = dataclasses.field(default=25, metadata={
        "help": "DDIM steps of the UNet calibration trajectories"})
    holdout: int = dataclasses.field(default=32, metadata={"help": "held-out (val/test) inputs used for SQNR"})
    golden_eval: int = dataclasses.field(default=500, metadata={
        "help": "classifier test images (+ PGD examples) in the bundle's golden set for eegsine-verify"})
    golden_pgd_steps: int = dataclasses.field(default=20, metadata={
        "help": "PGD steps of the golden adversarial examples"})
    guidance: float = dataclasses.field(default=-1.0, metadata={
        "help": "CFG scale written to the bundle (-1 = the run's)"})
    unet_min_sqnr_db: float = dataclasses.field(default=20.0, metadata={
        "help": "INT8 UNet runs only at timesteps where its held-out SQNR reaches this; above, FP32 "
                "(0 = INT8 everywhere)"})
    eeg_data: str = dataclasses.field(default="", metadata={"help": "EEG data set of the EEG run (e.g. synthetic-vep)"})
    seed: int = dataclasses.field(default=0, metadata={
        "help": "seed of the calibration subsets, the UNet calibration trajectories and the golden PGD examples"})
    overwrite: bool = dataclasses.field(default=False, metadata={"help": "replace an existing bundle folder"})

    def validate(self) -> None:
        bad = [m for m in self.int8_models if m not in MODEL_NAMES]
        if bad:
            raise UserError(f"BundleConfig.int8_models: unknown model {bad[0]!r} (known: {', '.join(MODEL_NAMES)})")
        for name in ("calib_images", "calib_trials", "calib_steps", "holdout", "golden_eval", "golden_pgd_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"BundleConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.guidance != -1.0 and self.guidance < 0:
            raise UserError(f"BundleConfig.guidance: must be >= 0 or -1 (the run's), got {self.guidance}")
