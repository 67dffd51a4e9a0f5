"""What ``eegsine export`` does, as one library call: trained runs -> FP32 (+ INT8, + TensorRT) bundle, verified.

:func:`export_runs` takes the typed configs (:class:`~eegsine.export.configs.BundleConfig`,
:class:`~eegsine.export.tensorrt.TRTConfig`, :class:`~eegsine.export.configs.VerifyConfig`) and the run
folders; the command line and the pipeline's export/verify stages both call it. Exit codes: 0 ok, 1 a
verification gate failed (named on stderr).
"""
from __future__ import annotations

import sys
from pathlib import Path

from eegsine.errors import UserError
from eegsine.export.bundle import check_out_dir, classifier_item, eeg_run_items, export_bundle, run_eeg_data
from eegsine.export.configs import BundleConfig, VerifyConfig
from eegsine.export.tensorrt import TRTConfig, build_bundle_engines, require_trt
from eegsine.export.verify import verify_bundle
from eegsine.models.protocol import model_folder, read_provenance
from eegsine.runtime.records import load_records


def export_runs(out: str | Path, cfg: BundleConfig, trt_cfg: TRTConfig | None = None,
                vcfg: VerifyConfig | None = None, classifier: str | Path | None = None,
                eeg_run: str | Path | None = None, trt: bool = False, verify: bool = False,
                verify_only: bool = False) -> int:
    """Export ``classifier`` and/or ``eeg_run`` into the bundle ``out`` (``verify_only``: verify an existing
    one against its runs instead); ``trt`` builds TensorRT engines, ``verify`` runs the FP32-vs-INT8 gates.
    Returns the exit code: 1 when a gate failed (INT8 golden-set gates or verification)."""
    trt_cfg, vcfg = trt_cfg or TRTConfig(), vcfg or VerifyConfig()
    classifier, eeg_run = (str(p) if p else None for p in (classifier, eeg_run))
    if not classifier and not eeg_run:
        raise UserError("export: give --classifier RUN and/or --eeg-run RUN")
    if verify_only:
        eeg_set = _eeg_data(eeg_run, cfg) if eeg_run else None
        result = verify_bundle(out, vcfg, classifier_run=classifier, eeg_set=eeg_set, eeg_run=eeg_run)
        return report_verification(result, out)
    if trt:
        require_trt()  # before any work: exit 2 with the reason
    if verify and not cfg.int8:
        raise UserError("export: --verify compares FP32 with INT8; add --int8")
    check_out_dir(out, cfg.overwrite)
    items, generation, sources, clf, eeg_set = [], None, {}, None, None
    if classifier:
        clf = classifier_item(classifier, cfg)
        items.append(clf)
        sources["classifier"] = str(Path(classifier).resolve())
    if eeg_run:
        more, generation, eeg_set = eeg_run_items(eeg_run, cfg)
        items.extend(more)
        sources["eeg_run"] = str(Path(eeg_run).resolve())
    manifest = export_bundle(items, out, cfg, generation=generation, sources=sources)
    print(f"bundle written: {out} ({', '.join(manifest['models'])}; "
          f"{sum(f['bytes'] for f in manifest['files'].values()) / 1e6:.2f} MB)")
    if trt:
        build_bundle_engines(out, trt_cfg, classifier_model=clf.module if clf is not None else None)
    if cfg.int8:
        rec = load_records(out)[-1]
        if not rec["passed"]:
            print(f"eegsine export: INT8 failed its golden-set gates on this host ({rec['host']['isa_class']}): "
                  f"{'; '.join(g['gate'] for g in rec['gates'] if not g['passed'])}", file=sys.stderr)
            return 1
    if not verify:
        return 0
    return report_verification(verify_bundle(out, vcfg, classifier_run=classifier, eeg_set=eeg_set,
                                             eeg_run=eeg_run), out)


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


def _eeg_data(eeg_run: str, cfg: BundleConfig):
    """--verify-only: the EEG set the run's model was trained on (``--eeg-data`` overrides)."""
    folder = model_folder(eeg_run)
    return run_eeg_data(read_provenance(folder), folder, cfg.eeg_data)
