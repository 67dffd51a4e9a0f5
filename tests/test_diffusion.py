"""EEG-conditioned latent diffusion: configs, training (full / LoRA / resume / 2-process), local pretrained
folders, generation CLI and the domain image metrics.

Data: sklearn digits (8x8, offline) paired with a small made-up EEG set (class template + per-image
variation + noise), and a small untrained EEGNet-style encoder as the frozen stage-one model: the
tests check the machinery, not image quality (that is the tiny preset's job, see the report).
"""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eegsine.data import EEGSet, load_images
from eegsine.errors import UserError
from eegsine.models.diffusion import DiffusionConfig, EEGDiffusion, EEGDiffusionPipeline, build_diffusion
from eegsine.models.eeg_encoder import EEGEncoderConfig, build_encoder
from eegsine.models.protocol import Provenance
from eegsine.training.diffusion import DiffusionTrainConfig, diffusion_preset, train_diffusion


def digits_eeg(n_images: int = 60, per_image: int = 3, n_chans: int = 8, n_times: int = 64, seed: int = 0) -> EEGSet:
    im = load_images("digits")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(im.train_x), n_images, replace=False)
    images, labels = im.train_x[pick], im.train_y[pick].astype(np.int64)
    t = np.arange(n_times) / n_times
    tmpl = np.stack([np.outer(rng.normal(size=n_chans), np.sin(2 * np.pi * (c + 1) * t)) for c in range(10)])
    image = np.repeat(np.arange(n_images), per_image)
    x = tmpl[labels[image]] + rng.normal(scale=0.3, size=(n_images, n_chans, n_times))[image]
    x = (x + rng.normal(scale=0.5, size=x.shape)).astype(np.float32)
    part = np.array(["train", "train", "train", "val", "test"])[np.arange(n_images) % 5]  # split by image
    splits = {s: np.flatnonzero(part[image] == s) for s in ("train", "val", "test")}
    return EEGSet(name="digits-vep", x=x, y=labels[image], subject=np.zeros(len(image), np.int64), image=image,
                  sfreq=64.0, ch_names=[f"c{i}" for i in range(n_chans)], classes=[str(c) for c in range(10)],
                  splits=splits, images=images, image_labels=labels).check()


def standin_encoder(ds: EEGSet, emb_dim: int = 16):
    torch.manual_seed(0)
    cfg = EEGEncoderConfig(arch="eegnet", n_chans=ds.n_chans, n_times=ds.n_times, sfreq=ds.sfreq, emb_dim=emb_dim,
                           n_filters=4, depth_mult=1, kernel=9, dropout=0.0)
    return build_encoder(cfg).eval()


def tiny_model_cfg(**kw) -> DiffusionConfig:
    base = dict(image_size=16, native_size=8, vae_channels=[16, 32], unet_channels=[16, 32], cross_attention_dim=16,
                n_tokens=2, attention_head_dim=8, sample_steps=4, guidance=2.0)
    base.update(kw)
    return DiffusionConfig(**base)


def tiny_cfg(**kw) -> DiffusionTrainConfig:
    base = dict(image_set="digits", model=tiny_model_cfg(), vae_epochs=2, vae_batch_size=16, epochs=3, batch_size=16,
                steps_per_epoch=6, lr=1e-3, warmup_steps=2, grid_trials=3, grid_samples=2, speed=False, plot=False)
    base.update(kw)
    return DiffusionTrainConfig(**base)


@pytest.fixture(scope="module")
def ds() -> EEGSet:
    return digits_eeg()


