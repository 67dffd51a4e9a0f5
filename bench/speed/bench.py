"""``eegsine-bench``: every exportable model on every backend present, side by side.

Per (model, backend): latency p50/p90/p99 at batch 1 (fixed warm-up, fixed thread count),
throughput at a larger batch, resident-memory growth, file size, and the output's
agreement with torch FP32 on the same inputs (SQNR in dB; for the classifier, top-1
accuracy on real test images too). Ratios against torch eager are computed from numbers
taken in this same run: these machines are noisy, so ratios are the figures to compare.

INT8 rows, one per quantization target (:data:`INT8_BACKENDS`), are quantized here from the
bundle's FP32 ONNX with the same real calibration feeds the export used, so they differ only
in scheme: ``portable`` (7-bit weights, s8 activations: the default, ISA-independent),
``x86-vnni`` (full-range weights, s8 activations) and ``u8`` (full-range weights, u8
activations: ORT's classic x86 fast path). Which one is accurate *and* fast depends on the
CPU's int8 instructions, so the table header names the host's ISA class and int8 features
(:mod:`eegsine.runtime.isa`), and every row carries latency and size against ORT FP32 measured in
the same run: INT8 is not assumed to be faster.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from eegsine.bench.speed.backends import (BackendUnavailable, Runner, make_onnxruntime, make_openvino, make_tensorrt,
                                          make_torch_compile, make_torch_eager)
from eegsine.bench.report.doc import md_table
from eegsine.bench.speed.timing import measure_memory, peak_rss_mb, set_threads, time_callable
from eegsine.config import Config, usable_cpus
from eegsine.errors import UserError
from eegsine.export.quantize import Int8Config, quantize, sqnr
from eegsine.io import atomic_write_text, write_json
from eegsine.bench.speed.targets import check_targets
from eegsine.runtime.isa import describe, this_host
from eegsine.runtime.records import load_records, record_backend
from eegsine.runtime.tuning import TUNE_KIND, choose
from eegsine.runtime.verify import combination_passed

# "decision", "decision_128x440": eegsine stream's marker-to-label latency (eegsine.bench.speed.stream), at the
# bundle's geometry and at 128 ch x 440 @ 1 kHz
MODELS = ("eeg_encoder", "eeg_encoder_128x440", "unet", "vae_decoder", "generation", "classifier", "sine_head",
          "decision", "decision_128x440")
# bench backend -> (Int8Config.target, act_type)
INT8_BACKENDS = {"onnxruntime-int8-portable": ("portable", "s8"), "onnxruntime-int8-x86-vnni": ("x86-vnni", "s8"),
                 "onnxruntime-int8-u8": ("x86-vnni", "u8")}
# the runtime's own (backend, precision) of a bundle file -> its bench row: the bundle's FP32 and INT8 files as the
# runtime runs them, on each peer backend (the INT8_BACKENDS rows are re-quantized here, other files)
RUNTIME_ROWS = {"onnxruntime-fp32": ("ort", "fp32"), "onnxruntime-int8": ("ort", "int8"),
                "openvino-fp32": ("openvino", "fp32"), "openvino-int8": ("openvino", "int8")}
BACKENDS = ("torch-eager", "torch-compile", "onnxruntime-fp32", "onnxruntime-int8", *INT8_BACKENDS, "openvino-fp32",
            "openvino-int8", "tensorrt-fp16", "tensorrt-int8", "triton")


@dataclasses.dataclass
class BenchConfig(Config):
    KIND = "bench"
    threads: int = dataclasses.field(default_factory=lambda: min(2, usable_cpus()), metadata={
        "help": "intra-op threads for torch and ONNX Runtime (fixed; 2, or 1 where the process may use one CPU)"})
    warmup: int = dataclasses.field(default=5, metadata={"help": "untimed calls before timing"})
    iters: int = dataclasses.field(default=50, metadata={"help": "timed calls at batch 1"})
    batch: int = dataclasses.field(default=32, metadata={"help": "batch size for the throughput figure"})
    max_seconds: float = dataclasses.field(default=8.0, metadata={"help": "time cap per (model, backend, batch)"})
    models: list[str] = dataclasses.field(default_factory=lambda: list(MODELS), metadata={
        "help": "models benchmarked (those whose run or bundle is given): " + ", ".join(MODELS), "metavar": "MODEL"})
    backends: list[str] = dataclasses.field(default_factory=lambda: list(BACKENDS), metadata={
        "help": "backends tried (one this machine lacks gives a row marked unavailable): " + ", ".join(BACKENDS),
        "metavar": "BACKEND"})
    generation_steps: int = dataclasses.field(default=25, metadata={"help": "DDIM steps of the full generation"})
    eval_images: int = dataclasses.field(default=1000, metadata={
        "help": "test images for the classifier accuracy column"})

    def validate(self) -> None:
        for m in self.models:
            if m not in MODELS:
                raise UserError(f"BenchConfig.models: unknown model {m!r} (known: {', '.join(MODELS)})")
        for b in self.backends:
            if b not in BACKENDS:
                raise UserError(f"BenchConfig.backends: unknown backend {b!r} (known: {', '.join(BACKENDS)})")
        for name in ("threads", "iters", "batch", "generation_steps", "eval_images"):
            if getattr(self, name) < 1:
                raise UserError(f"BenchConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise UserError(f"BenchConfig.warmup: must be >= 0, got {self.warmup}")
        if self.max_seconds <= 0:
            raise UserError(f"BenchConfig.max_seconds: must be > 0, got {self.max_seconds}")


@dataclasses.dataclass
class Case:
    """One model to benchmark: the torch module with the ONNX contract's interface, and its ONNX files."""

    model: str
    module: Any                                  # torch module taking the contract's inputs in order
    input_names: list[str]
    feeds_b1: dict[str, np.ndarray]              # batch-1 inputs (real data where the model has it)
    feeds_bn: dict[str, np.ndarray]              # larger-batch inputs
    onnx_fp32: Path | None = None
    calibration: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)
    engines: dict[str, Path] = dataclasses.field(default_factory=dict)  # precision -> engine (GPU machines)
    contract: Any = None                         # ExportContract, for TensorRT buffers
    task_metric: Callable[[Callable[[dict[str, np.ndarray]], list[np.ndarray]]], dict[str, float]] | None = None
    onnx_int8: Path | None = None                # the bundle's INT8 file, as the runtime ships it
    # this host's verdicts on the bundle's files ((backend, precision) -> gates passed) and the runtime's recorded
    # choice (backend, precision, threads), from verifications.json (:func:`runtime_verdicts`)
    passing: dict[tuple[str, str], bool] = dataclasses.field(default_factory=dict)
    recorded: tuple[str, str, int] | None = None


