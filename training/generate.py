"""Generation from a trained diffusion run: PNGs + the source's grid, and image-quality scoring.

``generate(run, eeg_file=... | split=...)`` writes one PNG per sample and ``grid.png`` (a row
per EEG trial, ``samples`` columns from fixed seeds, the ground-truth stimulus rightmost when
the trial comes from the data set). ``evaluate_run(run)`` trains (once) the domain feature
network ``RUN/domain-cnn-<dataset>`` and calls :func:`eegsine.metrics.images.evaluate_generation`.

A user's ``.npy`` is read with ``allow_pickle=False`` and checked (shape, channels, samples,
finite) before anything runs; a bad file is one line naming the file and the problem.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eegsine.errors import UserError
from eegsine.io import run_logger, scratch_dir, update_metrics, writable_dir, write_json
from eegsine.models.diffusion import EEGDiffusion
from eegsine.models.eeg_encoder import check_input
from eegsine.runs.plots import save_grid, save_png
from eegsine.data import load_images
from eegsine.metrics.image_nets import StandardNets
from eegsine.metrics.images import DomainCNNConfig, domain_network, evaluate_generation, train_domain_cnn
from eegsine.models.protocol import Provenance
from eegsine.training.configs import DiffusionTrainConfig, GenerateConfig
from eegsine.training.encoder import load_data
from eegsine.training.loop import autocast, resolve_device
from eegsine.training.unet import pick_grid_trials


def read_eeg_file(path: str | Path, cfg) -> np.ndarray:
    """A user's .npy -> (B, n_chans, n_times) float32 for the encoder config ``cfg``, or a one-line UserError."""
    n_chans, n_times = cfg.n_chans, cfg.n_times
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: EEG file does not exist")
    if path.suffix.lower() != ".npy":
        raise UserError(f"{path}: expected a .npy file (numpy.save of a float array)")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise UserError(f"{path}: not a plain numpy array ({str(e).splitlines()[0][:120]})") from None
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable .npy file ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise UserError(f"{path}: expected a numeric array, got dtype {getattr(arr, 'dtype', type(arr).__name__)}")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or len(arr) == 0:
        raise UserError(f"{path}: expected shape (n_chans={n_chans}, n_times={n_times}) or (batch, {n_chans}, "
                        f"{n_times}), got {arr.shape}")
    arr = arr.astype(np.float32)
    check_input(arr, cfg, what=str(path))
    return arr


def load_run_data(run: str | Path):
    """The EEG set a diffusion run was trained on (from its config.json)."""
    return load_data(DiffusionTrainConfig.load(run)).check()  # type: ignore[arg-type]


def generate(run: str | Path, eeg_file: str | Path | None = None, split: str | None = None,
             out_dir: str | Path | None = None, samples: int = 4, max_trials: int = 16, steps: int | None = None,
             guidance: float | None = None, sampler: str | None = None, seed: int = 0,
             model: EEGDiffusion | None = None, data=None, device: str = "auto",
             mixed_precision: str = "no") -> dict[str, Any]:
    """Write PNGs and grid.png for the trials of ``eeg_file`` or of the run's ``split``; returns an index.

    The model samples on ``device`` (:func:`~eegsine.training.loop.resolve_device`), under autocast with
    ``mixed_precision`` bf16 / fp16; the initial noise is drawn on the CPU, so a seed gives the same noise anywhere."""
    run = Path(run)
    if (eeg_file is None) == (split is None):
        raise UserError("generate: give exactly one of --eeg FILE or --split NAME")
    if samples < 1 or max_trials < 1:
        raise UserError(f"generate: --samples and --max-trials must be >= 1 (got {samples}, {max_trials})")
    if seed < 0:
        raise UserError(f"generate: --seed must be >= 0, got {seed}")
    dev = resolve_device(device)
    model = _placed(run, model, dev)
    if model.encoder is None:
        raise UserError(f"{run / 'model'}: has no EEG encoder folder; cannot generate from EEG")
    steps, guidance = model.cfg.sampling(steps, guidance)  # before any data is read or file written
    ecfg = model.encoder.cfg
    truth = labels = None
    if eeg_file is not None:
        x = read_eeg_file(eeg_file, ecfg)[:max_trials]
        source = str(eeg_file)
    else:
        ds = data if data is not None else load_run_data(run)
        idx = pick_grid_trials(ds, ds.split(split), max_trials, seed)
        if len(idx) == 0:
            raise UserError(f"{ds.name}: split {split!r} is empty")
        x, truth, labels = ds.x[idx], ds.images[ds.image[idx]], ds.y[idx]
        source = f"{ds.name}:{split}"
    out = writable_dir(Path(out_dir) if out_dir else run / "generated")  # a file there, read-only: before sampling
    emb = model.embed(torch.from_numpy(x))                                  # (T, emb_dim)
    T = len(x)
    lat = model.initial_latents(T * samples, seed)                          # sample j of trial i: fixed noise
    with autocast(dev, mixed_precision):
        imgs = model.sample(emb.repeat_interleave(samples, 0), steps=steps, guidance=guidance, sampler=sampler,
                            latents=lat, progress=True).float().cpu().numpy()
    imgs = imgs.reshape((T, samples) + imgs.shape[1:])                      # (T, S, C, H, W)
    files = []
    for i in range(T):
        for j in range(samples):
            f = out / f"trial{i:03d}_s{j}.png"
            save_png(f, imgs[i, j])
            files.append(f.name)
        if truth is not None:
            save_png(out / f"trial{i:03d}_truth.png", truth[i])
    grid = save_grid(out / "grid.png", imgs, truth, title=f"{source}: {samples} samples per trial"
                     + (", ground truth right" if truth is not None else ""))
    index = {"source": source, "n_trials": T, "samples_per_trial": samples, "n_images": T * samples,
             "labels": None if labels is None else labels.tolist(), "files": files, "grid": str(grid),
             "sampler": sampler or model.cfg.sampler, "steps": steps, "guidance": guidance, "seed": seed}
    if dev.type != "cpu" or mixed_precision != "no":  # (the CPU fp32 index keeps its keys)
        index.update(device=str(dev), mixed_precision=mixed_precision)
    write_json(out / "index.json", index)
    return index