@pytest.fixture(scope="module")
def trained(ds, tmp_path_factory) -> tuple[Path, dict]:
    """One full-mode run of 3 epochs, shared by the tests that need a trained model."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("diff") / "run"
    return run, train_diffusion(tiny_cfg(), run, data=ds, encoder=standin_encoder(ds))


# -- configs --------------------------------------------------------------------------------------
def test_config_round_trip(tmp_path):
    cfg = diffusion_preset("tiny").replace(mode="lora", ema=True)
    cfg.save(tmp_path)
    assert DiffusionTrainConfig.load(tmp_path) == cfg
    diffusion_preset("paper").save(tmp_path / "p")
    assert DiffusionTrainConfig.load(tmp_path / "p") == diffusion_preset("paper")
    m = tiny_model_cfg(sampler="dpm++")
    m.save(tmp_path / "m")
    assert DiffusionConfig.load(tmp_path / "m") == m
    with pytest.raises(UserError, match="unet_cross_attention"):
        DiffusionConfig(unet_channels=[32, 64, 64], unet_cross_attention=[True, True])
    with pytest.raises(UserError, match="not divisible"):
        DiffusionConfig(vae_channels=[30, 64, 64])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"kind": "eeg-diffusion", "version": 1, "n_tokenz": 4}))
    with pytest.raises(UserError, match="n_tokenz"):
        DiffusionConfig.load(tmp_path / "bad")


# -- training -------------------------------------------------------------------------------------
def test_training_reduces_loss_and_writes_run(trained):
    run, m = trained
    h = m["history"]
    assert len(h) == 3
    assert h[-1]["loss"] < h[0]["loss"] and h[-1]["val_loss"] < h[0]["val_loss"]
    for f in ("model/config.json", "model/model_index.json", "model/vae/config.json", "model/unet/config.json",
              "model/token_mapper/diffusion_pytorch_model.safetensors", "model/eeg_encoder/model.safetensors",
              "model/scheduler/scheduler_config.json",
              "grids/epoch_001.png", "grids/epoch_003.png", "grids/strip.png", "metrics.json"):
        assert (run / f).exists(), f
    model = EEGDiffusion.from_pretrained(run / "model")
    cfg = model.cfg
    assert cfg.scaling_factor == pytest.approx(m["vae"]["scaling_factor"])
    img = model.generate(torch.from_numpy(digits_eeg().x[:2]), steps=3, seed=1)
    assert img.shape == (2, 1, 8, 8) and 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    # fixed seeds: sampling is reproducible, DDIM and DPM-Solver++ differ
    again = model.generate(torch.from_numpy(digits_eeg().x[:2]), steps=3, seed=1)
    other = model.generate(torch.from_numpy(digits_eeg().x[:2]), steps=3, seed=1, sampler="dpm++")
    assert torch.equal(img, again) and not torch.equal(img, other)


def test_resume_equals_uninterrupted(trained, ds, tmp_path, monkeypatch):
    import eegsine.training.loop as D  # every trainer checkpoints through eegsine.training.loop

    real_save = D.save_checkpoint
    calls = {"n": 0}

    def save_then_die(directory, *a, **k):
        out = real_save(directory, *a, **k)
        if Path(directory).name == "ckpt":
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt  # killed after epoch 2's checkpoint
        return out

    run = tmp_path / "run"
    monkeypatch.setattr(D, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_diffusion(tiny_cfg(), run, data=ds, encoder=standin_encoder(ds))
    monkeypatch.setattr(D, "save_checkpoint", real_save)
    m = train_diffusion(tiny_cfg(), run, data=ds, encoder=standin_encoder(ds))
    assert [h["loss"] for h in m["history"]] == pytest.approx([h["loss"] for h in trained[1]["history"]], rel=1e-6)
    a = EEGDiffusion.from_pretrained(run / "model")
    b = EEGDiffusion.from_pretrained(trained[0] / "model")
    for (k, p), q in zip(a.unet.state_dict().items(), b.unet.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=k)
    with pytest.raises(UserError, match="different config"):
        train_diffusion(tiny_cfg(epochs=4), run, data=ds, encoder=standin_encoder(ds))


def test_lora_trains_only_attention_adapters(trained, ds, tmp_path):
    base_dir = trained[0] / "model"
    run = tmp_path / "lora"
    m = train_diffusion(tiny_cfg(mode="lora", init_from=str(base_dir), epochs=1, lora_rank=4, lora_alpha=4), run,
                        data=ds, encoder=standin_encoder(ds))
    assert m["lora_params"] > 0
    from eegsine.runs.checkpoint import load_weights

    adapters = load_weights(run / "model" / "unet_lora.safetensors")
    assert adapters and all("lora_" in k for k in adapters)
    targets = ("to_q.", "to_k.", "to_v.", "to_out.0.")
    assert {t for k in adapters for t in targets if t in k} == set(targets)
    base = EEGDiffusion.from_pretrained(base_dir)
    tuned = EEGDiffusion.from_pretrained(run / "model")
    changed, unchanged = [], []
    for (k, p), q in zip(tuned.unet.state_dict().items(), base.unet.state_dict().values()):
        (unchanged if torch.equal(p, q) else changed).append(k)
    assert changed, "LoRA training changed nothing"
    # only the fused attention projection weights may differ from the base UNet
    assert all(any(t + "weight" in k for t in targets) for k in changed), [k for k in changed
                                                                         if not any(t in k for t in targets)][:5]
    assert any("conv" in k for k in unchanged)


def test_joint_mode_logs_gradients_and_retrieval(ds, tmp_path):
    run = tmp_path / "joint"
    m = train_diffusion(tiny_cfg(mode="joint", epochs=2, encoder_lr=1e-3, plot=True), run, data=ds,
                        encoder=standin_encoder(ds))
    j = m["joint"]
    assert j["grad_norm_encoder_mean"] > 0 and j["grad_norm_unet_mean"] > 0
    assert all(0.0 <= h["encoder_retrieval_top1"] <= 1.0 and h["grad_norm_encoder"] > 0 for h in m["history"])
    assert j["chance"] == pytest.approx(0.1) and (run / "joint.png").exists()
    # the trained (not the aligned stand-in) encoder is what the model folder carries
    enc = EEGDiffusion.from_pretrained(run / "model").encoder
    ref = standin_encoder(ds)
    assert any(not torch.equal(p, q) for p, q in zip(enc.state_dict().values(), ref.state_dict().values()))


def test_lora_needs_a_base_unet(ds, tmp_path):
    with pytest.raises(UserError, match="init-from"):
        train_diffusion(tiny_cfg(mode="lora"), tmp_path / "r", data=ds, encoder=standin_encoder(ds))


def _encoder_run(ds, folder: Path, image_encoder: bool = True) -> Path:
    """A stage-one run folder as `eegsine train encoder` leaves it: model/ (the encoder) and image_encoder/."""
    from eegsine.models.image_encoder import ImageEncoderConfig, build_image_encoder

    enc = standin_encoder(ds)
    enc.save_pretrained(folder / "model")
    if image_encoder:
        torch.manual_seed(1)
        icfg = ImageEncoderConfig(in_chans=1, image_size=int(ds.images.shape[-1]), width=8, emb_dim=enc.cfg.emb_dim)
        build_image_encoder(icfg).save_pretrained(folder / "image_encoder")
    return folder


@pytest.mark.parametrize("frac", [0.0, 1.0])
def test_image_cond_frac_conditions_training_on_image_embeddings(ds, tmp_path, monkeypatch, frac):
    """frac=1: every training example's embedding is its stimulus's image embedding; frac=0: the trial's EEG."""
    from eegsine.models.diffusion import EEGDiffusion
    from eegsine.models.eeg_encoder import EEGEncoder, embed
    from eegsine.models.image_encoder import ImageEncoder, embed_images

    enc_run = _encoder_run(ds, tmp_path / "enc")
    z_img = torch.from_numpy(embed_images(ImageEncoder.from_pretrained(enc_run / "image_encoder"), ds.images))
    z_eeg = torch.from_numpy(embed(EEGEncoder.from_pretrained(enc_run / "model"), ds.x))
    seen: list[torch.Tensor] = []
    forward = EEGDiffusion.forward

    def spy(self, noisy, t, emb=None, drop=None, eeg=None):
        if self.training and emb is not None:
            seen.append(emb.detach().cpu())
        return forward(self, noisy, t, emb, drop, eeg=eeg)

    monkeypatch.setattr(EEGDiffusion, "forward", spy)
    train_diffusion(tiny_cfg(epochs=1, image_cond_frac=frac, encoder_run=str(enc_run)), tmp_path / "r", data=ds)
    got = torch.cat(seen)
    assert len(got) == 6 * 16  # steps_per_epoch x batch_size
    def rows_matched(table):
        return int((torch.cdist(got, table, compute_mode="donot_use_mm_for_euclid_dist").min(1).values < 1e-5).sum())
    assert rows_matched(z_img) == (len(got) if frac == 1.0 else 0)
    assert rows_matched(z_eeg) == (0 if frac == 1.0 else len(got))


