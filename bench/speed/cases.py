"""Benchmark cases built from trained runs and their export bundle.

Each case pairs the torch module behind an ONNX contract (the exact module that was
exported) with real inputs (test images, EEG trials, UNet inputs recorded on a real DDIM
trajectory) and the calibration feeds the export used, so INT8 variants quantized here are
the same recipe as the bundle's. ``eeg_encoder_128x440`` is the default encoder
architecture at EEGCVPR40 size (128 channels x 440 samples), exported here, because the
real-time target is stated per 128 x 440 trial while the tiny pipeline trains a 32 x 128
encoder; its weights are the architecture's initialisation (latency does not depend on them).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from eegsine.bench.speed.bench import BenchConfig, Case, run_bench, runtime_verdicts
from eegsine.errors import UserError
from eegsine.bench.speed.stream import bundle_128x1k, decision_rows
from eegsine.bench.speed.timing import time_callable
from eegsine.data import load_eeg, load_images
from eegsine.runtime import Bundle, EEGToImage
from eegsine.runtime.contracts import eeg_encoder_contract


def _batch(feeds: list[dict[str, np.ndarray]], n: int) -> dict[str, np.ndarray]:
    """Concatenate feeds until ``n`` rows, then cut to exactly ``n`` (keeps real data)."""
    keys = list(feeds[0])
    cat = {k: np.concatenate([f[k] for f in feeds]) for k in keys}
    rows = len(next(iter(cat.values())))
    if rows < n:
        reps = -(-n // rows)
        cat = {k: np.concatenate([v] * reps) for k, v in cat.items()}
    return {k: np.ascontiguousarray(v[:n]) for k, v in cat.items()}


def _engines(bundle: Any, model: str) -> dict[str, Path]:
    """TensorRT engines the bundle holds for ``model`` (``eegsine-export --trt``), by bench precision.

    The bundle's "fp32" engine is built from the float graph with FP16 enabled, hence "fp16" here.
    """
    found = bundle.manifest.get("engines", {}).get(model, {})
    names = {"int8": "int8", "fp32": "fp16"}
    return {names[p]: bundle.root / e["file"] for p, e in found.items() if p in names}


def _runtime(bundle: Any, model: str) -> dict[str, Any]:
    """The Case fields of the runtime's own rows: the bundle's INT8 file, this host's verdicts, the recorded choice."""
    passing, recorded = runtime_verdicts(bundle, model)
    return {"onnx_int8": bundle.model_path(model, "int8") if bundle.has(model, "int8") else None,
            "passing": passing, "recorded": recorded}


def _accuracy_metric(images: np.ndarray, labels: np.ndarray, max_batch: int) -> Callable:
    def metric(call: Callable[[dict[str, np.ndarray]], list[np.ndarray]]) -> dict[str, float]:
        preds = []
        for s in range(0, len(images), max_batch):
            preds.append(call({"images": np.ascontiguousarray(images[s:s + max_batch])})[0].argmax(1))
        return {"accuracy": float((np.concatenate(preds) == labels).mean()), "accuracy_n": int(len(labels))}
    return metric


def classifier_cases(run: Path, bundle: Any, cfg: BenchConfig, work: Path) -> list[Case]:
    from eegsine.export.bundle import BundleConfig, classifier_item

    item = classifier_item(run, BundleConfig())
    images = load_images(item.info["dataset"], **item.module.provenance.data_options)
    test_x, test_y = images.test_x[: cfg.eval_images], images.test_y[: cfg.eval_images]
    max_b = min(v[2] for v in item.contract.dims.values())
    b1 = {"images": np.ascontiguousarray(test_x[:1])}
    bn = {"images": np.ascontiguousarray(test_x[: min(cfg.batch, max_b)])}
    cases = [Case("classifier", item.module, item.contract.input_names, b1, bn,
                  bundle.model_path("classifier", "fp32"), item.calibration, _engines(bundle, "classifier"),
                  item.contract, task_metric=_accuracy_metric(test_x, test_y, max_b), **_runtime(bundle, "classifier"))]
    head = item.module.head
    if item.module.cfg.head == "sine":
        cases.append(sine_head_case(head, item, cfg, work))
    return cases