def _int8_runner(case: Case, backend: str, work: Path, threads: int) -> Runner:
    if case.onnx_fp32 is None:
        raise BackendUnavailable("no FP32 ONNX model")
    if not case.calibration:
        raise BackendUnavailable("no calibration data")
    target, act = INT8_BACKENDS[backend]
    path = work / f"{case.model}.{backend}.onnx"
    if not path.exists():
        quantize(case.onnx_fp32, path, Int8Config(target=target, act_type=act), case.calibration)
    return make_onnxruntime(path, threads, backend, "int8")


def make_runner(case: Case, backend: str, cfg: BenchConfig, work: Path) -> Runner:
    if backend == "torch-eager":
        return make_torch_eager(case.module, case.input_names)
    if backend == "torch-compile":
        return make_torch_compile(case.module, case.input_names, case.feeds_b1, case.feeds_bn)
    if backend in RUNTIME_ROWS:
        precision = RUNTIME_ROWS[backend][1]
        path = case.onnx_fp32 if precision == "fp32" else case.onnx_int8
        if path is None:
            raise BackendUnavailable(f"no {precision.upper()} ONNX file in the bundle")
        if backend.startswith("openvino"):
            return make_openvino(path, cfg.threads, backend, precision)
        return make_onnxruntime(path, cfg.threads, backend, precision)
    if backend in INT8_BACKENDS:
        return _int8_runner(case, backend, work, cfg.threads)
    if backend.startswith("tensorrt"):
        precision = backend.split("-", 1)[1]
        return make_tensorrt(case.engines.get(precision), case.contract, backend, precision)
    if backend == "triton":
        raise BackendUnavailable("the Triton sine head runs on CUDA only; "
                                 "on a GPU: python -m eegsine.bench.speed.kernels")
    raise BackendUnavailable(f"unknown backend {backend}")


