"""Decision latency of ``eegsine stream``: marker in, label out, p50/p99 per (geometry, precision).

A recording (:func:`eegsine.data.recording.continuous_recording`) of synthetic-vep trials at
the bundle's geometry is written as FIF and replayed through :class:`~eegsine.runtime.stream.StreamRunner`
from ``file:`` in 32 ms chunks, as fast as the loop runs (``--fast``): each decision's latency is
then the work between the arrival of the chunk that completes its epoch and the label (causal
filter of that chunk, ring buffer, encoder, prototypes), with nothing waiting on the clock.
Two geometries: the pipeline's bundle (the tiny preset: 32 ch x 110 @ 250 Hz) and the
EEGCVPR40 size, 128 ch x 440 samples at 1 kHz with a 0.5-95 Hz band-pass + 50 Hz notch (5
sections): a bundle built here around the default encoder architecture at its initialisation
(latency does not depend on the weights; its prototypes are those of the generated trials).
"""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from eegsine.data import load_eeg
from eegsine.data.recording import recording_like
from eegsine.runtime import Bundle
from eegsine.runtime.contracts import eeg_encoder_contract
from eegsine.runtime.preprocessing import PreprocessingSpec
from eegsine.runtime.stream import StreamConfig, StreamRunner


def bundle_128x1k(work: Path, log: Callable[[str], Any] = print) -> Path:
    """An FP32 + INT8 EEG-encoder-only bundle at 128 ch x 440 @ 1 kHz with preprocessing and prototypes."""
    import torch

    from eegsine.export.bundle import BundleConfig, Item, class_prototypes, export_bundle
    from eegsine.export.onnx_export import ExportConfig
    from eegsine.models.diffusion import EEGToTokens
    from eegsine.models.eeg_encoder import EEGEncoderConfig, EEGTokenMapper, build_encoder

    out = work / "bundle_128x1k"
    if (out / "manifest.json").exists():
        return out
    ds = load_eeg("synthetic-vep", image_set="digits", n_chans=128, n_times=440, n_images_per_class=4,
                  trials_per_image=2, seed=0, progress=False)
    spec = PreprocessingSpec.design(ds.sfreq, ds.ch_names, l_freq=0.5, h_freq=95.0, order=4, notch=[50.0],
                                    units="uV", tmin=ds.preprocessing.tmin, tmax=ds.preprocessing.tmax,
                                    source="bench: synthetic-vep 128 x 440 @ 1 kHz + a 5-section causal filter")
    ecfg = EEGEncoderConfig(n_chans=128, n_times=440, sfreq=ds.sfreq)
    torch.manual_seed(0)
    module = EEGToTokens(build_encoder(ecfg).eval(), EEGTokenMapper(ecfg.emb_dim, 4, 64).eval()).eval()
    contract = eeg_encoder_contract(128, 440, ecfg.emb_dim, 4, 64, max_batch=16)
    x = ds.x.astype(np.float32)
    tr, va = ds.splits["train"], ds.splits["val"]
    info, arrays = class_prototypes(module, x[tr], ds.y[tr], ds.classes, x[va], ds.y[va])
    item = Item(contract, module, [{"eeg": x[tr][i:i + 8]} for i in range(0, min(len(tr), 32), 8)],
                [{"eeg": x[va][:8]}], {"preprocessing": spec.to_dict(), "prototypes": info},
                arrays={info["file"]: arrays})
    cfg = BundleConfig(export=ExportConfig(max_batch=16), int8=True, overwrite=True)
    export_bundle([item], out, cfg, log=log)
    return out


def _recording(spec: Any, work: Path, n_trials: int) -> Path:
    """synthetic-vep trials at the spec's geometry, as FIF, on the bundle's channel names (the bench measures
    time, not accuracy); one file per geometry and channel names."""
    names = hashlib.sha256(",".join(spec.ch_names).encode()).hexdigest()[:8]  # bundles of one geometry can
    path = work / f"rec_{spec.n_chans}x{spec.n_times}_{spec.sfreq:g}_{names}.fif"  # name their channels apart
    if not path.exists():
        recording_like(spec, path, n_trials)
    return path


def decision_rows(bundle_dir: Path, label: str, work: Path, threads: int, n_trials: int = 60,
                  log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """One row per precision the bundle's encoder has: p50/p90/p99 decision latency over ``n_trials`` markers."""
    bundle = Bundle(bundle_dir)
    entry = bundle.manifest["models"].get("eeg_encoder", {})
    if "preprocessing" not in entry or "prototypes" not in entry:
        return [{"model": label, "backend": "stream", "status": "unavailable",
                 "reason": f"{bundle_dir}: bundle has no preprocessing/prototypes (re-export)"}]

    spec = PreprocessingSpec.from_dict(entry["preprocessing"])
    rec = _recording(spec, work, n_trials)
    rows = []
    for precision in [p for p in ("fp32", "int8") if p in entry["files"]]:
        cfg = StreamConfig(source=f"file:{rec}", bundle=str(bundle_dir), precision=precision, fast=True, log="",
                           threads=threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # unproven-INT8 notes: the verify stage covers them
            s = StreamRunner(cfg, io.StringIO()).run()
        lat = s["latency_ms"] or {}
        rows.append({"model": label, "backend": f"stream-{precision}", "status": "ok", "precision": precision,
                     "threads": threads, "p50_ms": lat.get("p50"), "p90_ms": lat.get("p90"), "p99_ms": lat.get("p99"),
                     "iters": s["decisions"], "note": f"{spec.describe()}; {s['decisions']} markers, file replay "
                     f"(fast), 32 ms chunks; from the epoch's last chunk to the label"})
        log(f"  {label:22s} stream-{precision:5s} p50 {lat.get('p50', float('nan')):7.2f} ms  "
            f"p99 {lat.get('p99', float('nan')):7.2f} ms ({s['decisions']} decisions)")
    return rows
