"""``eegsine generate --run RUN --eeg FILE|--split test``: images from EEG, the source's grid, optional scoring."""
from __future__ import annotations

import argparse
import dataclasses
import json

from eegsine.training.configs import GenerateConfig


def config_from_ns(ns: argparse.Namespace) -> GenerateConfig:
    """The command line as a :class:`GenerateConfig` (one field per flag)."""
    return GenerateConfig(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(GenerateConfig)})


def _run(ns: argparse.Namespace) -> int:
    from eegsine.training.generate import generate_and_evaluate

    result = generate_and_evaluate(config_from_ns(ns))
    out, r = result["generated"], result["evaluation"]
    print(f"wrote {out['n_images']} images and {out['grid']}")
    if r is not None:
        keys = ("n", "acc", "fid_domain", "fid_domain_class_mean", "is_domain", "lpips_domain", "ssim")
        keys += tuple(k for k in r["metric_keys"] if k not in keys)  # the standard networks' figures
        print(json.dumps({k: {m: v[m] for m in keys} for k, v in r["conditions"].items()}, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="generate images from EEG with a trained diffusion run",
                              description="Writes one PNG per sample and grid.png (a row per EEG trial, several "
                              "samples, ground truth rightmost when known) into RUN/generated (or --out).")
    p.add_argument("--run", required=True, help="a run folder of `eegsine train diffusion` (reads RUN/model)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--eeg", default=None,
                     help=".npy file, float array (n_chans, n_times) or (batch, n_chans, n_times)")
    src.add_argument("--split", default=None, choices=["train", "val", "test"], help="trials of the run's data set")
    p.add_argument("--out", default=None, help="output folder (default: RUN/generated)")
    p.add_argument("--samples", type=int, default=4, help="samples per EEG trial (columns of the grid)")
    p.add_argument("--max-trials", type=int, default=16, metavar="N",
                   help="at most this many trials (rows), classes interleaved")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--sampler", choices=["ddim", "dpm++"], default=None, help="default: the model's")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise and of the trials picked")
    for name in ("device", "mixed_precision"):  # their help and choices are the config's
        f = GenerateConfig.__dataclass_fields__[name]
        p.add_argument("--" + name.replace("_", "-"), default=f.default, help=f.metadata["help"].replace("%", "%%"),
                       **({"choices": ["no", "bf16", "fp16"]} if name == "mixed_precision" else {}))
    p.add_argument("--evaluate", action="store_true", help="--split only: also score image quality vs baselines "
                   "(domain-CNN fid/is/lpips, n-way accuracy, SSIM; metrics.json 'generation', generation.md)")
    p.add_argument("--eval-trials", type=int, default=500, metavar="N", help="--evaluate: trials scored")
    p.add_argument("--n-boot", type=int, default=200, metavar="N", help="--evaluate: bootstrap resamples for the CIs")
    p.add_argument("--feature-net", default=None, metavar="FILE.onnx",
                   help="--evaluate: an Inception-v3-style network as ONNX (one image input (N, 3, H, W); outputs "
                   "'features' (N, D) and optionally 'logits' (N, K)): adds fid_NAME and is_NAME, NAME from its "
                   "metadata eegsine.name or the file stem; images resized bilinearly to its H x W and mapped to "
                   "its metadata eegsine.input_range ('0,1' or '-1,1', default '-1,1')")
    p.add_argument("--lpips-net", default=None, metavar="FILE.onnx",
                   help="--evaluate: an LPIPS network as ONNX (two image inputs, per-pair distances (N,)): adds "
                   "lpips_NAME, generated vs ground-truth image")
    p.add_argument("--classifier-net", default=None, metavar="FILE.onnx",
                   help="--evaluate: an image classifier as ONNX (one image input, output 'logits' (N, K)): adds "
                   "acc_NAME, its n-way top-1 over the data set's classes")
    p.add_argument("--classifier-classes", default=None, metavar="FILE.json",
                   help="--classifier-net: JSON object {class name: logit index} (EEGCVPR40: WordNet id -> "
                   "ImageNet index, e.g. {\"n02951358\": 472}); not needed when K equals the number of classes")
    p.set_defaults(func=_run)
