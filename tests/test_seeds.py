"""The between-seed answer for the sine head: per-seed paired rows in, mean over seeds and random effects out."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from eegsine.bench.experiments import seeds as S
from eegsine.io import write_json


def _row(seed, n10, n01, n=500, planned=500, eps=0.3):
    return S.SeedRow(str(seed), eps, n, planned, 0.8, 0.8 + (n10 - n01) / n, n10, n01, (-0.1, 0.1), 0.5)


def test_paired_variance_is_the_variance_of_the_mean_per_image_difference():
    rng = np.random.default_rng(0)
    d = rng.choice([-1, 0, 1], size=400, p=[0.1, 0.75, 0.15])
    r = _row(0, int((d == 1).sum()), int((d == -1).sum()), n=len(d), planned=len(d))
    assert r.diff == pytest.approx(d.mean()) and r.var == pytest.approx(d.var() / len(d))


def test_mean_over_seeds_is_the_one_sample_t_interval():
    diffs = [0.06, -0.092, 0.01, -0.02]
    m = S.mean_over_seeds(diffs)
    ref = stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert m["mean"] == pytest.approx(np.mean(diffs)) and m["ci"] == pytest.approx([ref.low, ref.high])
    assert S.mean_over_seeds([0.06])["ci"] is None  # one seed gives no between-seed interval


def test_random_effects_agree_with_fixed_effects_when_seeds_agree_and_widen_when_they_do_not():
    same = S.random_effects([0.05, 0.05, 0.05], [1e-4, 2e-4, 1e-4])
    assert same["tau2"] == 0.0 and same["pooled"] == pytest.approx(0.05) and same["i2"] == 0.0
    fixed_se = math.sqrt(1 / (1 / 1e-4 + 1 / 2e-4 + 1 / 1e-4))
    assert same["se"] == pytest.approx(fixed_se)
    split = S.random_effects([0.06, -0.092], [1.6e-4, 3.0e-4])   # the first two seeds' kind of disagreement
    assert split["tau2"] > 0 and split["i2"] > 0.9 and split["ci"][0] < 0 < split["ci"][1] and split["p"] > 0.05
    # DerSimonian-Laird by hand for two studies
    w = [1 / 1.6e-4, 1 / 3.0e-4]
    fe = (w[0] * 0.06 + w[1] * -0.092) / sum(w)
    q = w[0] * (0.06 - fe) ** 2 + w[1] * (-0.092 - fe) ** 2
    tau2 = (q - 1) / (sum(w) - sum(x * x for x in w) / sum(w))
    assert split["tau2"] == pytest.approx(tau2) and split["q"] == pytest.approx(q)


def _robustness(folder, n10, n01, n=500, planned=500):
    write_json(folder / "robustness.json", {"worst_case": [
        {"key": "worst+aa", "eps": 0.3, "n_planned": planned, "paired": {
            "a": "sine", "b": "standard", "n": n, "n10": n10, "n01": n01, "acc_a": 0.8, "acc_b": 0.78,
            "ci_newcombe": [-0.01, 0.05], "p_mcnemar_exact": 0.04}},
        {"key": "worst", "eps": 0.3, "paired": {"a": "sine", "b": "standard", "n": 1000}}]})


def test_a_running_seed_is_listed_but_left_out_of_the_between_seed_answer(tmp_path):
    for seed, (n10, n01, n) in {"0": (42, 12, 500), "1": (20, 66, 500), "2": (5, 1, 100)}.items():
        (tmp_path / seed).mkdir()
        _robustness(tmp_path / seed, n10, n01, n=n)
    argv = ["--out", str(tmp_path / "out")] + [f"--seed={s}={tmp_path / s}" for s in "012"]
    assert S.main(argv) == 0
    md = (tmp_path / "out" / "seeds.md").read_text()
    assert "| 2 | 0.3 | 100 of 500 (running) |" in md and (tmp_path / "out" / "seeds.png").is_file()
    between = S.between_seeds([r for s in "012" for r in S.read_seed(s, tmp_path / s)])
    assert between["0.3"]["seeds"] == ["0", "1"]
    assert between["0.3"]["mean_over_seeds"]["mean"] == pytest.approx(((42 - 12) + (20 - 66)) / 2 / 500)


def test_a_missing_or_misordered_evaluation_is_one_line(tmp_path, capsys):
    assert S.main(["--seed", f"0={tmp_path}", "--out", str(tmp_path / "o")]) == 2
    assert "robustness.json not found" in capsys.readouterr().err
    write_json(tmp_path / "robustness.json", {"worst_case": [{"key": "worst+aa", "eps": 0.3, "paired": {
        "a": "standard", "b": "sine", "n": 10, "n10": 1, "n01": 0, "acc_a": 0.1, "acc_b": 0.0,
        "ci_newcombe": [0, 1], "p_mcnemar_exact": 1}}]})
    assert S.main(["--seed", f"0={tmp_path}", "--out", str(tmp_path / "o")]) == 2
    assert "not sine with standard" in capsys.readouterr().err


def test_the_square_ladder_of_each_seed_is_tabled_with_its_convergence(tmp_path):
    import json

    for seed, new in (("0", [3, 0]), ("1", [2, 1])):
        (tmp_path / seed).mkdir()
        _robustness(tmp_path / seed, 10, 5)
        rj = tmp_path / seed / "robustness.json"
        data = json.loads(rj.read_text())
        rungs = [{"queries": q, "seed": i + 1, "attacked": 0, "newly_broken": k, "robust_after": 400 - sum(new[:i + 1]),
                  "seconds": 1.0} for i, (q, k) in enumerate(zip((10000, 20000), new))]
        data["square_ladder"] = {"standard": {"0.3": {"robust_before": 400, "rungs": rungs}}}
        rj.write_text(json.dumps(data))
    assert S.main(["--out", str(tmp_path / "out"), f"--seed=0={tmp_path / '0'}", f"--seed=1={tmp_path / '1'}"]) == 0
    md = (tmp_path / "out" / "seeds.md").read_text()
    assert "| 0 | Standard | 0.3 | 400 | 10,000 q: 3, 20,000 q: 0 | 397 | yes |" in md
    assert "| 1 | Standard | 0.3 | 400 | 10,000 q: 2, 20,000 q: 1 | 397 | no (the last rung still broke images) |" in md