def sine_head_case(head: Any, item: Any, cfg: BenchConfig, work: Path) -> Case:
    """The classifier's own sine head alone, on its real penultimate features.

    The head is a kernels ``SineHead`` (GEMM + bias + sine).
    """
    import torch

    from eegsine.kernels.trt_plugin import export_onnx_head

    model = item.module
    with torch.no_grad():
        feats = [model.features(torch.from_numpy(f["images"])).numpy() for f in item.calibration[:4]]
    feats = np.concatenate(feats).astype(np.float32)
    path = work / "sine_head.fp32.onnx"
    export_onnx_head(head, torch.from_numpy(feats[:2]), path)
    calib = [{"x": feats[i:i + 32]} for i in range(0, len(feats), 32)]
    return Case("sine_head", head, ["x"], {"x": feats[:1]}, {"x": _batch(calib, cfg.batch)["x"]}, path, calib)


def eeg_cases(eeg_run: Path, bundle: Any, cfg: BenchConfig) -> tuple[list[Case], dict[str, Any]]:
    from eegsine.export.bundle import BundleConfig, eeg_run_items

    bcfg = BundleConfig(calib_trials=8, calib_steps=bundle.manifest.get("generation", {}).get("steps", 25))
    items, generation, eeg_set = eeg_run_items(eeg_run, bcfg)  # the data the model was trained on
    cases = []
    for item in items:
        name = item.contract.name
        max_b = min(v[2] for v in item.contract.dims.values())
        b1 = {k: np.ascontiguousarray(v[:1]) for k, v in item.holdout[0].items()}
        bn = _batch(item.holdout + item.calibration, min(cfg.batch, max_b))
        cases.append(Case(name, item.module, item.contract.input_names, b1, bn, bundle.model_path(name, "fp32"),
                          item.calibration, _engines(bundle, name), item.contract, **_runtime(bundle, name)))
    test = eeg_set.splits["test"]
    return cases, {"eeg_set": eeg_set, "test_eeg": eeg_set.x[test][:16]}


def encoder_128x440_case(cfg: BenchConfig, work: Path) -> Case:
    import torch

    from eegsine.export.onnx_export import export_onnx
    from eegsine.models.diffusion import EEGToTokens
    from eegsine.models.eeg_encoder import EEGEncoderConfig, EEGTokenMapper, build_encoder

    ds = load_eeg("synthetic-vep", image_set="digits", n_chans=128, n_times=440, n_images_per_class=4,
                  trials_per_image=2, seed=0)
    ecfg = EEGEncoderConfig(n_chans=128, n_times=440, sfreq=float(ds.sfreq))
    torch.manual_seed(0)
    enc = build_encoder(ecfg).eval()
    mapper = EEGTokenMapper(ecfg.emb_dim, 4, 64).eval()
    module = EEGToTokens(enc, mapper).eval()
    contract = eeg_encoder_contract(128, 440, ecfg.emb_dim, 4, 64, max_batch=64)
    path = work / "eeg_encoder_128x440.fp32.onnx"
    if not path.exists():
        export_onnx(module, contract, path)
    x = ds.x.astype(np.float32)
    calib = [{"eeg": x[i:i + 8]} for i in range(0, min(len(x), 64), 8)]
    return Case("eeg_encoder_128x440", module, contract.input_names, {"eeg": x[:1]},
                {"eeg": _batch(calib, min(cfg.batch, 64))["eeg"]}, path, calib)


