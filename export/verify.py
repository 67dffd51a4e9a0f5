"""Verification after compression: does the INT8 bundle still do its job? (``eegsine export --verify``)

Classifier (same eval images for every backend):

* clean accuracy: torch eager, ORT FP32, ORT INT8 (and TensorRT engines when present);
* (a) transfer: L-inf PGD crafted white-box on the torch model (:class:`eegsine.attacks.algorithms.PGD`)
  and evaluated on every backend;
* (b) black-box: torchattacks' Square (score-based, margin loss) run directly against each
  ORT session, wrapped as an ``nn.Module`` whose forward calls ONNX Runtime -- Square needs
  only scores, so the attack sees exactly the deployed INT8 model.

EEG to image (same EEG trials, same seeds, same initial latents): images from FP32 and
INT8 bundles are scored with the domain feature network (``fid_domain``, ``is_domain``,
``lpips_domain`` and n-way accuracy, from :mod:`eegsine.metrics.images`), plus SQNR of the
INT8 UNet output at every DDIM timestep, teacher-forced on the FP32 trajectory's inputs
(so it measures the UNet's own quantization error, not drift).

Gates (defaults, configurable): clean accuracy drop <= 0.5 points, adversarial accuracy
drop <= 1 point (each attack), fid_domain relative increase <= 10 %. Results go into the
bundle as ``verify.json`` and ``verify.md``; a failed gate is named and the CLI exits 1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from eegsine.bench.report.doc import md_table
from eegsine.errors import UserError
from eegsine.export.configs import VerifyConfig  # noqa: F401 - re-exported
from eegsine.export.quantize import sqnr
from eegsine.io import atomic_write_text, write_json
from eegsine.runtime import Bundle, EEGToImage, SineClassifier
from eegsine.data import load_images
from eegsine.export.tensorrt import TRTRunner, trt_unavailable_reason
from eegsine.metrics.images import domain_network, domain_outputs, lpips_domain, score_set, ssim_pairs
from eegsine.models.classifier import Classifier
from eegsine.runtime.isa import describe, this_host


class ORTClassifier(nn.Module):
    """An ORT classifier session as an ``nn.Module`` (forward only) so torchattacks' Square can query it."""

    def __init__(self, clf: SineClassifier):
        super().__init__()
        self.clf = clf
        # torchattacks reads the device from a parameter
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)
        self.queries = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += len(x)
        return torch.from_numpy(self.clf.scores(x.detach().cpu().numpy().astype(np.float32)))


def _acc(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).mean() * 100.0)


def _gate(name: str, value: float, limit: float, unit: str) -> dict[str, Any]:
    return {"gate": name, "value": round(float(value), 4), "limit": limit, "unit": unit, "passed": bool(value <= limit)}


