"""The seed's own experiment end to end, on format-exact stand-ins this test writes (#14).

An EEGCVPR40 ``.pth`` in Spampinato's dict layout (with trials of 450 <= T < 460 samples, which need the
window's edge padding, and T > 600, which the loader drops) and its splits file; the stimulus photos as
JPEGs in ImageNet's ``<wnid>/<name>.JPEG`` layout; a tiny Stable Diffusion folder written by diffusers'
``save_pretrained`` (``vae/`` + ``unet/``, as diffusers' own tests build small ones); a tiny CLIP vision
tower written by transformers' ``save_pretrained``. Then the README's paper command runs the EEG stages
(encoder -> diffusion -> generation + metrics -> export + INT8 -> verify -> stream -> bench -> report) with
budgets shrunk through ``--stage-args`` only: every path is the real one.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

N_CLASSES, IMGS_PER_CLASS, SUBJECTS = 4, 5, (1, 2)
EMB = 32  # the CLIP stand-in's projection size = the EEG encoder's embedding size


def write_cvpr(folder):
    """Spampinato's layout; lengths cycle through 455 (padded), 470..590 and 620 (dropped)."""
    from test_encoder import write_eegcvpr40

    folder.mkdir(parents=True)
    write_eegcvpr40(folder, N_CLASSES, IMGS_PER_CLASS, SUBJECTS, lengths=[455, 470, 510, 590, 620], amp=2.0)
    names = torch.load(folder / "eeg_5_95_std.pth", weights_only=True)["images"]
    return folder / "eeg_5_95_std.pth", names


def write_photos(root, names):
    """One JPEG per stimulus, class colour + a per-image stripe, 48 x 36 (not square: the crop is exercised)."""
    for m, name in enumerate(names):
        c = m // IMGS_PER_CLASS
        arr = np.zeros((36, 48, 3), np.uint8)
        arr[..., c % 3] = 200
        arr[:, 4 * (m % IMGS_PER_CLASS):4 * (m % IMGS_PER_CLASS) + 8, :] = 255
        (root / name.split("_")[0]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / name.split("_")[0] / f"{name}.JPEG", quality=95)
    return root


def write_sd(folder):
    """A tiny SD 1.x-shaped pair: 3-channel VAE (16 px -> 4 latents of 8 px), cross-attention UNet (dim 24)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                  norm_num_groups=8, sample_size=16, scaling_factor=0.18215).save_pretrained(folder / "vae")
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                         cross_attention_dim=24, attention_head_dim=8,
                         norm_num_groups=8).save_pretrained(folder / "unet")
    return folder


def write_clip(folder):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=16, patch_size=8, projection_dim=EMB)
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(folder)
    return folder


STAGE_ARGS = [
    f"encoder=--epochs 2 --n-way {N_CLASSES} --k-shot 2 --n-query 1 --encoder-emb-dim {EMB} --encoder-d-model 16 "
    "--encoder-n-layers 1 --encoder-n-heads 2 --eval-episodes 5 --no-controls --no-plot",
    "diffusion=--epochs 1 --steps-per-epoch 2 --batch-size 4 --model-image-size 16 --model-native-size 16 "
    "--model-n-tokens 4 --model-sample-steps 2 --model-sampler ddim --no-ema --warmup-steps 1 --grid-trials 2 "
    "--grid-samples 1 --no-speed --no-plot",
    "generation=--max-trials 8 --steps 2",
    "export=--calib-trials 4 --calib-steps 2 --golden-eval 16",
    "verify=--verify-n-eval 8",
    "stream=--speed 50",
    "bench=--iters 2 --max-seconds 1",
]


@pytest.mark.timeout(600)
def test_paper_command_runs_on_format_exact_stand_ins(tmp_path):
    from eegsine.commands.main import main

    pth, names = write_cvpr(tmp_path / "cvpr")
    photos = write_photos(tmp_path / "imagenet", names)
    sd, clip = write_sd(tmp_path / "sd"), write_clip(tmp_path / "clip")
    out = tmp_path / "paper"
    argv = ["pipeline", "--preset", "paper", "--out", str(out), "--threads", "1", "--eeg", str(pth),
            "--images-root", str(photos), "--image-size", "16", "--pretrained", str(sd), "--clip", str(clip),
            "--stages", "encoder", "diffusion", "generation", "export", "verify", "stream", "bench", "report",
            "--stage-args", *STAGE_ARGS]
    assert main(argv) == 0
    summary = json.loads((out / "pipeline.json").read_text())
    assert [s["status"] for s in summary["stages"]] == ["done"] * 8, summary["stages"]
    # the encoder trained on every kept trial with its photo, aligned to the local CLIP
    enc = json.loads((out / "encoder" / "metrics.json").read_text())
    prov = json.loads((out / "encoder" / "model" / "provenance.json").read_text())
    assert prov["data"] == "eegcvpr40" and prov["image_encoder"] == f"hf:{clip}"
    assert prov["data_options"]["images_root"] == str(photos) and prov["data_options"]["eeg_file"] == str(pth)
    assert enc["encoder"]["train"]["image_encoder"]["source"] == "hf"
    assert enc["encoder"]["train"]["image_encoder"]["emb_dim"] == EMB
    # the diffusion model is the local SD's UNet/VAE, with the token mapper sized to its cross-attention
    dcfg = json.loads((out / "diffusion" / "model" / "config.json").read_text())
    assert dcfg["cross_attention_dim"] == 24 and dcfg["pretrained_unet"] == str(sd / "unet")
    man = json.loads((out / "bundle" / "manifest.json").read_text())
    assert {"eeg_encoder", "unet", "vae_decoder"} <= set(man["models"])
    assert man["models"]["eeg_encoder"]["contract"]["meta"]["n_chans"] == 128
    assert (out / "report.html").stat().st_size > 0 and (out / "stream" / "summary.json").exists()
