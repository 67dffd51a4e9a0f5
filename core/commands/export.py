"""``eegsine export`` (alias ``eegsine-export``): trained runs -> FP32 (+ INT8, + TensorRT) bundle, verified.

Give a classifier run and/or an EEG-to-image run and an output folder; ``--int8`` adds the INT8 files
(``--target`` picks the INT8 form), ``--verify`` proves INT8 against FP32 on the golden sets, ``--trt``
builds TensorRT engines on an NVIDIA GPU. The grouped options below are the export settings
(``--export-*``), the INT8 settings (``--quant-*``), TensorRT's (``--trt-*``) and the gates (``--verify-*``).
Exit codes: 0 ok, 1 a verification gate failed (named on stderr), 2 bad input / TensorRT unavailable.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eegsine.config import add_config_args, config_from_args, help_text
from eegsine.errors import UserError
from eegsine.export.configs import BundleConfig, VerifyConfig
from eegsine.export.tensorrt import TRTConfig, build_bundle_engines, require_trt
from eegsine.models.protocol import model_folder, read_provenance
from eegsine.runtime.records import load_records


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


def run(ns: argparse.Namespace) -> int:
    from eegsine.export.bundle import BundleConfig, check_out_dir, classifier_item, eeg_run_items, export_bundle
    from eegsine.export.verify import VerifyConfig, verify_bundle

    cfg = config_from_args(BundleConfig, ns)
    if ns.trt and cfg.quant.act_type == "auto":  # TensorRT's parser reads s8 Q/DQ only; ORT runs s8 files too
        cfg = cfg.replace(quant=cfg.quant.replace(act_type="s8"))
    trt_cfg = config_from_args(TRTConfig, ns, prefix="trt__")
    vcfg = config_from_args(VerifyConfig, ns, prefix="verify__")
    if not ns.classifier and not ns.eeg_run:
        raise UserError("export: give --classifier RUN and/or --eeg-run RUN")
    if ns.verify_only:
        eeg_set = _eeg_data(ns.eeg_run, cfg) if ns.eeg_run else None
        result = verify_bundle(ns.out, vcfg, classifier_run=ns.classifier, eeg_set=eeg_set, eeg_run=ns.eeg_run)
        return report_verification(result, ns.out)
    if ns.trt:
        require_trt()  # before any work: exit 2 with the reason
    if ns.verify and not cfg.int8:
        raise UserError("export: --verify compares FP32 with INT8; add --int8")
    check_out_dir(ns.out, cfg.overwrite)
    items, generation, sources, clf, eeg_set = [], None, {}, None, None
    if ns.classifier:
        item = classifier_item(ns.classifier, cfg)
        items.append(item)
        clf = item
        sources["classifier"] = str(Path(ns.classifier).resolve())
    if ns.eeg_run:
        more, generation, eeg_set = eeg_run_items(ns.eeg_run, cfg)
        items.extend(more)
        sources["eeg_run"] = str(Path(ns.eeg_run).resolve())
    manifest = export_bundle(items, ns.out, cfg, generation=generation, sources=sources)
    print(f"bundle written: {ns.out} ({', '.join(manifest['models'])}; "
          f"{sum(f['bytes'] for f in manifest['files'].values()) / 1e6:.2f} MB)")
    if ns.trt:
        build_bundle_engines(ns.out, trt_cfg, classifier_model=clf.module if clf is not None else None)
    if cfg.int8:
        rec = load_records(ns.out)[-1]
        if not rec["passed"]:
            print(f"eegsine export: INT8 failed its golden-set gates on this host ({rec['host']['isa_class']}): "
                  f"{'; '.join(g['gate'] for g in rec['gates'] if not g['passed'])}", file=sys.stderr)
            return 1
    if not ns.verify:
        return 0
    return report_verification(verify_bundle(ns.out, vcfg, classifier_run=ns.classifier, eeg_set=eeg_set,
                                             eeg_run=ns.eeg_run), ns.out)


def report_verification(result: dict, bundle_dir: str | Path) -> int:
    """Print each gate of a :func:`~eegsine.export.verify.verify_bundle` result; 1 if a gate failed."""
    for g in [g for sec in ("classifier", "eeg") for g in result.get(sec, {}).get("gates", [])]:
        print(f"  gate {'ok  ' if g['passed'] else 'FAIL'} {g['gate']}: {g['value']:.3f} {g['unit']} "
              f"(limit {g['limit']})")
    for reason in result.get("eeg", {}).get("gates_skipped", []):
        print(f"  gate SKIPPED {reason}")
    print(f"verification written: {Path(bundle_dir) / 'verify.md'}")
    if not result["passed"]:
        print(f"eegsine export: verification FAILED: {'; '.join(result['failed_gates'])}", file=sys.stderr)
        return 1
    return 0


def _eeg_data(eeg_run: str, cfg):
    """--verify-only: the EEG set the run's model was trained on (``--eeg-data`` overrides)."""
    from eegsine.export.bundle import run_eeg_data

    folder = model_folder(eeg_run)
    return run_eeg_data(read_provenance(folder), folder, cfg.eeg_data)
