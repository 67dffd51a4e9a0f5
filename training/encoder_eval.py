"""The evaluation protocol of an aligned EEG encoder, with its controls next to every number.

Seen classes (test trials of the training classes): linear-probe top-1, nearest-class-mean
top-1, k-means accuracy (Hungarian), n-way EEG->image retrieval top-1/top-5 (n = number of
seen classes), classification-head top-1 when trained with one. Unseen classes (held out
of training entirely): N-way K-shot prototype accuracy (support = their train/val trials,
queries = their test trials), k-means, retrieval among their test stimuli.

Rows: ``aligned`` (the run), ``shuffled_labels`` (same training on permuted label/image
assignments), ``class_only`` (raw-EEG class means emitting class-mean image embeddings; see
``eegsine.metrics.embedding``), and ``bandpower_logreg`` and ``lda_windows`` (shrinkage LDA on 40 ms window
means: the linear read-out the encoder must reach) for classification. Every block names its
data set, split and trial count. Metric code lives in ``eegsine.metrics.embedding``, the baselines in
``eegsine.metrics.eeg_baselines``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from eegsine.metrics.eeg_baselines import ENCODER_LDA_WIN_MS, bandpower_baseline, lda_baseline
from eegsine.metrics.embedding import (_l2, class_only_embeddings, embedding_plot, kmeans_accuracy, linear_probe_top1,
                                       prototype_fewshot, raw_features, retrieval_topk)
from eegsine.models.eeg_encoder import embed


def _ncm_top1(z_tr: np.ndarray, y_tr: np.ndarray, z_te: np.ndarray, y_te: np.ndarray) -> float:
    classes = np.unique(y_tr)
    means = _l2(np.stack([z_tr[y_tr == c].mean(0) for c in classes]))
    return float((classes[np.argmax(_l2(z_te) @ means.T, 1)] == y_te).mean())


def _head_top1(model, z: np.ndarray, y: np.ndarray) -> float:
    w = torch.nn.functional.normalize(model.class_weight.detach(), dim=-1).cpu().numpy()
    return float((np.argmax(z @ w.T, 1) == y).mean())


def throughput(encoder, x: np.ndarray, batch_size: int = 256, repeats: int = 2) -> dict:
    """Inference trials/s of ``encoder`` in eval mode on this machine (best of ``repeats``)."""
    n = min(len(x), 2048)
    best = float("inf")
    embed(encoder, x[:min(n, batch_size)], batch_size)  # warm-up
    for _ in range(repeats):
        t0 = time.perf_counter()
        embed(encoder, x[:n], batch_size)
        best = min(best, time.perf_counter() - t0)
    return {"trials_per_s": n / best, "n_trials": n, "batch_size": batch_size, "threads": torch.get_num_threads()}


def _block(z_tr, y_tr, z_te, y_te, prep, pool, seed, image) -> dict:
    ds = prep.ds
    r = {"linear_probe_top1": linear_probe_top1(z_tr, y_tr, z_te, y_te), "ncm_top1": _ncm_top1(z_tr, y_tr, z_te, y_te),
         "kmeans_acc": kmeans_accuracy(z_te, y_te, seed)}
    if prep.img_emb is not None:
        r["retrieval"] = retrieval_topk(z_te, y_te, image, prep.img_emb, ds.image_labels, pool,
                                        n_way=len(np.unique(y_te)), seed=seed)
    return r


def evaluate(cfg, prep, main: dict, control: dict | None, run_dir: Path, logger) -> dict:
    ds = prep.ds
    y, img = ds.y, ds.image
    tr, te = prep.train, prep.test
    encoders = {"aligned": main["model"]}
    if control is not None:
        encoders["shuffled_labels"] = control["model"]
    class_emb = prep.anchors if prep.anchors is not None else np.eye(ds.n_outputs, dtype=np.float32)
    out: dict = {"data": {"name": ds.name, "n_train": int(len(tr)), "n_val": int(len(prep.val)), "n_test": int(len(te)),
                          "n_chans": ds.n_chans, "n_times": ds.n_times, "sfreq": ds.sfreq,
                          "seen_classes": prep.seen.tolist(), "unseen_classes": prep.unseen.tolist(),
                          "loso_subject": cfg.loso_subject,
                          "info": {k: v for k, v in ds.info.items() if isinstance(v, (str, int, float, bool))
                                   or (isinstance(v, list) and len(v) <= 4)}},
                 "selection": "best epoch by validation score (NCM top-1, averaged with val retrieval top-1 "
                              "when images exist); test never used for selection"}
    pool = np.unique(img[te])
    seen: dict = {"split": "test, seen classes", "n_trials": int(len(te)), "chance_top1": 1.0 / len(prep.seen)}
    for name, model in encoders.items():
        z_tr, z_te = embed(model.encoder, ds.x[tr]), embed(model.encoder, ds.x[te])
        seen[name] = _block(z_tr, y[tr], z_te, y[te], prep, pool, cfg.seed, img[te])
        if model.class_weight is not None:
            seen[name]["cls_head_top1"] = _head_top1(model, z_te, y[te])
        if name == "aligned" and cfg.plot:
            embedding_plot(z_te, y[te], ds.classes, run_dir / "embedding_aligned.png",
                           f"aligned EEG embedding, {ds.name} test ({len(te)} trials), t-SNE", seed=cfg.seed)
        if name == "shuffled_labels" and cfg.plot:
            embedding_plot(z_te, y[te], ds.classes, run_dir / "embedding_shuffled.png",
                           f"shuffled-label control, {ds.name} test ({len(te)} trials), t-SNE", seed=cfg.seed)
    if cfg.controls:
        co_tr = class_only_embeddings(ds.x[tr], y[tr], ds.x[tr], class_emb)
        co_te = class_only_embeddings(ds.x[tr], y[tr], ds.x[te], class_emb)
        seen["class_only"] = _block(co_tr, y[tr], co_te, y[te], prep, pool, cfg.seed, img[te])
        seen["bandpower_logreg"] = bandpower_baseline(ds.x[tr], y[tr], ds.x[te], y[te], ds.sfreq, cfg.seed)
        seen["lda_windows"] = lda_baseline(ds.x[tr], y[tr], ds.x[te], y[te], ds.sfreq, win_ms=ENCODER_LDA_WIN_MS)
    out["seen"] = seen
    out["inference"] = throughput(main["model"].encoder, ds.x[te])

    if len(prep.unseen):
        s, q = prep.unseen_support, prep.unseen_query
        unseen: dict = {"split": "support = train+val of held-out classes, queries = their test trials",
                        "n_support": int(len(s)), "n_query": int(len(q)), "classes": prep.unseen.tolist()}
        upool = np.unique(img[q])
        feats = {n: (embed(m.encoder, ds.x[s]), embed(m.encoder, ds.x[q])) for n, m in encoders.items()}
        if cfg.controls:
            feats["class_only"] = (raw_features(ds.x[s]), raw_features(ds.x[q]))
        for name, (zs, zq) in feats.items():
            r = {"fewshot": prototype_fewshot(zs, y[s], zq, y[q], n_way=len(prep.unseen), k_shot=cfg.eval_k_shot,
                                              n_episodes=cfg.eval_episodes, seed=cfg.seed)}
            zq_c = class_only_embeddings(ds.x[s], y[s], ds.x[q], class_emb) if name == "class_only" else zq
            r["kmeans_acc"] = kmeans_accuracy(zq_c, y[q], cfg.seed)
            if prep.img_emb is not None:
                r["retrieval"] = retrieval_topk(zq_c, y[q], img[q], prep.img_emb, ds.image_labels, upool,
                                                n_way=len(prep.unseen), seed=cfg.seed)
            unseen[name] = r
        out["unseen"] = unseen
    _log_table(out, logger)
    return out


def _log_table(out: dict, logger) -> None:
    for part in ("seen", "unseen"):
        if part not in out:
            continue
        for name, r in out[part].items():
            if not isinstance(r, dict):
                continue
            bits = []
            for k, v in r.items():
                if isinstance(v, float):
                    bits.append(f"{k} {v:.3f}")
                elif isinstance(v, dict) and "top1" in v:
                    bits.append(f"{k} top1 {v['top1']:.3f}" + (f" top5 {v['top5']:.3f}" if "top5" in v else ""))
            logger.info(f"{part:6s} {name:17s} " + ", ".join(bits))
