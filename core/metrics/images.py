"""Image quality of generated images on a *domain* feature network, with bootstrap CIs.

No Inception-v3 or AlexNet weights exist offline (docs/design.md), so FID, IS and LPIPS are by
default computed on a small CNN classifier trained in-project on the image set
(:class:`DomainCNN`, saved in its own run subfolder ``domain-cnn-<dataset>``) and named as such:

* ``fid_domain``: Fréchet distance between Gaussians fitted to its penultimate features
  (the FID formula; torchmetrics' ``FrechetInceptionDistance`` accepts the same network as a
  custom feature extractor and gives the same number, see the tests).
* ``is_domain``: the Inception-Score formula ``exp E_x KL(p(y|x) || p(y))`` on its softmax.
* ``lpips_domain``: LPIPS-style distance: per layer, unit-normalise the channel vector at each
  position, squared difference, spatial mean; then mean over layers (uniform weights: no
  human-judgement data exists here to learn LPIPS' linear heads).
* ``acc``: n-way top-1 semantic accuracy, the domain classifier's label of the generated image
  vs the trial's label; ``ssim`` against the ground-truth stimulus (torchmetrics).

The standard networks run only from the user's local ONNX files (:mod:`eegsine.metrics.image_nets`):
torchmetrics' ``FrechetInceptionDistance(feature=2048)`` / ``InceptionScore`` need torch-fidelity's
Inception-v3 and its LPIPS (like the ``lpips`` package) torchvision's AlexNet, and torchvision
does not import beside the CPU torch that ``make`` installs. Given ``standard=`` networks,
:func:`evaluate_generation` adds ``fid_<name>`` / ``is_<name>`` (Inception-style feature network),
``lpips_<name>`` and ``acc_<name>`` (a local classifier's top-1 over the data set's classes) with
the same formulas and bootstrap as the domain figures; every table names each network it used.

Hand-written: the Fréchet distance and IS on precomputed features (the bootstrap resamples
them hundreds of times; torchmetrics would re-run the network on images each time) and the
domain CNN (there is no pretrained domain network to load).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from eegsine.progress import tqdm
from eegsine.bench.report.doc import md_table as doc_md_table
from eegsine.errors import UserError
from eegsine.io import atomic_write_text, read_json, update_metrics, write_json
from eegsine.models import module_device
from eegsine.models.domain_cnn import DomainCNN, DomainCNNConfig, FeatureExtractor  # noqa: F401 (re-exported)
from eegsine.models.protocol import Provenance
from eegsine.runs.plots import save_condition_strip

if TYPE_CHECKING:
    from eegsine.metrics.image_nets import StandardNets



def train_domain_cnn(cfg: DomainCNNConfig, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                     test_y: np.ndarray, logger=None) -> tuple[DomainCNN, dict]:
    if train_x.shape[1:] != (cfg.in_chans, cfg.image_size, cfg.image_size):
        raise UserError(f"domain CNN: images {train_x.shape[1:]} do not match the config "
                        f"({cfg.in_chans}, {cfg.image_size}, {cfg.image_size})")
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if len(train_x) > cfg.max_train:
        keep = rng.choice(len(train_x), cfg.max_train, replace=False)
        train_x, train_y = train_x[keep], train_y[keep]
    net = DomainCNN(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    steps = max(1, math.ceil(len(x) / cfg.batch_size))
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps * epochs)
    bar = tqdm(total=steps * epochs, desc=f"domain CNN ({epochs} epochs)", unit="step", leave=False)
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=g)
        for s in range(steps):
            bar.update()
            b = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            xb = x[b]
            # 1-pixel random shifts: the generated images are never pixel-aligned copies
            dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(net(xb), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    bar.close()
    net.eval()
    acc = float((predict_proba(net, test_x).argmax(1) == test_y).mean()) if len(test_x) else float("nan")
    stats = {"test_top1": acc, "n_train": int(len(x)), "n_test": int(len(test_x)), "epochs": epochs}
    if logger is not None:
        logger.info(f"domain CNN ({cfg.dataset}): test top-1 {acc:.4f} on {len(test_x)} images")
    return net, stats


def domain_network(folder: str | Path, cfg: DomainCNNConfig | None = None,
                   data: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None = None,
                   logger=None) -> tuple[DomainCNN, dict]:
    """Load the domain CNN from ``folder`` or train it there (``data()`` -> train_x, train_y, test_x, test_y)."""
    folder = Path(folder)
    if (folder / "config.json").exists():
        net = DomainCNN.from_pretrained(folder)
        stats = read_json(folder / "metrics.json") if (folder / "metrics.json").exists() else {}
        return net.requires_grad_(False), stats
    if cfg is None or data is None:
        raise UserError(f"{folder}: no domain CNN there, and no data given to train one")
    net, stats = train_domain_cnn(cfg, *data(), logger=logger)
    write_json(folder / "metrics.json", stats)
    net.save_pretrained(folder, Provenance(trained_by=DomainCNNConfig.KIND, data=cfg.dataset, seed=cfg.seed))
    return net.eval().requires_grad_(False), stats


@torch.no_grad()
def predict_proba(net: DomainCNN, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
    net.eval()
    x, dev = torch.as_tensor(images, dtype=torch.float32), module_device(net)
    out = [F.softmax(net(x[i:i + batch_size].to(dev)), dim=1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, net.cfg.n_classes))


@torch.no_grad()
def domain_outputs(net: DomainCNN, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> dict[str, np.ndarray]:
    """features (N, feat_dim) float64, probs (N, n_classes) float64 of images (N, C, H, W) in [0, 1]."""
    net.eval()
    x, dev = torch.as_tensor(images, dtype=torch.float32), module_device(net)
    feats, probs = [], []
    for i in range(0, len(x), batch_size):
        f = net.features(x[i:i + batch_size].to(dev))
        feats.append(f.cpu())
        probs.append(F.softmax(net.head(f), dim=1).cpu())
    return {"features": torch.cat(feats).double().numpy(), "probs": torch.cat(probs).double().numpy()}


# -- the metrics ------------------------------------------------------------------------------------
def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID formula on feature sets (N1, D), (N2, D): |mu1-mu2|^2 + tr(S1 + S2 - 2 sqrt(S1 S2)).

    With fewer samples than dimensions (Inception's 2048-d pool3: a class's dozen trials, or 500
    trials) the same trace is computed in trial space: with S1 = A^T A, S2 = B^T B (A, B the
    centred features / sqrt(N - 1)) the eigenvalues of S1 S2 are the squared singular values of
    A B^T, so tr sqrt(S1 S2) is its nuclear norm. 500 x 2048: 0.045 vs 3.5 s per call on one
    thread of this CPU (one bootstrap replicate), same value to 5e-8 relative.
    """
    if len(f1) < 2 or len(f2) < 2:
        return float("nan")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    if min(len(f1), len(f2)) < f1.shape[1]:
        a, b = (f1 - mu1) / math.sqrt(len(f1) - 1), (f2 - mu2) / math.sqrt(len(f2) - 1)
        tr1, tr2 = float((a * a).sum()), float((b * b).sum())
        tr_sqrt = float(np.linalg.svd(a @ b.T, compute_uv=False).sum())
    else:
        s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
        tr1, tr2 = float(np.trace(s1)), float(np.trace(s2))
        # tr sqrt(S1 S2) = sum sqrt(eig(S1 S2)) (eigenvalues real and >= 0 up to round-off), as torchmetrics does
        tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(np.complex128)).real.sum()
    return float(max(0.0, ((mu1 - mu2) ** 2).sum() + tr1 + tr2 - 2.0 * tr_sqrt))


