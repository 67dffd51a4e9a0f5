"""``eegsine generate --run RUN --eeg FILE|--split test``: images from EEG, the source's grid, optional scoring."""
from __future__ import annotations

import argparse
import json


def _run(ns: argparse.Namespace) -> int:
    from eegsine.training.generate import evaluate_run, generate

    out = generate(ns.run, eeg_file=ns.eeg, split=ns.split, out_dir=ns.out, samples=ns.samples,
                   max_trials=ns.max_trials, steps=ns.steps, guidance=ns.guidance, sampler=ns.sampler, seed=ns.seed)
    print(f"wrote {out['n_images']} images and {out['grid']}")
    if ns.evaluate:
        r = evaluate_run(ns.run, split=ns.split or "test", max_trials=ns.eval_trials, steps=ns.steps,
                         guidance=ns.guidance, sampler=ns.sampler, n_boot=ns.n_boot, seed=ns.seed)
        print(json.dumps({k: {m: v[m] for m in ("n", "acc", "fid_domain", "fid_domain_class_mean", "is_domain",
                                                  "lpips_domain", "ssim")} for k, v in r["conditions"].items()}, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="generate images from EEG with a trained diffusion run",
                              description="Writes one PNG per sample and grid.png (a row per EEG trial, several "
                              "samples, ground truth rightmost when known) into RUN/generated (or --out).")
    p.add_argument("--run", required=True, help="a run folder of `eegsine train diffusion` (reads RUN/model)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--eeg", default=None, help=".npy file, float array (n_chans, n_times) or (batch, n_chans, n_times)")
    src.add_argument("--split", default=None, choices=["train", "val", "test"], help="trials of the run's data set")
    p.add_argument("--out", default=None, help="output folder (default: RUN/generated)")
    p.add_argument("--samples", type=int, default=4, help="samples per EEG trial (columns of the grid)")
    p.add_argument("--max-trials", type=int, default=16, metavar="N", help="at most this many trials (rows), classes interleaved")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--sampler", choices=["ddim", "dpm++"], default=None, help="default: the model's")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise and of the trials picked")
    p.add_argument("--evaluate", action="store_true", help="--split only: also score image quality vs baselines "
                   "(domain-CNN fid/is/lpips, n-way accuracy, SSIM; metrics.json 'generation', generation.md)")
    p.add_argument("--eval-trials", type=int, default=500, metavar="N", help="--evaluate: trials scored")
    p.add_argument("--n-boot", type=int, default=200, metavar="N", help="--evaluate: bootstrap resamples for the CIs")
    p.set_defaults(func=_run)