# -- classifier -----------------------------------------------------------------------------------
def verify_classifier(bundle: Bundle, model: nn.Module, images: np.ndarray, labels: np.ndarray, eps: float,
                      cfg: VerifyConfig, log: Any = print) -> dict[str, Any]:
    """Clean / transfer-PGD / Square accuracy per backend and the gates (points = percentage points)."""
    import torchattacks

    from eegsine.attacks.algorithms import PGD

    x, y = images[: cfg.n_eval].astype(np.float32), labels[: cfg.n_eval].astype(np.int64)
    backends = {"fp32": SineClassifier(bundle, "fp32")}
    if bundle.has("classifier", "int8"):
        backends["int8"] = SineClassifier(bundle, "int8")
    res: dict[str, Any] = {"data": {"n_eval": len(x), "n_eval_square": min(cfg.n_eval_square, len(x)),
                                    "eps": eps, "eps_units": "L-inf, [0,1] pixel units"},
                           "attacks": {"transfer": f"PGD-{cfg.pgd_steps} CE crafted white-box on the torch model",
                                       "square": "torchattacks Square L-inf, margin loss, "
                                                 f"{cfg.square_queries} queries, run against each ORT session"},
                           "accuracy": {}}
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model = model.eval()
    with torch.no_grad():
        res["accuracy"]["torch"] = {"clean": _acc(model(xt).argmax(1).numpy(), y)}
    torch.manual_seed(cfg.seed)
    log(f"verify classifier: PGD-{cfg.pgd_steps} on torch, eps={eps}, {len(x)} images")
    x_adv = PGD(model, eps=eps, steps=cfg.pgd_steps, restarts=1)(xt, yt).numpy()
    with torch.no_grad():
        res["accuracy"]["torch"]["transfer_pgd"] = _acc(model(torch.from_numpy(x_adv)).argmax(1).numpy(), y)
    n_sq = min(cfg.n_eval_square, len(x))
    for name, clf in backends.items():
        acc = {"clean": _acc(clf.predict(x), y), "transfer_pgd": _acc(clf.predict(x_adv), y)}
        log(f"verify classifier: Square ({cfg.square_queries} queries) against ORT {name}, {n_sq} images")
        wrapped = ORTClassifier(clf)
        sq = torchattacks.Square(wrapped, norm="Linf", eps=eps, n_queries=cfg.square_queries, n_restarts=1,
                                 seed=cfg.seed, loss="margin", resc_schedule=True)
        adv = sq(xt[:n_sq], yt[:n_sq]).numpy().astype(np.float32)
        if np.abs(adv - x[:n_sq]).max() > eps + 1e-6:
            raise RuntimeError(f"Square produced a perturbation above eps={eps}")
        acc["square"] = _acc(clf.predict(adv), y[:n_sq])
        acc["square_queries_used"] = wrapped.queries
        res["accuracy"][f"ort_{name}"] = acc
    trt = _trt_classifier(bundle)
    for name, run in trt.items():
        pred = lambda a: np.concatenate([run({"images": a[i:i + 64]})[0] for i in range(0, len(a), 64)]).argmax(1)  # noqa: E731
        res["accuracy"][f"trt_{name}"] = {"clean": _acc(pred(x), y), "transfer_pgd": _acc(pred(x_adv), y)}
    gates = []
    ref = res["accuracy"]["ort_fp32"]
    for b, acc in res["accuracy"].items():
        if b in ("torch", "ort_fp32"):
            continue
        gates.append(_gate(f"classifier {b} clean accuracy drop", ref["clean"] - acc["clean"], cfg.max_clean_drop,
                           "points"))
        for k in ("transfer_pgd", "square"):
            if k in acc:
                gates.append(_gate(f"classifier {b} {k} accuracy drop", ref[k] - acc[k], cfg.max_adv_drop, "points"))
    res["gates"] = gates
    return res


def _trt_classifier(bundle: Bundle) -> dict[str, Any]:
    engines = bundle.manifest.get("engines", {}).get("classifier", {})
    if not engines or trt_unavailable_reason():
        return {}
    c = bundle.contract("classifier")
    return {p: TRTRunner(bundle.root / e["file"], c) for p, e in engines.items()}


