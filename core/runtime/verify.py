"""``eegsine-verify BUNDLE``: re-prove an INT8 bundle on the machine it runs on (numpy + onnxruntime only).

INT8 accuracy depends on the CPU (:mod:`eegsine.runtime.isa`): a bundle proven on the build host
can silently degrade on another. This re-runs, with ONNX Runtime on *this* host, the
bundle's golden set (written at export, see ``eegsine.export.golden``): each model's
held-out real inputs and their torch FP32 outputs, and for the classifier a labelled test
set plus PGD examples crafted white-box on the torch model. ``--backend openvino`` runs the same set and
gates with OpenVINO: a record names its backend and proves files for that backend only. ``--tune``
verifies with every backend installed, then times each model file's (backend, precision, threads) at
batch 1 and records the fastest passing combination (:mod:`eegsine.runtime.tuning`). Figures:

* SQNR (dB) of ORT FP32 and ORT INT8 against the torch outputs, per model and output; the
  UNet per timestep, gated only where the bundle runs it in INT8
  (``generation.int8_unet_max_timestep``);
* classifier clean and transfer-PGD accuracy, FP32 and INT8, on the same images;
* ``decision.onnx`` (the encoder with the prototype head folded in, for devices without Python) against the
  numpy decoder (:class:`~eegsine.runtime.EEGDecoder` on the encoder file of the same precision), per file: label
  agreement and the largest probability difference over the golden EEG trials, with their n
  (:func:`decision_figures`; the export runs the same gates before it publishes a bundle).

Gates: an SQNR floor per model (an accuracy gate alone passed an 18.8 dB classifier), an
FP32 floor (a broken ORT build shows there), clean and adversarial accuracy drops. The
record (host ISA class and int8 features, ORT version, provider, figures, gates, pass/fail,
sha256 of every file it judged) is appended atomically to ``verifications.json`` in the
bundle, under a lock (:func:`eegsine.locks.locked`) so concurrent verifies all land;
:class:`eegsine.runtime.Bundle` reads it to know where its INT8 files were proven. A records file
of another or a newer format, and a golden set that does not fit the model's contract (array
names, dtypes, shapes), are one-line errors.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

import eegsine
from eegsine.config import Config, usable_cpus
from eegsine.errors import UserError
from eegsine.runtime.backends import available_backends, check_backend, open_session
from eegsine.runtime.contracts import ExportContract, TensorSpec
from eegsine.runtime.decoders import Bundle, EEGDecoder, _batches
from eegsine.runtime.isa import this_host
from eegsine.stats import wilson_ci
from eegsine.runtime.manifest import PRECISIONS
from eegsine.runtime.records import append_record
from eegsine.runtime.tuning import TUNE_KIND, Candidate, choose, time_interleaved


@dataclasses.dataclass
class DeviceVerifyConfig(Config):
    KIND = "device-verify"
    VERSION = 1

    min_sqnr_classifier_db: float = dataclasses.field(default=25.0, metadata={
        "help": "gate: INT8 logits SQNR vs torch"})
    min_sqnr_encoder_db: float = dataclasses.field(default=20.0, metadata={
        "help": "gate: INT8 EEG encoder SQNR vs torch (every output)"})
    min_sqnr_vae_db: float = dataclasses.field(default=25.0, metadata={
        "help": "gate: INT8 VAE decoder image SQNR vs torch"})
    min_sqnr_unet_db: float = dataclasses.field(default=-1.0, metadata={
        "help": "gate: INT8 UNet SQNR at every timestep it runs INT8 (-1 = the bundle's unet_min_sqnr_db)"})
    min_sqnr_fp32_db: float = dataclasses.field(default=40.0, metadata={
        "help": "gate: ORT FP32 vs torch (a broken runtime shows here)"})
    max_clean_drop: float = dataclasses.field(default=0.5, metadata={
        "help": "gate: INT8 vs FP32 clean accuracy drop, points"})
    max_adv_drop: float = dataclasses.field(default=1.0, metadata={
        "help": "gate: INT8 vs FP32 transfer-PGD accuracy drop, points"})
    min_label_agreement: float = dataclasses.field(default=95.0, metadata={
        "help": "gate: EEG decisions, % of labelled golden trials where INT8 decodes FP32's label (fails where "
                "the 95 % Wilson upper bound is below it)"})
    max_decision_drop: float = dataclasses.field(default=2.0, metadata={
        "help": "gate: EEG decisions, % of labelled golden trials FP32 decodes right and INT8 wrong (fails where "
                "the 95 % Wilson lower bound is above it)"})
    # |dp| <= scale / 4 * |d(squared distance)| (each softmax row's Jacobian sums to <= 1/2 in absolute value);
    # fp32 moves a squared distance between unit vectors by <= ~1e-6 (batch-1 vs batched kernels, float32 sums):
    # at the largest fitted scale, 300, that is 7.5e-5 (measured: 2.4e-7 at scale 30 on the test encoders)
    max_decision_prob_diff: float = dataclasses.field(default=1e-4, metadata={
        "help": "gate: decision.onnx vs the numpy decoder on the same encoder file, max abs probability difference"})
    tune_calls: int = dataclasses.field(default=200, metadata={
        "help": "--tune: timed batch-1 calls of each combination (interleaved rounds; fewer where "
                "--tune-max-seconds runs out)"})
    tune_max_seconds: float = dataclasses.field(default=20.0, metadata={
        "help": "--tune: time cap per model for its interleaved rounds (at least 5 rounds run)"})
    tune_tie_pct: float = dataclasses.field(default=3.0, metadata={
        "help": "--tune: medians within this many % of the fastest are a tie, won by the simpler combination"})

    def validate(self) -> None:
        if self.tune_calls < 1:
            raise UserError(f"DeviceVerifyConfig.tune_calls: must be >= 1, got {self.tune_calls}")
        if not self.tune_max_seconds > 0:
            raise UserError(f"DeviceVerifyConfig.tune_max_seconds: must be > 0, got {self.tune_max_seconds}")
        if not 0 <= self.tune_tie_pct < 100:
            raise UserError(f"DeviceVerifyConfig.tune_tie_pct: must be in [0, 100), got {self.tune_tie_pct}")

    def floor(self, model: str, manifest: dict[str, Any]) -> float:
        if model == "unet":
            if self.min_sqnr_unet_db >= 0:
                return self.min_sqnr_unet_db
            return float(manifest.get("config", {}).get("unet_min_sqnr_db", 20.0))
        return {"classifier": self.min_sqnr_classifier_db, "eeg_encoder": self.min_sqnr_encoder_db,
                "vae_decoder": self.min_sqnr_vae_db}.get(model, self.min_sqnr_encoder_db)


def sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum ref^2 / sum (ref - test)^2)."""
    ref = np.asarray(ref, np.float64)
    noise = float(((ref - np.asarray(test, np.float64)) ** 2).sum())
    return float("inf") if noise == 0.0 else 10.0 * np.log10(max(float((ref ** 2).sum()), 1e-30) / noise)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """A golden ``.npz`` as plain arrays (never pickle)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a readable golden-set .npz ({e})") from None
    for k, v in arrays.items():
        if not isinstance(v, np.ndarray):  # a zip member that is not a .npy comes back as bytes
            raise UserError(f"{path}: {k!r} is not a .npy array")
    return arrays


# -- the golden set's schema: checked before a single array is run -------------------------------------
_FEED_KEY = re.compile(r"^feed(\d+)\.(in|out)\.(.+)$")


def _check_array(where: str, a: np.ndarray, spec: TensorSpec, dims: dict[str, int], bounds: dict[str, tuple]) -> None:
    """``a`` has ``spec``'s dtype and shape: fixed axes equal, a named axis the same size in every array of the
    feed and within ``bounds`` (the batch axis is unbounded: feeds run in chunks), floats finite."""
    want = "(" + ", ".join(map(str, spec.shape)) + ")"
    if a.dtype != np.dtype(spec.dtype):
        raise UserError(f"{where}: dtype {a.dtype}, the contract's is {spec.dtype}")
    if a.ndim != len(spec.shape) or any(isinstance(d, int) and d != n for d, n in zip(spec.shape, a.shape)):
        raise UserError(f"{where}: shape {a.shape}, the contract's is {want}")
    for d, n in zip(spec.shape, a.shape):
        if not isinstance(d, str):
            continue
        lo, hi = bounds[d]
        if n < lo or (hi is not None and n > hi):
            raise UserError(f"{where}: shape {a.shape}: {d} = {n} is outside the exported range [{lo}, {hi}]")
        if dims.setdefault(d, n) != n:
            raise UserError(f"{where}: shape {a.shape}: {d} = {n}, the feed's other arrays have {dims[d]}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise UserError(f"{where}: contains NaN or inf")


def _bounds(c: ExportContract) -> dict[str, tuple[int, int | None]]:
    """Each named axis' [min, max]; the batch axis (the first input's first) unbounded above (fed in chunks)."""
    out: dict[str, tuple[int, int | None]] = {d: (lo, hi) for d, (lo, _, hi) in c.dims.items()}
    d0 = c.inputs[0].shape[0]
    if isinstance(d0, str):
        out[d0] = (c.dims[d0][0], None)
    return out


def golden_feeds(path: Path, arrays: dict[str, np.ndarray],
                 c: ExportContract) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """npz arrays -> [(inputs, torch outputs)] in feed order, checked against the model's contract ``c``."""
    by: dict[int, tuple[dict, dict]] = {}
    for key, v in arrays.items():
        m = _FEED_KEY.match(key)
        if m is None:
            raise UserError(f"{path}: unexpected array {key!r} (a golden set holds feed<i>.in.<input> and "
                            "feed<i>.out.<output>)")
        by.setdefault(int(m.group(1)), ({}, {}))[0 if m.group(2) == "in" else 1][m.group(3)] = v
    if not by:
        raise UserError(f"{path}: holds no feeds")
    bounds = _bounds(c)
    for i in sorted(by):
        dims: dict[str, int] = {}
        for kind, have, specs in (("in", by[i][0], c.inputs), ("out", by[i][1], c.outputs)):
            if sorted(have) != sorted(s.name for s in specs):
                raise UserError(f"{path}: feed{i}.{kind} holds {sorted(have)}, {c.name}'s contract has "
                                f"{[s.name for s in specs]}")
            for s in specs:
                _check_array(f"{path}: feed{i}.{kind}.{s.name}", have[s.name], s, dims, bounds)
    return [by[i] for i in sorted(by)]


