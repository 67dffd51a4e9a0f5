"""Device, precision and Stable-Diffusion-scale settings, proven on the CPU: each trainer and attack puts model and
data where ``--device`` says, in the precision ``--mixed-precision`` says (bf16 autocast seen in forward hooks);
gradient checkpointing changes no gradient; an SD-1.5-shaped UNet takes a LoRA step with checkpointing (slow)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).parent))
from test_diffusion import digits_eeg, standin_encoder, tiny_cfg  # noqa: E402

from eegsine.errors import UserError  # noqa: E402
from eegsine.training.diffusion import train_diffusion  # noqa: E402
import eegsine.training.unet as unet_mod  # noqa: E402


@pytest.fixture(scope="module")
def ds():
    return digits_eeg()


class Seen:
    """Forward hooks on every Linear / Conv2d of a module: the dtypes and devices of what they computed."""

    def __init__(self):
        self.dtypes: set[torch.dtype] = set()
        self.devices: set[str] = set()

    def watch(self, module: nn.Module) -> None:
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.register_forward_hook(self._hook)

    def _hook(self, mod, inputs, out) -> None:
        if torch.is_grad_enabled():  # training steps only (not the no-grad grids and validation)
            self.dtypes.add(out.dtype)
            self.devices.add(out.device.type)
            self.devices.add(mod.weight.device.type)


def _train_watched(ds, run, monkeypatch, **kw) -> tuple[dict, Seen]:
    """A 1-epoch tiny diffusion run with hooks on the UNet (placed once set_trainable has run)."""
    seen = Seen()
    real = unet_mod.set_trainable

    def watched(cfg, model, train_encoder, logger):
        real(cfg, model, train_encoder, logger)
        seen.watch(model.unet)

    monkeypatch.setattr("eegsine.training.diffusion.set_trainable", watched)
    torch.set_num_threads(1)
    cfg = tiny_cfg(epochs=1, steps_per_epoch=2, grid_trials=1, grid_samples=1, **kw)
    return train_diffusion(cfg, run, data=ds, encoder=standin_encoder(ds)), seen


def test_diffusion_bf16_autocast_on_the_cpu(ds, tmp_path, monkeypatch):
    m, seen = _train_watched(ds, tmp_path / "bf16", monkeypatch, device="cpu", mixed_precision="bf16")
    assert seen.dtypes == {torch.bfloat16} and seen.devices == {"cpu"}
    assert m["device"] == "cpu" and np.isfinite(m["history"][0]["loss"])
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert (cfg["mixed_precision"], cfg["device"]) == ("bf16", "cpu")


def test_diffusion_default_is_fp32_and_sdpa(ds, tmp_path, monkeypatch):
    m, seen = _train_watched(ds, tmp_path / "fp32", monkeypatch)
    assert seen.dtypes == {torch.float32} and seen.devices == {"cpu"}
    log = (tmp_path / "fp32" / "log.txt").read_text()
    assert "UNet attention: AttnProcessor2_0; gradient checkpointing off; optimizer adamw; mixed precision no" in log


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_gradient_checkpointing_changes_no_gradient(ds, mode):
    """The same batch through the tiny UNet with and without diffusers' checkpointing: equal loss and gradients
    (non-reentrant recomputation; a reentrant one would drop the adapters' gradients of a frozen UNet)."""
    from eegsine.models.diffusion import build_diffusion
    from test_diffusion import tiny_model_cfg

    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model, _ = build_diffusion(tiny_model_cfg(emb_dim=16))
        cfg = tiny_cfg(mode=mode, gradient_checkpointing=ckpt)
        unet_mod.set_trainable(cfg, model, False, _NullLog())
        assert model.unet.is_gradient_checkpointing == ckpt
        model.train()
        g = torch.Generator().manual_seed(1)
        noisy = torch.randn(3, 4, 4, 4, generator=g)
        emb = torch.randn(3, 16, generator=g)
        loss = model(noisy, torch.tensor([10, 500, 900]), emb, torch.zeros(3, dtype=torch.bool)).square().mean()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.unet.named_parameters() if p.requires_grad})
    assert set(grads[0]) == set(grads[1]) and grads[0]
    if mode == "lora":
        assert all("lora" in n for n in grads[0])
    for n in grads[0]:
        assert torch.equal(grads[0][n], grads[1][n]), n


