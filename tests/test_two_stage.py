"""The two-stage comparison (issue #18 part 4): its metric helpers by hand, and the committed table is rendered."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from eegsine.bench.experiments import two_stage

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "two-stage"


def test_window_and_running_means_by_hand():
    assert two_stage.window_means([1, 2, 3, 4, 5], 2) == (1.5, 4.5)
    assert two_stage.window_means([4.0], 100) == (4.0, 4.0)
    assert all(np.isnan(two_stage.window_means([], 3)))
    np.testing.assert_allclose(two_stage.running_mean([1, 2, 3, 4], 2), [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(two_stage.running_mean([2, 4], 5), [2.0, 3.0])
    assert two_stage.seed_mean([0.2, None, 0.4, float("nan")]) == pytest.approx(0.3)
    assert np.isnan(two_stage.seed_mean([None]))


def test_encoder_retrieval_by_hand():
    """1-NN (cosine) of two queries against a four-trial gallery: one right, one wrong -> 0.5."""
    from eegsine.training.joint import encoder_retrieval, retrieval_gallery

    z = np.array([[1, 0], [0, 1], [-1, 0], [0, -1],     # train: classes 0, 1, 0, 1
                  [2, 0.1], [0.1, -3]], np.float32)     # val: near trial 0 (class 0: right), near trial 3 (class 1)
    y = np.array([0, 1, 0, 1, 1, 0])                   # the second query is labelled 0: wrong
    splits = {"train": np.arange(4), "val": np.array([4, 5]), "test": np.array([4])}
    ds = SimpleNamespace(y=y, split=lambda name: splits[name])
    assert sorted(retrieval_gallery(ds, seed=0).tolist()) == [0, 1, 2, 3]  # the whole (small) train split
    assert encoder_retrieval(None, ds, seed=0, z=z) == 0.0                # query 4 -> trial 0 (class 0), label 1
    y[4] = 0
    assert encoder_retrieval(None, ds, seed=0, z=z) == 0.5
    assert encoder_retrieval(None, ds, seed=0, split="test", z=z) == 1.0


def test_joint_aligned_arm_keeps_the_aligned_weights_only_inside_the_arm():
    import torch

    import eegsine.training.diffusion as diffusion
    from eegsine.models.configs import EEGEncoderConfig
    from eegsine.models.eeg_encoder import build_encoder

    aligned = build_encoder(EEGEncoderConfig(n_chans=4, n_times=32, d_model=16, n_layers=1, n_heads=2, patch=8,
                                             kernel=5, emb_dim=8))
    orig = diffusion.fresh_encoder
    with two_stage._joint_encoder_init("aligned"):
        enc = diffusion.fresh_encoder(aligned, 0)
        assert enc is not aligned
        assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), aligned.state_dict().values()))
    assert diffusion.fresh_encoder is orig
    with two_stage._joint_encoder_init("fresh"):
        assert diffusion.fresh_encoder is orig


def _fake_arm(run: Path, arm: str, joint: bool) -> None:
    run.mkdir(parents=True)
    cfg = {"mode": "joint" if joint else "full", "image_cond_frac": 0.0, "epochs": 2, "steps_per_epoch": 3,
           "batch_size": 64, "lr": 1e-3, "encoder_lr": 1e-3, "warmup_steps": 50, "grad_clip": 1.0, "seed": 0}
    (run / "config.json").write_text(json.dumps(cfg))
    hist = [{"epoch": e, "steps": 3, "val_loss": 0.2 / e, "encoder_retrieval_top1": 0.1 * e} for e in (1, 2)]
    cond = {"acc": 0.2, "acc_ci": [0.1, 0.3], "fid_domain": 10.0, "fid_domain_ci": [8.0, 12.0]}
    m = {"diffusion": {"history": hist, "seconds_per_epoch": 1.0},
         "generation": {"split": "test", "n_trials": 10, "feature_network": "domain-cnn-mnist", "sampler": "ddim",
                        "steps": 25, "guidance": 2.0, "ground_truth": {"acc": 1.0},
                        "conditions": {c: dict(cond) for c in two_stage.CONDITIONS}},
         two_stage.RECORD: {"arm": arm, "seed": 0, "encoder_init": "fresh" if joint else "aligned",
                            "retrieval_val_start": 0.15, "retrieval_val_final": 0.2 if joint else 0.15,
                            "retrieval_test_final": 0.3, "aligned_retrieval_val": 0.15, "aligned_retrieval_test": 0.3,
                            "train_wall_s": 5.0, "eval_wall_s": 2.0}}
    if joint:
        m["diffusion"]["joint"] = {"grad_log": "joint_grad_log.json"}
        rows = [[i, 0.5 / (i + 1), 1.0] for i in range(6)]
        (run / "joint_grad_log.json").write_text(json.dumps({"columns": ["step", "encoder", "unet"], "rows": rows}))
    (run / "metrics.json").write_text(json.dumps(m))


def test_arm_records_and_the_render_check(tmp_path):
    _fake_arm(tmp_path / "two-stage", "two-stage", joint=False)
    _fake_arm(tmp_path / "joint", "joint", joint=True)
    frozen, joint = two_stage.arm_record(tmp_path / "two-stage"), two_stage.arm_record(tmp_path / "joint")
    assert frozen["retrieval_val_per_epoch"] == [0.15, 0.15, 0.15] and "grad_norm_encoder" not in frozen
    assert joint["retrieval_val_per_epoch"] == [0.15, 0.1, 0.2] and joint["steps"] == 6
    assert joint["grad_norm_encoder"][:2] == [0.5, 0.25]
    data = {"name": "synthetic-vep", "n_trials": 12, "n_chans": 4, "n_times": 32, "sfreq": 250.0, "n_classes": 10,
            "splits": {"train": 8, "val": 2, "test": 2}}
    res = {"arms": {"two-stage": "", "joint": ""}, "data": data, "chance": 0.1, "missing": ["joint/seed1"],
           "results": [frozen, joint]}
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(res))
    assert two_stage.main(["render", "--out", str(out), "--check"]) == 1  # no table yet
    assert two_stage.main(["render", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "| joint | 0 | 0.150 → 0.200 |" in table and "0 (frozen)" in table
    assert "| joint | 0 | 0.15 | 0.10 | 0.20 |" in table  # retrieval per epoch, epoch 0 = the starting encoder
    assert "Not run (budget): joint/seed1" in table
    assert "| 2.04e-01 → 2.04e-01 |" in table  # six steps < WINDOW: both ends average all: 0.5 * H(6) / 6
    assert (out / two_stage.FIGURE).stat().st_size > 0
    assert two_stage.main(["render", "--out", str(out), "--check"]) == 0
    res["results"][1]["retrieval_test_final"] = 0.9
    (out / "results.json").write_text(json.dumps(res))
    assert two_stage.main(["render", "--out", str(out), "--check"]) == 1


@pytest.mark.skipif(not (RESULTS / "results.json").exists(), reason="no committed two-stage results")
def test_the_committed_table_is_what_results_json_renders(tmp_path):
    """docs/results/two-stage/table.md: every number is rendered from the committed results.json, none typed."""
    res = json.loads((RESULTS / "results.json").read_text())
    assert (RESULTS / "table.md").read_text() == two_stage.render_table(res)
    assert res["results"] and not any(r["steps"] != res["results"][0]["steps"] for r in res["results"])  # one budget
    assert res["data"]["config"] and res["data"]["sha256"]
    for png in RESULTS.glob("*.png"):
        assert png.stat().st_size < 200_000, png
    shutil.copy(RESULTS / "results.json", tmp_path / "results.json")
    shutil.copy(RESULTS / "table.md", tmp_path / "table.md")
    assert two_stage.main(["render", "--out", str(tmp_path), "--check"]) == 0
