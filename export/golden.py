"""The golden set a bundle carries so it can re-prove itself on a device without torch.

At export time, for each model: its held-out real inputs (the feeds the export's SQNR
check uses: validation EEG trials, test images, UNet inputs along held-out DDIM
trajectories at every timestep, their final latents) and the **torch FP32** outputs on
them. For the classifier also a labelled evaluation set from the test split and
adversarial examples crafted white-box on the torch model (:class:`eegsine.attacks.algorithms.PGD`,
cross-entropy, at the run's training eps), so ``eegsine-verify`` can measure clean and
transfer-attack accuracy with ONNX Runtime alone.

Format: ``golden/<model>.npz`` with arrays ``feed<i>.in.<input>`` and ``feed<i>.out.<output>``,
and ``golden/classifier_eval.npz`` with ``images``, ``labels``, ``adv_images``. Plain numeric
arrays, read back with ``np.load(allow_pickle=False)``; every file is hashed in the manifest.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from eegsine.runtime.contracts import ExportContract

GOLDEN_DIR = "golden"


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return buf.getvalue()


@torch.no_grad()
def golden_arrays(module: nn.Module, contract: ExportContract,
                  feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Inputs and torch FP32 outputs of ``module`` (called with the contract's inputs in order) on ``feeds``."""
    module = module.eval()
    out: dict[str, np.ndarray] = {}
    for i, f in enumerate(feeds):
        res = module(*[torch.from_numpy(np.asarray(f[n])) for n in contract.input_names])
        res = res if isinstance(res, (tuple, list)) else (res,)
        for n in contract.input_names:
            out[f"feed{i}.in.{n}"] = np.asarray(f[n])
        for n, r in zip(contract.output_names, res):
            out[f"feed{i}.out.{n}"] = r.detach().float().numpy()
    return out


def write_model_golden(bundle_tmp: Path, module: nn.Module, contract: ExportContract,
                       feeds: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Write ``golden/<model>.npz``; returns its manifest entry."""
    rel = f"{GOLDEN_DIR}/{contract.name}.npz"
    (bundle_tmp / GOLDEN_DIR).mkdir(exist_ok=True)
    (bundle_tmp / rel).write_bytes(_npz_bytes(golden_arrays(module, contract, feeds)))
    return {"file": rel, "feeds": len(feeds), "reference": "torch FP32", "inputs": "held-out real inputs"}


def write_classifier_eval(bundle_tmp: Path, model: nn.Module, images: np.ndarray, labels: np.ndarray, eps: float | None,
                          pgd_steps: int, seed: int) -> dict[str, Any]:
    """Write ``golden/classifier_eval.npz`` (images, labels, PGD adversarial images); returns its manifest entry."""
    from eegsine.attacks.algorithms import PGD

    x = np.ascontiguousarray(images, np.float32)
    y = np.asarray(labels, np.int64)
    arrays = {"images": x, "labels": y}
    entry: dict[str, Any] = {"file": f"{GOLDEN_DIR}/classifier_eval.npz", "n": int(len(x)),
                             "eps_units": "L-inf, [0,1] pixel units"}
    model = model.eval()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        entry["torch_clean_accuracy"] = float((model(xt).argmax(1) == yt).float().mean() * 100)
    if eps is not None and eps > 0:
        torch.manual_seed(seed)
        adv = PGD(model, eps=float(eps), steps=pgd_steps, restarts=1)(xt, yt)
        if float((adv - xt).abs().max()) > eps + 1e-6:
            raise RuntimeError(f"PGD produced a perturbation above eps={eps}")
        arrays["adv_images"] = adv.numpy().astype(np.float32)
        with torch.no_grad():
            entry["torch_adv_accuracy"] = float((model(adv).argmax(1) == yt).float().mean() * 100)
        entry.update(eps=float(eps), attack=f"PGD-{pgd_steps} cross-entropy, crafted white-box on the torch FP32 model")
    else:
        entry["attack"] = "none (the run records no training eps)"
    (bundle_tmp / GOLDEN_DIR).mkdir(exist_ok=True)
    (bundle_tmp / entry["file"]).write_bytes(_npz_bytes(arrays))
    return entry


def write_eeg_eval(bundle_tmp: Path, eeg: np.ndarray, labels: np.ndarray, split: str) -> dict[str, Any]:
    """Write ``golden/eeg_encoder_eval.npz``: labelled trials (``eeg``: the encoder's input, preprocessed as the
    manifest says; ``labels``: the data set's class index) for the decision-level gates of ``eegsine-verify``
    (INT8-vs-FP32 label agreement, decision accuracy); returns its manifest entry."""
    x = np.ascontiguousarray(eeg, np.float32)
    y = np.asarray(labels, np.int64)
    if len(x) != len(y) or not len(x):
        raise ValueError(f"write_eeg_eval: {len(x)} trials, {len(y)} labels")
    entry = {"file": f"{GOLDEN_DIR}/eeg_encoder_eval.npz", "n": int(len(x)), "split": split,
             "labels": "the data set's class index (models.eeg_encoder.prototypes.class_index maps the decoder's)"}
    (bundle_tmp / GOLDEN_DIR).mkdir(exist_ok=True)
    (bundle_tmp / entry["file"]).write_bytes(_npz_bytes({"eeg": x, "labels": y}))
    return entry
