"""The joint ablation (``eegsine train diffusion --mode joint``): does the diffusion loss alone train an EEG encoder?

A fresh encoder (the aligned one's architecture, re-initialised from the run's seed) is trained
*through* the diffusion loss together with the UNet, at ``encoder_lr``. Every step logs the
gradient norm reaching the encoder and the UNet; every epoch scores the encoder's 1-NN EEG->EEG
retrieval on the validation split against the aligned (two-stage) encoder's and chance
(metrics ``joint``, ``joint.png``; the per-step norms in ``joint_grad_log.json``): the measurement
behind the two-stage design (docs/design.md). ``python -m eegsine.bench.experiments.two_stage`` compares the
two on the same data and UNet budget (docs/results/two-stage/: on the tiny data the joint encoder
learns only weakly, and its gradient is small but does not vanish).
:class:`JointAblation` is the conditioning object of :mod:`eegsine.training.unet`.

Hand-written: bookkeeping around the UNet loop.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from eegsine.data import EEGSet
from eegsine.io import write_json
from eegsine.models.diffusion import EEGDiffusion
from eegsine.models.eeg_encoder import EEGEncoder, build_encoder, embed
from eegsine.runs.plots import plot_joint
from eegsine.training.configs import DiffusionTrainConfig

RETRIEVAL = "1-NN EEG->EEG (cosine) on the validation split, gallery: 2000 train trials"
GALLERY = 2000  # train trials the retrieval searches (all of them when the train split is smaller)
GRAD_LOG = "joint_grad_log.json"  # RUN/joint_grad_log.json: the gradient norm reaching encoder and UNet, per step


def fresh_encoder(aligned: EEGEncoder, seed: int) -> EEGEncoder:
    """The aligned encoder's architecture with new weights: does the diffusion loss alone make it discriminative?"""
    torch.manual_seed(seed)
    return build_encoder(aligned.cfg)


def retrieval_top1(z_query: np.ndarray, y_query: np.ndarray, z_gallery: np.ndarray, y_gallery: np.ndarray) -> float:
    """1-NN EEG->EEG retrieval: the nearest gallery trial (cosine) has the query's class."""
    zq = z_query / (np.linalg.norm(z_query, axis=1, keepdims=True) + 1e-8)
    zg = z_gallery / (np.linalg.norm(z_gallery, axis=1, keepdims=True) + 1e-8)
    return float((y_gallery[np.argmax(zq @ zg.T, axis=1)] == y_query).mean())


def retrieval_gallery(ds: EEGSet, seed: int) -> np.ndarray:
    """The train trials every retrieval score of a run searches: a fixed random draw of ``GALLERY``."""
    return np.random.default_rng(seed + 3).permutation(ds.split("train"))[:GALLERY]


def encoder_retrieval(encoder: EEGEncoder, ds: EEGSet, seed: int, split: str = "val",
                      z: np.ndarray | None = None) -> float:
    """1-NN retrieval top-1 of ``split`` trials against the run's train gallery (``z``: precomputed embeddings)."""
    z = embed(encoder, ds.x) if z is None else z
    q, g = ds.split(split), retrieval_gallery(ds, seed)
    return retrieval_top1(z[q], ds.y[q], z[g], ds.y[g])


def _grad_norm(params) -> float:
    sq = [p.grad.detach().float().pow(2).sum() for p in params if p.grad is not None]
    return float(torch.stack(sq).sum().sqrt()) if sq else 0.0


class JointAblation:
    """Conditioning of mode joint: the model's own encoder runs inside the (DDP-wrapped) forward and trains."""

    img_table = None  # no image-conditioned examples: the encoder is what is being trained

    def __init__(self, aligned: EEGEncoder, ds: EEGSet, seed: int, device: torch.device):
        self.ds, self.seed = ds, seed
        self.x_all = torch.from_numpy(ds.x)
        self.ref = encoder_retrieval(aligned.to(device), ds, seed)  # the aligned (two-stage) encoder's score
        self.gn_enc: list[float] = []
        self.gn_unet: list[float] = []

    def param_groups(self, model: EEGDiffusion, cfg: DiffusionTrainConfig) -> list[dict]:
        return [{"params": list(model.encoder.parameters()), "lr": cfg.encoder_lr}]

    def train_mode(self, model: EEGDiffusion) -> None:
        pass  # the encoder trains with the UNet (dropout on)

    def predict(self, net, noisy: torch.Tensor, t: torch.Tensor, drop: torch.Tensor, rows: np.ndarray,
                im: torch.Tensor, use_img: torch.Tensor | None) -> torch.Tensor:
        # the encoder runs inside the (DDP-wrapped) forward, so its gradients are synchronised too
        return net(noisy, t, None, drop, eeg=self.x_all[rows].to(noisy.device))

    def after_backward(self, model: EEGDiffusion) -> None:
        self.gn_enc.append(_grad_norm(model.encoder.parameters()))
        self.gn_unet.append(_grad_norm(model.unet.parameters()))

    def end_epoch(self, model: EEGDiffusion, rec: dict, progress: dict, epoch: int, steps: int) -> None:
        rec["encoder_retrieval_top1"] = encoder_retrieval(model.encoder, self.ds, self.seed)
        rec["grad_norm_encoder"] = float(np.mean(self.gn_enc))
        rec["grad_norm_unet"] = float(np.mean(self.gn_unet))
        progress["grad_log"].extend([[step_i, e, u] for step_i, e, u in
                                     zip(range(epoch * steps, (epoch + 1) * steps), self.gn_enc, self.gn_unet)])
        self.gn_enc, self.gn_unet = [], []

    def log_suffix(self, rec: dict) -> str:
        return (f" enc-grad {rec['grad_norm_encoder']:.2e} unet-grad {rec['grad_norm_unet']:.2e} "
                f"retrieval {rec['encoder_retrieval_top1']:.3f} (aligned {self.ref:.3f})")

    def finish(self, metrics: dict, progress: dict, run_dir: Path, plot: bool, n_classes: int) -> None:
        metrics["joint"] = {"aligned_encoder_retrieval_top1": self.ref, "chance": 1.0 / n_classes,
                            "final_encoder_retrieval_top1": progress["history"][-1]["encoder_retrieval_top1"],
                            "grad_norm_encoder_mean": float(np.mean([r[1] for r in progress["grad_log"]])),
                            "grad_norm_unet_mean": float(np.mean([r[2] for r in progress["grad_log"]])),
                            "retrieval": RETRIEVAL, "grad_log": GRAD_LOG}
        write_json(run_dir / GRAD_LOG, {"columns": ["step", "encoder", "unet"], "rows": progress["grad_log"]})
        if plot:
            plot_joint(run_dir / "joint.png", progress, self.ref, 1.0 / n_classes)