def _placed(run: Path, model: EEGDiffusion | None, dev: torch.device) -> EEGDiffusion:
    """``model`` (else RUN/model, frozen) on ``dev``."""
    if model is None:
        if not (run / "model" / "config.json").exists():
            raise UserError(f"{run}: no trained model (expected {run / 'model'}; run `eegsine train diffusion` first)")
        model = EEGDiffusion.from_pretrained(run / "model").requires_grad_(False)
    return model.to(dev)


def _domain_name(cfg, ds) -> str:
    """The image set the domain CNN is trained on: the paired image set of synthetic-vep, else the EEG set's."""
    return (cfg.image_set if cfg is not None and cfg.data == "synthetic-vep" and cfg.image_set else "") or ds.name


def _domain_job(name: str, ds):
    """(config, data function) of the domain CNN for image set ``name``: its official train split when it has one
    (synthetic-vep's paired image set), else the EEG set's train-split stimuli."""
    def data():
        if name != ds.name:
            im = load_images(name)
            return im.train_x, im.train_y, im.test_x, im.test_y
        tr, te = np.unique(ds.image[ds.split("train")]), np.unique(ds.image[ds.split("test")])
        tr, te = tr[tr >= 0], te[te >= 0]
        return ds.images[tr], ds.image_labels[tr], ds.images[te], ds.image_labels[te]

    c, s = int(ds.images.shape[1]), int(ds.images.shape[-1])
    return DomainCNNConfig(dataset=name, in_chans=c, image_size=s, n_classes=ds.n_outputs, max_train=12000,
                           epochs=2), data


def domain_for_run(run: Path, ds, logger=None):
    """The run's domain CNN (trained once into RUN/domain-cnn-<dataset>, unless `eegsine train domain-net` put
    it there first): on the paired image set's official train split when there is one (synthetic-vep), else on
    the train-split stimuli."""
    cfg = DiffusionTrainConfig.load(run) if (run / "config.json").exists() else None
    name = _domain_name(cfg, ds)
    dcfg, data = _domain_job(name, ds)
    net, stats = domain_network(run / f"domain-cnn-{name}", dcfg, data, logger)
    return net, f"domain-cnn-{name}", stats


