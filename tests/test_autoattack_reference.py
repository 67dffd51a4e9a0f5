"""eegsine's AutoAttack against the authors' reference implementation (pyautoattack = fra31/auto-attack), per example.

Slow: both full-strength "standard" ensembles on 40 MNIST test images per head at eps = 0.3 ([0, 1] pixel
units). The models are the committed paper-mnist-fgsmrs heads (docs/results/paper-mnist-fgsmrs/models), or,
where they are absent, the same recipe trained here for one epoch on 6,000 images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

MODELS = Path(__file__).resolve().parents[1] / "docs" / "results" / "paper-mnist-fgsmrs" / "models"
N, EPS = 40, 0.3


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    if all((MODELS / h / "model.safetensors").exists() for h in ("standard", "sine")):
        return {h: str(MODELS / h) for h in ("standard", "sine")}
    from eegsine.training.classifier import classifier_preset, train_classifier

    root = tmp_path_factory.mktemp("aa_ref_heads")
    for h, cfg in classifier_preset("paper-mnist-fgsmrs").items():
        train_classifier(cfg.replace(epochs=1, n_train=6000, n_val_eval=200), root / h)
    return {h: str(root / h) for h in ("standard", "sine")}


@pytest.mark.parametrize("head", ["standard", "sine"])
def test_eegsine_autoattack_breaks_every_image_the_reference_breaks(heads, head):
    pytest.importorskip("pyautoattack", reason="pip install pyautoattack==0.2.0 (make install does)")
    from eegsine.bench.experiments.aa_crosscheck import crosscheck
    from eegsine.bench.experiments.paired_eval import Settings, load_models, load_subset

    torch.set_num_threads(1)
    x, y, _, _ = load_subset(Settings())
    model = load_models({head: heads[head]})[head][0]
    r = crosscheck(model, x[:N], y[:N], EPS)
    # both stay inside the ball; the reference's labels are the model's on its points
    assert r["ours_linf"].max() <= EPS + 1e-6 and r["ref_linf"].max() <= EPS + 1e-6
    assert r["ref_pred_consistent"]
    # every image eegsine counts as broken by a component is misclassified at its adversarial point
    assert np.all(r["ours_adv_misclassified"][r["ours_success_by"] >= 0])
    assert r["ref_broken"].any(), "the check is empty: the reference broke no image"
    assert not r["missed_by_ours"], (f"{head}: the reference broke test-subset images {r['missed_by_ours']} "
                                     f"that eegsine's AutoAttack did not (robust {r['robust_ours']:.3f} vs "
                                     f"{r['robust_ref']:.3f})")
