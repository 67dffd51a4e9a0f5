"""``eegsine export`` (alias ``eegsine-export``): trained runs -> FP32 (+ INT8, + TensorRT) bundle, verified.

Give a classifier run and/or an EEG-to-image run and an output folder; ``--int8`` adds the INT8 files
(``--target`` picks the INT8 form), ``--verify`` proves INT8 against FP32 on the golden sets, ``--trt``
builds TensorRT engines on an NVIDIA GPU. The grouped options below are the export settings
(``--export-*``), the INT8 settings (``--quant-*``), TensorRT's (``--trt-*``) and the gates (``--verify-*``).
Exit codes: 0 ok, 1 a verification gate failed (named on stderr), 2 bad input / TensorRT unavailable.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from eegsine.config import add_config_args, config_from_args, help_text
from eegsine.export.configs import BundleConfig, VerifyConfig
from eegsine.export.tensorrt import TRTConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export runs to an ONNX / INT8 / TensorRT bundle and verify it",
                              description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classifier", metavar="RUN", help="classifier run folder (eegsine train classifier)")
    p.add_argument("--eeg-run", metavar="RUN", help="EEG->image diffusion run folder (with encoder/, unet/, vae/)")
    p.add_argument("--out", metavar="BUNDLE", required=True,
                   help="bundle folder to write (must not exist unless --overwrite)")
    p.add_argument("--act-type", dest="quant__act_type", choices=["s8", "u8"], default=None,
                   help="INT8 activations: s8 symmetric (TensorRT) or u8 (x86 ORT) (default: the target's)")
    p.add_argument("--target", dest="quant__target", choices=["portable", "x86-vnni", "tensorrt"], default=None,
                   help="INT8 target: portable (default; 7-bit weights, same accuracy on every CPU), x86-vnni (full "
                        "range, VNNI/AMX hosts only), tensorrt (symmetric Q/DQ for TensorRT)")
    p.add_argument("--trt", action="store_true", help="also build TensorRT engines (needs TensorRT and an NVIDIA GPU)")
    p.add_argument("--verify", action="store_true", help="verify FP32 vs INT8 after export; gates decide the exit code")
    p.add_argument("--verify-only", action="store_true",
                   help="verify an existing bundle (--out) against its runs without exporting again")
    # --target / --act-type are the names the docs use; the generated --quant-* twins stay accepted, unlisted
    add_config_args(p, BundleConfig, skip=("quant__target", "quant__act_type"))
    for flag, dest in (("--quant-target", "quant__target"), ("--quant-act-type", "quant__act_type")):
        p.add_argument(flag, dest=dest, default=None, help=argparse.SUPPRESS)  # values checked by Int8Config
    add_config_args(p, TRTConfig, prefix="trt__")
    add_config_args(p, VerifyConfig, prefix="verify__")
    p.set_defaults(func=run)


def kwargs_from_args(ns: argparse.Namespace) -> dict:
    """The command line as :func:`~eegsine.export.job.export_runs`' keyword arguments (the typed configs and runs)."""
    return {"out": ns.out, "cfg": config_from_args(BundleConfig, ns),
            "trt_cfg": config_from_args(TRTConfig, ns, prefix="trt__"),
            "vcfg": config_from_args(VerifyConfig, ns, prefix="verify__"), "classifier": ns.classifier,
            "eeg_run": ns.eeg_run, "trt": ns.trt, "verify": ns.verify, "verify_only": ns.verify_only}


def run(ns: argparse.Namespace) -> int:
    from eegsine.export.job import export_runs

    return export_runs(**kwargs_from_args(ns))


def report_verification(result: dict, bundle_dir: str | Path) -> int:
    """Print each gate of a verification result; 1 if a gate failed (:func:`eegsine.export.job.report_verification`)."""
    from eegsine.export.job import report_verification as report

    return report(result, bundle_dir)
