"""One function per pipeline stage: its section of the report, numbers beside their figures.

Every number comes from the stage's JSON (:mod:`eegsine.bench.report.data`); a stage's own
markdown is included only collapsed, with its headings shifted under the section's. A stage
that did not run gives a one-line section saying so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from eegsine.bench.report import plots as report_plots
from eegsine.bench.report.data import Run, num, pct, wilson, with_ci
from eegsine.bench.report.doc import Box, Cell, Details, Fig, H, L, Md, P, Row, Table
from eegsine.bench.report.summary import key_eps

HALF = 590  # px: two figures side by side in the 1240 px page


def _section(ident: str, title: str, blocks: list) -> Box:
    return Box(id=ident, tag="section", blocks=[H(2, title), *blocks])


def _not_run(run: Run, stage: str, what: str) -> list:
    st = run.stage_status(stage)
    why = "recorded as done, but its files are missing" if st == "done" else st
    return [P(f"No {what} in this run folder (stage `{stage}`: {why}).", cls="note")]


def _fig(path: Path, caption: str, width: int = HALF) -> list:
    return [Fig(path, caption, width)] if path.is_file() else []


def _md(path: Path, label: str) -> list:
    return [Details(f"{label} ({path.name}, as the stage wrote it)", [Md(path.read_text())])] if path.is_file() else []


def _dagger_note(blocks: list) -> list:
    """A footnote when a table holds an interval that excludes its estimate (JSON written before the fix)."""
    def has(b: Any) -> bool:
        if isinstance(b, Table):
            return any("†" in (c if isinstance(c, str) else c[0]) for r in b.rows for c in r)
        return any(has(x) for x in getattr(b, "blocks", []))
    if any(has(b) for b in blocks):
        blocks.append(P("† the interval excludes its own estimate: the stage ran with the plain percentile "
                        "bootstrap (issue #17); rerun it for the bias-shifted interval.", cls="note"))
    return blocks


# -- classifier ----------------------------------------------------------------------------------
def classifier(run: Run) -> Box:
    title = "Sine-bounded classifier: training"
    if not run.classifier:
        return _section("classifier", title, _not_run(run, "classifier", "classifier runs"))
    names = list(run.classifier)
    m = run.classifier

    def row(label: str, get: Callable[[dict], Any]) -> list[Cell]:
        return [label] + [get(m[n]) for n in names]

    rows = [
        row("head / init", lambda t: f"{t.get('head')} / {t.get('init')}"),
        row("data", lambda t: f"{t.get('dataset')}: {t.get('n_train'):,} train images"),
        row("training", lambda t: f"{t.get('mode')} eps {t.get('eps')}, {t.get('epochs')} epochs, "
                                  f"{t.get('steps')} steps"),
        row("best validation clean / FGSM / PGD", lambda t: " / ".join(pct((t.get("best") or {}).get(k))
                                                                         for k in ("clean", "fgsm", "pgd"))
            + f" (n = {t.get('n_val_eval')}, step {(t.get('best') or {}).get('step')})"),
        row("test clean accuracy", lambda t: with_ci(t.get("test_clean_accuracy"),
                                                     wilson(t.get("test_clean_accuracy"), t.get("n_test")), as_pct=True)
            + f" (n = {t.get('n_test'):,})" if isinstance(t.get("n_test"), int) else pct(t.get("test_clean_accuracy"))),
        row("catastrophic overfitting", lambda t: "; ".join(t.get("catastrophic_overfitting") or []) or (
            "not detected" if t.get("best") else "not watched (no validation images)")),
        row("training wall time", lambda t: f"{num(t.get('train_wall_s'), 1)} s ({num(t.get('train_images_per_s'), 0)} "
                                            "images/s incl. attacks)"),
    ]
    figs: list = []
    for n in names:
        t = m[n]
        figs += _fig(run.root / "classifier" / n / "curves.png",
                     f"{n}: validation accuracy vs step, n = {t.get('n_val_eval')} validation images")
    for n in names:
        steps = max((len(v) for v in (m[n].get("grad_norms_first_steps") or {}).values()), default=0)
        batch = m[n].get("batch_size", "?")
        figs += _fig(run.root / "classifier" / n / "grad_norms.png",
                     f"{n}: per-layer gradient norms, first {steps} steps, n = {batch} images per step")
    for n in names:
        figs += _fig(run.root / "classifier" / n / "init_probe.png",
                     f"{n}: gradient norms at initialisation, one curve per head init")
    return _section("classifier", title, [
        P("Both heads adversarially trained on the same data; the gradient norms of the first steps show whether "
          "the initialisation keeps early-layer gradients alive."),
        Table(["", *names], rows, cls="kv"), Row(figs, wrap=True),
        *[b for n in names for b in _md(run.root / "classifier" / n / "train.md", f"{n} training table")],
    ])


# -- robustness ----------------------------------------------------------------------------------
def robustness(run: Run) -> Box:
    title = "Robustness (L-inf eps in [0, 1] pixel units)"
    r = run.robustness
    if not r:
        return _section("robustness", title, _not_run(run, "robustness", "robustness results"))
    models = list((r.get("models") or {}))
    eps = key_eps(run)
    attacks = r.get("attacks") or {}
    rows: list[list[Cell]] = [["clean", "", *[pct(r["models"][lb].get("clean_accuracy")) for lb in models],
                               str(r.get("n_eval", ""))]]
    for a, meta in attacks.items():
        cells, n = [], ""
        for lb in models:
            v = next((x for x in ((r["models"][lb].get("results") or {}).get(a) or {}).values()
                      if eps is not None and abs(float(x.get("eps", -1)) - eps) < 1e-9), None)
            cells.append(pct(v["accuracy"]) if v else "—")
            n = str(v.get("n", "")) if v else n
        strength = "" if meta.get("full_strength", True) else ("reduced", "muted")
        rows.append([meta.get("label", a), strength, *cells, n])
    checks: list[Cell] = []
    for lb in models:
        for name, c in (r["models"][lb].get("checks") or {}).items():
            ok = bool(c.get("passed"))
            checks.append((f"{'PASS' if ok else 'FAIL'} [{lb}] `{name}`: {c.get('detail', '')}",
                           "pass" if ok else "fail"))
    full = [[t.get("attack", ""), num(t.get("eps"), 2),
             *[pct(t.get(lb)) if t.get(lb) is not None else "—" for lb in models], str(t.get("n", ""))]
            for t in r.get("table", [])]
    speed = [[a, *[num((r["models"][lb].get("images_per_s") or {}).get(a), 1) for lb in models]] for a in attacks]
    n_eval = r.get("n_eval")
    nested = any("accuracy_single_run" in v for m in r["models"].values() for per in (m.get("results") or {}).values()
                 for v in per.values())  # results written before the nesting across eps hold single runs
    return _section("robustness", title, [
        P(f"{r.get('dataset')} {r.get('split', 'test')} ({r.get('data_source', '')}), n = {n_eval} images "
          f"(black-box attacks on the first {r.get('n_eval_expensive')}); only clean-correct images are attacked, "
          "accuracy is over all n; adaptive attacks (BPDA, pre-sine) are judged by the real model."
          + (" Per-example worst case across eps: an image broken at a smaller radius counts as broken at every "
             "larger radius." if nested else "")),
        Table(["attack", "", *models, "n"], rows, caption=f"Accuracy at eps = {eps:g} (the training eps)"
              if eps is not None else "Accuracy"),
        L(checks) if checks else P("no sanity checks recorded", cls="note"),
        Row(_fig(run.root / "robustness" / "acc_vs_eps.png", f"Accuracy vs eps per attack, n = {n_eval} "
                 f"({r.get('n_eval_expensive')} for Square)", 1180)),
        Row(_fig(run.root / "robustness" / "logits.png", f"Logit histograms, clean vs PGD-CE, n = {n_eval} images; "
                 "x: logit value, y: density", 760)),
        Details(f"every attack at every eps ({len(full)} rows)", [Table(["attack", "eps", *models, "n"], full)]),
        Details("attack speed (images/s)", [Table(["attack", *models], speed)]),
    ])


# -- encoder -------------------------------------------------------------------------------------
ENC_METRICS = (("linear_probe_top1", "linear-probe top-1"), ("ncm_top1", "nearest-class-mean top-1"),
               ("kmeans_acc", "k-means accuracy (Hungarian)"), ("cls_head_top1", "class-head top-1"),
               ("retrieval.top1", "retrieval top-1"), ("retrieval.top5", "retrieval top-5"),
               ("fewshot.acc", "few-shot accuracy"))
ENC_COLS = (("aligned", "aligned (this run)"), ("shuffled_labels", "shuffled-label control"),
            ("class_only", "class-only control"))


def _get(d: dict, dotted: str) -> Any:
    for k in dotted.split("."):
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _encoder_table(part: dict, n: int | None) -> Table:
    cols = [(k, lb) for k, lb in ENC_COLS if isinstance(part.get(k), dict)]
    rows = []
    for key, label in ENC_METRICS:
        vals = [_get(part[k], key) for k, _ in cols]
        if all(v is None for v in vals):
            continue
        chance = _get(part["aligned"], key.rsplit(".", 1)[0] + ".chance_" + key.rsplit(".", 1)[1]) \
            if key.startswith("retrieval.") else part.get("chance_top1")
        rows.append([label] + [with_ci(v, wilson(v, n)) if i == 0 and isinstance(v, float) else num(v)
                               for i, v in enumerate(vals)] + [num(chance)])
    bp = part.get("bandpower_logreg")
    if isinstance(bp, dict) and "top1" in bp:
        rows.append(["band-power logistic regression top-1"] + [num(bp["top1"])] + [""] * (len(cols) - 1)
                    + [num(part.get("chance_top1"))])
    return Table(["metric", *[lb for _, lb in cols], "chance"], rows)


def encoder(run: Run) -> Box:
    title = "EEG encoder alignment"
    e = run.encoder
    if not e:
        return _section("encoder", title, _not_run(run, "encoder", "encoder metrics"))
    d = e.get("data") or {}
    blocks: list = [P(f"{d.get('name')}: {d.get('n_train')} train / {d.get('n_val')} val / {d.get('n_test')} test "
                      f"trials. {e.get('selection', '')}. Aligned: 95% Wilson interval over the test trials.")]
    seen = e.get("seen")
    figs = (_fig(run.root / "encoder" / "embedding_aligned.png", f"aligned embedding, t-SNE of n = "
                 f"{(seen or {}).get('n_trials')} test trials (axes: t-SNE 1/2, unitless)", 400)
            + _fig(run.root / "encoder" / "embedding_shuffled.png", f"shuffled-label control, the same n = "
                   f"{(seen or {}).get('n_trials')} trials", 400))
    if seen and "aligned" in seen:
        t = _encoder_table(seen, seen.get("n_trials"))
        t.caption = f"{seen.get('split', 'test')}: n = {seen.get('n_trials')} trials"
        blocks.append(Row([t, *figs]))
    else:
        blocks += figs
    un = e.get("unseen")
    if un and "aligned" in un:
        t = _encoder_table(un, un.get("n_query"))
        t.caption = f"Unseen classes {un.get('classes')}: {un.get('split', '')}, n = {un.get('n_query')} queries"
        blocks.append(t)
    tr, inf = e.get("train") or {}, e.get("inference") or {}
    blocks.append(P(f"Training: best epoch {tr.get('best_epoch')} of {len(tr.get('history', []))} "
                    f"(validation score {num(tr.get('best_val_score'))}), {num(tr.get('wall_s'), 0)} s. Inference: "
                    f"{num(inf.get('trials_per_s'), 0)} trials/s (batch {inf.get('batch_size')}, "
                    f"{inf.get('threads')} threads).", cls="note"))
    return _section("encoder", title, blocks)


# -- diffusion -----------------------------------------------------------------------------------
def diffusion(run: Run, fig_dir: Path) -> Box:
    title = "EEG-conditioned diffusion: training"
    d = run.diffusion
    if not d:
        return _section("diffusion", title, _not_run(run, "diffusion", "diffusion metrics"))
    vae, sp, h = d.get("vae") or {}, d.get("speed") or {}, d.get("history") or []
    last = h[-1] if h else {}
    params = d.get("params") or {}
    rows = [
        ["data", f"{d.get('data')}: {d.get('n_train_trials')} trials, {d.get('n_train_images')} images"],
        ["VAE", f"{vae.get('epochs')} epochs, test reconstruction MSE {num(vae.get('test_recon_mse'), 4)} "
                f"(n = {vae.get('n_test_images')} images)"],
        ["epochs / last loss", f"{len(h)} / train {num(last.get('loss'), 4)}, "
                               f"validation {num(last.get('val_loss'), 4)}"],
        ["parameters", ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in params.items() if isinstance(v, (int, float)))],
        ["sampling speed", f"{sp.get('sampler')} {sp.get('steps')} steps, guidance {sp.get('guidance')}: "
                           f"{num(sp.get('batch1_images_per_s'), 2)} images/s at batch 1, "
                           f"{num(sp.get('batch16_images_per_s'), 1)} at batch 16 ({sp.get('device')}, "
                           f"{sp.get('threads')} threads)"],
        ["wall time", f"{num(d.get('wall_s'), 0)} s ({num(d.get('seconds_per_epoch'), 1)} s/epoch)"],
    ]
    loss = report_plots.diffusion_loss(d, fig_dir / "diffusion_loss.png")
    strip = run.root / "diffusion" / "grids" / "strip.png"
    n_grids = len(list((run.root / "diffusion" / "grids").glob("epoch_*.png")))
    left = [Table(["", ""], rows, cls="kv")] + ([Fig(loss, "Training and validation loss per epoch", 540)]
                                                if loss else [])
    strip_fig = _fig(strip, f"Samples per epoch (rows: {n_grids} epochs, then ground truth; columns: the same "
                            "validation trials, first sample each)", 560)
    return _section("diffusion", title, [
        P("Fixed-seed samples of the same validation trials after every epoch (quality can jump between two "
          "epochs), ground truth in the last row."),
        Row([Box(left, width=660), *strip_fig]),
        *([P(f"The {n_grids} per-epoch grids (4 samples per trial) are in diffusion/grids/; the strip shows the "
             "first sample of each.", cls="note")] if n_grids else []),
        *_fig(run.root / "diffusion" / "joint.png", "Joint training: gradient reaching each part and validation "
                                                    "retrieval per epoch", HALF),
    ])


# -- generation ----------------------------------------------------------------------------------
GEN_KEYS = (("acc", "n-way acc ↑", 3), ("fid_domain", "fid_domain ↓", 2), ("is_domain", "is_domain ↑", 2),
            ("lpips_domain", "lpips_domain ↓", 3), ("ssim", "ssim ↑", 3))


def _gen_table(rows_in: dict[str, dict], first: str) -> Table:
    rows = [[name, str(r.get("n", ""))] + [(with_ci(r.get(k), r.get(k + "_ci"), dg), "num") for k, _, dg in GEN_KEYS]
            for name, r in rows_in.items()]
    return Table([first, "n", *[lb for _, lb, _ in GEN_KEYS]], rows)


def generation(run: Run) -> Box:
    title = "Generation and image quality"
    g, idx = run.generation, run.gen_index
    if not g and not idx:
        return _section("generation", title, _not_run(run, "generation", "generation results"))
    blocks: list = []
    if g:
        n_cls = g.get("n_classes") or 0
        gt = g.get("ground_truth") or {}
        t = _gen_table(g.get("conditions") or {}, "condition")
        t.caption = (f"{g.get('data')} {g.get('split')} split, n = {g.get('n_trials')} trials × "
                     f"{g.get('samples_per_trial')} sample; 95% bootstrap intervals ({g.get('n_boot')} resamples)")
        blocks += [P(f"Features: **{g.get('feature_network')}** (in-project domain CNN; FID/IS/LPIPS use its "
                     f"features, not Inception/AlexNet). `acc`: its {n_cls}-way top-1 on the generated image vs the "
                     f"trial's label; chance {num(1 / n_cls) if n_cls else '—'}, ground-truth images "
                     f"{with_ci(gt.get('acc'), gt.get('acc_ci'))}. "
                     "Controls: `class-only` (the class-mean embedding: no trial-specific information) and "
                     "`shuffled-eeg` (another trial's EEG)."), t]
        if g.get("training_image_cond_frac"):
            blocks.append(P(f"Training: {g['training_image_cond_frac']:.0%} of the UNet's examples were conditioned on "
                            "the stimulus's image embedding, the rest on the trial's EEG embedding.", cls="note"))
    if idx:
        grid = Path(str(idx.get("grid", ""))).name or "grid.png"
        cap = (f"{idx.get('source')}: n = {idx.get('n_trials')} trials × {idx.get('samples_per_trial')} samples "
               f"({idx.get('sampler')}, {idx.get('steps')} steps, seed {idx.get('seed')}), ground truth right")
        blocks = [Row([Box(blocks, width=820), *_fig(run.root / "generation" / grid, cap, 300)])]
    if g and (g.get("per_class") or {}).get("eeg"):
        per = g["per_class"]["eeg"]
        ns = sorted({v.get("n", 0) for v in per.values()})
        blocks.append(Details(f"per class, EEG conditioning ({len(per)} classes, n = {ns[0]}"
                              + (f"-{ns[-1]}" if len(ns) > 1 else "") + " trials each)", [_gen_table(per, "class")]))
    return _section("generation", title, _dagger_note(blocks))


# -- export + verification -----------------------------------------------------------------------
def _gate_rows(gates: list[dict]) -> list[list[Cell]]:
    return [[g.get("gate", "?"), f"{num(g.get('value'), 3)} {g.get('unit', '')}",
             f"{g.get('rule', '<=')} {g.get('limit')} {g.get('unit', '')}",
             ("pass", "pass") if g.get("passed") else ("FAIL", "fail")] for g in gates]


def export(run: Run, fig_dir: Path) -> Box:
    title = "Export, INT8 and verification after compression"
    v, dv = run.verify, run.device_verify
    if not v and not dv:
        return _section("export", title, _not_run(run, "verify", "verification results"))
    blocks: list = []
    if v:
        gates = [g for sec in ("classifier", "eeg") for g in ((v.get(sec) or {}).get("gates") or [])]
        blocks.append(P(f"Overall: **{'PASSED' if v.get('passed') else 'FAILED'}**"
                        + (f" (failed: {', '.join(v.get('failed_gates') or [])})" if v.get("failed_gates") else "")
                        + f". Host ISA class {(v.get('host') or {}).get('isa_class', '?')}: INT8 results on CPUs "
                          "depend on it (`eegsine-verify BUNDLE` re-proves a bundle on another machine)."))
        cl = v.get("classifier") or {}
        acc, cd = cl.get("accuracy") or {}, cl.get("data") or {}
        left: list = [Table(["gate", "value", "limit", ""], _gate_rows(gates), caption="Gates (bundle vs torch)")]
        if acc:
            def p100(a: dict, k: str) -> str:  # verify.json stores accuracies in percent
                return pct(a[k] / 100) if isinstance(a.get(k), (int, float)) else "—"

            rows = [[b, p100(a, "clean"), p100(a, "transfer_pgd"), p100(a, "square")] for b, a in acc.items()]
            left.append(Table(["backend", "clean", "transfer PGD", "Square"], rows,
                              caption=f"Classifier ({cl.get('dataset', '')}): n = {cd.get('n_eval')} images, Square on "
                                      f"{cd.get('n_eval_square')}; eps {cd.get('eps')}"))
        eeg = v.get("eeg") or {}
        m = eeg.get("metrics") or {}
        if isinstance(m, str):  # no domain network to score with: verify says why in one line
            left.append(Table(["EEG → image metrics"], [[m]]))
        elif m:
            t = _gen_table(m, "precision")
            t.caption = (f"EEG → image, n = {(eeg.get('data') or {}).get('n_trials')} trials, features "
                         f"{next(iter(m.values())).get('feature_network', '?')}; image SQNR INT8 vs FP32 "
                         f"{num(eeg.get('image_sqnr_db_int8_vs_fp32'), 2)} dB")
            left.append(t)
        limit = ((run.manifest or {}).get("config") or {}).get("unet_min_sqnr_db")
        sq = report_plots.unet_sqnr(eeg, limit, fig_dir / "unet_sqnr.png") if eeg else None
        right: list = [Fig(sq, "INT8 UNet SQNR per timestep (gate dashed)", 480)] if sq else []
        blocks.append(Row([Box(left), *right]))
    if dv:
        blocks.append(Table(["gate", "value", "limit", ""], _gate_rows(dv.get("gates") or []),
                            caption=f"Device re-verification (eegsine-verify, {dv.get('when', '')}, "
                                    f"{(dv.get('host') or {}).get('isa_class', '?')}): "
                                    f"{'PASSED' if dv.get('passed') else 'FAILED'}"))
    return _section("export", title, _dagger_note(blocks))


# -- streaming -----------------------------------------------------------------------------------
def stream(run: Run) -> Box:
    title = "Streaming"
    s, folder = run.stream, run.root / "stream"
    pngs = sorted(folder.glob("*.png")) if folder.is_dir() else []
    md = folder / "stream.md"
    if not s and not pngs and not md.is_file():
        return _section("stream", title, _not_run(run, "stream", "stream summary"))
    blocks: list = []
    if s:
        lat = s.get("latency_ms") or {}
        rows = [
            ["source", f"{s.get('description') or s.get('source')} ({s.get('stopped', '')})"],
            ["bundle / precision", f"{s.get('bundle')} / {s.get('precision')}"],
            ["signal", f"{s.get('n_chans')} ch @ {num(s.get('sfreq'), 0)} Hz, {num(s.get('signal_s'), 1)} s "
                       f"({s.get('samples'):,} samples) in {num(s.get('wall_s'), 2)} s wall"
             if isinstance(s.get("samples"), int) else "—"],
            ["markers / decisions", f"{s.get('markers')} / {s.get('decisions')} (dropped markers "
                                    f"{s.get('dropped_markers')}, dropped samples {s.get('dropped_samples')})"],
            ["latency (marker's last chunk → decision)", f"p50 {num(lat.get('p50'))}, p90 {num(lat.get('p90'))}, "
                                                          f"p99 {num(lat.get('p99'))}, max {num(lat.get('max'))} ms "
                                                          f"(n = {lat.get('n')})"],
            ["deadline", f"{num(s.get('deadline_ms'), 0)} ms: {s.get('deadline_misses')} missed, "
                         f"{s.get('buffer_overruns')} buffer overruns"],
        ]
        if isinstance(s.get("accuracy"), (int, float)):
            rows.append(["decision accuracy", with_ci(s["accuracy"], wilson(s["accuracy"], s.get("decisions")))
                         + f" (n = {s.get('decisions')}, Wilson 95%)"])
        if s.get("warnings"):
            rows.append(["warnings", ("; ".join(map(str, s["warnings"])), "fail")])
        rows.append(["host", f"{s.get('cpu', '?')}, {s.get('threads', '?')} threads"])
        figs = [Fig(p, f"{p.stem.replace('_', ' ')} (n = {lat.get('n', '?')} decisions)", 480) for p in pngs]
        blocks.append(Row([Table(["", ""], rows, cls="kv"), *figs]))
    else:
        blocks.append(Row([Fig(p, p.stem.replace("_", " "), 480) for p in pngs]))
    blocks += _md(md, "stream report")
    return _section("stream", title, blocks)


# -- bench ---------------------------------------------------------------------------------------
def bench(run: Run, fig_dir: Path) -> Box:
    title = "Benchmarks (ratios vs torch eager, same run)"
    b = run.bench
    if not b:
        return _section("bench", title, _not_run(run, "bench", "bench results"))
    rows_in = b.get("rows") or []
    ok = [r for r in rows_in if r.get("status") == "ok"]
    models = list(dict.fromkeys(r["model"] for r in ok))
    backends = list(dict.fromkeys(r["backend"] for r in ok))
    cell = {(r["model"], r["backend"]): r for r in ok}

    def fmt(r: dict | None) -> str:
        if r is None:
            return ""
        sp = r.get("speedup_p50_vs_eager")
        return f"{num(r.get('p50_ms'), 3 if r.get('p50_ms', 1) < 10 else 1)}" + (
            f" ({sp:.2g}×)" if isinstance(sp, (int, float)) and r["backend"] != "torch-eager" else "")

    table = Table(["model", *[bk.replace("onnxruntime-", "ort-") for bk in backends]],
                  [[m, *[fmt(cell.get((m, bk))) for bk in backends]] for m in models],
                  caption="batch-1 p50 latency in ms (speed-up vs torch eager); ort = ONNX Runtime")
    # unavailable backends, once each, grouped by reason
    why: dict[str, set[str]] = {}
    for r in rows_in:
        if r.get("status") != "ok" and (r.get("model"), r.get("backend")) not in cell:
            why.setdefault(f"{r.get('status')}: {r.get('reason', '')}".strip(": "), set()).add(r.get("backend", "?"))
    other = [f"{', '.join(sorted(bks))} ({reason})" for reason, bks in why.items()]
    plot = report_plots.bench_latency(b, fig_dir / "bench_latency.png")
    meta = b.get("meta") or {}
    quality = [[r["model"], r["backend"], num(r.get("file_mb"), 3), num(r.get("size_vs_ort_fp32"), 2),
                num(r.get("sqnr_db_vs_torch"), 1), num(r.get("accuracy")) if r.get("accuracy") is not None else "",
                num(r.get("throughput_per_s"), 0), num(r.get("p99_ms"), 3)]
               for r in ok if r.get("precision") == "int8" or r.get("backend") == "onnxruntime-fp32"]
    targets = [[t.get("target", ""), t.get("measured", ""), ("met", "pass") if t.get("met") else ("missed", "fail")]
               for t in b.get("targets") or []]
    n_met = sum(bool(t.get("met")) for t in b.get("targets") or [])
    return _section("bench", title, [
        P(f"{meta.get('machine', '?')}; {meta.get('threads', '?')} intra-op threads for torch and ONNX Runtime; "
          f"latency over up to {meta.get('iters', '?')} calls after {meta.get('warmup', '?')} warm-up calls; peak RSS "
          f"{num(meta.get('peak_rss_mb'), 0)} MB."),
        table,
        *([P("Not measured here: " + "; ".join(other) + ".", cls="note")] if other else []),
        *([Fig(plot, "batch-1 p50 latency per model and backend (x: ms, log scale)", 820)] if plot else []),
        *([Table(["target", "measured", ""], targets, caption=f"Targets: {n_met}/{len(targets)} met", cls="kv")]
          if targets else []),
        Details(f"file size, SQNR, accuracy and throughput of the ONNX rows ({len(quality)})",
                [Table(["model", "backend", "file MB", "size vs FP32", "SQNR dB vs torch", "accuracy",
                        "throughput /s", "p99 ms"], quality)]),
    ])


# -- stages and commands -------------------------------------------------------------------------
def stages(run: Run, commands: list[str] | None) -> Box:
    st = (run.pipeline or {}).get("stages", [])
    rows: list[list[Cell]] = []
    for s in st:
        status = str(s.get("status", "?"))
        secs = run.stage_seconds(s.get("name", "")) or s.get("seconds") or 0.0
        k = "fail" if status.startswith("failed") else "muted" if status.startswith("not run") else ""
        rows.append([s.get("name", "?"), (status, k) if k else status, num(float(secs), 1)])
    blocks: list = [Table(["stage", "status", "seconds (last run)"], rows)] if rows else [
        P("No pipeline.json: this folder was not written by `eegsine pipeline`.", cls="note")]
    if commands:
        blocks.append(Md("```\n" + "\n".join(commands) + "\n```"))
    return _section("stages", "Stages and exact commands", blocks)