def bench_case(case: Case, cfg: BenchConfig, work: Path, log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    reference: list[np.ndarray] | None = None
    for backend in cfg.backends:
        row: dict[str, Any] = {"model": case.model, "backend": backend, "threads": cfg.threads,
                               "batch_large": int(next(iter(case.feeds_bn.values())).shape[0])}
        try:
            t0 = time.perf_counter()
            runner = make_runner(case, backend, cfg, work)
            row["setup_s"] = round(time.perf_counter() - t0, 2)
        except BackendUnavailable as e:
            row.update(status="unavailable", reason=str(e))
            rows.append(row)
            log(f"  {case.model:12s} {backend:22s} unavailable: {e}")
            continue
        if backend == "torch-eager":
            reference = runner.call(case.feeds_bn)
        b1 = time_callable(lambda: runner.call(case.feeds_b1), cfg.warmup, cfg.iters, cfg.max_seconds)
        bn = time_callable(lambda: runner.call(case.feeds_bn), max(1, cfg.warmup // 2), max(3, cfg.iters // 5),
                           cfg.max_seconds)
        mem = measure_memory(lambda: runner.call(case.feeds_bn))
        row.update(status="ok", precision=runner.precision, note=runner.note,
                   file_mb=None if runner.file_bytes is None else round(runner.file_bytes / 2**20, 3),
                   p50_ms=b1.p50_ms, p90_ms=b1.p90_ms, p99_ms=b1.p99_ms, iters=b1.n,
                   throughput_per_s=row["batch_large"] / (bn.p50_ms / 1e3), mem_growth_mb=round(mem, 1))
        if reference is not None:
            outs = runner.call(case.feeds_bn)
            row["sqnr_db_vs_torch"] = round(min(sqnr(r, o) for r, o in zip(reference, outs)), 2)
        if case.task_metric is not None:
            row.update(case.task_metric(runner.call))
        rows.append(row)
        log(f"  {case.model:12s} {backend:22s} p50 {b1.p50_ms:8.3f} ms  p99 {b1.p99_ms:8.3f} ms  "
            f"{row['throughput_per_s']:9.1f}/s at batch {row['batch_large']}")
    eager = next((r for r in rows if r["backend"] == "torch-eager" and r.get("status") == "ok"), None)
    fp32 = next((x for x in rows if x["backend"] == "onnxruntime-fp32" and x.get("status") == "ok"), None)
    for r in rows:
        if eager and r.get("status") == "ok":
            r["speedup_p50_vs_eager"] = round(eager["p50_ms"] / r["p50_ms"], 2)
            r["throughput_vs_eager"] = round(r["throughput_per_s"] / eager["throughput_per_s"], 2)
        if fp32 and r.get("status") == "ok" and r.get("file_mb") and fp32.get("file_mb"):
            r["size_vs_ort_fp32"] = round(fp32["file_mb"] / r["file_mb"], 2)
        if fp32 and r.get("status") == "ok" and r["backend"] in (*INT8_BACKENDS, *RUNTIME_ROWS):
            r["speedup_p50_vs_ort_fp32"] = round(fp32["p50_ms"] / r["p50_ms"], 2)
    mark_choices(rows, case)
    return rows


def mark_choices(rows: list[dict[str, Any]], case: Case) -> None:
    """``choice`` on the runtime's rows: ``recorded`` (the runtime's default on this host, ``eegsine-verify --tune``)
    and ``fastest passing`` (the fastest row of this run among the bundle's files whose gates passed here)."""
    ok = [r for r in rows if r.get("status") == "ok" and r["backend"] in RUNTIME_ROWS]
    for r in ok:
        r["gates"] = {True: "passed", False: "failed"}.get(case.passing.get(RUNTIME_ROWS[r["backend"]]), "unverified")
    passing = [r for r in ok if r["gates"] == "passed"]
    fastest = min(passing, key=lambda r: r["p50_ms"]) if passing else None
    for r in ok:
        marks = []
        if case.recorded is not None and RUNTIME_ROWS[r["backend"]] == case.recorded[:2]:
            marks.append(f"recorded ({case.recorded[2]} thread{'s' if case.recorded[2] > 1 else ''})")
        if r is fastest:
            marks.append("fastest passing")
        if marks:
            r["choice"] = ", ".join(marks)


def runtime_verdicts(bundle: Any, model: str) -> tuple[dict[tuple[str, str], bool], tuple[str, str, int] | None]:
    """This host's verdicts on ``model``'s bundle files and the runtime's recorded choice: from the tune record
    where there is one (its candidates carry the gates of each backend and precision), else from the newest
    verification record of each backend on this ISA class that judged these files."""
    cands = bundle.tuned(model)
    if cands:
        chosen = choose(cands)
        verdicts = {(c.backend, c.precision): c.passed for c in cands}
        return verdicts, None if chosen is None else (chosen.backend, chosen.precision, chosen.threads)
    files = {rel: bundle.manifest["files"][rel]["sha256"] for rel in bundle.manifest["models"][model]["files"].values()}
    passing: dict[tuple[str, str], bool] = {}
    for r in reversed(load_records(bundle.root)):
        if (r.get("kind") == TUNE_KIND or r["host"]["isa_class"] != this_host()["isa_class"]
                or any(r["files"].get(rel) != sha for rel, sha in files.items())):
            continue
        for p in bundle.manifest["models"][model]["files"]:
            passing.setdefault((record_backend(r), p), combination_passed(r, model, p))
    return passing, None


# -- output ---------------------------------------------------------------------------------------
COLUMNS = ("model", "backend", "status", "precision", "threads", "choice", "gates", "p50_ms", "p90_ms", "p99_ms",
           "speedup_p50_vs_eager", "speedup_p50_vs_ort_fp32",
           "batch_large", "throughput_per_s", "throughput_vs_eager", "mem_growth_mb", "file_mb", "size_vs_ort_fp32",
           "sqnr_db_vs_torch", "accuracy", "reason")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def render_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    cols = [c for c in COLUMNS if any(c in r for r in rows)]
    lines = [f"Benchmark on {meta['machine']}; {meta['threads']} intra-op thread(s) fixed for torch and ONNX Runtime; "
             f"batch-1 latency over up to {meta['iters']} calls after {meta['warmup']} warm-up calls; ratios vs torch "
             "eager and vs ORT FP32 measured in this run. SQNR: output agreement with torch FP32 on the same inputs.",
             "",
             f"INT8 host: {meta.get('int8_host', '?')}. INT8 rows: portable = 7-bit weights + s8 activations (the "
             "default target, same accuracy on every CPU); x86-vnni = full-range weights + s8; u8 = full-range "
             "weights + u8 activations. Full-range rows lose accuracy on x86 CPUs without VNNI (int16 saturation).", "",
             "onnxruntime-fp32/-int8 and openvino-fp32/-int8: the bundle's own files as the runtime runs them on each "
             "peer backend (OpenVINO with the f32 hint, unpinned). gates: their golden-set gates on this host "
             "(eegsine-verify [--backend openvino | --tune]). choice: recorded = the runtime's default here "
             "(eegsine-verify --tune, at its recorded thread count); fastest passing = the fastest of those rows in "
             "this run whose gates passed.", ""]
    return "\n".join(lines + md_table(cols, [[_fmt(r.get(c)) for c in cols] for r in rows])) + "\n"


def write_outputs(rows: list[dict[str, Any]], meta: dict[str, Any], targets: list[dict[str, Any]],
                  out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "csv": out / "bench.csv", "md": out / "bench.md"}
    write_json(paths["json"], {"meta": meta, "rows": rows, "targets": targets})
    # long format: one (model, backend, metric, value) per line
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "backend", "metric", "value"])
    for r in rows:
        for k, v in r.items():
            if k not in ("model", "backend") and v is not None:
                w.writerow([r["model"], r["backend"], k, v])
    atomic_write_text(paths["csv"], buf.getvalue())
    md = render_markdown(rows, meta)
    if targets:
        md += "\n### Targets (2-core CPU)\n\n" + "\n".join(md_table(
            ["target", "measured", "met"],
            [[str(t["target"]), str(t["measured"]), "yes" if t["met"] else ("NO", "fail")] for t in targets])) + "\n"
    atomic_write_text(paths["md"], md)
    paths.update(plot(rows, out))
    return paths


