"""Small real models and bundles shared by test_export.py and test_runtime.py (built once per process).

Models are the project's own classes at tiny sizes: a SmallCNN sine classifier trained for a
few epochs on sklearn's 8x8 digits, a transformer EEG encoder + token mapper, and an
EEGDiffusion (diffusers AutoencoderKL + UNet2DConditionModel) with 8/16-channel blocks.
Nothing is trained to quality: the tests check export, quantization and runtime mechanics.
"""
from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

_ROOT = Path(tempfile.mkdtemp(prefix="eegsine-export-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)

N_CHANS, N_TIMES = 8, 64


def root() -> Path:
    return _ROOT


def _one_thread(fn):
    """Train on one torch thread: with 2 threads on 2 shared cores the tiny models' training spent
    2.5-3x the CPU time (thread spinning; 16 s vs ~6 s for the classifier, measured)."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*a, **kw)
        finally:
            torch.set_num_threads(n)
    return wrapper


@functools.lru_cache(maxsize=None)
@_one_thread
def classifier_run() -> Path:
    """A sine-head SmallCNN trained 4 epochs on digits; a run folder: training-style config.json + model/."""
    from eegsine.data import load_images
    from eegsine.models.classifier import ClassifierConfig, build_classifier
    from eegsine.models.protocol import Provenance

    torch.manual_seed(0)
    ds = load_images("digits")
    mcfg = ClassifierConfig(arch="small_cnn", in_channels=1, image_size=8, n_classes=10, head="sine", init="siren",
                            fc_width=64)
    model = build_classifier(mcfg)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = torch.from_numpy(ds.train_x), torch.from_numpy(ds.train_y)
    for _ in range(4):
        for idx in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(model(x[idx]) * 4.0, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    run = _ROOT / "clf_run"
    model.eval().save_pretrained(run / "model", Provenance(trained_by="classifier-train", data="digits", train_eps=0.1,
                                                           train_attack="natural"))
    (run / "config.json").write_text(json.dumps({"kind": "classifier-train", "version": 1, "dataset": "digits",
                                                 "eps": 0.1, "model": mcfg.to_dict()}))
    return run


def eeg_set(n: int = 60):
    """A small EEGSet with class-dependent evoked bumps (train/val/test splits), paired with digits images."""
    from eegsine.data import load_images
    from eegsine.data.base import EEGSet

    rng = np.random.default_rng(0)
    img = load_images("digits")
    y = rng.integers(0, 10, n)
    t = np.arange(N_TIMES) / 64.0
    x = rng.standard_normal((n, N_CHANS, N_TIMES)).astype(np.float32) * 0.5
    for i, c in enumerate(y):
        x[i, c % N_CHANS] += np.exp(-((t - 0.3 - 0.03 * c) ** 2) / 0.005).astype(np.float32) * 3.0
    image = np.array([int(np.flatnonzero(img.test_y == c)[0]) for c in y])
    idx = np.arange(n)
    return EEGSet(name="tiny-eeg", x=x, y=y.astype(np.int64), subject=np.zeros(n, np.int64), image=image, sfreq=64.0,
                  ch_names=[f"C{i}" for i in range(N_CHANS)], classes=[str(c) for c in range(10)],
                  splits={"train": idx[: n // 2], "val": idx[n // 2: 3 * n // 4], "test": idx[3 * n // 4:]},
                  images=img.test_x, image_labels=img.test_y)


@functools.lru_cache(maxsize=None)
@_one_thread
def diffusion_run(sfreq: float = 64.0) -> Path:
    """A saved EEGDiffusion model folder (random weights) with its EEG encoder attached."""
    from eegsine.models.diffusion import DiffusionConfig, build_diffusion
    from eegsine.models.eeg_encoder import EEGEncoderConfig, build_encoder

    torch.manual_seed(0)
    enc = build_encoder(EEGEncoderConfig(arch="transformer", n_chans=N_CHANS, n_times=N_TIMES, sfreq=sfreq, emb_dim=16,
                                         d_model=16, n_layers=1, n_heads=2, patch=8, kernel=5, dropout=0.0)).eval()
    dcfg = DiffusionConfig(image_size=8, image_channels=1, native_size=8, vae_channels=[8, 16], latent_channels=4,
                           vae_norm_groups=4, unet_channels=[16, 32], unet_cross_attention=[True, True],
                           unet_norm_groups=8, attention_head_dim=8, cross_attention_dim=16, n_tokens=4,
                           scaling_factor=0.8, guidance=2.0, sample_steps=6, beta_schedule="scaled_linear")
    model, dcfg = build_diffusion(dcfg, enc)
    _fit_noise_prediction(model)
    run = _ROOT / ("diff_run" if sfreq == 64.0 else f"diff_run_{sfreq:g}")
    model.eval().save_pretrained(run)
    return run


def tiny_diffusion():
    """A random-weight EEGDiffusion (4 ch x 32 samples encoder attached, 8 px images), seeded: for tests of the
    plumbing around a diffusion model (validation, metrics), not of image quality."""
    from eegsine.models.diffusion import DiffusionConfig, build_diffusion
    from eegsine.models.eeg_encoder import EEGEncoderConfig, build_encoder

    torch.manual_seed(0)
    enc = build_encoder(EEGEncoderConfig(arch="transformer", n_chans=4, n_times=32, sfreq=64.0, emb_dim=8, d_model=8,
                                         n_layers=1, n_heads=2, patch=8, kernel=5, dropout=0.0)).eval()
    dcfg = DiffusionConfig(image_size=8, image_channels=1, native_size=8, vae_channels=[8, 16], latent_channels=4,
                           vae_norm_groups=4, unet_channels=[8, 16], unet_cross_attention=[True, True],
                           unet_norm_groups=4, attention_head_dim=4, cross_attention_dim=8, n_tokens=2,
                           scaling_factor=0.8, guidance=2.0, sample_steps=2, num_train_timesteps=100)
    return build_diffusion(dcfg, enc)[0].eval()


def _fit_noise_prediction(model, steps: int = 40) -> None:
    """A few Adam steps of the real DDPM loss on digits latents: an untrained UNet's eps is unrelated to
    x_t, so DDIM's x0 = (x_t - sqrt(1 - a) eps) / sqrt(a) blows up at t ~ T (|latents| ~ 1e4 after one
    step, measured) and every calibration range with it; a few steps make eps track x_t like a real model."""
    from diffusers import DDPMScheduler
    from eegsine.data import load_images

    g = torch.Generator().manual_seed(0)
    sched = DDPMScheduler.from_config(model.cfg.scheduler_config())
    imgs = torch.from_numpy(load_images("digits").train_x[:256])
    emb = torch.nn.functional.normalize(torch.randn(256, model.cfg.emb_dim, generator=g), dim=-1)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith(("vae.", "encoder."))], 2e-3)
    with torch.no_grad():
        lat = model.encode_images(imgs, sample=False)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(lat), (32,), generator=g)
        noise = torch.randn(lat[idx].shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (32,), generator=g)
        loss = torch.nn.functional.mse_loss(model(sched.add_noise(lat[idx], noise, t), t, emb[idx]), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def small_cfg(**kw):
    from eegsine.export.bundle import BundleConfig
    from eegsine.export.onnx_export import ExportConfig

    base = dict(export=ExportConfig(max_batch=4), int8=True, calib_images=128, calib_trials=4, calib_steps=6, holdout=8)
    base.update(kw)
    return BundleConfig(**base)


@functools.lru_cache(maxsize=None)
def eeg_bundle() -> Path:
    from eegsine.export.bundle import eeg_run_items, export_bundle

    cfg = small_cfg()
    items, generation, _ = eeg_run_items(diffusion_run(), cfg, eeg_set=eeg_set())
    out = _ROOT / "eeg_bundle"
    export_bundle(items, out, cfg, generation=generation, log=lambda *a: None)
    return out


@functools.lru_cache(maxsize=None)
def clf_bundle() -> Path:
    from eegsine.export.bundle import classifier_item, export_bundle

    cfg = small_cfg()
    out = _ROOT / "clf_bundle"
    export_bundle([classifier_item(classifier_run(), cfg)], out, cfg, log=lambda *a: None)
    return out


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@functools.lru_cache(maxsize=None)
def clf_bundle_target(target: str) -> Path:
    """The classifier bundle quantized for another INT8 target (``clf_bundle`` is the default, portable)."""
    from eegsine.export.bundle import classifier_item, export_bundle
    from eegsine.export.quantize import Int8Config

    if target == "portable":
        return clf_bundle()
    cfg = small_cfg(quant=Int8Config(target=target))
    out = _ROOT / f"clf_bundle_{target}"
    export_bundle([classifier_item(classifier_run(), cfg)], out, cfg, log=lambda *a: None)
    return out


# -- streaming: a recording, the set trained from it, and its bundle ----------------------------------------
STREAM_SFREQ = 250.0  # BrainFlow's SYNTHETIC_BOARD rate: the playback board replays a file at its master's rate
STREAM_TMIN = 0.02


@functools.lru_cache(maxsize=None)
def vep_set():
    """synthetic-vep on digits at the test encoder's geometry (8 ch x 64 samples), at 250 Hz: 200 trials."""
    from eegsine.data import load_eeg

    return load_eeg("synthetic-vep", image_set="digits", n_chans=N_CHANS, n_times=N_TIMES, sfreq=STREAM_SFREQ,
                    tmin=STREAM_TMIN, n_images_per_class=10, n_subjects=2, snr=0.5, progress=False)


@functools.lru_cache(maxsize=None)
def recording(kind: str = "fif", n_trials: int = 0) -> Path:
    """``vep_set()`` written as a continuous recording (``eegsine data export-recording``'s library call)."""
    from eegsine.data.recording import export_recording

    out = _ROOT / "recordings" / f"rec_{n_trials or 'all'}.{kind}"
    export_recording(vep_set(), out, board="synthetic", split="all", n_trials=n_trials, isi=0.3, isi_jitter=0.1, seed=1)
    return out


STREAM_FILTER = dict(l_freq=1.0, h_freq=40.0, notch=[50.0], phase="causal")


@functools.lru_cache(maxsize=None)
def stream_set():
    """The set an encoder for streaming trains on: ``raw:`` of the recording, 1-40 Hz + 50 Hz notch, causal."""
    from eegsine.data import load_eeg

    return load_eeg(f"raw:{recording('fif')}", tmin=STREAM_TMIN, tmax=STREAM_TMIN + N_TIMES / STREAM_SFREQ,
                    **STREAM_FILTER)


@functools.lru_cache(maxsize=None)
def stream_bundle() -> Path:
    """An FP32 EEG bundle whose manifest carries the stream set's preprocessing and class prototypes."""
    from eegsine.export.bundle import eeg_run_items, export_bundle

    cfg = small_cfg(int8=False)
    items, generation, _ = eeg_run_items(diffusion_run(STREAM_SFREQ), cfg, eeg_set=stream_set())
    out = _ROOT / "stream_bundle"
    export_bundle(items, out, cfg, generation=generation, log=lambda *a: None)
    return out


# the stream recordings' synthetic-vep options (what a demo-kind bundle's provenance names)
STREAM_VEP_OPTIONS = {"image_set": "digits", "n_chans": N_CHANS, "n_times": N_TIMES, "sfreq": STREAM_SFREQ,
                      "tmin": STREAM_TMIN, "n_images_per_class": 10, "n_subjects": 2, "snr": 0.5, "progress": False}


def vep_bundle(out: Path, int8: bool) -> Path:
    """An EEG bundle exported from a run whose provenance names its data set (synthetic-vep with
    :data:`STREAM_VEP_OPTIONS`), as `eegsine export` writes it, into ``out/bundle`` (the run copied to ``out/run``)."""
    from eegsine.export.bundle import eeg_run_items, export_bundle
    from eegsine.models.protocol import Provenance

    run = shutil.copytree(diffusion_run(STREAM_SFREQ), out / "run")
    Provenance(trained_by="diffusion-train", data="synthetic-vep", data_options=STREAM_VEP_OPTIONS).save(
        run, "provenance.json")
    cfg = small_cfg(int8=int8)
    items, generation, _ = eeg_run_items(run, cfg, eeg_set=vep_set())
    export_bundle(items, out / "bundle", cfg, generation=generation, log=lambda *a: None)
    return out / "bundle"