def test_image_encoder_folder_follows_the_encoder_run(tmp_path):
    from eegsine.training.diffusion import image_encoder_folder

    enc_run = tmp_path / "enc"
    (enc_run / "model").mkdir(parents=True)
    (enc_run / "model" / "config.json").write_text("{}")
    for given in (enc_run, enc_run / "model"):  # --encoder-run RUN or RUN/model
        assert image_encoder_folder(tiny_cfg(encoder_run=str(given)), tmp_path / "r") == enc_run / "image_encoder"
    assert image_encoder_folder(tiny_cfg(), tmp_path / "r") == tmp_path / "r" / "stage1" / "image_encoder"


def test_image_cond_frac_needs_stage_one_image_encoder(ds, tmp_path):
    enc_run = _encoder_run(ds, tmp_path / "enc", image_encoder=False)
    with pytest.raises(UserError, match="image encoder"):
        train_diffusion(tiny_cfg(image_cond_frac=0.5, encoder_run=str(enc_run)), tmp_path / "r", data=ds)
    with pytest.raises(UserError, match="image_cond_frac must be in"):
        tiny_cfg(image_cond_frac=1.5)
    with pytest.raises(UserError, match="joint"):
        tiny_cfg(image_cond_frac=0.5, mode="joint")


# -- the pipeline: save/load, diffusers' loader, step callback ----------------------------------------
@pytest.fixture(scope="module")
def pipe_dir(ds, tmp_path_factory) -> Path:
    """A saved EEGDiffusionPipeline (random weights) with its EEG encoder and a provenance, as RUN/model."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, _ = build_diffusion(tiny_model_cfg(), standin_encoder(ds))
    folder = tmp_path_factory.mktemp("pipe") / "run" / "model"
    model.eval().save_pretrained(folder, provenance=Provenance(trained_by="diffusion-train", data="digits", seed=3))
    return folder


def test_pipeline_save_load_round_trip(pipe_dir, ds, tmp_path):
    from eegsine.models.diffusion import EEGDiffusion

    for f in ("model_index.json", "config.json", "provenance.json", "vae/config.json", "unet/config.json",
              "scheduler/scheduler_config.json", "token_mapper/config.json",
              "token_mapper/diffusion_pytorch_model.safetensors", "eeg_encoder/config.json",
              "eeg_encoder/model.safetensors"):
        assert (pipe_dir / f).exists(), f
    pipe = EEGDiffusionPipeline.from_pretrained(pipe_dir.parent)  # a run folder: its model/
    assert pipe.cfg == DiffusionConfig.load(pipe_dir)
    assert (pipe.provenance.trained_by, pipe.provenance.data, pipe.provenance.seed) == ("diffusion-train", "digits", 3)
    eeg = torch.from_numpy(ds.x[:3])
    img = pipe(eeg=eeg, num_inference_steps=3, seed=1).images
    assert img.shape == (3, 1, 8, 8) and 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    again = EEGDiffusionPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "again"))
    for name in ("vae", "unet", "token_mapper", "eeg_encoder"):
        a, b = getattr(pipe, name).state_dict(), getattr(again, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert again.cfg == pipe.cfg and again.provenance == pipe.provenance
    assert torch.equal(again(embeddings=again.embed(eeg), num_inference_steps=3, seed=1).images, img)
    # the training module shares the pipeline's modules and samples through it
    model = EEGDiffusion.from_pretrained(pipe_dir)
    assert model.mapper is model.token_mapper.mapper and model.null_tokens is model.token_mapper.null_tokens
    assert torch.equal(model.generate(eeg, steps=3, seed=1), img)
    with pytest.raises(UserError, match="no such folder"):
        EEGDiffusionPipeline.from_pretrained("some-org/some-model")  # a hub id is never looked up
    with pytest.raises(UserError, match="exactly one of"):
        pipe(num_inference_steps=2)


def test_diffusers_own_loader_reads_the_folder(pipe_dir, ds, tmp_path, monkeypatch):
    """diffusers' DiffusionPipeline.from_pretrained (not eegsine's override) builds a pipeline from model_index.json,
    called as diffusers documents it for an out-of-tree pipeline in a local folder: custom_pipeline=folder (its
    pipeline.py, which imports eegsine's class) and trust_remote_code=True. Offline: a local file is never looked up.

    Plain ``DiffusionPipeline.from_pretrained(folder)`` looks ``_class_name`` up in the diffusers namespace only,
    which holds no out-of-tree pipeline (AttributeError, diffusers' own)."""
    import diffusers.utils.dynamic_modules_utils as dyn
    from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel

    from eegsine.models.diffusion import EEGConditioner

    index = json.loads((pipe_dir / "model_index.json").read_text())
    assert index["_class_name"] == "EEGDiffusionPipeline"
    assert index["token_mapper"] == ["eegsine.models.diffusion", "EEGConditioner"]
    # diffusers copies pipeline.py into its modules cache and puts that on sys.path: both kept to this test
    monkeypatch.setattr(dyn, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(ValueError, match="trust_remote_code"):  # diffusers runs a folder's code only when told to
        DiffusionPipeline.from_pretrained(str(pipe_dir), custom_pipeline=str(pipe_dir))
    plain = DiffusionPipeline.from_pretrained(str(pipe_dir), custom_pipeline=str(pipe_dir), trust_remote_code=True,
                                              local_files_only=True)
    assert type(plain) is EEGDiffusionPipeline
    assert isinstance(plain.vae, AutoencoderKL) and isinstance(plain.unet, UNet2DConditionModel)
    assert isinstance(plain.scheduler, DDIMScheduler) and isinstance(plain.token_mapper, EEGConditioner)
    assert plain.eeg_encoder is None  # not a diffusers component: eegsine's from_pretrained attaches it
    ours = EEGDiffusionPipeline.from_pretrained(pipe_dir)
    assert plain.cfg == ours.cfg
    emb = ours.embed(torch.from_numpy(ds.x[:2]))
    plain.set_progress_bar_config(disable=True)
    assert torch.equal(plain(embeddings=emb, num_inference_steps=3, seed=2).images,
                       ours(embeddings=emb, num_inference_steps=3, seed=2).images)
    # the EEG encoder (not a diffusers component) goes in as a keyword, as eegsine's from_pretrained passes it
    from eegsine.models.eeg_encoder import EEGEncoder

    eeg = torch.from_numpy(ds.x[:2])
    full = DiffusionPipeline.from_pretrained(str(pipe_dir), custom_pipeline=str(pipe_dir), trust_remote_code=True,
                                             eeg_encoder=EEGEncoder.from_pretrained(pipe_dir / "eeg_encoder"))
    full.set_progress_bar_config(disable=True)
    assert torch.equal(full(eeg=eeg, num_inference_steps=3, seed=2).images,
                       ours(eeg=eeg, num_inference_steps=3, seed=2).images)


def test_eegsine_loader_never_runs_the_folder_pipeline_py(pipe_dir, tmp_path):
    """pipeline.py is for diffusers' loader, behind its trust_remote_code: eegsine's own loader must not execute it
    (a folder from elsewhere could hold any code there)."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(pipe_dir, folder)
    assert "from eegsine.models.diffusion import EEGDiffusionPipeline" in (folder / "pipeline.py").read_text()
    (folder / "pipeline.py").write_text("raise RuntimeError('pipeline.py was executed')\n")
    assert EEGDiffusionPipeline.from_pretrained(folder).cfg == EEGDiffusionPipeline.from_pretrained(pipe_dir).cfg


@pytest.mark.parametrize("guidance", [2.0, 1.0])
def test_step_callback_sees_every_step(pipe_dir, ds, guidance):
    pipe = EEGDiffusionPipeline.from_pretrained(pipe_dir)
    pipe.set_progress_bar_config(disable=True)
    eeg = torch.from_numpy(ds.x[:3])
    seen = []

    def callback(p, i, t, kw):
        assert p is pipe
        seen.append((i, int(t), {k: v.clone() for k, v in kw.items()}))
        return {}

    final = pipe(eeg=eeg, num_inference_steps=5, guidance_scale=guidance, seed=4, output_type="latent",
                 callback_on_step_end=callback, callback_on_step_end_tensor_inputs=pipe._callback_tensor_inputs).images
    assert [s[0] for s in seen] == list(range(5)) and [s[1] for s in seen] == pipe.scheduler.timesteps.tolist()
    rows = 6 if guidance != 1.0 else 3  # guidance: the unconditional half first, then the conditional one
    for _, _, kw in seen:
        assert kw["latent_model_input"].shape == (rows, 4, 8, 8) and kw["encoder_hidden_states"].shape == (rows, 2, 16)
        assert kw["latents"].shape == kw["noise_pred"].shape == (3, 4, 8, 8)
    if guidance != 1.0:
        assert torch.equal(seen[0][2]["encoder_hidden_states"][:3], pipe.token_mapper.uncond(3))
    assert torch.equal(seen[0][2]["latent_model_input"][:3], pipe.initial_latents(3, 4))  # DDIM: no input scaling
    for a, b in zip(seen, seen[1:]):  # each step's UNet input is the previous step's result
        assert torch.equal(b[2]["latent_model_input"][-3:], a[2]["latents"])
    assert torch.equal(seen[-1][2]["latents"], final)
    replaced = pipe(eeg=eeg, num_inference_steps=3, guidance_scale=guidance, output_type="latent",
                    callback_on_step_end=lambda p, i, t, kw: {"latents": torch.zeros_like(kw["latents"])}).images
    assert not replaced.any()  # latents a callback returns replace the trajectory's
    with pytest.raises(UserError, match="not one of"):
        pipe(eeg=eeg, num_inference_steps=2, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["x"])


# -- local pretrained folders ------------------------------------------------------------------------
def test_local_pretrained_vae_and_unet(tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(3)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=8, sample_size=16, scaling_factor=0.5)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                cross_attention_dim=24, attention_head_dim=8, norm_num_groups=8)
    sd = tmp_path / "sd"   # Stable Diffusion layout: sd/vae, sd/unet
    vae.save_pretrained(sd / "vae", safe_serialization=True)
    unet.save_pretrained(sd / "unet", safe_serialization=True)
    cfg = DiffusionConfig(image_size=16, native_size=8, resize="resize", vae_channels=[8, 16], emb_dim=12,
                          unet_channels=[16, 32], pretrained_vae=str(sd), pretrained_unet=str(sd / "unet"))
    model, cfg2 = build_diffusion(cfg)
    assert cfg2.cross_attention_dim == 24 and cfg2.image_channels == 1 and cfg2.scaling_factor == 0.5
    assert cfg2.unet_cross_attention == [True, False]
    for (k, p), q in zip(model.unet.state_dict().items(), unet.state_dict().values()):
        assert torch.equal(p, q), k
    for (k, p), q in zip(model.vae.state_dict().items(), vae.state_dict().values()):
        assert torch.equal(p, q), k
    assert model.mapper(torch.randn(2, 12)).shape == (2, cfg2.n_tokens, 24)
    img = model.sample(torch.nn.functional.normalize(torch.randn(2, 12), dim=1), steps=2)
    assert img.shape == (2, 1, 8, 8)  # 3-channel VAE output, averaged to grey and resized back to the native 8 x 8
    with pytest.raises(UserError, match="no config.json"):
        build_diffusion(cfg.replace(pretrained_vae=str(tmp_path / "nothing")))


# -- generation CLI ----------------------------------------------------------------------------------
def test_generate_cli_grid_with_ground_truth(trained, ds, tmp_path, monkeypatch):
    import matplotlib.image as mpimg

    import eegsine.training.generate as G
    from eegsine.commands.main import main

    # the run's config names synthetic-vep; use the stand-in (generate's own name: whichever test imported the
    # module first, it bound the loader then)
    monkeypatch.setattr(G, "load_data", lambda cfg: ds)
    out = tmp_path / "gen"
    rc = main(["generate", "--run", str(trained[0]), "--split", "test", "--samples", "3", "--max-trials", "4",
               "--steps", "3", "--out", str(out)])
    assert rc == 0
    index = json.loads((out / "index.json").read_text())
    assert index["n_trials"] == 4 and index["n_images"] == 12 and len(index["labels"]) == 4
    assert (out / "grid.png").exists() and (out / "trial003_s2.png").exists()
    from eegsine.training.diffusion import pick_grid_trials

    idx = pick_grid_trials(ds, ds.split("test"), 4, 0)
    assert index["labels"] == ds.y[idx].tolist()
    for i, row in enumerate(idx):  # the rightmost (truth) images are the trials' stimuli
        png = mpimg.imread(out / f"trial{i:03d}_truth.png")[..., 0]
        np.testing.assert_allclose(png, ds.images[ds.image[row]][0], atol=1 / 255 + 1e-6)
    grid = mpimg.imread(out / "grid.png")
    assert grid.shape[1] == int(0.9 * 4 * 80)  # 3 samples + 1 ground-truth column at 0.9 in x 80 dpi
    # --eeg FILE: (n_chans, n_times) and (B, n_chans, n_times) arrays
    np.save(tmp_path / "one.npy", ds.x[0])
    assert main(["generate", "--run", str(trained[0]), "--eeg", str(tmp_path / "one.npy"), "--samples", "2",
                 "--steps", "2", "--out", str(tmp_path / "g1")]) == 0
    assert json.loads((tmp_path / "g1" / "index.json").read_text())["n_images"] == 2


@pytest.mark.parametrize("content, message", [
    (np.zeros((3, 8, 64), np.float32)[:, :5], "has 5 channels"),
    (np.zeros((8, 63), np.float32), "63 samples"),
    (np.zeros((2, 2, 8, 64), np.float32), "expected shape"),
    (np.array([{"a": 1}], dtype=object), "not a plain numpy array"),
    (np.full((8, 64), np.nan, np.float32), "NaN"),
    (None, "expected a .npy"),
])
def test_generate_bad_eeg_file_exits_2(trained, tmp_path, capsys, content, message):
    from eegsine.commands.main import main

    if content is None:
        f = tmp_path / "eeg.csv"
        f.write_text("1,2,3\n")
    else:
        f = tmp_path / "eeg.npy"
        np.save(f, content, allow_pickle=True)
    rc = main(["generate", "--run", str(trained[0]), "--eeg", str(f), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and message in err and str(f) in err, err
    assert not (tmp_path / "o").exists()  # nothing half-written


# -- image metrics -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def domain():
    from eegsine.metrics.images import DomainCNNConfig, train_domain_cnn

    im = load_images("digits")
    cfg = DomainCNNConfig(dataset="digits", image_size=8, width=8, feat_dim=16, epochs=1, min_steps=150, batch_size=64)
    net, stats = train_domain_cnn(cfg, im.train_x, im.train_y, im.test_x, im.test_y)
    return net, stats, im


def test_domain_cnn_learns_digits(domain):
    assert domain[1]["test_top1"] > 0.8 and domain[1]["n_test"] == 360


def test_fid_domain_self_zero_noise_large_and_matches_torchmetrics(domain):
    from torchmetrics.image.fid import FrechetInceptionDistance

    from eegsine.metrics.images import FeatureExtractor, domain_outputs, frechet_distance

    net, _, im = domain
    real = domain_outputs(net, im.test_x)["features"]
    assert frechet_distance(real, real) < 1e-6
    noise = np.random.default_rng(0).random(im.test_x.shape, dtype=np.float32)
    fake = domain_outputs(net, noise)["features"]
    other = domain_outputs(net, im.train_x[:360])["features"]
    d_noise, d_other = frechet_distance(real, fake), frechet_distance(real, other)
    assert d_noise > 20 * d_other and d_other > 0
    fid = FrechetInceptionDistance(feature=FeatureExtractor(net), normalize=True)
    fid.update(torch.from_numpy(im.test_x), real=True)
    fid.update(torch.from_numpy(noise), real=False)
    assert float(fid.compute()) == pytest.approx(d_noise, rel=1e-3)


def test_bootstrap_ci_contains_point_estimate_and_other_metrics(domain):
    from eegsine.metrics.images import (bootstrap_ci, domain_outputs, inception_score, lpips_domain, score_set,
                                        ssim_pairs)

    net, _, im = domain
    x, y = im.test_x[:120], im.test_y[:120]
    noisy = np.clip(x + np.random.default_rng(1).normal(scale=0.3, size=x.shape), 0, 1).astype(np.float32)
    assert np.allclose(lpips_domain(net, x, x), 0) and (lpips_domain(net, x, noisy) > 0).all()
    assert np.allclose(ssim_pairs(x, x), 1.0, atol=1e-5) and ssim_pairs(x, noisy).mean() < 0.9
    onehot = np.eye(10)[y]
    p = np.bincount(y, minlength=10) / len(y)
    assert inception_score(onehot) == pytest.approx(np.exp(-(p * np.log(p + 1e-30)).sum()), rel=1e-6)
    assert inception_score(np.full((50, 10), 0.1)) == pytest.approx(1.0)
    r = score_set(domain_outputs(net, noisy), domain_outputs(net, x), y, lpips_domain(net, noisy, x),
                  ssim_pairs(noisy, x), n_boot=100, seed=0)
    assert r["n"] == 120
    for k in ("acc", "fid_domain", "lpips_domain", "ssim"):
        lo, hi = r[k + "_ci"]
        assert lo <= r[k] <= hi and lo < hi, (k, r[k], lo, hi)
    lo, hi = bootstrap_ci(lambda i: float(np.arange(100)[i].mean()), 100, 200, 0)
    assert lo < 49.5 < hi and hi - lo < 25


# -- distributed ---------------------------------------------------------------------------------------
def _worker(rank: int, world: int, port: int, run: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    ds = digits_eeg()
    train_diffusion(tiny_cfg(epochs=2, grid_trials=1, grid_samples=1), Path(run), data=ds, encoder=standin_encoder(ds))


@pytest.mark.slow
def test_two_gloo_processes_match_one(ds, tmp_path):
    import torch.multiprocessing as mp

    one = tmp_path / "one"
    train_diffusion(tiny_cfg(epochs=2, grid_trials=1, grid_samples=1), one, data=ds, encoder=standin_encoder(ds))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    two = tmp_path / "two"
    mp.start_processes(_worker, args=(2, port, str(two), ""), nprocs=2, join=True, start_method="spawn")
    m2 = json.loads((two / "metrics.json").read_text())["diffusion"]
    assert m2["processes"] == 2
    m1 = json.loads((one / "metrics.json").read_text())["diffusion"]
    assert [h["loss"] for h in m2["history"]] == pytest.approx([h["loss"] for h in m1["history"]], rel=1e-5)
    a = EEGDiffusion.from_pretrained(one / "model")
    b = EEGDiffusion.from_pretrained(two / "model")
    # all-reduced gradients differ from the 1-process sum in the last bits; Adam divides each
    # gradient by its own running RMS, so on weights whose gradient is ~0 those bits become
    # update differences of up to lr per step (measured: relative norm 4e-7; max 1.6e-5 in one
    # session, 1.1e-4 on one of 267,172 weights in another). The norm is the tight check; the
    # elementwise one bounds how many weights may show the amplification and by how much.
    va = torch.cat([p.flatten() for p in a.unet.state_dict().values()])
    vb = torch.cat([p.flatten() for p in b.unet.state_dict().values()])
    assert float((va - vb).norm() / va.norm()) < 1e-5
    diff = (va - vb).abs()
    assert int((diff > 1e-4).sum()) <= 10 and float(diff.max()) < 1e-3, (int((diff > 1e-4).sum()), float(diff.max()))


def test_tiny_presets_share_the_eeg_geometry():
    """Stage two must load the EEG stage one was trained on (the pipeline chains the two presets)."""
    from eegsine.training.encoder import encoder_preset

    d, e = diffusion_preset("tiny"), encoder_preset("tiny")
    assert (d.data, d.image_set, d.data_options) == (e.data, e.image_set, e.data_options)


def test_evaluate_generation_writes_table_with_baselines_and_training_note(trained, ds, domain, tmp_path):
    import shutil

    from eegsine.metrics.images import CONDITIONS, evaluate_generation

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    prov = json.loads((run / "model" / "provenance.json").read_text())
    prov["image_cond_frac"] = 0.5  # as the tiny preset trains: the table must say so
    (run / "model" / "provenance.json").write_text(json.dumps(prov))
    net, _, _ = domain
    r = evaluate_generation(run, ds, domain=net, domain_name="domain-cnn-digits", split="test", max_trials=12,
                            n_boot=20)
    n_test = len(ds.split("test"))
    assert r["n_trials"] == min(12, n_test) and set(r["conditions"]) == set(CONDITIONS)
    for name, row in r["conditions"].items():
        assert row["n"] == r["n_trials"] and 0.0 <= row["acc"] <= 1.0 and np.isfinite(row["fid_domain"]), name
        lo, hi = row["acc_ci"]
        assert lo <= row["acc"] <= hi
    assert r["ground_truth"]["acc"] > 0.5  # the feature network reads the real stimuli
    # the first-screen strip: one scored trial per class present, in class order, the seen image first
    strip = r["strip"]
    assert (run / strip["file"]).is_file() and strip["columns"] == ["seen image", *CONDITIONS]
    picked = [int(ds.y[t]) for t in strip["trials"]]
    assert all(a < b for a, b in zip(picked, picked[1:])) and 2 <= len(picked) <= 8  # one per class, class order
    md = (run / "generation.md").read_text()
    assert "**domain-cnn-digits**" in md and "50% of the UNet's training examples" in md
    assert json.loads((run / "metrics.json").read_text())["generation"]["training_image_cond_frac"] == 0.5
    run0 = tmp_path / "run0"
    shutil.copytree(trained[0], run0)
    r0 = evaluate_generation(run0, ds, domain=net, domain_name="domain-cnn-digits", split="test", max_trials=12,
                             n_boot=20)
    assert r0["training_image_cond_frac"] == 0.0  # recorded; the markdown adds no note
    assert "training examples" not in (run0 / "generation.md").read_text()