def test_adamw8bit_without_bitsandbytes_is_one_line(ds, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as on a machine where it does not import
    with pytest.raises(UserError, match="--optimizer adamw8bit needs the bitsandbytes package") as e:
        train_diffusion(tiny_cfg(optimizer="adamw8bit"), tmp_path / "r", data=ds, encoder=standin_encoder(ds))
    assert "\n" not in str(e.value) and not (tmp_path / "r" / "config.json").exists()


def test_fp16_and_missing_gpu_are_one_line_errors(ds, tmp_path):
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        train_diffusion(tiny_cfg(device="cpu", mixed_precision="fp16"), tmp_path / "a", data=ds,
                        encoder=standin_encoder(ds))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda: no CUDA device here"):
            train_diffusion(tiny_cfg(device="cuda"), tmp_path / "b", data=ds, encoder=standin_encoder(ds))
    with pytest.raises(UserError, match="DiffusionTrainConfig.device: 'gpu' is not auto"):
        tiny_cfg(device="gpu")


class _NullLog:
    def info(self, *a, **k) -> None:
        pass


# -- Stable Diffusion scale ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sd15_shaped_unet_takes_a_lora_step_with_checkpointing():
    """SD-1.5's UNet (published config, random weights: 859,520,964 parameters) through eegsine's LoRA setup with
    gradient checkpointing: one AdamW step on a 16 x 16 latent at batch 1 (~4 GB of RAM, a minute on one core)."""
    from eegsine.bench.experiments.gpu_scale import SD15_UNET, sd15_model_config
    from eegsine.models.diffusion import build_diffusion

    torch.set_num_threads(1)
    torch.manual_seed(0)
    mcfg = sd15_model_config(image_size=128, vae_channels=(8, 8, 8, 8), emb_dim=16, n_tokens=8)
    model, _ = build_diffusion(mcfg)
    for k, v in SD15_UNET.items():
        if k != "sample_size":
            assert list(model.unet.config[k]) == v if isinstance(v, list) else model.unet.config[k] == v, k
    assert sum(p.numel() for p in model.unet.parameters()) == 859_520_964
    cfg = tiny_cfg(mode="lora", gradient_checkpointing=True, lora_rank=4, lora_alpha=4)
    unet_mod.set_trainable(cfg, model, False, _NullLog())
    assert model.unet.is_gradient_checkpointing
    lora = {n: p for n, p in model.unet.named_parameters() if "lora" in n}
    base_before = {n: p.detach().clone() for n, p in model.unet.named_parameters()
                   if "lora" not in n and n.endswith("to_q.base_layer.weight")}
    b_before = {n: p.detach().clone() for n, p in lora.items() if "lora_B" in n}
    assert lora and base_before and all(float(b.abs().max()) == 0 for b in b_before.values())  # peft: B starts at 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = unet_mod.optimizer_class(cfg.optimizer)(trainable, lr=1e-3, weight_decay=0.0)
    model.train()
    g = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    noisy = latents + 0.5 * noise
    loss = torch.nn.functional.mse_loss(model(noisy, torch.tensor([500]), torch.randn(1, 16, generator=g)), noise)
    loss.backward()
    assert torch.isfinite(loss)
    with_grad = [n for n, p in model.unet.named_parameters() if p.grad is not None]
    assert with_grad and all("lora" in n for n in with_grad)  # the frozen UNet got no gradient, checkpointed or not
    assert all(float(lora[n].grad.abs().max()) > 0 for n in lora if "lora_B" in n)  # every adapter's B learns
    opt.step()
    assert all(not torch.equal(lora[n], b) for n, b in b_before.items())  # the adapters changed
    for n, w in base_before.items():
        assert torch.equal(dict(model.unet.named_parameters())[n], w), n  # the base weights did not


def test_memory_plan_is_rendered_from_its_json_and_recomputes():
    """docs/results/gpu-scale: the table is what its JSON renders, and the JSON what the meta-device count gives."""
    from eegsine.bench.experiments.gpu_scale import memory_plan, render
    from eegsine.io import read_json

    root = Path(__file__).resolve().parents[1] / "docs" / "results" / "gpu-scale"
    committed = read_json(root / "memory-plan.json")
    assert (root / "memory-plan.md").read_text() == render(committed)
    fresh = memory_plan()
    for key in ("unet_params", "vae_params", "lora_params", "modes"):
        assert fresh[key] == committed[key], key
    assert committed["unet_params"] == 859_520_964 and not committed["measured_on_gpu"]
    full, lora = committed["modes"][0], committed["modes"][3]
    assert full["trained_params"] == committed["unet_params"] and lora["trained_params"] == committed["lora_params"]
    # checkpointing keeps less per sample than no checkpointing; 8-bit AdamW fits more than AdamW
    by = {m["mode"]: m for m in committed["modes"]}
    assert by["lora-bf16-ckpt"]["activation_bytes_per_sample"] < by["lora-bf16"]["activation_bytes_per_sample"]
    assert by["full-bf16-ckpt-8bit"]["max_batch_per_gpu"]["24"] > by["full-bf16-ckpt"]["max_batch_per_gpu"]["24"]