# -- EEG to image ---------------------------------------------------------------------------------
def verify_eeg(bundle: Bundle, eeg: np.ndarray, labels: np.ndarray, real_images: np.ndarray, cfg: VerifyConfig,
               metrics: Any | None = None, log: Any = print) -> dict[str, Any]:
    """FP32 vs INT8 generation on the same trials/seeds: per-timestep UNet SQNR, image SQNR, domain metrics.

    ``metrics(fake, real, labels) -> dict`` scores images (fid_domain, is_domain, lpips_domain,
    n-way accuracy); without it only the SQNR figures are produced and the FID gate is skipped
    with the reason recorded.
    """
    eeg = eeg[: cfg.n_gen].astype(np.float32)
    labels = labels[: cfg.n_gen]
    real_images = None if real_images is None else real_images[: cfg.n_gen]  # each trial's own stimulus
    fp32 = EEGToImage(bundle, "fp32")
    int8 = EEGToImage(bundle, "int8")
    lat0 = fp32.initial_latents(len(eeg), cfg.seed)
    per_t: dict[int, list[float]] = {}

    def teacher_forced(i: int, t: int, st: dict) -> None:
        q = int8.unet(st["latents"], st["timestep"], st["encoder_hidden_states"], precision="int8")
        per_t.setdefault(t, []).append(sqnr(st["noise_pred"], q))

    log(f"verify EEG->image: {len(eeg)} trials, {cfg.steps} DDIM steps, FP32 (with per-step INT8 UNet SQNR)")
    img32 = fp32(eeg, num_inference_steps=cfg.steps, latents=lat0, callback=teacher_forced).images
    log("verify EEG->image: INT8")
    img8 = int8(eeg, num_inference_steps=cfg.steps, latents=lat0).images
    res: dict[str, Any] = {"data": {"n_trials": len(eeg), "steps": cfg.steps, "seed": cfg.seed,
                                    "guidance": fp32.default_guidance,
                                    "int8_unet_max_timestep": None if int8.int8_max_t >= 10 ** 9 else int8.int8_max_t},
                           "unet_sqnr_db_per_timestep": {str(t): round(float(np.mean(v)), 2) for t, v in per_t.items()},
                           "image_sqnr_db_int8_vs_fp32": round(sqnr(img32, img8), 2),
                           "image_max_abs_diff": float(np.abs(img32 - img8).max())}
    gates = []
    if metrics is None:
        res["metrics"] = "not computed: the EEG run has no domain-cnn-<dataset> folder (train the domain network first)"
        res["gates_skipped"] = ["fid_domain relative increase (no domain feature network)"]
    else:
        m32, m8 = metrics(img32, real_images, labels), metrics(img8, real_images, labels)
        res["metrics"] = {"fp32": m32, "int8": m8}
        f32, f8 = float(m32["fid_domain"]), float(m8["fid_domain"])
        gates.append(_gate("EEG->image int8 fid_domain relative increase", (f8 - f32) / max(f32, 1e-12),
                           cfg.max_fid_increase, "fraction"))
    res["gates"] = gates
    return res


