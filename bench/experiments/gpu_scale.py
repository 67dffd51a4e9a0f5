"""Stable Diffusion scale in one GPU: the ``--preset paper`` memory plan.

``python -m eegsine.bench.experiments.gpu_scale plan`` builds Stable Diffusion 1.5's UNet from its published
config (:data:`SD15_UNET`, the ``unet/config.json`` of the SD-1.5 release; random weights, no download) on
PyTorch's ``meta`` device, where nothing is allocated, and writes ``docs/results/gpu-scale/memory-plan.json`` and
``memory-plan.md``: per training mode of ``eegsine train diffusion --preset paper`` (full fine-tuning fp32; full
with bf16 autocast and gradient checkpointing; the same with 8-bit AdamW; LoRA), the bytes that do not grow with
the batch (weights, gradients, optimizer state, the EMA copy the preset keeps, the frozen VAE) counted from the
parameters, the activation bytes per sample estimated from one forward pass on the meta device, and the largest
batch per GPU that fits in 24, 48 and 80 GiB. ``render`` rewrites the table from the JSON (``--check``: fail when
the committed one differs).

The activations are an *estimate* (what a GPU run measures may differ; ``python -m
eegsine.bench.experiments.gpu_check`` measures time and peak memory where there is a GPU):

* the tensors autograd saves for the backward pass, counted by ``torch.autograd.graph.saved_tensors_hooks``,
  parameters (and views of them) excluded since the weights are counted once;
* attention as PyTorch's SDPA flash / memory-efficient kernels keep it on CUDA (query, key, value, output and
  the per-row log-sum-exp, not the N x N weights; :class:`_FlashLike` stands in for them on the meta device);
* with gradient checkpointing (diffusers' ``enable_gradient_checkpointing``, non-reentrant), the tensors saved
  outside the checkpointed blocks, the inputs each block keeps for its recomputation, and the largest single
  block's saved tensors (recomputed one at a time in the backward pass);
* bf16 autocast as the model's activations in bf16 (autocast keeps norms and softmax in fp32: an underestimate of
  their share), plus its bf16 copies of the weights (2 bytes per UNet weight, counted with the fixed bytes);
* torch AdamW's step temporaries (one fp32 tensor per trained weight); 8-bit AdamW's state at 2 bytes per weight;
* :data:`RESERVED_GIB` per GPU left for the CUDA context, cuDNN/cuBLAS workspaces and allocator fragmentation
  (an assumption, not a measurement).

Hand-written: the accounting; the models are diffusers', the counting torch's own hooks.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from eegsine.bench.report.doc import md_table
from eegsine.errors import UserError
from eegsine.io import atomic_write_text, read_json, write_json
from eegsine.models import n_params
from eegsine.models.configs import DiffusionConfig
from eegsine.training.configs import diffusion_preset

OUT = Path("docs/results/gpu-scale")
# Stable Diffusion 1.5's unet/config.json (diffusers layout), the keys that set the architecture; the ones left out
# (act_fn silu, flip_sin_to_cos, freq_shift 0, norm_eps 1e-5, downsample_padding 1, ...) are diffusers' defaults
SD15_UNET: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768, "attention_head_dim": 8,
    "norm_num_groups": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
# its vae/config.json: AutoencoderKL, 512 px -> 64 x 64 x 4
SD15_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": [128, 256, 512, 512], "sample_size": 512,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}
GPUS_GIB = (24, 48, 80)
RESERVED_GIB = 2.0
MAX_BATCH = 256
GIB = 2 ** 30


def sd15_model_config(image_size: int = 512, vae_channels: tuple[int, ...] = (128, 256, 512, 512), **kw):
    """A :class:`~eegsine.models.configs.DiffusionConfig` whose UNet is SD-1.5's (:data:`SD15_UNET`) for RGB images of
    ``image_size`` (latents ``image_size / 8``); ``vae_channels`` smaller for tests that need no real VAE."""
    base = dict(image_size=image_size, native_size=image_size, image_channels=3, resize="resize",
                vae_channels=list(vae_channels), vae_layers=2, vae_norm_groups=min(32, min(vae_channels)),
                unet_channels=list(SD15_UNET["block_out_channels"]),
                unet_cross_attention=["CrossAttn" in b for b in SD15_UNET["down_block_types"]],
                unet_layers=SD15_UNET["layers_per_block"], unet_norm_groups=SD15_UNET["norm_num_groups"],
                attention_head_dim=SD15_UNET["attention_head_dim"],
                cross_attention_dim=SD15_UNET["cross_attention_dim"], n_tokens=77)
    base.update(kw)
    return DiffusionConfig(**base)


def sd15_unet(device: str = "meta", **overrides):
    """SD-1.5's UNet2DConditionModel with random weights (on ``meta``: shapes only, nothing allocated)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device(device):
        return UNet2DConditionModel(**{**SD15_UNET, **overrides})


def lora_params(unet, rank: int, targets: list[str]) -> int:
    """Parameters peft's LoRA adds: ``rank * (in + out)`` per targeted Linear (lora_A r x in, lora_B out x r)."""
    import torch.nn as nn

    return sum(rank * (m.in_features + m.out_features) for name, m in unet.named_modules()
               if isinstance(m, nn.Linear) and any(name.endswith("." + t) for t in targets))


