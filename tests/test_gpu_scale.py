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


# -- every trainer, the attacks and generation: device and precision --------------------------------------------
class ByMode(Seen):
    """Seen, split by the module's training flag: training steps vs attacks / validation (eval mode)."""

    def __init__(self):
        super().__init__()
        self.by_mode: dict[bool, set[torch.dtype]] = {True: set(), False: set()}

    def _hook(self, mod, inputs, out) -> None:
        self.by_mode[mod.training].add(out.dtype)
        self.devices.add(out.device.type)


def _digits_classifier(**kw):
    from eegsine.models.classifier import ClassifierConfig
    from eegsine.training.classifier import ClassifierTrainConfig

    base = dict(dataset="digits", mode="fgsm_rs", eps=0.1, epochs=1, n_train=96, batch_size=32, n_val_eval=20,
                val_pgd_steps=1, grad_log_steps=2, model=ClassifierConfig(head="sine", init="siren"))
    base.update(kw)
    return ClassifierTrainConfig(**base)


def test_classifier_bf16_trains_in_bf16_and_attacks_in_fp32(tmp_path, monkeypatch):
    import eegsine.training.classifier as tc

    seen = ByMode()
    real = tc.use_device
    monkeypatch.setattr(tc, "use_device", lambda m, dev: (seen.watch(m), real(m, dev))[1])
    m = tc.train_classifier(_digits_classifier(device="cpu", mixed_precision="bf16"), tmp_path / "r")
    assert seen.by_mode[True] == {torch.bfloat16}  # the training forward passes
    assert seen.by_mode[False] == {torch.float32}  # FGSM-RS crafting the examples, validation: fp32 gradients
    assert seen.devices == {"cpu"} and np.isfinite(m["history"][-1]["clean"])


def test_encoder_bf16_autocast_on_the_cpu(tmp_path, monkeypatch):
    from test_encoder import _quick_cfg, small_vep

    from eegsine.training.encoder import train_encoder
    import eegsine.training.encoder as te

    seen = Seen()
    real = te.Aligner
    monkeypatch.setattr(te, "Aligner", lambda *a, **k: (lambda m: (seen.watch(m), m)[1])(real(*a, **k)))
    torch.set_num_threads(1)
    train_encoder(_quick_cfg(epochs=1, device="cpu", mixed_precision="bf16"), tmp_path / "enc", data=small_vep())
    assert seen.dtypes == {torch.bfloat16} and seen.devices == {"cpu"}


def test_attack_opt_in_precision(tmp_path):
    """eegsine attack: fp32 gradients unless --mixed-precision asks; then the attack's passes are bf16 and the
    adversarial images are judged in fp32."""
    from eegsine.attacks.algorithms import LowPrecision
    from eegsine.attacks.registry import AttackParams
    from eegsine.bench.robustness.evaluate import run_attack
    from eegsine.data import load_images
    from eegsine.models.classifier import ClassifierConfig, build_classifier

    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(in_channels=1, image_size=8, n_classes=10)).eval()
    ds = load_images("digits")
    x, y = torch.from_numpy(ds.test_x[:16]), torch.from_numpy(ds.test_y[:16])
    for precision, want in (("no", {torch.float32}), ("bf16", {torch.bfloat16})):  # the attack's (grad) passes
        seen = Seen()
        seen.watch(model)
        with torch.enable_grad():
            r = run_attack("pgd-ce", model, x, y, torch.ones(16, dtype=torch.bool), 0.1, 10,
                           AttackParams(pgd_steps=2, pgd_restarts=1), 16, precision=precision)
        assert seen.dtypes == want and r["robust"].dtype == torch.bool, precision
        for h in [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]:
            h._forward_hooks.clear()
    assert LowPrecision(model, "bf16").head is model.head  # adaptive attacks read the model's own parts


def test_generate_on_the_requested_device_and_precision(tmp_path, monkeypatch):
    from test_diffusion import tiny_model_cfg

    from eegsine.models.diffusion import build_diffusion
    from eegsine.training.generate import generate

    torch.manual_seed(0)
    ds = digits_eeg()
    model, _ = build_diffusion(tiny_model_cfg(sample_steps=2), standin_encoder(ds))
    placed = []
    real_to = type(model).to
    monkeypatch.setattr(type(model), "to", lambda self, *a, **k: (placed.append(a), real_to(self, *a, **k))[1])
    seen = ByMode()  # every pass (sampling runs without gradients)
    seen.watch(model.unet)
    idx = generate(tmp_path, split="val", out_dir=tmp_path / "g", samples=1, max_trials=2, model=model, data=ds,
                   device="cpu", mixed_precision="bf16")
    assert placed and placed[0] == (torch.device("cpu"),)
    assert seen.by_mode[True] | seen.by_mode[False] == {torch.bfloat16} and seen.devices == {"cpu"}
    assert (idx["device"], idx["mixed_precision"]) == ("cpu", "bf16")