def eval_set(path: Path, arrays: dict[str, np.ndarray],
             c: ExportContract) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The classifier's labelled golden images (images, labels, adversarial images or None), checked against ``c``."""
    for key in ("images", "labels"):
        if key not in arrays:
            raise UserError(f"{path}: no {key!r} array (has {sorted(arrays)})")
    extra = sorted(set(arrays) - {"images", "labels", "adv_images"})
    if extra:
        raise UserError(f"{path}: unexpected array {extra[0]!r} (expected images, labels, adv_images)")
    dims: dict[str, int] = {}
    bounds = _bounds(c)
    x, y, adv = arrays["images"], arrays["labels"], arrays.get("adv_images")
    _check_array(f"{path}: images", x, c.inputs[0], dims, bounds)
    if adv is not None:
        _check_array(f"{path}: adv_images", adv, c.inputs[0], dims, bounds)
    n_classes = c.outputs[0].shape[-1]
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),):
        raise UserError(f"{path}: labels must be {len(x)} integers (one per image), got {y.dtype} {y.shape}")
    if isinstance(n_classes, int) and len(y) and not (0 <= y.min() and y.max() < n_classes):
        raise UserError(f"{path}: labels outside [0, {n_classes})")
    return x, y, adv


def _run_chunked(bundle: Any, model: str, inputs: dict[str, np.ndarray], precision: str) -> list[np.ndarray]:
    """Run ``inputs`` in batches the contract allows (golden feeds may be larger than the exported max batch)."""
    c = bundle.contract(model)
    d0 = c.inputs[0].shape[0]
    hi = c.dims[d0][2] if isinstance(d0, str) else len(next(iter(inputs.values())))

    parts = [bundle.run(model, {k: np.ascontiguousarray(v[s]) for k, v in inputs.items()}, precision)
             for s in _batches(len(inputs[c.input_names[0]]), hi)]
    return [np.concatenate([p[i] for p in parts]) for i in range(len(c.output_names))]


