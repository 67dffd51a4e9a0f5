"""The resumable paired evaluation: chunk cache, kill-and-resume, worst case per example, paired rows."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from eegsine.bench.experiments.paired_eval import (ChunkCache, Job, Settings, assemble, chunk_seed, collect,
                                                   load_models, plan_for, run_plan)
from eegsine.io import read_json
from eegsine.models.classifier import ClassifierConfig
from eegsine.training.classifier import ClassifierTrainConfig, train_classifier

# digits (8x8, always present), reduced strength: what matters here is the bookkeeping
SETTINGS = Settings(dataset="digits", n_eval=60, n_aa=20, chunk=10, pgd_steps=5, pgd_restarts=2, apgd_steps=5,
                    fab_steps=5, square_queries=30, n_targets=2)
JOBS = [Job("fgsm", 0.1, 60), Job("pgd-ce", 0.1, 60), Job("bpda-pgd", 0.1, 60), Job("transfer", 0.1, 60),
        Job("autoattack", 0.1, 20)]


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    root = tmp_path_factory.mktemp("paired_heads")
    out = {}
    for label, head, init in (("standard", "linear", "default"), ("sine", "sine", "siren")):
        cfg = ClassifierTrainConfig(dataset="digits", mode="natural", epochs=3, batch_size=32, lr=2e-3, n_val_eval=50,
                                    val_pgd_steps=1, grad_log_steps=0,
                                    model=ClassifierConfig(arch="wong_mnist", head=head, init=init))
        train_classifier(cfg, root / label)
        out[label] = str(root / label)
    return out


def _robust_arrays(out: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(out)): np.load(p)["robust"] for p in sorted(out.glob("cache/*/*/*.npz"))}


def test_plan_is_the_issue_grid():
    jobs = plan_for(1000, 500)
    grid = {}
    for j in jobs:
        grid.setdefault(j.attack, set()).add(j.eps)
        assert j.n == (500 if j.attack in ("autoattack", "square") else 1000)
    assert grid["fgsm"] == {0.1, 0.2, 0.3}
    assert grid["autoattack"] == {0.2, 0.3, 0.4, 0.5}
    assert {0.3, 0.4, 0.5, 0.6, 0.7} <= grid["pgd-ce"] and {0.3, 0.4, 0.5, 0.6, 0.7} <= grid["presine-pgd"]
    assert grid["square"] == {0.2, 0.3} and jobs[-1].attack == "square"  # the extra black-box run comes last
    assert jobs[3].eps == 0.3 and len(jobs) == len(set(jobs))  # eps 0.3 right after FGSM; no job twice


def test_chunk_seed_depends_on_every_part():
    s = {chunk_seed(0, "pgd-ce", 0.3, 0), chunk_seed(1, "pgd-ce", 0.3, 0), chunk_seed(0, "pgd-margin", 0.3, 0),
         chunk_seed(0, "pgd-ce", 0.4, 0), chunk_seed(0, "pgd-ce", 0.3, 100)}
    assert len(s) == 5


def test_kill_and_resume_gives_the_uninterrupted_result(heads, tmp_path):
    ref = tmp_path / "ref"
    st = run_plan(ref, heads, SETTINGS, JOBS, log=lambda m: None)
    assert st == {"computed": 2 * 6 + 2 * 6 + 6 + 6 + 2 * 2, "stopped": False}  # bpda, transfer: sine only
    summary_ref = assemble(ref, heads, SETTINGS, JOBS)

    # the same plan in a subprocess, SIGKILLed once a few chunks are committed, then resumed
    out = tmp_path / "killed"
    # the plan spelled out (eegsine takes the checkout root off sys.path, so `tests` is not importable there)
    code = ("from eegsine.bench.experiments.paired_eval import Job, Settings, run_plan; "
            f"run_plan({str(out)!r}, {heads!r}, Settings(**{dataclasses.asdict(SETTINGS)!r}), "
            f"[Job(*j) for j in {[dataclasses.astuple(j) for j in JOBS]!r}], log=lambda m: None)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.time() + 300
    while len(list(out.glob("cache/*/*/*.npz"))) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(out.glob("cache/*/*/*.npz")))
    assert 4 <= done_before < 40, "the kill must land mid-plan"
    st = run_plan(out, heads, SETTINGS, JOBS, log=lambda m: None)
    assert st["computed"] == 40 - done_before and not st["stopped"]
    a, b = _robust_arrays(ref), _robust_arrays(out)
    assert a.keys() == b.keys() and len(a) == 40
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    summary = assemble(out, heads, SETTINGS, JOBS)
    assert summary["rows"] == summary_ref["rows"]
    assert summary["worst_case"] == summary_ref["worst_case"]
    assert not list(out.glob("**/*.tmp")) and not (out / ".paired_eval.lock.tmp").exists()


def test_worst_case_and_paired_rows(heads, tmp_path):
    out = tmp_path / "e"
    jobs = JOBS + [Job("square", 0.1, 20)]
    run_plan(out, heads, SETTINGS, jobs, log=lambda m: None)
    s = assemble(out, heads, SETTINGS, jobs)
    models = load_models(heads)
    res = collect(out, models, SETTINGS, jobs)
    # worst case per example = clean-correct AND robust to every attack at that eps, per head
    w = {r["key"]: r for r in s["worst_case"] if r["eps"] == 0.1}
    for lb in ("standard", "sine"):
        white = np.ones(60, dtype=bool)
        for (a, e), r in res[lb].items():
            if a not in ("autoattack", "square"):  # the subset attacks do not cut the all-images row to 20
                white &= r["robust"]
        assert w["worst"]["heads"][lb]["accuracy"] == pytest.approx(white.mean())
        assert w["worst"]["heads"][lb]["n"] == 60
        full = white[:20] & res[lb][("autoattack", 0.1)]["robust"] & res[lb][("square", 0.1)]["robust"]
        assert w["worst+aa"]["heads"][lb]["accuracy"] == pytest.approx(full.mean())
        assert w["worst+aa"]["heads"][lb]["n"] == 20
    assert set(w["worst"]["attacks_used"]["sine"]) == {"fgsm", "pgd-ce", "bpda-pgd", "transfer"}
    assert set(w["worst"]["attacks_used"]["standard"]) == {"fgsm", "pgd-ce"}
    assert set(w["worst+aa"]["attacks_used"]["standard"]) == {"fgsm", "pgd-ce", "autoattack", "square"}
    p = w["worst"]["paired"]  # sine - standard on the same 60 images
    assert p["a"] == "sine" and p["n"] == 60
    assert p["diff"] == pytest.approx(w["worst"]["heads"]["sine"]["accuracy"]
                                      - w["worst"]["heads"]["standard"]["accuracy"])
    md = (out / "robustness.md").read_text()
    assert "McNemar" in md and "Worst case over every attack incl. AutoAttack (and Square)" in md
    assert (out / "worst_case_vs_eps.png").stat().st_size > 0
    assert read_json(out / "robustness.json")["budget_reached"]["sine"]["autoattack@0.1"] == "20/20"


def test_partial_rows_are_prefixes_and_labelled(heads, tmp_path):
    out = tmp_path / "p"
    run_plan(out, heads, SETTINGS, [Job("fgsm", 0.1, 60)], log=lambda m: None)
    models = load_models(heads)
    cache = ChunkCache(out, SETTINGS, "sine", models["sine"][1])
    cache.path("fgsm", 0.1, 10).unlink()  # a hole: chunks after it are not used
    s = assemble(out, heads, SETTINGS, [Job("fgsm", 0.1, 60)])
    row = next(r for r in s["rows"] if r.get("key") == "fgsm")
    assert row["heads"]["sine"]["n"] == 10 and row["heads"]["standard"]["n"] == 60
    assert row["paired"]["n"] == 10
    assert s["budget_reached"]["sine"]["fgsm@0.1"] == "10/60"


def test_cache_is_keyed_by_weights_and_settings(heads, tmp_path):
    models = load_models(heads)
    a = ChunkCache(tmp_path, SETTINGS, "sine", models["sine"][1]).path("fgsm", 0.1, 0)
    b = ChunkCache(tmp_path, SETTINGS, "sine", models["standard"][1]).path("fgsm", 0.1, 0)
    c = ChunkCache(tmp_path, Settings(**{**SETTINGS.__dict__, "pgd_steps": 6}), "sine", models["sine"][1]).path(
        "fgsm", 0.1, 0)
    assert len({a, b, c}) == 3


def test_a_second_writer_is_refused(heads, tmp_path):
    import fcntl

    from eegsine.errors import UserError

    out = tmp_path / "locked"
    out.mkdir()
    with open(out / ".paired_eval.lock.tmp", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="another paired evaluation is writing here"):
            run_plan(out, heads, SETTINGS, JOBS[:1], log=lambda m: None)
    assert not list(out.glob("cache/*/*/*.npz"))


def test_an_attack_not_yet_run_is_named_in_the_worst_case_row(heads, tmp_path):
    out = tmp_path / "pending"
    done = [Job("fgsm", 0.1, 60), Job("autoattack", 0.1, 20)]
    run_plan(out, heads, SETTINGS, done, log=lambda m: None)
    s = assemble(out, heads, SETTINGS, done + [Job("square", 0.1, 20)])  # square planned, never run
    w = {r["key"]: r for r in s["worst_case"]}
    assert w["worst+aa"]["attacks_pending"] == {"standard": ["square"], "sine": ["square"]}
    assert "PENDING" in w["worst+aa"]["attack"] and w["worst+aa"]["heads"]["sine"]["n"] == 20
    assert w["worst"]["attacks_pending"] == {} and "PENDING" not in w["worst"]["attack"]


def test_committed_mnist_table_is_rendered_from_its_json():
    """docs/results/paper-mnist-fgsmrs/eval: robustness.md is exactly what robustness.json renders."""
    import json
    from pathlib import Path

    from eegsine.bench.experiments.paired_eval import HEAD_ORDER, render_markdown

    d = Path(__file__).resolve().parents[1] / "docs" / "results" / "paper-mnist-fgsmrs" / "eval"
    s = json.loads((d / "robustness.json").read_text())
    assert (d / "robustness.md").read_text() == render_markdown(s, [lb for lb in HEAD_ORDER if lb in s["models"]])


# -- the Square budget ladder -------------------------------------------------------------------------------------
LADDER_JOBS = [Job("fgsm", 0.1, 60), Job("pgd-ce", 0.1, 60), Job("autoattack", 0.1, 20), Job("square", 0.1, 20)]


def test_square_rungs_parse_in_ladder_order():
    from eegsine.bench.robustness.square_ladder import Rung, parse_rungs
    from eegsine.errors import UserError

    assert parse_rungs("50000:3, 10000:1,10000:2") == [Rung(10000, 1), Rung(10000, 2), Rung(50000, 3)]
    for bad in ("10000", "0:1", "a:1", "10:1,10:1", ""):
        with pytest.raises(UserError):
            parse_rungs(bad)


def test_square_ladder_attacks_the_survivors_and_folds_into_the_worst_case(heads, tmp_path):
    from eegsine.bench.experiments.square_ladder import run
    from eegsine.bench.robustness.square_ladder import Rung

    out = tmp_path / "ladder"
    run_plan(out, heads, SETTINGS, LADDER_JOBS, log=lambda m: None)
    rows0 = {r["key"]: r for r in assemble(out, heads, SETTINGS, LADDER_JOBS)["worst_case"]}
    before = rows0["worst+aa"]
    rungs = [Rung(60, 1), Rung(200, 2)]
    st = run(out, heads, SETTINGS, 0.1, rungs, log=lambda m: None, jobs=LADDER_JOBS)
    assert st == {"computed": 2 * 2 * 2, "stopped": False}  # 2 rungs x 2 heads x 2 chunks of 10 (n_aa 20)
    assert run(out, heads, SETTINGS, 0.1, rungs, log=lambda m: None, jobs=LADDER_JOBS)["computed"] == 0  # resumed
    s = assemble(out, heads, SETTINGS, LADDER_JOBS)
    after = {r["key"]: r for r in s["worst_case"]}["worst+aa"]
    models = load_models(heads)
    for lb in ("standard", "sine"):
        lad = s["square_ladder"][lb]["0.1"]
        k0 = round(before["heads"][lb]["accuracy"] * 20)
        assert lad["robust_before"] == k0  # the ladder starts from the committed worst case
        r1, r2 = lad["rungs"]
        assert (r1["attacked"], r2["attacked"]) == (k0, r1["robust_after"])  # each rung: only the survivors
        assert r1["robust_after"] == k0 - r1["newly_broken"] and r2["robust_after"] == r2["attacked"] - r2[
            "newly_broken"]
        assert round(after["heads"][lb]["accuracy"] * 20) == r2["robust_after"]  # folded into the worst case
        assert any(u.startswith("square-ladder@0.1") for u in after["attacks_used"][lb])
        # every chunk attacked exactly the images still robust in it, by an independent count from the cache
        cache = ChunkCache(out, SETTINGS, lb, models[lb][1])
        with np.load(cache.path(Rung(60, 1).name, 0.1, 0)) as z:
            assert np.all((z["idx"] >= 0) & (z["idx"] < 10)) and len(z["idx"]) == len(z["robust"])
    assert "Square budget ladder" in (out / "robustness.md").read_text()
    # the white-box worst case (no AutoAttack) is not touched by the ladder
    assert {r["key"]: r for r in s["worst_case"]}["worst"]["heads"] == rows0["worst"]["heads"]


def test_square_ladder_refuses_an_incomplete_worst_case_and_a_rung_below(heads, tmp_path):
    from eegsine.bench.experiments.square_ladder import run
    from eegsine.bench.robustness.square_ladder import Rung
    from eegsine.errors import UserError

    out = tmp_path / "short"
    run_plan(out, heads, SETTINGS, LADDER_JOBS[:3], log=lambda m: None)  # square never run
    with pytest.raises(UserError, match="not complete.*square@0.1 0/20"):
        run(out, heads, SETTINGS, 0.1, [Rung(60, 1)], log=lambda m: None, jobs=LADDER_JOBS)
    run(out, heads, SETTINGS, 0.1, [Rung(60, 1)], log=lambda m: None, jobs=LADDER_JOBS[:3])
    with pytest.raises(UserError, match="sorts below rungs already run"):
        run(out, heads, SETTINGS, 0.1, [Rung(30, 1)], log=lambda m: None, jobs=LADDER_JOBS[:3])


def test_only_eps_keeps_the_plan_order_and_refuses_an_unknown_eps():
    from eegsine.bench.experiments.paired_eval import only_eps
    from eegsine.errors import UserError

    plan = plan_for(1000, 500)
    sub = only_eps(plan, "0.3")
    assert sub == [j for j in plan if j.eps == 0.3] and sub[-1] == Job("square", 0.3, 500)
    assert only_eps(plan, "") == plan
    with pytest.raises(UserError, match="no attack at eps 0.25"):
        only_eps(plan, "0.3,0.25")


def test_an_image_a_rung_breaks_leaves_the_worst_case_and_the_later_rungs(heads, tmp_path):
    """The folding, judged on a rung file that says one survivor fell (the real rungs above broke none)."""
    from eegsine.bench.experiments.square_ladder import run
    from eegsine.bench.robustness.square_ladder import Rung

    out = tmp_path / "fold"
    run_plan(out, heads, SETTINGS, LADDER_JOBS, log=lambda m: None)
    k0 = round({r["key"]: r for r in assemble(out, heads, SETTINGS, LADDER_JOBS)["worst_case"]}["worst+aa"]["heads"][
        "standard"]["accuracy"] * 20)
    run(out, heads, SETTINGS, 0.1, [Rung(60, 1)], log=lambda m: None, jobs=LADDER_JOBS)
    cache = ChunkCache(out, SETTINGS, "standard", load_models(heads)["standard"][1])
    with np.load(cache.path(Rung(60, 1).name, 0.1, 0)) as z:
        rec = {k: z[k] for k in z.files}
    assert rec["robust"].all() and len(rec["idx"]) > 0  # the real rung broke nothing: mark its first image broken
    rec["robust"][0] = False
    cache.put(Rung(60, 1).name, 0.1, 0, rec)
    run(out, heads, SETTINGS, 0.1, [Rung(60, 1), Rung(100, 2)], log=lambda m: None, jobs=LADDER_JOBS)
    with np.load(cache.path(Rung(100, 2).name, 0.1, 0)) as z:
        assert int(rec["idx"][0]) not in z["idx"].tolist()  # the next rung no longer attacks it
        assert len(z["idx"]) == len(rec["idx"]) - 1
    s = assemble(out, heads, SETTINGS, LADDER_JOBS)
    w = {r["key"]: r for r in s["worst_case"]}["worst+aa"]["heads"]["standard"]
    assert round(w["accuracy"] * 20) == k0 - 1
    assert [r["newly_broken"] for r in s["square_ladder"]["standard"]["0.1"]["rungs"]] == [1, 0]