# -- activations on the meta device -----------------------------------------------------------------------
class _FlashLike:
    """F.scaled_dot_product_attention as the CUDA flash / memory-efficient kernels save it: q, k, v, the output and
    a (B, H, N) fp32 log-sum-exp, never the (N, N) weights."""

    @staticmethod
    def sdpa(q, k, v, *args, **kwargs):
        import torch

        class Attention(torch.autograd.Function):
            @staticmethod
            def forward(ctx, q, k, v):
                out = q.new_empty(q.shape[:-1] + v.shape[-1:])
                ctx.save_for_backward(q, k, v, out, q.new_empty(q.shape[:-1], dtype=torch.float32))
                return out

            @staticmethod
            def backward(ctx, g):  # never run: the meta pass only counts what the forward saves
                raise NotImplementedError

        return Attention.apply(q, k, v)


@contextlib.contextmanager
def _flash_attention() -> Iterator[None]:
    import torch.nn.functional as F

    real = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _FlashLike.sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real


class _Saved:
    """Bytes of the tensors autograd saves (parameters and their views excluded)."""

    def __init__(self, params):
        self.params = {id(p) for p in params}
        self.bytes = 0

    def pack(self, t):
        if id(t) not in self.params and id(getattr(t, "_base", None)) not in self.params:
            self.bytes += t.numel() * t.element_size()
        return t

    def hooks(self):
        import torch

        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


def activation_bytes(unet, batch: int, tokens: int, dtype: str, checkpointing: bool) -> int:
    """Estimated activation bytes of one training step of ``unet`` (on ``meta``) at ``batch`` (module docstring)."""
    import torch
    import torch.utils.checkpoint

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    torch.nn.Module.to(unet, dt).train()  # (not diffusers' own .to, which warns about dtype casts of loaded models)
    outer = _Saved(unet.parameters())
    regions = {"inputs": 0, "largest": 0}

    def ckpt(module, *args):  # diffusers' gradient_checkpointing_func, counting what recomputation needs
        regions["inputs"] += sum(a.numel() * a.element_size() for a in args if isinstance(a, torch.Tensor))
        inner = _Saved(unet.parameters())
        with inner.hooks():
            module(*args)
        regions["largest"] = max(regions["largest"], inner.bytes)
        return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

    if checkpointing:
        unet.enable_gradient_checkpointing(gradient_checkpointing_func=ckpt)
    else:
        unet.disable_gradient_checkpointing()
    s = unet.config.sample_size
    x = torch.zeros(batch, unet.config.in_channels, s, s, device="meta", dtype=dt)
    cond = torch.zeros(batch, tokens, unet.config.cross_attention_dim, device="meta", dtype=dt)
    with _flash_attention(), outer.hooks():
        unet(x, torch.zeros(batch, device="meta", dtype=torch.long), cond)
    return outer.bytes + regions["inputs"] + regions["largest"]


# -- the plan --------------------------------------------------------------------------------------------------
MODES = [  # (key, label, trains, precision, checkpointing, optimizer bytes per trained weight)
    ("full-fp32", "full fine-tune, fp32, AdamW (the trainer's defaults)", "full", "fp32", False, 8),
    ("full-bf16-ckpt", "full, bf16 autocast + gradient checkpointing, AdamW", "full", "bf16", True, 8),
    ("full-bf16-ckpt-8bit", "full, bf16 + checkpointing, 8-bit AdamW", "full", "bf16", True, 2),
    ("lora-bf16-ckpt", "LoRA, bf16 + checkpointing, AdamW", "lora", "bf16", True, 8),
    ("lora-bf16", "LoRA, bf16, no checkpointing", "lora", "bf16", False, 8),
]