def inception_score(probs: np.ndarray, eps: float = 1e-12) -> float:
    """exp(mean_x KL(p(y|x) || p(y))) of softmax outputs (N, n_classes)."""
    if len(probs) == 0:
        return float("nan")
    py = probs.mean(0, keepdims=True)
    kl = (probs * (np.log(probs + eps) - np.log(py + eps))).sum(1)
    return float(np.exp(kl.mean()))


@torch.no_grad()
def lpips_domain(net: DomainCNN, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor,
                 batch_size: int = 256) -> np.ndarray:
    """Per-pair distance (N,) between images a[i] and b[i] on the domain CNN's normalised stage features."""
    net.eval()
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    if a.shape != b.shape:
        raise UserError(f"lpips_domain: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    out, dev = [], module_device(net)
    for i in range(0, len(a), batch_size):
        la, lb = net.layers(a[i:i + batch_size].to(dev)), net.layers(b[i:i + batch_size].to(dev))
        d = [((F.normalize(x, dim=1, eps=1e-10) - F.normalize(y, dim=1, eps=1e-10)) ** 2).sum(1).mean(dim=(1, 2))
             for x, y in zip(la, lb)]
        out.append(torch.stack(d, 1).mean(1).cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def ssim_pairs(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-pair SSIM (N,) of images in [0, 1] (torchmetrics; Gaussian window shrunk for small images)."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    if len(a) == 0:
        return np.zeros(0)
    k = min(11, a.shape[-1] - (1 - a.shape[-1] % 2))
    return ssim(a, b, data_range=1.0, kernel_size=k, sigma=1.5 * k / 11, reduction="none").double().numpy()


def bootstrap_ci(stat: Callable[[np.ndarray], float], n: int, n_boot: int = 200, seed: int = 0,
                 level: float = 0.95, bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float]:
    """Bootstrap CI of ``stat(indices)`` over ``n`` items that always contains the estimate ``stat(arange(n))``.

    The estimate stays the statistic on the full sample (the number everyone reports for FID
    and IS); the interval is the percentile interval of the same statistic on ``n_boot``
    resamples with replacement, each replicate shifted by the bootstrap's own bias estimate
    ``b = median(replicates) - estimate`` (Efron & Tibshirani's bias correction, with the median
    so that the shifted replicates have the estimate as their median and a central interval
    therefore contains it), then clipped to ``bounds``, the statistic's range.

    Why not the plain percentile interval: IS and FID are not means of per-item terms, and a
    resample with replacement holds only ~63% distinct items. IS = exp(H(mean p) - mean H(p)):
    the resample's marginal entropy is biased low (entropy is concave), so replicates sit below
    the full-sample IS, by more the smaller n; FID gains the noise of the resampled means and
    covariances and sits above. On the 12 trials of one class the plain interval excluded its
    own estimate (issue #17: is_domain 5.533 [3.131, 5.384]). The basic (2 est - q) and BCa
    intervals do not fix that: with every replicate on one side of the estimate, basic misses
    it too and BCa's bias constant is infinite. For the means (acc, lpips, ssim) the median of
    the replicates is the estimate up to Monte-Carlo noise, so b ~ 0 and this is the plain
    percentile interval.
    """
    if n < 2 or n_boot < 1:
        return float("nan"), float("nan")
    est = float(stat(np.arange(n)))
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)], dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if len(vals) == 0 or not np.isfinite(est):
        return float("nan"), float("nan")
    shifted = vals - (np.median(vals) - est)
    lo, hi = np.quantile(shifted, [(1 - level) / 2, 1 - (1 - level) / 2])
    # min/max with est last: only float round-off of the shift (or of a statistic at its bound)
    # could otherwise leave the estimate outside
    lo, hi = min(max(float(lo), bounds[0]), est), max(min(float(hi), bounds[1]), est)
    return lo, hi


def standard_stat(name: str, arrays: tuple[np.ndarray, ...]) -> tuple[Callable[[np.ndarray], float],
                                                                        tuple[float, float]]:
    """The statistic and its range of one standard-network figure (the domain figures' formulas).

    ``name``'s prefix says which: ``fid_`` (generated, ground-truth features), ``is_`` (probs),
    ``lpips_`` (per-pair distances) or ``acc_`` (per-trial correct, 0/1)."""
    kind = name.split("_", 1)[0]
    if kind == "fid":
        g, r = arrays
        return (lambda i: frechet_distance(g[i], r[i])), (0.0, math.inf)
    if kind == "is":
        return (lambda i: inception_score(arrays[0][i])), (1.0, float(arrays[0].shape[1]))
    if kind in ("lpips", "acc"):
        return (lambda i: float(arrays[0][i].mean())), ((0.0, 1.0) if kind == "acc" else (0.0, math.inf))
    raise ValueError(f"standard_stat: unknown metric {name!r}")


def score_set(gen: dict[str, np.ndarray], real: dict[str, np.ndarray], labels: np.ndarray, lpips: np.ndarray,
              ssim: np.ndarray, n_boot: int = 200, seed: int = 0,
              std: dict[str, tuple[np.ndarray, ...]] | None = None) -> dict[str, Any]:
    """All figures of one generated set vs its ground truth, each with a bootstrap CI and n.

    ``gen``/``real``: domain outputs of generated images and their ground-truth images (paired,
    same order); ``labels``: each trial's class. FID compares the generated set with the
    ground-truth set of the same trials (resampled together). Each figure is the statistic on
    all ``n`` trials; its ``_ci`` the bias-shifted percentile interval of :func:`bootstrap_ci`,
    which contains it. ``std``: the standard networks' per-trial arrays
    (:meth:`eegsine.metrics.image_nets.StandardNets.per_trial`), scored by :func:`standard_stat` after
    the domain figures (so those keep their bootstrap seeds).
    """
    n = len(labels)
    pred = gen["probs"].argmax(1)
    n_classes = gen["probs"].shape[1] if gen["probs"].ndim == 2 else math.inf
    stats: dict[str, tuple[Callable[[np.ndarray], float], tuple[float, float]]] = {
        "acc": (lambda i: float((pred[i] == labels[i]).mean()), (0.0, 1.0)),
        "fid_domain": (lambda i: frechet_distance(gen["features"][i], real["features"][i]), (0.0, math.inf)),
        "is_domain": (lambda i: inception_score(gen["probs"][i]), (1.0, float(n_classes))),  # IS in [1, classes]
        "lpips_domain": (lambda i: float(lpips[i].mean()), (0.0, math.inf)),
        "ssim": (lambda i: float(ssim[i].mean()), (-1.0, 1.0)),
    }
    stats.update({k: standard_stat(k, v) for k, v in (std or {}).items()})
    out: dict[str, Any] = {"n": int(n)}
    full = np.arange(n)
    for k, (name, (fn, bounds)) in enumerate(stats.items()):
        out[name] = fn(full) if n else float("nan")
        out[name + "_ci"] = list(bootstrap_ci(fn, n, n_boot, seed + k, bounds=bounds))
    return out


def _metric_cell(r: dict[str, Any], k: str) -> str:
    v, ci = r.get(k, float("nan")), r.get(k + "_ci", [float("nan")] * 2)
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci[0] is not None and np.isfinite(ci[0]) else f"{v:.3f}"


def md_table(rows: list[dict[str, Any]], keys: list[str], first: str) -> str:
    """Markdown table (:func:`eegsine.bench.report.doc.md_table`): one row per dict; each metric as
    ``value [lo, hi]``."""
    cells = [[str(r["name"]), str(r["n"]), *(_metric_cell(r, k) for k in keys)] for r in rows]
    return "\n".join(doc_md_table([first, "n", *keys], cells)) + "\n"


# -- evaluation of a trained EEG->image model ---------------------------------------------------------
CONDITIONS = ("eeg", "class-only", "shuffled-eeg")
METRIC_KEYS = ["acc", "fid_domain", "is_domain", "lpips_domain", "ssim"]


def _pick_trials(ds, split: str, max_trials: int, seed: int) -> np.ndarray:
    idx = ds.split(split)
    idx = idx[ds.image[idx] >= 0] if ds.images is not None else idx[:0]
    if len(idx) == 0:
        raise UserError(f"{ds.name}: split {split!r} has no image-paired trials to evaluate")
    if max_trials and len(idx) > max_trials:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_trials, replace=False))
    return idx


