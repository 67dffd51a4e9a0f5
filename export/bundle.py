"""Export bundle: trained runs -> a folder of FP32 (+ INT8) ONNX models and ``manifest.json``.

:func:`export_bundle` exports each model through its contract, checks ORT-vs-torch parity,
quantizes with real calibration data (``--int8``), measures SQNR of every INT8 model on
held-out real inputs, and writes the manifest (models, I/O contracts, opset, precision,
quantization config and report, sha256 and size of each file, package versions). The
folder is built under a temporary name beside ``out_dir`` and renamed into place at the
end, so a failed export leaves no half-written bundle and never touches an existing one
unless ``overwrite`` is set.

Calibration data (real, never random):

* classifier -- images of the training split of the data set the run was trained on;
* EEG encoder -- EEG trials of the training split;
* UNet -- its inputs recorded along real DDIM trajectories (diffusers' DDIMScheduler, the
  same guidance as at generation) started from the training trials' tokens, at every
  timestep, conditional and unconditional halves as the runtime batches them;
* VAE decoder -- the final latents of those trajectories.
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from eegsine.progress import tqdm

from eegsine.export.configs import BundleConfig  # torch-free, so `eegsine export --help` needs no torch
from eegsine.runtime.contracts import ExportContract
from eegsine.errors import UserError
from eegsine.export.decision import build_decision
from eegsine.export.onnx_export import export_onnx, ort_session, parity
from eegsine.export.golden import write_classifier_eval, write_eeg_eval, write_model_golden
from eegsine.export.quantize import quantize, sqnr
from eegsine.io import read_json, sha256_file, staging_dir, writable_dir, write_json
from eegsine.runtime import BUNDLE_FORMAT, BUNDLE_VERSION, MANIFEST, Bundle
from eegsine.runtime.contracts import decision_contract
from eegsine.data import load_eeg
from eegsine.models.classifier import Classifier
from eegsine.runtime.verify import DeviceVerifyConfig, decision_task, render, verify_on_device

MODEL_NAMES = ("eeg_encoder", "unet", "vae_decoder", "classifier")


@dataclasses.dataclass
class Item:
    """One model to export: its contract-shaped module, calibration feeds and held-out feeds."""

    contract: ExportContract
    module: nn.Module
    calibration: list[dict[str, np.ndarray]]
    holdout: list[dict[str, np.ndarray]]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    evaluation: dict[str, Any] | None = None  # the labelled golden set: classifier {"images", "labels", "eps"},
    #                                           eeg_encoder {"eeg", "labels", "split"}
    arrays: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)  # extra .npz files to ship


def _feeds(name: str, x: np.ndarray, batch: int) -> list[dict[str, np.ndarray]]:
    return [{name: np.ascontiguousarray(x[i:i + batch])} for i in range(0, len(x), batch)]


# -- classifier ----------------------------------------------------------------------------------
def classifier_item(run_dir: str | Path, cfg: BundleConfig, images: Any | None = None) -> Item:
    """The classifier of a ``train classifier`` run, calibrated on its data set's training images."""
    model = Classifier.from_pretrained(run_dir)
    mcfg, prov = model.cfg, model.provenance
    if images is None:
        prov.require_data(str(run_dir), "a classifier trained by `eegsine train classifier`")
        images = prov.load_images()
    contract, module = model.export_modules(max_batch=max(cfg.export.max_batch, 64),
                                            opset=cfg.export.opset)["classifier"]
    rng = np.random.default_rng(cfg.seed)
    idx = rng.choice(len(images.train_x), size=min(cfg.calib_images, len(images.train_x)), replace=False)
    eps = prov.train_eps
    return Item(contract, module, _feeds("images", images.train_x[idx], 32),
                _feeds("images", images.test_x[: cfg.holdout], 32),
                {"classes": list(images.classes), "dataset": images.name, "arch": mcfg.arch, "head": mcfg.head,
                 "eps": eps},
                evaluation={"images": images.test_x[: cfg.golden_eval], "labels": images.test_y[: cfg.golden_eval],
                            "eps": eps})