def _gate(name: str, value: float, limit: float, unit: str, higher_is_better: bool) -> dict[str, Any]:
    ok = value >= limit if higher_is_better else value <= limit
    return {"gate": name, "value": round(float(value), 3), "limit": limit, "unit": unit,
            "rule": ">=" if higher_is_better else "<=", "passed": bool(ok)}


def _model_figures(bundle: Any, model: str, cfg: DeviceVerifyConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    entry = bundle.manifest["models"][model]
    golden = bundle.manifest.get("golden", {}).get(model)
    if golden is None:
        raise UserError(f"{bundle.root}: {model} has no golden set (re-export with this eegsine to verify on a device)")
    c = bundle.contract(model)
    pairs = golden_feeds(bundle.files[golden["file"]], load_npz(bundle.files[golden["file"]]), c)
    precisions = [p for p in ("fp32", "int8") if p in entry.get("files", {})]
    fig: dict[str, Any] = {"feeds": len(pairs), "target": entry.get("quantization", {}).get("target")}
    gates: list[dict[str, Any]] = []
    floor = cfg.floor(model, bundle.manifest)
    for p in precisions:
        outs: dict[str, tuple[list, list]] = {n: ([], []) for n in c.output_names}
        per_t: dict[int, list[float]] = {}
        for inputs, ref in pairs:
            got = _run_chunked(bundle, model, inputs, p)
            for n, g in zip(c.output_names, got):
                outs[n][0].append(ref[n])
                outs[n][1].append(g)
            if "timestep" in inputs:
                per_t.setdefault(int(inputs["timestep"][0]), []).append(sqnr(ref[c.output_names[0]], got[0]))
        fig[p] = {f"{n}_sqnr_db": round(sqnr(np.concatenate(r), np.concatenate(g)), 2) for n, (r, g) in outs.items()}
        if per_t:
            fig[p]["sqnr_db_per_timestep"] = {str(t): round(float(np.mean(v)), 2)
                                              for t, v in sorted(per_t.items(), reverse=True)}
        if p == "fp32":
            worst = min(fig[p][f"{n}_sqnr_db"] for n in c.output_names)
            gates.append({**_gate(f"{model} fp32 SQNR vs torch", worst, cfg.min_sqnr_fp32_db, "dB", True),
                          "precision": "fp32"})
            continue
        if per_t:
            limit = int(bundle.manifest.get("generation", {}).get("int8_unet_max_timestep", max(per_t)))
            used = {t: np.mean(v) for t, v in per_t.items() if t <= limit}
            fig[p]["gated_timesteps"] = f"t <= {limit} (INT8 there, FP32 above)"
            if used:
                gates.append(_gate(f"{model} int8 SQNR vs torch (worst INT8 timestep)", min(used.values()), floor,
                                   "dB", True))
            else:
                fig[p]["gated_timesteps"] = "none: the bundle runs the UNet in FP32 at every timestep"
        else:
            worst = min(fig[p][f"{n}_sqnr_db"] for n in c.output_names)
            gates.append(_gate(f"{model} int8 SQNR vs torch", worst, floor, "dB", True))
    return fig, gates


def _classifier_task(bundle: Any, cfg: DeviceVerifyConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ev = bundle.manifest.get("golden", {}).get("classifier_eval")
    if ev is None or not bundle.has("classifier", "int8"):
        return {}, []
    path = bundle.files[ev["file"]]
    c = bundle.contract("classifier")
    x, y, adv = eval_set(path, load_npz(path), c)
    hi = c.dims["batch"][2]

    def acc(images: np.ndarray, p: str) -> float:
        chunks = (np.ascontiguousarray(images[s:s + hi]) for s in range(0, len(images), hi))
        pred = np.concatenate([bundle.run("classifier", {"images": c}, p)[0].argmax(1) for c in chunks])
        return float((pred == y).mean() * 100.0)

    res: dict[str, Any] = {"n": int(len(x)), "eps": ev.get("eps"), "eps_units": ev.get("eps_units"),
                           "attack": ev.get("attack"), "torch": {"clean": ev.get("torch_clean_accuracy"),
                                                                 "transfer_pgd": ev.get("torch_adv_accuracy")}}
    for p in ("fp32", "int8"):
        res[p] = {"clean": acc(x, p)}
        if adv is not None:
            res[p]["transfer_pgd"] = acc(adv, p)
    gates = [_gate("classifier int8 clean accuracy drop", res["fp32"]["clean"] - res["int8"]["clean"],
                   cfg.max_clean_drop, "points", False)]
    if adv is not None:
        gates.append(_gate("classifier int8 transfer_pgd accuracy drop",
                           res["fp32"]["transfer_pgd"] - res["int8"]["transfer_pgd"], cfg.max_adv_drop,
                           "points", False))
    return res, gates


def _eeg_task(bundle: Any, cfg: DeviceVerifyConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Decisions, not only embeddings: the labelled golden trials decoded (nearest prototype, as
    :class:`~eegsine.runtime.EEGDecoder` does on a device) in FP32 and INT8."""
    ev = bundle.manifest.get("golden", {}).get("eeg_encoder_eval")
    entry = bundle.manifest.get("models", {}).get("eeg_encoder", {})
    if ev is None or "prototypes" not in entry or not bundle.has("eeg_encoder", "int8"):
        return {}, []
    arrays = load_npz(bundle.files[ev["file"]])
    for key in ("eeg", "labels"):
        if key not in arrays:
            raise UserError(f"{bundle.files[ev['file']]}: the EEG golden set has no {key!r} array")
    x, y = np.asarray(arrays["eeg"], np.float32), np.asarray(arrays["labels"], np.int64)
    if x.ndim != 3 or len(x) != len(y) or not len(x):
        raise UserError(f"{bundle.files[ev['file']]}: eeg {x.shape} and labels {y.shape} do not pair up")
    index = np.asarray(entry["prototypes"]["class_index"], np.int64)
    res: dict[str, Any] = {"n": int(len(y)), "split": ev.get("split")}
    pred = {}
    for p in ("fp32", "int8"):
        pred[p] = index[EEGDecoder(bundle, p).decode(x).labels]  # the data set's class of each decision
        res[p] = {"accuracy": round(float((pred[p] == y).mean() * 100.0), 2)}
    n, same = len(y), int((pred["fp32"] == pred["int8"]).sum())
    lost = int(((pred["fp32"] == y) & (pred["int8"] != y)).sum())  # the only trials INT8 loses accuracy on
    res["label_agreement"] = round(same / n * 100.0, 2)
    res["int8_only_wrong"] = lost
    # judged with the trials' own uncertainty (95 % Wilson bounds), not one draw of n trials: a gate fails where
    # the trials show agreement below its floor, or a loss above its limit, beyond what n trials can resolve
    agree_hi = wilson_ci(same, n)[1] * 100.0
    lost_lo = wilson_ci(lost, n)[0] * 100.0
    gates = [{**_gate(f"eeg_encoder int8 label agreement with fp32 (n={n}; 95 % upper bound)", agree_hi,
                      cfg.min_label_agreement, "%", True), "measured": res["label_agreement"]},
             {**_gate(f"eeg_encoder int8 decisions fp32 got right and int8 wrong (n={n}; 95 % lower bound)",
                      lost_lo, cfg.max_decision_drop, "points", False), "measured": round(lost / n * 100.0, 2)}]
    return res, gates


def golden_eeg(bundle: Any) -> np.ndarray:
    """Every EEG trial of the bundle's golden set (the encoder's held-out feeds, then the labelled trials), checked
    against the encoder's contract: the inputs decision.onnx is proven on."""
    c, golden = bundle.contract("eeg_encoder"), bundle.manifest.get("golden", {})
    parts = []
    if "eeg_encoder" in golden:
        path = bundle.files[golden["eeg_encoder"]["file"]]
        parts += [inputs["eeg"] for inputs, _ in golden_feeds(path, load_npz(path), c)]
    if "eeg_encoder_eval" in golden:
        path = bundle.files[golden["eeg_encoder_eval"]["file"]]
        x = load_npz(path).get("eeg")
        if x is None:
            raise UserError(f"{path}: the EEG golden set has no 'eeg' array")
        _check_array(f"{path}: eeg", x, c.inputs[0], {}, _bounds(c))
        parts.append(x)
    if not parts:
        raise UserError(f"{bundle.root}: no golden EEG trials to prove decision.onnx on (re-export the bundle)")
    return np.concatenate(parts)


def decision_figures(bundle: Any, precision: str, eeg: np.ndarray, tol: float) -> dict[str, Any]:
    """decision.onnx at ``precision`` vs the numpy decoder on the encoder file of that precision, trial by trial
    (decision.onnx takes one epoch): n, label agreement (%), max abs probability difference, and the label
    disagreements that are not near-ties (numpy's top two probabilities more than ``2 * tol`` apart: a difference
    within ``tol`` cannot swap those)."""
    dec = EEGDecoder(bundle, precision)
    ref = dec.probabilities(dec.embed(eeg)).astype(np.float64)
    got = np.concatenate([bundle.run("decision", {"eeg": eeg[i:i + 1]}, precision)[0] for i in range(len(eeg))])
    top2 = np.sort(ref, axis=1)[:, -2:] if ref.shape[1] > 1 else np.concatenate([np.zeros_like(ref), ref], 1)
    differ = ref.argmax(1) != got.argmax(1)
    return {"n": int(len(eeg)), "label_agreement": round(float((~differ).mean() * 100.0), 2),
            "label_disagreements": int(differ.sum()),
            "disagreements_beyond_ties": int((differ & (top2[:, 1] - top2[:, 0] > 2 * tol)).sum()),
            "prob_max_abs_diff": float(np.abs(got - ref).max()), "reference": f"EEGDecoder({precision!r})"}


def decision_task(bundle: Any, cfg: DeviceVerifyConfig,
                  precisions: tuple[str, ...] = ("fp32", "int8")) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """decision.onnx's figures per precision it has (among ``precisions``) and their gates (model ``decision``)."""
    entry = bundle.manifest.get("models", {}).get("decision")
    if entry is None:
        return {}, []
    eeg = golden_eeg(bundle)
    fig: dict[str, Any] = {"target": entry.get("quantization", {}).get("target")}
    gates: list[dict[str, Any]] = []
    for p in (p for p in precisions if p in entry["files"]):
        f = fig[p] = decision_figures(bundle, p, eeg, cfg.max_decision_prob_diff)
        n = f["n"]
        # each gate names its file's precision: --tune judges decision.fp32.onnx by its own gates only
        gates += [{**_gate(f"decision {p} max |probability - numpy decoder's| (n={n})", f["prob_max_abs_diff"],
                           cfg.max_decision_prob_diff, "abs", False), "value": f["prob_max_abs_diff"], "precision": p},
                  {**_gate(f"decision {p} labels unlike the numpy decoder's beyond near-ties (n={n})",
                           f["disagreements_beyond_ties"], 0, "trials", False), "measured": f["label_agreement"],
                   "precision": p}]
    return fig, [{**g, "model": "decision"} for g in gates]


def verify_on_device(bundle_dir: str | Path, cfg: DeviceVerifyConfig | None = None, threads: int | None = None,
                     append: bool = True, log: Callable[[str], Any] = print, backend: str = "ort") -> dict[str, Any]:
    """Run the golden set on this host with ``backend`` (``ort`` or ``openvino``: the same gates for each);
    append the record to the bundle (``append``) and return it. The record names its backend, and proves the
    files whose model's gates passed for that backend only."""
    cfg = cfg or DeviceVerifyConfig()
    bundle = Bundle(bundle_dir, threads=threads, check_proven=False, backend=check_backend(backend))
    if backend == "auto":
        raise UserError("verify: backend must be one backend (ort or openvino), not auto: a record proves files on "
                        "the backend it ran")
    int8_models = [m for m in bundle.manifest.get("models", {}) if bundle.has(m, "int8")]
    if not int8_models:
        raise UserError(f"{bundle.root}: has no INT8 model to verify (export with --int8)")
    host = this_host()
    record: dict[str, Any] = {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "host": host, "eegsine": eegsine.__version__, "backend": backend,
                              "config": cfg.to_dict(), "models": {}, "files": {}, "gates": []}
    for m in int8_models:
        log(f"verify {m} on {host['isa_class']} with {backend} ...")
        fig, gates = decision_task(bundle, cfg) if m == "decision" else _model_figures(bundle, m, cfg)
        for g in gates:
            g["model"] = m
        record["models"][m] = fig
        record["gates"] += gates
        for p in ("fp32", "int8"):
            rel = bundle.manifest["models"][m]["files"].get(p)
            if rel:
                record["files"][rel] = bundle.manifest["files"][rel]["sha256"]
    task, gates = _classifier_task(bundle, cfg)
    if task:
        record["classifier_task"] = task
        record["gates"] += [{**g, "model": "classifier", "precision": "int8"} for g in gates]
    task, gates = _eeg_task(bundle, cfg)
    if task:
        record["eeg_task"] = task
        record["gates"] += [{**g, "model": "eeg_encoder", "precision": "int8"} for g in gates]
    record["provider"] = bundle.session(int8_models[0], "int8").device
    record["passed"] = all(g["passed"] for g in record["gates"])
    # a model is proven where *its* gates passed: a failing VAE leaves the encoder it never touches proven
    record["passed_files"] = {rel: sha for m in int8_models
                              if all(g["passed"] for g in record["gates"] if g["model"] == m)
                              for p in ("fp32", "int8")
                              if (rel := bundle.manifest["models"][m]["files"].get(p))
                              for sha in [record["files"][rel]]}
    if append:
        append_record(bundle.root, record)
    return record


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}%"


def render(record: dict[str, Any]) -> str:
    """The record as a text table (what the command prints)."""
    h = record["host"]
    lines = [f"host: {h['cpu']} ({h['machine']}), ISA class {h['isa_class']}, int8 features: "
             f"{', '.join(h['int8_features']) or 'none'}; onnxruntime {h['onnxruntime']}; backend "
             f"{record.get('backend', 'ort')} on {record['provider']}", "",
             f"{'model':12s} {'target':9s} {'fp32 dB':>9s} {'int8 dB':>9s}  feeds"]
    for m, f in record["models"].items():
        if m == "decision":  # judged against the numpy decoder, not torch: its own lines below
            continue
        worst = {p: min(v for k, v in f[p].items() if k.endswith("_sqnr_db")) for p in ("fp32", "int8") if p in f}
        lines.append(f"{m:12s} {str(f.get('target')):9s} {worst.get('fp32', float('nan')):9.2f} "
                     f"{worst.get('int8', float('nan')):9.2f}  {f['feeds']}")
        if "sqnr_db_per_timestep" in f.get("int8", {}):
            by_t = f["int8"]["sqnr_db_per_timestep"]
            lines.append(f"{'':12s} int8 per timestep: " + ", ".join(f"t={t}: {v}" for t, v in by_t.items())
                         + f" ({f['int8'].get('gated_timesteps')})")
    t = record.get("classifier_task")
    if t:
        lines += ["", f"classifier on {t['n']} golden test images ({t['attack']}; eps {t['eps']} {t['eps_units']}):"]
        for p in ("torch", "fp32", "int8"):
            lines.append(f"  {p:6s} clean {_pct(t[p]['clean'])}  transfer PGD {_pct(t[p].get('transfer_pgd'))}")
    e = record.get("eeg_task")
    if e:
        lines += ["", f"EEG decisions on {e['n']} labelled golden {e['split']} trials (nearest prototype): accuracy "
                  f"fp32 {_pct(e['fp32']['accuracy'])}, int8 {_pct(e['int8']['accuracy'])}; int8 labels equal to "
                  f"fp32's on {_pct(e['label_agreement'])}"]
    d = record["models"].get("decision")
    if d:
        lines.append("")
        lines += [f"decision.onnx {p} vs the numpy decoder on {d[p]['n']} golden trials: labels equal on "
                  f"{_pct(d[p]['label_agreement'])}, max |probability difference| {d[p]['prob_max_abs_diff']:.2e}"
                  for p in ("fp32", "int8") if p in d]
    lines += ["", "gates:"]
    lines += [f"  {'ok  ' if g['passed'] else 'FAIL'} {g['gate']}: {g['value']} {g['unit']} ({g['rule']} {g['limit']})"
              for g in record["gates"]]
    if "passed_files" in record and not record["passed"]:  # say what stays usable on this host
        proven = sorted(record["passed_files"])
        lines.append(f"proven here despite the failure: {', '.join(proven) or 'none'}")
    lines.append(f"overall: {'PASSED' if record['passed'] else 'FAILED'}")
    return "\n".join(lines)



# -- tuning: the fastest passing (backend, precision, threads) per model, measured on this host -------------------
def combination_passed(record: dict[str, Any], model: str, precision: str) -> bool:
    """Whether ``model``'s ``precision`` file passed its gates in a verification ``record`` (of one backend): FP32
    needs the model's FP32 gates, INT8 all of the model's gates (as its proof does)."""
    gates = [g for g in record.get("gates", []) if g.get("model") == model
             and (precision == "int8" or g.get("precision") == "fp32")]
    return bool(gates) and all(g["passed"] for g in gates)


def _batch1(bundle: Bundle, model: str) -> dict[str, np.ndarray]:
    """The first golden feed cut to batch 1: real inputs, the shape a device's calls have."""
    if model == "decision":  # proven on the EEG encoder's golden trials (it has no golden file of its own)
        return {bundle.contract(model).inputs[0].name: np.ascontiguousarray(golden_eeg(bundle)[:1])}
    path = bundle.files[bundle.manifest["golden"][model]["file"]]
    inputs, _ = golden_feeds(path, load_npz(path), bundle.contract(model))[0]
    return {k: np.ascontiguousarray(v[:1]) for k, v in inputs.items()}


def _time_model(bundle: Bundle, model: str, combos: list[tuple[str, str, int]],
                cfg: DeviceVerifyConfig) -> dict[tuple[str, str, int], tuple[float, int]]:
    """Median batch-1 ms and calls of each (backend, precision, threads), timed interleaved on the CPU."""
    data = {p: bundle.model_bytes(model, p) for p in {c[1] for c in combos}}
    feeds = _batch1(bundle, model)
    calls = {}
    for b, p, t in combos:
        sess = open_session(b, data[p], t, where=str(bundle.model_path(model, p)))
        calls[(b, p, t)] = functools.partial(sess.run, feeds)
    return time_interleaved(calls, cfg.tune_calls, max_seconds=cfg.tune_max_seconds)


def tune_on_device(bundle_dir: str | Path, cfg: DeviceVerifyConfig | None = None, backends: list[str] | None = None,
                   threads: list[int] | None = None, append: bool = True,
                   log: Callable[[str], Any] = print) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """``eegsine-verify --tune``: verify the bundle with every backend here (``backends``: these only), then time
    each model file's (backend, precision, threads in ``threads``, default 1..usable CPUs) at batch 1, and record
    the fastest combination that passed that model's gates (:func:`eegsine.runtime.tuning.choose`) in a tune
    record. Returns ({backend: verification record}, tune record); both kinds appended (``append``)."""
    cfg = cfg or DeviceVerifyConfig()
    backends = backends or available_backends()
    verified = {b: verify_on_device(bundle_dir, cfg, append=append, log=log, backend=b) for b in backends}
    bundle = Bundle(bundle_dir, check_proven=False)
    counts = threads or list(range(1, usable_cpus() + 1))
    record: dict[str, Any] = {"kind": TUNE_KIND,
                              "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "host": this_host(), "eegsine": eegsine.__version__, "config": cfg.to_dict(),
                              "batch": 1, "files": {}, "gates": [], "passed_files": {}, "tuning": {}}
    for m in next(iter(verified.values()))["models"]:
        precisions = [p for p in PRECISIONS if bundle.has(m, p)]
        log(f"tune {m}: {len(backends)} backend(s) x {len(precisions)} precision(s) x threads {counts} ...")
        timed = _time_model(bundle, m, [(b, p, t) for b in backends for p in precisions for t in counts], cfg)
        cands = sorted((Candidate(b, p, t, round(ms, 4), combination_passed(verified[b], m, p), n)
                        for (b, p, t), (ms, n) in timed.items()), key=Candidate.simplicity)
        chosen = choose(cands, tie=cfg.tune_tie_pct / 100.0)
        record["tuning"][m] = {"candidates": [c.to_dict() for c in cands],
                               "chosen": None if chosen is None else chosen.to_dict()}
        for p in precisions:
            rel = bundle.manifest["models"][m]["files"][p]
            record["files"][rel] = bundle.manifest["files"][rel]["sha256"]
    # a tune record proves nothing (passed_files is empty): "passed" says every model has a passing choice
    record["passed"] = all(t["chosen"] is not None for t in record["tuning"].values())
    if append:
        append_record(bundle.root, record)
    return verified, record


def render_tune(record: dict[str, Any]) -> str:
    """A tune record as a text table: every combination, its median, calls, gates, and the choice."""
    lines = [f"tuned on {record['host']['cpu']}, ISA class {record['host']['isa_class']}: batch-1 medians, "
             f"combinations timed interleaved; a choice within {record['config'].get('tune_tie_pct', 3.0)} % of the "
             "fastest goes to the simpler one (ORT, FP32, fewer threads)", "",
             f"{'model':12s} {'backend':9s} {'prec':5s} {'threads':>7s} {'p50 ms':>9s} {'calls':>6s}  gates"]
    for m, t in record["tuning"].items():
        chosen = t["chosen"]
        for c in t["candidates"]:
            mark = "  <- chosen" if chosen and all(c[k] == chosen[k] for k in ("backend", "precision", "threads")) \
                else ""
            lines.append(f"{m:12s} {c['backend']:9s} {c['precision']:5s} {c['threads']:7d} {c['p50_ms']:9.4f} "
                         f"{c['calls']:6d}  {'ok  ' if c['passed'] else 'FAIL'}{mark}")
        if chosen is None:
            lines.append(f"{m:12s} no combination passed its gates here: the runtime keeps its default")
    return "\n".join(lines)