def train_domain_net(cfg, run: str | Path, logger=None) -> dict[str, Any]:
    """``eegsine train domain-net``: the feature network a diffusion run's images are scored on, trained into
    ``RUN/domain-cnn-<images>`` from the run's config (``cfg``: a DiffusionTrainConfig) before or while the run
    trains; ``generate --evaluate`` and the export's gates then load it instead of training it. The same network
    as :func:`domain_for_run` trains (same config, data and seed). Written atomically: a killed job leaves none."""
    run = Path(run)
    ds = load_data(cfg).check()
    if ds.images is None:
        raise UserError(f"{ds.name}: has no stimulus images; a domain network needs image-paired EEG")
    name = _domain_name(cfg, ds)
    folder = run / f"domain-cnn-{name}"
    if (folder / "config.json").exists():
        stats = domain_network(folder)[1]
        return {"folder": str(folder), "trained": False, **stats}
    dcfg, data = _domain_job(name, ds)
    net, stats = train_domain_cnn(dcfg, *data(), logger=logger)
    with scratch_dir(folder) as tmp:  # beside the target, created only now: the write is all that can be cut
        part = Path(tmp) / folder.name
        write_json(part / "metrics.json", stats)
        net.save_pretrained(part, Provenance(trained_by=DomainCNNConfig.KIND, data=dcfg.dataset, seed=dcfg.seed))
        if (folder / "config.json").exists():  # another writer finished first: the same network, keep theirs
            shutil.rmtree(part)
        else:
            shutil.rmtree(folder, ignore_errors=True)  # a partial folder of a killed first use
            os.replace(part, folder)
    return {"folder": str(folder), "trained": True, **stats}


def evaluate_run(run: str | Path, split: str = "test", max_trials: int = 500, steps: int | None = None,
                 guidance: float | None = None, sampler: str | None = None, n_boot: int = 200, seed: int = 0,
                 data=None, model: EEGDiffusion | None = None, standard=None,
                 device: str = "auto") -> dict[str, Any]:
    """Image quality of a run vs the class-only and shuffled-EEG baselines (metrics.json 'generation').

    ``standard``: optional :class:`eegsine.metrics.image_nets.StandardNets` (Inception-style FID/IS, LPIPS,
    a classifier's top-1 from local ONNX files; ``StandardNets.load(feature_net=..., lpips_net=...,
    classifier_net=..., classifier_classes=...)``, the flags of ``eegsine generate --evaluate``)."""
    run = Path(run)
    if max_trials < 1 or n_boot < 1 or seed < 0:
        raise UserError(f"evaluate: --eval-trials and --n-boot must be >= 1 and --seed >= 0 (got {max_trials}, "
                        f"{n_boot}, {seed})")
    dev = resolve_device(device)
    model = _placed(run, model, dev)
    steps, guidance = model.cfg.sampling(steps, guidance)  # before the domain network is trained and written
    logger = run_logger(run)
    ds = data if data is not None else load_run_data(run)
    if standard and ds.images is not None:  # a bad class map fails before the domain network is trained
        standard.bind(list(ds.classes), ds.images[:1])
    net, name, stats = domain_for_run(run, ds, logger)
    r = evaluate_generation(run, ds, model=model, domain=net, domain_name=name, split=split, max_trials=max_trials,
                            steps=steps, guidance=guidance, sampler=sampler, n_boot=n_boot, seed=seed, logger=logger,
                            standard=standard)
    r["feature_network_test_top1"] = stats.get("test_top1")

    update_metrics(run, "generation", r)
    return r


def generate_and_evaluate(cfg: GenerateConfig) -> dict[str, Any]:
    """What ``eegsine generate`` does: :func:`generate`, then with ``cfg.evaluate`` :func:`evaluate_run` (with the
    standard networks given as ONNX files). Returns ``{"generated": ..., "evaluation": ... or None}``."""
    if not cfg.run:
        raise UserError("generate: give --run RUN (a diffusion run folder)")
    if (cfg.eeg is None) == (cfg.split is None):
        raise UserError("generate: give --eeg FILE or --split NAME")
    files = {k: getattr(cfg, k) for k in ("feature_net", "lpips_net", "classifier_net", "classifier_classes")
             if getattr(cfg, k) is not None}
    standard = StandardNets.load(**files) if files else None  # bad files fail before any image is written
    out = generate(cfg.run, eeg_file=cfg.eeg, split=cfg.split, out_dir=cfg.out, samples=cfg.samples,
                   max_trials=cfg.max_trials, steps=cfg.steps, guidance=cfg.guidance, sampler=cfg.sampler,
                   seed=cfg.seed, device=cfg.device, mixed_precision=cfg.mixed_precision)
    evaluation = None
    if cfg.evaluate:
        evaluation = evaluate_run(cfg.run, split=cfg.split or "test", max_trials=cfg.eval_trials, steps=cfg.steps,
                                  guidance=cfg.guidance, sampler=cfg.sampler, n_boot=cfg.n_boot, seed=cfg.seed,
                                  standard=standard, device=cfg.device)
    return {"generated": out, "evaluation": evaluation}
