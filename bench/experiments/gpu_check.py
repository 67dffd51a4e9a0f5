"""The GPU figures of issue #25 in one command: ``python -m eegsine.bench.experiments.gpu_check`` (about 6-9 min).

On a machine with a CUDA GPU it

1. runs the GPU tests (``pytest -m gpu``, at most ``--test-seconds``) and records how many passed;
2. times training steps of Stable Diffusion 1.5's UNet (:data:`~eegsine.bench.experiments.gpu_scale.SD15_UNET`,
   random weights) at 512 px (64 x 64 x 4 latents, 77 tokens of 768), through eegsine's own trainer settings
   (:func:`~eegsine.training.unet.set_trainable`: gradient checkpointing, LoRA), in two modes: full fine-tuning
   with bf16 autocast + checkpointing, and LoRA (rank 8) with bf16 + checkpointing; per mode the seconds per step
   (median of the timed steps after warm-up) and the peak memory (``torch.cuda.max_memory_allocated``) at the
   largest of the preset's batch (16), 8, 4, 2, 1 that fits, projected to one EEGCVPR40 epoch
   (``--train-trials`` / batch steps) beside the source's "about 1 hour";
3. trains one FGSM-RS epoch of the CIFAR-10 PreAct-ResNet-18 (the ``paper-cifar10`` preset's model and batch, the
   trainer of ``eegsine train classifier`` on CUDA) on CIFAR-shaped random data (50,000 images), projected to Wong
   et al.'s 15-epoch FGSM-RS recipe;

and writes ``docs/results/gpu-scale/gpu-check.json`` and ``gpu-check.md``, naming the GPU. Without CUDA it stops
with a one-line error. Nothing here has run on a GPU yet: the README says "not yet measured" until it has.

Hand-written: the timing harness (CUDA events around the step; the models and trainer are the toolkit's).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from eegsine.bench.experiments.gpu_scale import OUT, SD15_UNET, sd15_unet, write_results
from eegsine.bench.report.doc import md_table
from eegsine.errors import UserError
from eegsine.training.configs import classifier_preset

# the source: 11,964 EEGCVPR40 trials split 80/10/10 by image; --train-trials takes your splits file's count
EEGCVPR40_TRAIN_TRIALS = 9571
SOURCE_EPOCH_S = 3600.0  # "one epoch takes about 1 hour"
WONG_EPOCHS = 15  # Wong, Rice & Kolter 2020: FGSM-RS CIFAR-10 in 15 epochs
BATCHES = (16, 8, 4, 2, 1)


def _cuda():
    import torch

    if not torch.cuda.is_available():
        raise UserError("gpu_check needs a CUDA GPU (torch.cuda.is_available() is False here); the memory plan "
                        "without one: python -m eegsine.bench.experiments.gpu_scale plan")
    return torch


def run_gpu_tests(seconds: float) -> dict:
    """``pytest -m gpu`` over the suite, at most ``seconds``: {passed, failed, skipped, returncode, tail}."""
    cmd = [sys.executable, "-P", "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds, check=False)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:  # (text=True: the partial output is a str, or bytes on older Pythons)
        part = e.stdout or ""
        out, rc = part.decode() if isinstance(part, bytes) else part, "timeout"
    last = [ln for ln in out.splitlines() if ln.strip()][-1:] or [""]
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error")}
    for part in last[0].replace("=", "").split(","):
        words = part.split()
        if len(words) >= 2 and words[0].isdigit() and words[1].rstrip("s") in counts:
            counts[words[1].rstrip("s")] = int(words[0])
    return {**counts, "returncode": rc, "summary": last[0].strip()}


def sd_step_timing(mode: str, steps: int, warmup: int) -> dict:
    """Seconds per training step and peak memory of the SD-1.5-shaped UNet at 512 px in ``mode`` (full / lora)."""
    torch = _cuda()
    from eegsine.training.unet import LORA_TARGETS, optimizer_class

    for batch in BATCHES:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            return {"mode": mode, "batch": batch, **_time_sd(torch, mode, batch, steps, warmup, LORA_TARGETS,
                                                             optimizer_class("adamw"))}
        except torch.cuda.OutOfMemoryError:
            continue
    return {"mode": mode, "batch": 0, "error": "out of memory at batch 1"}


def _time_sd(torch, mode: str, batch: int, steps: int, warmup: int, targets: list[str], opt_cls) -> dict:
    unet = sd15_unet("cuda").train()
    unet.enable_gradient_checkpointing()
    if mode == "lora":
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=8, lora_alpha=8, init_lora_weights="gaussian", target_modules=targets))
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = opt_cls(params, lr=1e-5)
    s = SD15_UNET["sample_size"]
    x = torch.randn(batch, 4, s, s, device="cuda")
    cond = torch.randn(batch, 77, SD15_UNET["cross_attention_dim"], device="cuda")
    t = torch.randint(0, 1000, (batch,), device="cuda")
    times = []
    for i in range(warmup + steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(unet(x, t, cond).sample.float(), x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        end.record()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(start.elapsed_time(end) / 1000)
    peak = torch.cuda.max_memory_allocated()
    del unet, opt, x, cond
    return {"seconds_per_step": statistics.median(times), "steps_timed": steps, "peak_gib": peak / 2 ** 30,
            "trained_params": sum(p.numel() for p in params)}


def cifar_fgsm_rs_epoch() -> dict:
    """One FGSM-RS epoch of the paper-cifar10 PreAct-ResNet-18 on 50,000 random CIFAR-shaped images, on CUDA (its
    run folder a temporary one)."""
    import tempfile

    torch = _cuda()
    from eegsine.training.classifier import train_classifier

    g = torch.Generator().manual_seed(0)
    n = 50_000
    data = {"train_x": torch.rand(n, 3, 32, 32, generator=g), "train_y": torch.randint(0, 10, (n,), generator=g),
            "val_x": torch.rand(100, 3, 32, 32, generator=g), "val_y": torch.randint(0, 10, (100,), generator=g),
            "test_x": torch.rand(100, 3, 32, 32, generator=g), "test_y": torch.randint(0, 10, (100,), generator=g),
            "n_classes": 10, "source": "random CIFAR-shaped data"}
    # Wong et al.'s FGSM-RS: step 1.25 eps (alpha None), cyclic lr to 0.2; the preset's model, eps and batch
    cfg = classifier_preset("paper-cifar10")["standard"].replace(
        mode="fgsm_rs", alpha=None, epochs=1, n_val_eval=100, val_pgd_steps=2, ckpt_every_steps=0, grad_log_steps=0,
        device="cuda", lr_schedule="cyclic", lr=0.2)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        m = train_classifier(cfg, Path(tmp) / "run", data=data)
    return {"epoch_train_seconds": m["train_wall_s"], "epoch_wall_seconds": round(time.perf_counter() - t0, 1),
            "images_per_s": m["train_images_per_s"], "batch": cfg.batch_size,
            "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
            "projected_wong_15_epochs_min": round(WONG_EPOCHS * m["train_wall_s"] / 60, 1)}


def render(r: dict) -> str:
    """gpu-check.md from gpu-check.json."""
    sd_rows = [[x["mode"], str(x["batch"]), f"{x.get('seconds_per_step', float('nan')):.3f}",
                f"{x.get('peak_gib', float('nan')):.1f}", f"{x.get('epoch_minutes', float('nan')):.0f}",
                f"{x.get('vs_source', float('nan')):.2f}"] for x in r["sd15"]]
    c = r["cifar"]
    return "\n".join([
        "# GPU check", "", f"Measured on **{r['gpu']}** (torch {r['torch']}, CUDA {r['cuda']}) by "
        "`python -m eegsine.bench.experiments.gpu_check`.", "",
        f"GPU tests (`pytest -m gpu`): {r['tests']['summary']}", "",
        "## Stable Diffusion 1.5 UNet at 512 px", "",
        f"Random weights, 64 x 64 x 4 latents, 77 tokens; bf16 autocast + gradient checkpointing, AdamW. One EEGCVPR40 "
        f"epoch = {r['train_trials']} trials / batch steps; the source: about 1 hour.", "",
        *md_table(["mode", "batch", "s / step", "peak GiB", "min / EEGCVPR40 epoch", "x the source's hour"], sd_rows),
        "", "## CIFAR-10 PreAct-ResNet-18, one FGSM-RS epoch", "",
        f"50,000 random CIFAR-shaped images, batch {c['batch']}: {c['epoch_train_seconds']} s of training "
        f"({c['images_per_s']} images/s), peak {c['peak_gib']:.1f} GiB; Wong et al.'s 15 epochs: about "
        f"{c['projected_wong_15_epochs_min']} min.", ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eegsine.bench.experiments.gpu_check",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(OUT), help="results folder (default: docs/results/gpu-scale)")
    p.add_argument("--train-trials", type=int, default=EEGCVPR40_TRAIN_TRIALS,
                   help="EEGCVPR40 training trials an epoch passes over (default: 80 %% of the source's 11,964)")
    p.add_argument("--steps", type=int, default=5, help="timed SD steps per mode (after 2 warm-up steps)")
    p.add_argument("--test-seconds", type=float, default=240, help="time limit of the GPU tests")
    p.add_argument("--render", action="store_true", help="only re-render gpu-check.md from gpu-check.json")
    ns = p.parse_args(argv)
    compute = None if ns.render else (lambda: measure(ns.train_trials, ns.steps, ns.test_seconds))
    return write_results(Path(ns.out), "gpu-check", compute, render)


def measure(train_trials: int, steps: int, test_seconds: float) -> dict:
    """Every figure of the module docstring, in order (tests first: a broken GPU setup shows before the timings)."""
    torch = _cuda()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    r = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
         "host": platform.node(), "train_trials": train_trials, "tests": run_gpu_tests(test_seconds), "sd15": []}
    for mode in ("full", "lora"):
        x = sd_step_timing(mode, steps, warmup=2)
        if x["batch"]:
            epoch_s = x["seconds_per_step"] * -(-train_trials // x["batch"])
            x.update(epoch_minutes=epoch_s / 60, vs_source=epoch_s / SOURCE_EPOCH_S)
        r["sd15"].append(x)
    r["cifar"] = cifar_fgsm_rs_epoch()
    return r


if __name__ == "__main__":
    sys.exit(main())