def plot(rows: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok"]
    models = sorted({r["model"] for r in ok}, key=MODELS.index)
    if not models:
        return {}
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.6 * len(models) + 3))
    backends = [b for b in BACKENDS if any(r["backend"] == b for r in ok)]
    h = 0.8 / max(1, len(backends))
    for k, b in enumerate(backends):
        ys = [i + k * h for i, m in enumerate(models)]
        lat = [next((r["p50_ms"] for r in ok if r["model"] == m and r["backend"] == b), np.nan) for m in models]
        sp = [next((r.get("speedup_p50_vs_eager", np.nan) for r in ok if r["model"] == m and r["backend"] == b), np.nan)
              for m in models]
        axes[0].barh(ys, lat, height=h, label=b)
        axes[1].barh(ys, sp, height=h, label=b)
    for ax, title in zip(axes, ("batch-1 latency p50 (ms, log)", "speed-up vs torch eager (same run)")):
        ax.set_yticks([i + 0.4 - h / 2 for i in range(len(models))])
        ax.set_yticklabels(models)
        ax.set_title(title)
    axes[0].set_xscale("log")
    axes[1].axvline(1.0, color="k", lw=0.8)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = out / "bench_latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"png": path}


def machine_description() -> str:
    import os


    h = this_host()
    return f"{h['cpu']}, {os.cpu_count()} cores, INT8 ISA class {h['isa_class']}"


def run_bench(cases: list[Case], cfg: BenchConfig, out: str | Path, extra_rows: list[dict[str, Any]] | None = None,
              log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Benchmark ``cases`` on ``cfg.backends``; write JSON/CSV/markdown/PNG into ``out``."""
    set_threads(cfg.threads)
    out = Path(out)
    work = out / "models"
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for case in cases:
        if case.model in cfg.models:
            log(f"bench {case.model}")
            rows += bench_case(case, cfg, work, log)
    rows += extra_rows or []

    meta = {"machine": machine_description(), "int8_host": describe(), "host": this_host(), "threads": cfg.threads,
            "warmup": cfg.warmup, "iters": cfg.iters, "peak_rss_mb": round(peak_rss_mb(), 1), "config": cfg.to_dict()}
    targets = check_targets(rows)
    paths = write_outputs(rows, meta, targets, out)
    return {"rows": rows, "meta": meta, "targets": targets, "paths": {k: str(v) for k, v in paths.items()}}