# -- EEG -> image ---------------------------------------------------------------------------------
@torch.no_grad()
def record_trajectories(pipe: Any, embeddings: torch.Tensor, steps: int, guidance: float, seed: int,
                        batch: int = 8) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """Run the pipeline's DDIM loop from ``embeddings`` (N, emb_dim), ``batch`` trials at a time, recording the UNet's
    inputs at every step through its step callback -> (feeds, final latents (N, c, s, s)).

    ``pipe`` is an :class:`~eegsine.models.diffusion.EEGDiffusionPipeline`; the initial latents are drawn batch
    after batch from one generator seeded with ``seed``."""
    ddim = pipe.with_sampler("ddim")
    ddim.set_progress_bar_config(disable=True)
    feeds: list[dict[str, np.ndarray]] = []
    finals = []
    gen = torch.Generator().manual_seed(seed)

    def record(_pipe: Any, _i: int, t: torch.Tensor, kw: dict[str, torch.Tensor]) -> dict:
        lat = kw["latent_model_input"]           # (2B or B, c, s, s): conditional and unconditional halves
        feeds.append({"latents": lat.cpu().numpy().copy(), "timestep": torch.full((len(lat),), float(t)).numpy(),
                      "encoder_hidden_states": kw["encoder_hidden_states"].cpu().numpy().copy()})
        return {}

    for s in tqdm(range(0, len(embeddings), batch), desc="calibration trajectories", unit="batch", leave=False):
        emb = embeddings[s:s + batch]
        x = torch.randn((len(emb),) + ddim.latent_shape, generator=gen)
        final = ddim(embeddings=emb, num_inference_steps=steps, guidance_scale=guidance, latents=x,
                     output_type="latent", return_dict=False, callback_on_step_end=record,
                     callback_on_step_end_tensor_inputs=["latent_model_input", "encoder_hidden_states"])[0]
        finals.append(final.cpu().numpy())
    return feeds, np.concatenate(finals)


def eeg_items(pipe: Any, train_eeg: np.ndarray, holdout_eeg: np.ndarray, cfg: BundleConfig,
              guidance: float | None = None, train_labels: np.ndarray | None = None,
              holdout_labels: np.ndarray | None = None, classes: list[str] | None = None,
              preprocessing: Any | None = None) -> tuple[list[Item], dict[str, Any]]:
    """Items for eeg_encoder (+ token mapper), unet and vae_decoder, plus the bundle's generation section.

    ``pipe`` is an :class:`~eegsine.models.diffusion.EEGDiffusionPipeline` with its EEG encoder: the items are its
    ``export_modules``, the UNet and VAE decoder calibrated along its DDIM trajectories at ``guidance`` (default: the
    model's). With ``train_labels`` the encoder item carries class prototypes (:func:`class_prototypes`); with
    ``preprocessing`` (a :class:`~eegsine.runtime.preprocessing.PreprocessingSpec`) the spec its input needs.
    """
    modules = pipe.export_modules(max_batch=cfg.export.max_batch, opset=cfg.export.opset)
    if "eeg_encoder" not in modules:
        raise UserError("export: the diffusion model has no EEG encoder attached; the bundle needs it")
    (c_enc, enc), (c_unet, w_unet), (c_vae, decoder) = (modules[k] for k in ("eeg_encoder", "unet", "vae_decoder"))
    enc, w_unet, decoder = enc.eval(), w_unet.eval(), decoder.eval()
    guidance = pipe.cfg.guidance if guidance is None else guidance
    n_chans, n_times = int(train_eeg.shape[1]), int(train_eeg.shape[2])
    rng = np.random.default_rng(cfg.seed)
    pick = rng.choice(len(train_eeg), size=min(cfg.calib_trials, len(train_eeg)), replace=False)
    tr = np.ascontiguousarray(train_eeg[pick], dtype=np.float32)
    ho = np.ascontiguousarray(holdout_eeg[: cfg.holdout], dtype=np.float32)
    with torch.no_grad():
        emb_tr = enc(torch.from_numpy(tr))[1]
        emb_ho = enc(torch.from_numpy(ho[: min(len(ho), 4)]))[1]
    calib_unet, lat_tr = record_trajectories(pipe, emb_tr, cfg.calib_steps, guidance, cfg.seed)
    hold_unet, lat_ho = record_trajectories(pipe, emb_ho, min(cfg.calib_steps, 10), guidance, cfg.seed + 1)
    enc_item = Item(c_enc, enc, _feeds("eeg", tr, 8), _feeds("eeg", ho, 8))
    if preprocessing is not None:
        if (preprocessing.n_chans, preprocessing.n_times) != (n_chans, n_times):
            raise UserError(f"export: the preprocessing spec describes {preprocessing.n_chans} ch x "
                            f"{preprocessing.n_times} samples, the encoder takes {n_chans} x {n_times}")
        enc_item.info["preprocessing"] = preprocessing.to_dict()
    if train_labels is not None:
        info, arrays = class_prototypes(enc, train_eeg, train_labels, classes, holdout_eeg, holdout_labels)
        enc_item.info["prototypes"] = info
        enc_item.arrays[info["file"]] = arrays
    items = [enc_item,
             Item(c_unet, w_unet, calib_unet, hold_unet),
             Item(c_vae, decoder, _feeds("latents", lat_tr.astype(np.float32), 8),
                  _feeds("latents", lat_ho.astype(np.float32), 8))]
    generation = {"sampler": "ddim", "scheduler": pipe.cfg.scheduler_config(), "guidance": float(guidance),
                  "steps": cfg.calib_steps,
                  "uncond_tokens": pipe.token_mapper.null_tokens.detach().cpu().float().numpy().ravel().tolist()}
    return items, generation