@pytest.fixture
def fresh_accelerate():
    """Accelerate's process-wide state as a fresh process has it, after a test that mocks CUDA into it."""
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("which", ["classifier", "attack", "diffusion", "encoder"])
def test_cuda_request_reaches_the_device_placement(which, tmp_path, monkeypatch, fresh_accelerate):
    """A device mock: CUDA 'present', and the placement step records the device it is handed (then stops at a
    sentinel). --device cuda must arrive as CUDA, with the precision asked for."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    got = []

    class Placed(Exception):
        pass

    def record(*a, **k):
        got.append((a, k))
        raise Placed

    if which in ("classifier", "attack"):
        import eegsine.bench.robustness.evaluate as ev
        import eegsine.training.classifier as tc

        monkeypatch.setattr(tc if which == "classifier" else ev, "use_device", record)
        with pytest.raises(Placed):
            if which == "classifier":
                tc.train_classifier(_digits_classifier(device="cuda"), tmp_path / "c")
            else:
                from eegsine.bench.robustness.configs import RobustnessConfig
                from eegsine.bench.robustness.evaluate import evaluate_robustness
                from eegsine.models.classifier import ClassifierConfig, build_classifier

                m = build_classifier(ClassifierConfig(in_channels=1, image_size=8, n_classes=10))
                evaluate_robustness([m], RobustnessConfig(dataset="digits", device="cuda"), tmp_path / "a")
        assert got[0][0][1] == torch.device("cuda")
        return
    import accelerate

    monkeypatch.setattr(accelerate, "Accelerator", record)
    with pytest.raises(Placed):
        if which == "diffusion":
            train_diffusion(tiny_cfg(device="cuda", mixed_precision="bf16"), tmp_path / "d", data=digits_eeg(),
                            encoder=standin_encoder(digits_eeg()))
        else:
            from test_encoder import _quick_cfg, small_vep

            from eegsine.training.encoder import train_encoder

            train_encoder(_quick_cfg(device="cuda", mixed_precision="bf16"), tmp_path / "e", data=small_vep())
    assert got[0][1] == {"cpu": False, "mixed_precision": "bf16"}


# -- on a CUDA GPU (skipped here; `python -m eegsine.bench.experiments.gpu_check` runs them) ------------------
GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_gpu_classifier_trains_on_cuda(tmp_path, monkeypatch, precision):
    import eegsine.training.classifier as tc

    seen = ByMode()
    real = tc.use_device
    monkeypatch.setattr(tc, "use_device", lambda m, dev: (seen.watch(m), real(m, dev))[1])
    m = tc.train_classifier(_digits_classifier(device="cuda", mixed_precision=precision), tmp_path / "r")
    assert seen.devices == {"cuda"} and np.isfinite(m["history"][-1]["clean"])
    assert seen.by_mode[True] == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert seen.by_mode[False] == {torch.float32}


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_diffusion_mixed_precision_and_checkpointing(ds, tmp_path, monkeypatch, precision):
    m, seen = _train_watched(ds, tmp_path / precision, monkeypatch, device="cuda", mixed_precision=precision,
                             gradient_checkpointing=True)
    assert seen.devices == {"cuda"} and seen.dtypes == {torch.bfloat16 if precision == "bf16" else torch.float16}
    assert m["device"].startswith("cuda") and np.isfinite(m["history"][0]["loss"])


@pytest.mark.gpu
@GPU
def test_gpu_attack_on_cuda_keeps_fp32_gradients():
    from eegsine.bench.robustness.evaluate import run_attack
    from eegsine.attacks.registry import AttackParams
    from eegsine.data import load_images
    from eegsine.models.classifier import ClassifierConfig, build_classifier

    model = build_classifier(ClassifierConfig(in_channels=1, image_size=8, n_classes=10)).cuda().eval()
    ds = load_images("digits")
    x, y = torch.from_numpy(ds.test_x[:32]), torch.from_numpy(ds.test_y[:32])
    seen = Seen()
    seen.watch(model)
    with torch.enable_grad():
        r = run_attack("pgd-ce", model, x, y, torch.ones(32, dtype=torch.bool), 0.1, 10,
                       AttackParams(pgd_steps=3, pgd_restarts=1), 32)
    assert seen.devices == {"cuda"} and seen.dtypes == {torch.float32} and r["robust"].device.type == "cpu"


def test_gpu_check_needs_cuda_and_reads_pytest_summaries(monkeypatch, capsys):
    import subprocess

    from eegsine.bench.experiments import gpu_check

    if not torch.cuda.is_available():
        assert gpu_check.main(["--out", "unused"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: gpu_check needs a CUDA GPU") and "\n" not in err
    done = subprocess.CompletedProcess([], 1, stdout="....\n=== 9 passed, 2 failed, 3 skipped in 4.1s ===\n", stderr="")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: done)
    r = gpu_check.run_gpu_tests(10)
    assert (r["passed"], r["failed"], r["skipped"], r["returncode"]) == (9, 2, 3, 1)
