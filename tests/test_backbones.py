"""The field's decoders as embedding backbones, and Euclidean alignment (issue #26 item 4).

Each backbone trains one optimizer step of the aligned objective and gives unit-norm embeddings of
``emb_dim``; MiniRocket's fitted kernels survive save / load; Euclidean alignment leaves every group's
mean covariance at the identity (the reference from the fitting trials) and the encoder trainer runs with it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eegsine.data import EEGSet
from eegsine.data.alignment import euclidean_alignment, mean_covariance
from eegsine.models.eeg_backbones import BACKBONES
from eegsine.models.eeg_encoder import EEGEncoder, EEGEncoderConfig, build_encoder, normalise_trials
from eegsine.training.encoder import EncoderTrainConfig, train_encoder
from eegsine.training.losses import prototypical_loss


def _trials(n: int, n_chans: int, n_times: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes that differ by a spatial pattern times a bump, in correlated noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    mix = rng.normal(size=(n_chans, n_chans))
    x = np.einsum("cd,ndt->nct", mix, rng.normal(size=(n, n_chans, n_times)))
    bump = np.exp(-((np.arange(n_times) - n_times / 2) / (n_times / 8)) ** 2)
    x += 2.0 * np.einsum("n,c,t->nct", 2 * y - 1.0, rng.normal(size=n_chans), bump)
    return x.astype(np.float32), y.astype(np.int64)


@pytest.mark.parametrize("arch", sorted(BACKBONES))
@pytest.mark.parametrize("n_chans,n_times,sfreq", [(6, 256, 128.0), (28, 50, 100.0)])
def test_backbone_trains_a_step_and_embeds(arch, n_chans, n_times, sfreq):
    torch.manual_seed(0)
    cfg = EEGEncoderConfig(arch=arch, n_chans=n_chans, n_times=n_times, sfreq=sfreq, emb_dim=16, dropout=0.25)
    model = build_encoder(cfg)
    x, y = _trials(16, n_chans, n_times)
    model.fit_data(x, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    xb, yb = torch.from_numpy(x), torch.from_numpy(y)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    z = model(xb)
    assert z.shape == (16, 16)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(16), atol=1e-5, rtol=0)
    loss, _ = prototypical_loss(z[:8], yb[:8], z[8:], yb[8:], torch.tensor(10.0))
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters()), "a parameter the loss does not reach"
    opt.step()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k in dict(
        model.named_parameters())), "the step changed nothing"
    model.eval()
    assert model(xb[:3]).shape == (3, 16)


def test_minirocket_fits_on_train_and_round_trips(tmp_path):
    cfg = EEGEncoderConfig(arch="minirocket", n_chans=4, n_times=64, sfreq=128.0, emb_dim=8)
    model = build_encoder(cfg).eval()
    x, _ = _trials(12, 4, 64)
    with pytest.raises(Exception, match="not fitted"):
        model(torch.from_numpy(x))
    model.fit_data(x, seed=3)
    feats = model.body(normalise_trials(torch.from_numpy(x), cfg.center))  # as forward() feeds it
    # standardised with the fitting trials' mean and sd: ~zero mean, unit sd on those trials
    assert feats.shape[1] == model.body.out_dim == 9996
    assert float(feats.mean(0).abs().max()) < 1e-3 and float(feats.std(0, unbiased=False).max()) <= 1.0 + 1e-3
    model.save_pretrained(tmp_path / "enc")
    loaded = EEGEncoder.from_pretrained(tmp_path / "enc").eval()
    torch.testing.assert_close(loaded(torch.from_numpy(x)), model(torch.from_numpy(x)), atol=0, rtol=0)


def test_euclidean_alignment_whitens_each_group():
    rng = np.random.default_rng(0)
    x, _ = _trials(40, 5, 100)
    groups = np.repeat([0, 1], 20)
    x[groups == 1] *= 7.0                                 # a second subject with another gain
    fit = np.flatnonzero(rng.random(40) < 0.7)
    xa = euclidean_alignment(x, groups, fit)
    for g in (0, 1):
        ref = fit[groups[fit] == g]
        np.testing.assert_allclose(mean_covariance(xa[ref]), np.eye(5), atol=1e-4)
        assert not np.allclose(mean_covariance(x[ref]), np.eye(5), atol=0.1)
    # a group without fitting trials is aligned on its own trials
    xb = euclidean_alignment(x, groups, np.flatnonzero(groups == 0))
    np.testing.assert_allclose(mean_covariance(xb[groups == 1]), np.eye(5), atol=1e-4)


def test_trainer_runs_minirocket_with_euclidean_alignment(tmp_path):
    x, y = _trials(60, 5, 64, seed=1)
    idx = np.arange(60)
    ds = EEGSet("test-two", x, y, np.zeros(60, np.int64), -np.ones(60, np.int64), 128.0,
                [f"E{i}" for i in range(5)], ["a", "b"],
                {"train": idx[:36], "val": idx[36:48], "test": idx[48:]}).check()
    cfg = EncoderTrainConfig(data="test-two", image_set="", align="euclidean", w_clip=0.0, w_cls=1.0,
                             image_anchor=False, encoder=EEGEncoderConfig(arch="minirocket", emb_dim=8, dropout=0.2),
                             n_way=2, k_shot=4, n_query=4, epochs=2, controls=False, plot=False, eval_episodes=5)
    m = train_encoder(cfg, tmp_path / "run", data=ds)
    assert m["seen"]["aligned"]["linear_probe_top1"] >= 0.75  # the classes differ by a strong pattern
    assert EEGEncoder.from_pretrained(tmp_path / "run" / "model").cfg.arch == "minirocket"