PROTOTYPES_FILE = "prototypes.npz"


@torch.no_grad()
def _embed(enc: nn.Module, x: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([enc(torch.from_numpy(np.ascontiguousarray(x[i:i + batch], np.float32)))[1].numpy()
                           for i in range(0, len(x), batch)])


def class_prototypes(enc: nn.Module, train_eeg: np.ndarray, train_labels: np.ndarray, classes: list[str] | None,
                     holdout_eeg: np.ndarray | None = None, holdout_labels: np.ndarray | None = None
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Per-class mean embedding of the training split (L2-normalised, as the prototypical loss forms them) and
    the softmax scale of the runtime's confidence -> (manifest entry, arrays of ``prototypes.npz``).

    The runtime's confidence is softmax(-scale / 2 * ||z - p_c||^2) over classes, z and p_c unit vectors
    (= softmax(scale * cos), the training loss's logits). ``scale`` is fitted on the held-out (validation)
    trials by temperature scaling (minimum NLL on a log grid 1..300); without held-out labels it is 10, the
    training's initial prototype scale. Classes with no training trial get no prototype.
    """
    y = np.asarray(train_labels, np.int64)
    n_classes = len(classes) if classes is not None else int(y.max()) + 1
    z = _embed(enc, train_eeg)                                             # (N, D)
    present = np.array([c for c in range(n_classes) if (y == c).any()], np.int64)
    protos = np.stack([z[y == c].mean(0) for c in present])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True) + 1e-12
    scale, nll = 10.0, None
    if holdout_eeg is not None and holdout_labels is not None and len(holdout_labels):
        hz, hy = _embed(enc, holdout_eeg), np.asarray(holdout_labels, np.int64)
        ok = np.isin(hy, present)
        if ok.any():
            cos = hz[ok] @ protos.T
            target = np.searchsorted(present, hy[ok])
            grid = np.geomspace(1.0, 300.0, 80)
            nlls = []
            for s in grid:
                lg = s * cos
                lg -= lg.max(1, keepdims=True)
                nlls.append(float(np.mean(np.log(np.exp(lg).sum(1)) - lg[np.arange(len(lg)), target])))
            k = int(np.argmin(nlls))
            scale, nll = float(grid[k]), round(nlls[k], 4)
    names = list(classes) if classes is not None else [str(c) for c in range(n_classes)]
    info = {"file": PROTOTYPES_FILE, "classes": [names[c] for c in present], "class_index": present.tolist(),
            "counts": [int((y == c).sum()) for c in present], "split": "train", "computed_with": "torch fp32 encoder",
            "distance": "squared euclidean between unit vectors", "scale": scale, "scale_fit": (
                {"on": "validation split", "nll": nll} if nll is not None else {"on": "none (default)"})}
    return info, {"prototypes": protos.astype(np.float32), "class_index": present}


def _run_preprocessing(encoder: nn.Module, eeg_set: Any) -> Any:
    """The spec the encoder was trained on (its folder's preprocessing.json), checked against the calibration data's."""
    run = getattr(encoder, "preprocessing", None)
    data = getattr(eeg_set, "preprocessing", None)
    if run is not None and data is not None:
        a, b = run.to_dict(), data.to_dict()
        a.pop("source"), b.pop("source")
        if a != b:
            diff = ", ".join(k for k in a if a[k] != b[k])
            raise UserError(f"export: {eeg_set.name}'s preprocessing differs from the encoder's training data "
                            f"({diff}); calibrate on the data the encoder was trained on")
    return run if run is not None else data


def diffusion_model_dir(run_dir: str | Path) -> Path:
    """A diffusion model folder: ``run_dir`` itself or its ``model/`` sub-folder."""
    from eegsine.models.diffusion import diffusion_folder

    return diffusion_folder(run_dir)


def run_eeg_data(provenance: Any, where: str | Path, eeg_data: str = "") -> Any:
    """The EEG set a model was trained on, rebuilt from its provenance (same loader and options); ``eeg_data``
    (``--eeg-data``, a registry name) overrides."""
    if eeg_data:
        return load_eeg(eeg_data).check()
    provenance.require_data(str(where), "--eeg-data")
    return provenance.load_eeg()


def training_data(pipe: Any) -> dict[str, Any] | None:
    """The EEG set the bundle's encoder was trained on, as the manifest records it (``models.eeg_encoder.data``:
    registry name and loader options, from the encoder's provenance, else the diffusion run's): what
    ``eegsine data export-recording --like BUNDLE`` regenerates. None for a model built in memory."""
    for prov in (getattr(pipe.eeg_encoder, "provenance", None), pipe.provenance):
        if prov is not None and prov.data:
            return {"name": prov.data, "options": dict(prov.data_options)}
    return None


def eeg_run_items(run_dir: str | Path, cfg: BundleConfig,
                  eeg_set: Any | None = None) -> tuple[list[Item], dict[str, Any], Any]:
    """Items of a trained EEG->image run (encoder, token mapper, null tokens, UNet, VAE decoder) -> (items, generation,
    eeg_set); ``eeg_set`` defaults to the data the model was trained on (its provenance)."""
    from eegsine.models.diffusion import ENCODER_DIR, EEGDiffusionPipeline

    model_dir = diffusion_model_dir(run_dir)
    pipe = EEGDiffusionPipeline.from_pretrained(model_dir)
    dcfg = pipe.cfg
    if pipe.eeg_encoder is None:
        raise UserError(f"{model_dir}: has no {ENCODER_DIR}/ folder; the bundle needs the EEG encoder")
    if eeg_set is None:
        eeg_set = run_eeg_data(pipe.provenance, model_dir, cfg.eeg_data)
    for split in ("train", "val"):
        if split not in eeg_set.splits or len(eeg_set.splits[split]) == 0:
            raise UserError(f"{eeg_set.name}: has no {split} split to calibrate/check on")
    train = eeg_set.x[eeg_set.splits["train"]]
    hold = eeg_set.x[eeg_set.splits["val"]]
    guidance = dcfg.guidance if cfg.guidance < 0 else cfg.guidance
    items, generation = eeg_items(pipe, train, hold, cfg, guidance, train_labels=eeg_set.y[eeg_set.splits["train"]],
                                  holdout_labels=eeg_set.y[eeg_set.splits["val"]], classes=list(eeg_set.classes),
                                  preprocessing=_run_preprocessing(pipe.eeg_encoder, eeg_set))
    generation["steps"] = dcfg.sample_steps
    data = training_data(pipe)
    if data is not None:
        items[0].info["data"] = data
    test = eeg_set.splits.get("test")
    if test is not None and len(test) and cfg.golden_eval > 0:  # labelled trials for the decision-level gates
        pick = np.asarray(test)[: cfg.golden_eval]
        items[0].evaluation = {"eeg": eeg_set.x[pick], "labels": eeg_set.y[pick], "split": "test"}
    return items, generation, eeg_set


# -- writing ------------------------------------------------------------------------------------------
def package_versions() -> dict[str, str]:
    out = {}
    for mod in ("eegsine", "numpy", "torch", "onnx", "onnxruntime", "onnxscript", "diffusers", "tensorrt"):
        try:
            out[mod] = getattr(importlib.import_module(mod), "__version__", "?")
        except Exception:  # noqa: BLE001 - absent packages are recorded as such
            out[mod] = "not installed"
    return out


def _sqnr_report(fp32: Path, int8: Path, contract: ExportContract,
                 holdout: list[dict[str, np.ndarray]]) -> dict[str, float]:
    a, b = ort_session(fp32), ort_session(int8)
    out: dict[str, list[np.ndarray]] = {n: [] for n in contract.output_names}
    ref: dict[str, list[np.ndarray]] = {n: [] for n in contract.output_names}
    for f in holdout:
        for n, r, q in zip(contract.output_names, a.run(None, f), b.run(None, f)):
            ref[n].append(r)
            out[n].append(q)
    return {f"{n}_sqnr_db": round(sqnr(np.concatenate(ref[n]), np.concatenate(out[n])), 2)
            for n in contract.output_names}


def _sqnr_per_timestep(fp32: Path, int8: Path, holdout: list[dict[str, np.ndarray]]) -> dict[int, float]:
    a, b = ort_session(fp32), ort_session(int8)
    out: dict[int, list[float]] = {}
    for f in holdout:
        out.setdefault(int(f["timestep"][0]), []).append(sqnr(a.run(None, f)[0], b.run(None, f)[0]))
    return {t: round(float(np.mean(v)), 2) for t, v in sorted(out.items(), reverse=True)}


def int8_timestep_limit(per_t: dict[int, float], min_db: float) -> int:
    """Largest t such that the INT8 UNet reaches ``min_db`` at every held-out timestep <= t (-1: none).

    Activation ranges move with the timestep: on the tiny preset's trained UNet the INT8 SQNR
    is -1.3 dB at t=999 and 21.5-37 dB below (teacher-forced, held-out EEG), because one
    calibrated range must cover every t (calibrating on t=999 alone gives 34 dB there and
    4 dB elsewhere, measured). Running the few noisiest steps in FP32 keeps the rest INT8.
    """
    if min_db <= 0:
        return max(per_t) if per_t else -1
    limit = -1
    for t in sorted(per_t):  # ascending: extend while every step so far is good enough
        if per_t[t] < min_db:
            break
        limit = t
    return limit


def check_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """``out_dir`` if a bundle may be written there: absent (or ``overwrite``), its parent a writable folder."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (pass --overwrite to replace it)")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    writable_dir(out.parent)  # a read-only or full disk fails here, before the export's work
    return out


def export_bundle(items: list[Item], out_dir: str | Path, cfg: BundleConfig, generation: dict | None = None,
                  sources: dict[str, str] | None = None, log: Any = print) -> dict[str, Any]:
    """Export, check, quantize and write the bundle atomically; returns the manifest.

    The bundle is built in :func:`~eegsine.io.staging_dir` beside ``out_dir`` (which also sweeps
    the staging folders of killed exports of the same name) and renamed into place.
    """
    out = check_out_dir(out_dir, cfg.overwrite)
    with staging_dir(out) as tmp:
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        manifest: dict[str, Any] = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "created": created,
                                    "packages": package_versions(), "config": cfg.to_dict(), "sources": sources or {},
                                    "models": {}, "files": {}, "golden": {}}
        if generation is not None:
            manifest["generation"] = generation
        for item in items:
            c = item.contract
            name = c.name
            entry: dict[str, Any] = {"contract": c.to_dict(), "opset": c.opset, "files": {}, **item.info}
            fp32 = tmp / f"{name}.fp32.onnx"
            log(f"export {name}: {cfg.export.exporter} exporter, opset {c.opset}")
            export_onnx(item.module, c, fp32, exporter=cfg.export.exporter)
            par = parity(item.module, c, fp32)
            entry["parity_ort_vs_torch"] = par
            worst = max(v for k, v in par.items() if k.endswith("max_abs"))
            if worst > cfg.export.parity_atol:
                raise UserError(f"{name}: ONNX Runtime output differs from torch by {worst:.3g} "
                                f"(> ExportConfig.parity_atol={cfg.export.parity_atol}); export is not trustworthy")
            entry["files"]["fp32"] = fp32.name
            if cfg.int8 and name in cfg.int8_models:
                int8 = tmp / f"{name}.int8.onnx"
                log(f"quantize {name}: target {cfg.quant.target}, {len(item.calibration)} calibration feeds, "
                    f"activations {cfg.quant.act_type}")
                rep = quantize(fp32, int8, cfg.quant, item.calibration)
                rep.update(_sqnr_report(fp32, int8, c, item.holdout))
                rep["holdout_feeds"] = len(item.holdout)
                if "timestep" in c.input_names:
                    per_t = _sqnr_per_timestep(fp32, int8, item.holdout)
                    rep["sqnr_db_per_timestep"] = {str(t): v for t, v in per_t.items()}
                    if generation is not None:
                        generation["int8_unet_max_timestep"] = int8_timestep_limit(per_t, cfg.unet_min_sqnr_db)
                        log(f"  {name}: INT8 used for t <= {generation['int8_unet_max_timestep']} "
                            f"(held-out SQNR >= {cfg.unet_min_sqnr_db} dB), FP32 above")
                entry["quantization"] = rep
                entry["files"]["int8"] = int8.name
                log(f"  {name}: {rep['bytes_fp32'] / 1e6:.2f} MB -> {rep['bytes_int8'] / 1e6:.2f} MB, "
                    + ", ".join(f"{k}={v}" for k, v in rep.items() if k.endswith("_sqnr_db")))
            manifest["models"][name] = entry
            golden = [write_model_golden(tmp, item.module, c, item.holdout)]
            manifest["golden"][name] = golden[0]
            if item.evaluation is not None and "eeg" in item.evaluation:
                ev = item.evaluation
                log(f"golden set {name}: {len(ev['eeg'])} labelled {ev['split']} trials")
                golden.append(write_eeg_eval(tmp, ev["eeg"], ev["labels"], ev["split"]))
                manifest["golden"][f"{name}_eval"] = golden[-1]
            elif item.evaluation is not None and cfg.golden_eval > 0:
                ev = item.evaluation
                log(f"golden set {name}: {len(ev['images'])} test images, "
                    f"PGD-{cfg.golden_pgd_steps} at eps={ev['eps']}")
                golden.append(write_classifier_eval(tmp, item.module, ev["images"], ev["labels"], ev["eps"],
                                                    cfg.golden_pgd_steps, cfg.seed))
                manifest["golden"][f"{name}_eval"] = golden[-1]
            for rel, arrays in item.arrays.items():
                np.savez(tmp / rel, **arrays)
            for rel in list(entry["files"].values()) + [g["file"] for g in golden] + list(item.arrays):
                manifest["files"][rel] = {"sha256": sha256_file(tmp / rel), "bytes": (tmp / rel).stat().st_size}
        enc = manifest["models"].get("eeg_encoder", {})
        if "prototypes" in enc:
            manifest["models"]["decision"] = decision_entry(tmp, enc, manifest["files"], log)
        write_json(tmp / MANIFEST, manifest)
        if "decision" in manifest["models"]:
            manifest["models"]["decision"]["proof"] = prove_decision(tmp, log)
            write_json(tmp / MANIFEST, manifest)
        if cfg.int8:  # prove the INT8 files on the build host before the bundle is published

            record = verify_on_device(tmp, append=True, log=lambda s: None)
            log(render(record))
        _replace_dir(tmp, out, cfg.overwrite)
    return manifest


def decision_entry(tmp: Path, enc: dict[str, Any], files: dict[str, Any], log: Any = print) -> dict[str, Any]:
    """Write ``decision.<precision>.onnx`` from each encoder file in ``tmp`` (:mod:`eegsine.export.decision`),
    list them in ``files`` and return the manifest's ``models.decision`` entry."""
    pro = enc["prototypes"]
    with np.load(tmp / pro["file"], allow_pickle=False) as z:
        protos = z["prototypes"]
    meta = enc["contract"]["meta"]
    contract = decision_contract(int(meta["n_chans"]), int(meta["n_times"]), len(protos))
    entry: dict[str, Any] = {"contract": contract.to_dict(), "opset": contract.opset, "files": {}, "built_from": {},
                             "graph": {},
                             "classes": pro["classes"], "class_index": pro["class_index"], "scale": pro["scale"],
                             "head": "softmax(-scale / 2 * ||embedding - prototype||^2), prototypes and scale "
                                     f"folded in from {pro['file']}",
                             "runs_on": "ONNX Runtime >= 1.11 (C, C++, C#, Java, Python) and BrainFlow's MLModel "
                                        "(ONNX_CLASSIFIER): input the flattened preprocessed epoch, row-major "
                                        "(n_chans, n_times); output the class probabilities in `classes` order"}
    for p, rel in enc["files"].items():
        out = f"decision.{p}.onnx"
        entry["graph"][p] = build_decision(tmp / rel, tmp / out, contract, protos, float(pro["scale"]))
        entry["files"][p], entry["built_from"][p] = out, rel
        files[out] = {"sha256": sha256_file(tmp / out), "bytes": (tmp / out).stat().st_size}
        log(f"decision {p}: {rel} + prototype head -> {out} "
            f"(opset {contract.opset}, {entry['graph'][p]['nodes']} nodes)")
    if "int8" in entry["files"]:
        entry["quantization"] = {"target": enc["quantization"].get("target", "x86-vnni"),
                                 "from": f"{enc['files']['int8']}'s Q/DQ nodes, not quantized again"}
    return entry


def prove_decision(tmp: Path, log: Any = print) -> dict[str, Any]:
    """The export's gate: every decision file equals the numpy decoder on the same encoder file over the golden EEG
    trials (:func:`eegsine.runtime.verify.decision_task`); returns the figures, raises :class:`UserError` if not."""
    fig, gates = decision_task(Bundle(tmp, check_proven=False), DeviceVerifyConfig())
    for g in gates:
        if not g["passed"]:
            raise UserError(f"export: {g['gate']}: {g['value']} {g['unit']} ({g['rule']} {g['limit']} required); "
                            "decision.onnx does not decide as the numpy decoder does")
    log("decision.onnx equals the numpy decoder: " + ", ".join(
        f"{p} n={f['n']} labels {f['label_agreement']}% max |dp| {f['prob_max_abs_diff']:.1e}"
        for p, f in fig.items() if isinstance(f, dict)))
    return fig


def _replace_dir(new: Path, out: Path, overwrite: bool) -> None:
    """Rename ``new`` to ``out``; an existing ``out`` (only with overwrite) is moved aside first, then removed.

    The old bundle's name aside is a staging name: a kill before it is removed leaves it to the next sweep.
    """
    if out.exists():
        if not overwrite:
            raise UserError(f"{out}: already exists (pass --overwrite to replace it)")
        old = out.with_name(f".{out.name}.old-{os.getpid()}.tmp")
        os.replace(out, old)
        try:
            os.replace(new, out)
        except BaseException:
            os.replace(old, out)  # the old bundle back under its name
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, out)


def update_manifest(bundle_dir: str | Path, mutate: Any) -> dict[str, Any]:
    """Read, change (``mutate(manifest)``) and atomically rewrite a bundle's manifest."""
    path = Path(bundle_dir) / MANIFEST
    m = read_json(path)
    mutate(m)
    write_json(path, m)
    return m