def domain_scorer(net: nn.Module, name: str, n_boot: int = 100):
    """Scorer for :func:`verify_eeg`: generated vs ground-truth images on the domain CNN ``net``."""
    def score(fake: np.ndarray, real: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        r = score_set(domain_outputs(net, fake), domain_outputs(net, real), labels, lpips_domain(net, fake, real),
                      ssim_pairs(fake, real), n_boot=n_boot)
        r["feature_network"] = name
        return r

    return score


# -- report ---------------------------------------------------------------------------------------
def write_report(bundle_dir: str | Path, result: dict[str, Any]) -> tuple[Path, Path]:
    """verify.json + verify.md in the bundle (outside the hashed model files)."""
    bundle_dir = Path(bundle_dir)
    gates = [g for sec in ("classifier", "eeg") for g in result.get(sec, {}).get("gates", [])]
    result["passed"] = all(g["passed"] for g in gates)
    result["failed_gates"] = [g["gate"] for g in gates if not g["passed"]]
    j = write_json(bundle_dir / "verify.json", result)
    lines = ["# Verification after compression", "", f"Overall: **{'PASSED' if result['passed'] else 'FAILED'}**", ""]
    if "host" in result:
        lines += [f"Host: {describe(result['host'])}; INT8 results on CPUs depend on the ISA class "
                  "(`eegsine-verify BUNDLE` re-proves the bundle on another machine).", ""]
    if gates:
        lines += md_table(["gate", "value", "limit", "passed"],
                          [[g["gate"], f"{g['value']:.3f} {g['unit']}", f"{g['limit']} {g['unit']}",
                            "yes" if g["passed"] else "NO"] for g in gates])
    c = result.get("classifier")
    if c:
        d = c["data"]
        lines += ["", f"## Classifier ({d['n_eval']} test images of {c.get('dataset', '?')}; "
                  f"Square on {d['n_eval_square']}; eps={d['eps']} {d['eps_units']})", ""]
        lines += md_table(["backend", "clean %", "transfer PGD %", "Square %"],
                          [[b, f"{acc['clean']:.2f}", f"{acc.get('transfer_pgd', float('nan')):.2f}",
                            f"{acc['square']:.2f}" if "square" in acc else "-"] for b, acc in c["accuracy"].items()])
        lines += ["", f"Transfer: {c['attacks']['transfer']}. Square: {c['attacks']['square']}."]
    e = result.get("eeg")
    if e:
        d = e["data"]
        lines += ["", f"## EEG to image ({d['n_trials']} test trials, {d['steps']} DDIM steps, "
                  f"guidance {d['guidance']}, seed {d['seed']})", "",
                  f"Image SQNR INT8 vs FP32: {e['image_sqnr_db_int8_vs_fp32']} dB "
                  f"(INT8 UNet at t <= {d.get('int8_unet_max_timestep')}, FP32 above; None = INT8 at every t)", "",
                  "UNet output SQNR per timestep (INT8 vs FP32, teacher-forced): "
                  + ", ".join(f"t={t}: {v} dB" for t, v in e["unet_sqnr_db_per_timestep"].items())]
        if isinstance(e.get("metrics"), dict):
            keys = [k for k in ("acc", "fid_domain", "is_domain", "lpips_domain", "ssim") if k in e["metrics"]["fp32"]]
            lines += ["", f"Feature network: {e['metrics']['fp32'].get('feature_network', '?')}, "
                      f"n = {e['metrics']['fp32'].get('n', '?')} generated images per precision "
                      "(acc = n-way top-1 of the domain classifier vs the trial's label)."]
            lines += [""] + md_table(["precision", *keys],
                                     [[p, *(f"{e['metrics'][p][k]:.4g}" if isinstance(e["metrics"][p][k], float)
                                            else str(e["metrics"][p][k]) for k in keys)] for p in ("fp32", "int8")])
        else:
            lines += ["", f"Domain metrics: {e.get('metrics')}"]
    m = atomic_write_text(bundle_dir / "verify.md", "\n".join(lines) + "\n")
    return j, m


def verify_bundle(bundle_dir: str | Path, vcfg, classifier_run: str | None = None, eeg_set=None,
                  eeg_run: str | None = None) -> dict[str, Any]:
    """Verify a bundle against the torch models of its runs: the sections that apply, written to verify.json/.md."""
    bundle = Bundle(bundle_dir)
    result: dict = {"config": vcfg.to_dict(), "host": this_host()}
    if classifier_run:
        model = Classifier.from_pretrained(classifier_run)
        entry = bundle.manifest["models"]["classifier"]
        images = load_images(entry["dataset"], **model.provenance.data_options)
        eps = vcfg.eps if vcfg.eps > 0 else float(entry.get("eps") or model.provenance.train_eps or 0.1)
        result["classifier"] = verify_classifier(bundle, model, images.test_x, images.test_y, eps, vcfg)
        result["classifier"]["dataset"] = images.name
    if eeg_run and eeg_set is not None:
        test = eeg_set.splits.get("test")
        if test is None or len(test) == 0:
            raise UserError(f"{eeg_set.name}: has no test split to verify on")
        metrics = _domain_metrics(eeg_run)
        real = eeg_set.images[eeg_set.image[test]] if eeg_set.images is not None else None
        result["eeg"] = verify_eeg(bundle, eeg_set.x[test], eeg_set.y[test], real, vcfg, metrics=metrics)
    write_report(bundle_dir, result)
    return result


def _domain_metrics(eeg_run: str):
    """(fake, real, labels) -> fid_domain / is_domain / lpips_domain / acc / ssim on the run's domain CNN, or None."""
    folder = next(iter(sorted(Path(eeg_run).glob("domain-cnn-*"))), None)
    if folder is None:
        return None
    net, _ = domain_network(folder)
    return domain_scorer(net, folder.name)