def memory_plan() -> dict:
    """The ``--preset paper`` memory plan (module docstring) as a JSON-able dict."""
    import torch
    from diffusers import AutoencoderKL

    from eegsine.training.unet import LORA_TARGETS  # (torch: not at import, so --help and render stay light)

    cfg = diffusion_preset("paper")
    with torch.device("meta"):
        vae = AutoencoderKL(**SD15_VAE)
    unet = sd15_unet()
    p_unet, p_vae = n_params(unet), n_params(vae)
    p_lora = lora_params(unet, cfg.lora_rank, LORA_TARGETS)
    tokens = cfg.model.n_tokens
    rows = []
    for key, label, trains, precision, ckpt, opt_bytes in MODES:
        trained = p_unet if trains == "full" else p_lora
        # fp32 master weights (Accelerate's autocast keeps them), fp32 gradients of what trains, the optimizer's
        # two moments, the EMA copy of what trains (the preset's ema), the frozen VAE (fp32, resident in stage B);
        # autocast's bf16 copies of the weights (cast per forward, saved for the backward); torch AdamW's foreach
        # step allocates a temporary the size of what trains (bitsandbytes' 8-bit step works in place)
        fixed = {"unet_weights": 4 * p_unet + (4 * p_lora if trains == "lora" else 0), "gradients": 4 * trained,
                 "optimizer": opt_bytes * trained, "ema": 4 * trained if cfg.ema else 0, "vae": 4 * p_vae,
                 "autocast_weight_copies": 2 * p_unet if precision == "bf16" else 0,
                 "optimizer_step_temporaries": 4 * trained if opt_bytes == 8 else 0}
        per_sample = activation_bytes(unet, 1, tokens, precision, ckpt)
        fits = {str(g): _max_batch(sum(fixed.values()), per_sample, g) for g in GPUS_GIB}
        rows.append({"mode": key, "label": label, "trains": trains, "precision": precision,
                     "gradient_checkpointing": ckpt, "trained_params": trained, "fixed_bytes": fixed,
                     "activation_bytes_per_sample": per_sample, "max_batch_per_gpu": fits})
    return {"what": "eegsine train diffusion --preset paper: memory per GPU, estimated on the meta device",
            "unet": "Stable Diffusion 1.5 (published config), random weights", "unet_params": p_unet,
            "vae_params": p_vae, "lora_rank": cfg.lora_rank, "lora_targets": LORA_TARGETS, "lora_params": p_lora,
            "latent": [SD15_UNET["in_channels"], SD15_UNET["sample_size"], SD15_UNET["sample_size"]],
            "tokens": tokens, "preset_batch_size": cfg.batch_size, "ema": cfg.ema, "reserved_gib": RESERVED_GIB,
            "gpus_gib": list(GPUS_GIB), "torch": torch.__version__, "measured_on_gpu": False, "modes": rows}


def _max_batch(fixed: int, per_sample: int, gib: int) -> int:
    """The largest batch whose estimate fits in ``gib`` less the reserve (0: not even one sample)."""
    free = (gib - RESERVED_GIB) * GIB - fixed
    return 0 if free < per_sample else min(MAX_BATCH, int(free // per_sample))


def render(plan: dict) -> str:
    """memory-plan.md from the plan's JSON."""
    g = lambda b: f"{b / GIB:.1f}"  # noqa: E731
    head = ["mode", "fixed GiB (weights, grads, optimizer, EMA, VAE, bf16 copies)", "activations GiB / sample",
            *(f"batch in {x} GiB" for x in plan["gpus_gib"])]
    rows = [[r["label"], g(sum(r["fixed_bytes"].values())), f"{r['activation_bytes_per_sample'] / GIB:.2f}",
             *(str(r["max_batch_per_gpu"][str(x)]) if r["max_batch_per_gpu"][str(x)] else "does not fit"
               for x in plan["gpus_gib"])] for r in plan["modes"]]
    return "\n".join([
        "# GPU scale: what fits", "", "Written by `python -m eegsine.bench.experiments.gpu_scale plan` from "
        "`memory-plan.json`; not measured on a GPU (`python -m eegsine.bench.experiments.gpu_check` measures).",
        "", "## Memory plan", "",
        f"`eegsine train diffusion --preset paper`: Stable Diffusion 1.5's UNet ({plan['unet_params'] / 1e6:.1f} M "
        f"parameters, latents {'x'.join(map(str, plan['latent']))}, {plan['tokens']} EEG tokens), its VAE "
        f"({plan['vae_params'] / 1e6:.1f} M, frozen), EMA {'on' if plan['ema'] else 'off'} as in the preset, LoRA "
        f"rank {plan['lora_rank']} ({plan['lora_params'] / 1e6:.2f} M parameters). Largest batch per GPU "
        f"(the preset: {plan['preset_batch_size']}) with {plan['reserved_gib']:g} GiB left for the CUDA context; "
        "fixed bytes counted from the parameters, activations estimated on the meta device (flash / memory-"
        "efficient SDPA attention), as the docstring of `eegsine.bench.experiments.gpu_scale` says.", "",
        *md_table(head, rows), ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eegsine.bench.experiments.gpu_scale",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("plan", "render"),
                   help="plan: compute and write the memory plan; render: the table from its JSON")
    p.add_argument("--out", default=str(OUT), help="results folder (default: docs/results/gpu-scale)")
    p.add_argument("--check", action="store_true", help="render: fail when the committed table differs")
    ns = p.parse_args(argv)
    return write_results(Path(ns.out), "memory-plan", memory_plan if ns.action == "plan" else None, render, ns.check)


def write_results(out: Path, stem: str, compute: Callable[[], dict] | None, render_md: Callable[[dict], str],
                  check: bool = False) -> int:
    """``compute()`` (when given) into ``out/STEM.json``, then ``STEM.md`` rendered from that JSON (``check``: only
    compare with the committed one) -> the exit status (2 with a one-line error)."""
    try:
        if compute is not None:
            write_json(out / f"{stem}.json", compute())
        md = render_md(read_json(out / f"{stem}.json"))
        if check:
            if (out / f"{stem}.md").read_text() != md:
                print(f"{out / (stem + '.md')} differs from what {stem}.json renders", file=sys.stderr)
                return 1
            return 0
        atomic_write_text(out / f"{stem}.md", md)
        print(md)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