def condition_embeddings(model, ds, idx: np.ndarray, seed: int = 0, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """The conditions compared in one table, each (len(idx), emb_dim):

    * ``eeg``: each trial's own embedding;
    * ``class-only``: the mean train-split embedding of the trial's class (L2-normalised): what a
      class-conditional model would get, i.e. no trial-specific information;
    * ``shuffled-eeg``: another test trial's embedding (a random permutation): a control with
      real EEG statistics but no link to the trial's image.
    """
    def emb_of(rows: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(ds.x[rows])
        return torch.cat([model.embed(x[i:i + batch_size]).cpu() for i in range(0, len(x), batch_size)])

    z = emb_of(idx)
    tr = ds.split("train")
    tr = tr[np.random.default_rng(seed).permutation(len(tr))[:4000]]
    z_tr, y_tr = emb_of(tr), ds.y[tr]
    means = torch.zeros(ds.n_outputs, z.shape[1])
    for c in np.unique(y_tr):
        means[int(c)] = F.normalize(z_tr[torch.from_numpy(y_tr == c)].mean(0), dim=0)
    perm = np.random.default_rng(seed + 1).permutation(len(idx))
    return {"eeg": z, "class-only": means[torch.from_numpy(ds.y[idx])], "shuffled-eeg": z[torch.from_numpy(perm)]}


@torch.no_grad()
def generate_for(model, emb: torch.Tensor, seed: int, offset: int = 0, batch_size: int = 32, progress: str = "",
                 **sample_kw) -> np.ndarray:
    """Images (N, C, H, W) for embeddings (N, emb_dim); sample i uses noise (seed, offset + i)."""
    out = []
    for i in tqdm(range(0, len(emb), batch_size), desc=progress or "generate", leave=False, disable=not progress):
        lat = model.initial_latents(min(batch_size, len(emb) - i), seed, offset + i)
        out.append(model.sample(emb[i:i + batch_size], latents=lat, seed=seed, **sample_kw).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0,))


def evaluate_generation(run_dir: str | Path, ds, model=None, domain: DomainCNN | None = None, domain_name: str = "",
                        split: str = "test", max_trials: int = 500, steps: int | None = None,
                        guidance: float | None = None, sampler: str | None = None, n_boot: int = 200, seed: int = 0,
                        batch_size: int = 32, section: str = "generation", logger=None,
                        standard: StandardNets | None = None) -> dict[str, Any]:
    """Generate for the ``split`` trials under each condition and score them, overall and per class.

    Writes ``metrics.json[section]`` and ``<section>.md`` in ``run_dir``; returns the section.
    ``model``: an :class:`~eegsine.models.diffusion.EEGDiffusion` with its encoder (default:
    ``EEGDiffusion.from_pretrained(run_dir / "model")``); ``domain``: the feature network (default: the one
    saved in ``run_dir / domain-cnn-<dataset>``); ``standard``: optional standard networks from local ONNX
    files (:meth:`eegsine.metrics.image_nets.StandardNets.load`), scored beside the domain figures and named in
    ``metric_keys`` / ``standard_networks``.
    """
    from eegsine.models.diffusion import EEGDiffusion

    run_dir = Path(run_dir)
    if model is None:
        model = EEGDiffusion.from_pretrained(run_dir / "model").requires_grad_(False)
    steps, guidance = model.cfg.sampling(steps, guidance)
    train_frac = model.provenance.image_cond_frac  # how it was conditioned in training (None: not recorded)
    if domain is None:
        folder = next(iter(sorted(run_dir.glob("domain-cnn-*"))), None)
        if folder is None:
            raise UserError(f"{run_dir}: no domain-cnn-<dataset> folder (train the domain network first)")
        domain, _ = domain_network(folder)
        domain_name = domain_name or folder.name
    domain_name = domain_name or f"domain-cnn-{domain.cfg.dataset}"
    idx = _pick_trials(ds, split, max_trials, seed)
    labels = ds.y[idx]
    gt = ds.images[ds.image[idx]]
    real = domain_outputs(domain, gt)
    std_real, std_keys = None, []
    if standard:  # the class map is checked before anything is generated
        standard.bind(list(ds.classes), gt)
        std_real = standard.outputs(gt)
        std_keys = [k for net in standard.networks().values() for k in net["metrics"]]
    conds = condition_embeddings(model, ds, idx, seed)
    kw = {"steps": steps, "guidance": guidance, "sampler": sampler}
    result: dict[str, Any] = {"feature_network": domain_name, "data": ds.name, "split": split,
                              "n_classes": ds.n_outputs,
                              "n_trials": int(len(idx)), "samples_per_trial": 1, "n_boot": n_boot,
                              "sampler": sampler or model.cfg.sampler, "steps": steps, "guidance": guidance,
                              "metric_keys": METRIC_KEYS + std_keys, "conditions": {}, "per_class": {}}
    if standard:
        result["standard_networks"] = standard.networks()
    if train_frac is not None:
        result["training_image_cond_frac"] = train_frac
    result["ground_truth"] = _ground_truth_row(real, std_real, labels, standard, n_boot, seed)
    shown = strip_rows(labels)
    strip: dict[str, np.ndarray] = {}
    for name in CONDITIONS:
        imgs = generate_for(model, conds[name], seed, 0, batch_size, progress=f"generate [{name}]", **kw)
        strip[name] = imgs[shown]
        std = standard.per_trial(imgs, gt, labels, std_real) if standard else {}
        result["conditions"][name], result["per_class"][name] = _score_condition(
            domain, imgs, gt, real, labels, std, list(ds.classes), result["metric_keys"], n_boot, seed)
        if logger is not None:
            r = result["conditions"][name]
            logger.info(f"{name}: acc {r['acc']:.3f} fid_domain {r['fid_domain']:.2f} (per-class mean "
                        f"{r['fid_domain_class_mean']:.2f}) lpips_domain {r['lpips_domain']:.3f} ssim {r['ssim']:.3f}"
                        + "".join(f" {k} {r[k]:.3f}" for k in std_keys))
    result["strip"] = _save_strip(run_dir / f"{section}_strip.png", gt[shown], strip,
                                  [str(ds.classes[c]) for c in labels[shown]], idx[shown])
    update_metrics(run_dir, section, result)
    atomic_write_text(run_dir / f"{section}.md", generation_markdown(result))
    return result


def strip_rows(labels: np.ndarray, max_rows: int = 8) -> np.ndarray:
    """Positions of the first trial of each class (in label order), at most ``max_rows``: the strip's rows."""
    classes, first = np.unique(labels, return_index=True)
    return first[np.argsort(classes)][:max_rows]


def _save_strip(path: Path, truth: np.ndarray, imgs: dict[str, np.ndarray], row_labels: list[str],
                trials: np.ndarray) -> dict[str, Any]:
    names = {"eeg": "EEG", "class-only": "class only", "shuffled-eeg": "shuffled EEG"}
    save_condition_strip(path, truth, {names.get(k, k): v for k, v in imgs.items()}, row_labels)
    return {"file": path.name, "trials": [int(t) for t in trials], "columns": ["seen image", *imgs]}


def _ground_truth_row(real: dict, std_real: dict | None, labels: np.ndarray, standard: StandardNets | None,
                      n_boot: int, seed: int) -> dict[str, Any]:
    """The reference figures on the real stimuli: the domain network's accuracy and IS (and the standard
    networks' when given)."""
    n = len(labels)
    row = {"n": int(n), "acc": float((real["probs"].argmax(1) == labels).mean()),
           "is_domain": inception_score(real["probs"])}
    row["acc_ci"] = list(bootstrap_ci(lambda i: float((real["probs"][i].argmax(1) == labels[i]).mean()),
                                      n, n_boot, seed))
    if standard:
        if "probs" in std_real:
            row[f"is_{standard.feature.name}"] = inception_score(std_real["probs"])
        if "pred" in std_real:
            ok = (std_real["pred"] == labels).astype(np.float64)
            key = f"acc_{standard.classifier.name}"
            row[key] = float(ok.mean())
            row[key + "_ci"] = list(bootstrap_ci(lambda i: float(ok[i].mean()), n, n_boot, seed))
    return row


def _score_condition(domain: DomainCNN, imgs: np.ndarray, gt: np.ndarray, real: dict, labels: np.ndarray,
                     std: dict, classes: list[str], metric_keys: list[str], n_boot: int,
                     seed: int) -> tuple[dict[str, Any], dict[str, dict]]:
    """One condition's generated images scored overall (with the per-class mean of each FID) and per class."""
    gen = domain_outputs(domain, imgs)
    lp, ss = lpips_domain(domain, imgs, gt), ssim_pairs(imgs, gt)
    overall = score_set(gen, real, labels, lp, ss, n_boot, seed, std)
    per = {}
    for c in np.unique(labels):
        m = labels == c
        sub = {k: v[m] for k, v in gen.items()}
        per[classes[int(c)]] = score_set(sub, {k: v[m] for k, v in real.items()}, labels[m], lp[m], ss[m],
                                         n_boot, seed, {k: tuple(a[m] for a in v) for k, v in std.items()})
    for key in (k for k in metric_keys if k.startswith("fid_")):
        pcf = [v[key] for v in per.values() if np.isfinite(v[key])]
        overall[key + "_class_mean"] = float(np.mean(pcf)) if pcf else float("nan")
    return overall, per


def _standard_note(r: dict[str, Any]) -> str:
    """One paragraph naming each standard network a table's ``*_<name>`` columns were computed on."""
    nets, gt = r.get("standard_networks") or {}, r["ground_truth"]
    if not nets:
        return ""
    role = {"feature": "FID on its `features` (generated vs ground-truth images of the same trials)",
            "lpips": "mean per-pair distance, generated vs ground-truth image",
            "classifier": "n-way top-1 of its logits restricted to the data set's classes"}
    parts = []
    for kind, net in nets.items():
        size = "x".join(str(v) for v in net["input"])
        text = (f"{', '.join(f'`{k}`' for k in net['metrics'])} on **{net['name']}** (local ONNX file "
                f"`{Path(net['file']).name}`, sha256 {net['sha256'][:12]}, input {size} in [{net['input_range']}], "
                f"resize {net['resize']}): {role[kind]}" + (", IS on softmax(`logits`)" if len(net["metrics"]) > 1
                                                             and kind == "feature" else ""))
        if kind == "classifier":
            text += f" (class map: {net['class_map']})"
        refs = [f"{k} {gt[k]:.3f}" for k in net["metrics"] if k in gt]
        parts.append(text + (f"; on the ground-truth images {', '.join(refs)}" if refs else ""))
    return "Standard networks: " + "; ".join(parts) + ".\n"


def generation_markdown(r: dict[str, Any]) -> str:
    chance = 1.0 / max(1, r["n_classes"])
    keys = r.get("metric_keys", METRIC_KEYS)
    fids = [k for k in keys if k.startswith("fid_")]
    lines = [f"## Generated images: {r['data']} ({r['split']} split)\n",
             f"Feature network: **{r['feature_network']}** (in-project domain CNN; `acc` and the `*_domain` "
             f"FID/IS/LPIPS are computed on its features, not Inception/AlexNet). {r['n_trials']} trials x "
             f"{r['samples_per_trial']} sample(s); "
             f"sampler {r['sampler']}, {r['steps']} steps, guidance {r['guidance']}. Brackets: 95% bootstrap CI "
             f"({r['n_boot']} resamples of the trials). `acc`: domain classifier's n-way top-1 on the generated image "
             f"vs the trial's label (chance {chance:.3f}; on the ground-truth images "
             f"{r['ground_truth']['acc']:.3f}). `fid_domain`: generated vs ground-truth images of the same trials.\n",
             *([_standard_note(r)] if r.get("standard_networks") else []),
             *([f"Training: {r['training_image_cond_frac']:.0%} of the UNet's training examples were conditioned on "
                f"the stimulus's stage-one image embedding (`image_cond_frac`), the rest on the trial's EEG embedding; "
                f"every image below is generated from the condition named in its row.\n"]
               if r.get("training_image_cond_frac") else []),
             md_table([{"name": k, **v} for k, v in r["conditions"].items()], keys, "condition"),
             *(f"\nPer-class {f} mean: " + ", ".join(f"{k} {v[f + '_class_mean']:.2f}"
                                                    for k, v in r["conditions"].items()) + "\n" for f in fids),
             "\n### Per class (EEG conditioning)\n",
             md_table([{"name": k, **v} for k, v in r["per_class"]["eeg"].items()], keys, "class")]
    return "\n".join(lines)


__all__ = ["DomainCNNConfig", "DomainCNN", "FeatureExtractor", "train_domain_cnn", "domain_network", "predict_proba",
           "domain_outputs", "frechet_distance", "inception_score", "lpips_domain", "ssim_pairs", "bootstrap_ci",
           "score_set", "standard_stat", "md_table", "evaluate_generation", "condition_embeddings", "generate_for",
           "CONDITIONS"]