def generation_rows(model_dir: Path, bundle_dir: Path, test_eeg: np.ndarray, cfg: BenchConfig,
                    log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """Full EEG-to-image generation at batch 1 (``cfg.generation_steps`` DDIM steps, the bundle's guidance)."""
    import torch

    from eegsine.models.diffusion import EEGDiffusion

    rows: list[dict[str, Any]] = []
    eeg1 = np.ascontiguousarray(test_eeg[:1].astype(np.float32))
    model = EEGDiffusion.from_pretrained(model_dir).requires_grad_(False)
    dcfg = model.cfg
    model.eval()
    steps = cfg.generation_steps
    guidance = float(dcfg.guidance)

    def torch_gen() -> Any:
        with torch.inference_mode():
            emb = model.embed(torch.from_numpy(eeg1))
            return model.sample(emb, steps=steps, guidance=guidance, sampler="ddim", seed=0)

    iters = max(3, cfg.iters // 10)
    base = None
    for backend, fn in [("torch-eager", torch_gen)] + [
            (f"runtime-{p}", (lambda g: lambda: g(eeg1, num_inference_steps=steps, guidance_scale=guidance,
                                                  generator=0))(EEGToImage(bundle_dir, precision=p,
                                                                           threads=cfg.threads)))
            for p in ("fp32", "int8")]:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a backend that cannot run is recorded, not fatal
            rows.append({"model": "generation", "backend": backend, "status": "unavailable", "reason": str(e)[:200]})
            continue
        t = time_callable(fn, 1, iters, cfg.max_seconds * 3)
        row = {"model": "generation", "backend": backend, "status": "ok", "threads": cfg.threads,
               "precision": "int8" if backend.endswith("int8") else "fp32", "p50_ms": t.p50_ms, "p90_ms": t.p90_ms,
               "p99_ms": t.p99_ms, "iters": t.n, "batch_large": 1, "throughput_per_s": 1e3 / t.p50_ms,
               "note": f"{steps} DDIM steps, guidance {guidance:g}, batch 1"}
        if backend == "torch-eager":
            base = row
        if base is not None:
            row["speedup_p50_vs_eager"] = round(base["p50_ms"] / row["p50_ms"], 2)
        rows.append(row)
        log(f"  generation   {backend:22s} p50 {t.p50_ms:8.1f} ms")
    return rows


def build_cases(cfg: BenchConfig, work: Path, bundle_dir: Path | None, classifier: Path | None,
                eeg_run: Path | None, log: Callable[[str], Any] = print) -> tuple[list[Case], list[dict[str, Any]]]:
    cases: list[Case] = []
    extra: list[dict[str, Any]] = []
    bundle = Bundle(bundle_dir) if bundle_dir else None
    if bundle is None and (classifier or eeg_run):
        raise UserError("bench: --bundle (or --pipeline) is needed to benchmark the ONNX backends")
    t0 = time.perf_counter()
    if classifier and any(m in cfg.models for m in ("classifier", "sine_head")):
        cases += classifier_cases(classifier, bundle, cfg, work)
    if eeg_run and any(m in cfg.models for m in ("eeg_encoder", "unet", "vae_decoder", "generation")):
        more, info = eeg_cases(eeg_run, bundle, cfg)
        cases += more
        if "generation" in cfg.models:
            from eegsine.export.bundle import diffusion_model_dir

            extra += generation_rows(diffusion_model_dir(eeg_run), bundle_dir, info["test_eeg"], cfg, log)
    if "eeg_encoder_128x440" in cfg.models:
        cases.append(encoder_128x440_case(cfg, work))
    if "decision" in cfg.models and bundle is not None and "eeg_encoder" in bundle.manifest["models"]:
        extra += decision_rows(bundle_dir, "decision", work, cfg.threads, log=log)
    if "decision_128x440" in cfg.models:
        extra += decision_rows(bundle_128x1k(work, log=lambda *a: None), "decision_128x440", work, cfg.threads, log=log)
    log(f"bench: {len(cases)} cases prepared in {time.perf_counter() - t0:.1f} s")
    return cases, extra


def bench_folders(cfg: BenchConfig, out: str | Path | None = None, pipeline: str | Path | None = None,
                  bundle: str | Path | None = None, classifier: str | Path | None = None,
                  eeg_run: str | Path | None = None, build: Callable[..., Any] | None = None) -> dict[str, Any]:
    """What ``eegsine bench`` does: benchmark a pipeline folder (``pipeline``: its bundle and the classifier and
    EEG runs it has) and/or explicit runs and a bundle into ``out``; returns :func:`run_bench`'s result.
    ``build``: what makes the cases (default :func:`build_cases`)."""
    bundle, clf, eeg = (Path(p) if p else None for p in (bundle, classifier, eeg_run))
    if pipeline:
        root = Path(pipeline)
        if not root.is_dir():
            raise UserError(f"{root}: pipeline folder does not exist")
        # what the pipeline made: an EEG-only run (--preset paper --stages encoder ...) has no classifier
        bundle = bundle or root / "bundle"
        clf = clf or (root / "classifier" / "sine" if (root / "classifier" / "sine").exists() else None)
        eeg = eeg or (root / "diffusion" if (root / "diffusion").exists() else None)
    for what, p in (("bundle", bundle), ("classifier run", clf), ("EEG run", eeg)):
        if p is not None and not p.exists():
            raise UserError(f"{p}: {what} does not exist")
    out = Path(out or (Path(pipeline) / "bench" if pipeline else "bench-results"))
    cases, extra = (build or build_cases)(cfg, out / "models", bundle, clf, eeg)
    return run_bench(cases, cfg, out, extra_rows=extra)
