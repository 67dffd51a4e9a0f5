"""EEG encoders, alignment training and its evaluation protocol (issue 5).

Fast by construction: small trial counts, few epochs, 2 threads. Every training test
asserts on numbers that a broken loss, sampler or split would change.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from eegsine.data import EEGSet, load_images
from eegsine.metrics.embedding import hungarian_accuracy, kmeans_accuracy, prototype_fewshot, retrieval_topk
from eegsine.errors import UserError
from eegsine.models.eeg_encoder import (ARCHS, EEGEncoder, EEGEncoderConfig, EEGTokenMapper, build_encoder,
                                        check_input)
from eegsine.training.encoder import EncoderTrainConfig, encoder_preset, train_encoder
from eegsine.training.episodes import EpisodeSampler
from eegsine.training.losses import clip_loss, prototypical_loss


def small_vep(n_chans: int = 12, n_times: int = 64, per_image: int = 3, imgs_per_class: int = 8,
              seed: int = 0) -> EEGSet:
    """A tiny evoked-response set paired with real digits images, built here (independent of the loaders)."""
    rng = np.random.default_rng(seed)
    ims = load_images("digits")
    sel = np.concatenate([rng.choice(np.flatnonzero(ims.train_y == c), imgs_per_class, replace=False)
                          for c in range(10)])
    images, labels = ims.train_x[sel], ims.train_y[sel]
    t = np.arange(n_times) / 128.0
    topo = rng.normal(size=(10, n_chans))
    wave = np.exp(-((t[None] - rng.uniform(0.1, 0.35, (10, 1))) / 0.04) ** 2)            # (10, T)
    per_img = images.reshape(len(images), -1) @ rng.normal(size=(64, n_chans)) * 0.1     # (M, C)
    xs, im = [], []
    for m in range(len(images)):
        for _ in range(per_image):
            noise = rng.normal(size=(n_chans, n_times)) + 0.2 * rng.normal(size=(n_chans, n_times)).cumsum(1)
            xs.append(0.8 * np.outer(topo[labels[m]] + per_img[m], wave[labels[m]]) + noise)
            im.append(m)
    im = np.array(im)
    part = rng.permutation(len(images)) % 5                       # by image: 3/5 train, 1/5 val, 1/5 test
    splits = {"train": np.flatnonzero(part[im] < 3), "val": np.flatnonzero(part[im] == 3),
              "test": np.flatnonzero(part[im] == 4)}
    return EEGSet("test-vep", np.stack(xs).astype(np.float32), labels[im].astype(np.int64),
                  np.zeros(len(im), np.int64), im.astype(np.int64), 128.0, [f"E{i}" for i in range(n_chans)],
                  [str(i) for i in range(10)], splits, images, labels.astype(np.int64)).check()


# -- encoders ------------------------------------------------------------------------------------
# minirocket is left out: its features are fitted on data first and are not differentiable with respect to the
# input (its own tests: tests/test_backbones.py)
@pytest.mark.parametrize("arch", sorted(set(ARCHS) - {"minirocket"}))
@pytest.mark.parametrize("n_chans,n_times", [(128, 440), (28, 50), (7, 97)])
def test_encoder_shapes_norm_and_gradients(arch, n_chans, n_times):
    if arch in ("eegnet", "eegnet-v4") and n_times < 32:
        pytest.skip("EEGNet needs n_times >= 32")
    cfg = EEGEncoderConfig(arch=arch, n_chans=n_chans, n_times=n_times, sfreq=100.0, emb_dim=24, d_model=16,
                           n_heads=4, patch=4, kernel=7)
    model = build_encoder(cfg)
    x = torch.randn(3, n_chans, n_times, requires_grad=True)
    z = model(x)
    assert z.shape == (3, 24)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    z[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad), "unused parameters"


def test_encoder_save_load_round_trip(tmp_path):
    cfg = EEGEncoderConfig(arch="transformer", n_chans=8, n_times=64, sfreq=128.0, emb_dim=16, d_model=16)
    model = build_encoder(cfg).eval()
    model.save_pretrained(tmp_path / "enc")
    loaded = EEGEncoder.from_pretrained(tmp_path / "enc")
    assert loaded.cfg == cfg
    x = torch.randn(5, 8, 64)
    torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    assert EEGEncoderConfig.load(tmp_path / "enc").to_dict() == cfg.to_dict()
    tc = encoder_preset("tiny")
    tc.save(tmp_path)
    assert EncoderTrainConfig.load(tmp_path) == tc


def test_encoder_rejects_bad_input():
    cfg = EEGEncoderConfig(arch="lstm", n_chans=8, n_times=64, sfreq=128.0, d_model=8)
    model = build_encoder(cfg)
    with pytest.raises(UserError, match="has 9 channels but the encoder was built for n_chans=8"):
        model(torch.randn(2, 9, 64))
    with pytest.raises(UserError, match="has 60 samples but the encoder was built for n_times=64"):
        model(torch.randn(2, 8, 60))  # an LSTM would silently accept this
    x = torch.randn(3, 8, 64)
    x[1, 2, 5] = float("nan")
    with pytest.raises(UserError, match=r"1 trial\(s\) contain NaN/inf \(first: trial 1\)"):
        model(x)
    with pytest.raises(UserError, match="expected shape"):
        check_input(np.zeros((8, 64), np.float32), cfg)
    with pytest.raises(UserError, match="n_chans=9 but"):
        EEGEncoderConfig(n_chans=9).fit_to(8, 64, 128.0, what="data")


def test_token_mapper_shape():
    m = EEGTokenMapper(emb_dim=16, n_tokens=4, cross_attention_dim=32)
    out = m(torch.nn.functional.normalize(torch.randn(3, 16), dim=1))
    assert out.shape == (3, 4, 32)
    with pytest.raises(UserError, match=r"expected \(batch, 16\)"):
        m(torch.randn(3, 15))


# -- episodes and losses ------------------------------------------------------------------------
def test_episode_sampler_skips_small_classes_and_errors_when_too_few(caplog):
    y = np.array([0] * 10 + [1] * 10 + [2] * 3 + [3] * 10)  # class 2: 3 trials < k+q = 4; class 4: empty
    log = logging.getLogger("test-episodes")
    with caplog.at_level(logging.WARNING, logger="test-episodes"):
        s = EpisodeSampler(y, [0, 1, 2, 3, 4], n_way=3, k_shot=2, n_query=2, logger=log)
    assert s.classes.tolist() == [0, 1, 3]
    assert s.skipped == [(2, 3), (4, 0)]
    assert "class 2 (3), class 4 (0)" in caplog.text
    sup, qry = s.sample(np.random.default_rng(0))
    assert len(sup) == 6 and len(qry) == 6 and not set(sup) & set(qry)
    assert sorted(set(y[sup])) == [0, 1, 3]
    with pytest.raises(UserError, match="n_way=4 needs at least 4"):
        EpisodeSampler(y, [0, 1, 2, 3, 4], n_way=4, k_shot=2, n_query=2)


def test_prototypical_loss_rejects_empty_class_and_scores_correctly():
    z_s = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    y_s = torch.tensor([0, 0, 5, 5])
    z_q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [0.05, 1.0]]), dim=1)
    loss, acc = prototypical_loss(z_s, y_s, z_q, torch.tensor([0, 5]), torch.tensor(10.0))
    assert float(acc) == 1.0 and float(loss) < 0.01
    _, acc = prototypical_loss(z_s, y_s, z_q, torch.tensor([5, 0]), torch.tensor(10.0))
    assert float(acc) == 0.0
    with pytest.raises(UserError, match="class 7 has query trials but no support"):
        prototypical_loss(z_s, y_s, z_q, torch.tensor([0, 7]), torch.tensor(10.0))
    # two trials of the same image are both positives: loss equals the duplicate-free case with those merged
    e = torch.eye(3)
    assert float(clip_loss(e, e, torch.tensor([0, 1, 2]), torch.tensor(50.0))) < 1e-6
    assert float(clip_loss(e, e[[1, 0, 2]], torch.tensor([0, 1, 2]), torch.tensor(50.0))) > 10


# -- metrics -------------------------------------------------------------------------------------
def test_metrics_on_known_embeddings():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 25)
    centers = np.eye(4, 8) * 5
    z = centers[y] + rng.normal(size=(100, 8)) * 0.1
    assert hungarian_accuracy((y + 1) % 4, y) == 1.0          # relabelled clusters are perfect
    assert hungarian_accuracy(np.zeros(100, int), y) == 0.25  # one cluster: best single match
    assert kmeans_accuracy(z, y) == 1.0
    img_emb, img_lab = np.eye(4, 8)[np.repeat(np.arange(4), 2)], np.repeat(np.arange(4), 2)
    image = 2 * y                                             # each trial saw the first image of its class
    r = retrieval_topk(z, y, image, img_emb, img_lab, pool=np.arange(8), n_way=4, ks=(1, 2))
    assert r["top1"] == 1.0 and r["chance_top1"] == 0.25 and r["chance_top2"] == 0.5
    r = retrieval_topk(-z, y, image, img_emb, img_lab, pool=np.arange(8), n_way=4, ks=(1,))
    assert r["top1"] == 0.0
    fs = prototype_fewshot(z, y, z, y, n_way=3, k_shot=2, n_episodes=20)
    assert fs["top1"] == 1.0 and fs["n_way"] == 3 and fs["classes_skipped"] == 0


# -- training ------------------------------------------------------------------------------------
def _quick_cfg(**kw) -> EncoderTrainConfig:
    base = dict(data="test-vep", encoder=EEGEncoderConfig(d_model=16, n_layers=1, n_heads=2, patch=8, kernel=9,
                                                          emb_dim=32, dropout=0.0),
                image_encoder=encoder_preset("tiny").image_encoder.replace(emb_dim=32), image_epochs=1,
                n_way=5, k_shot=2, n_query=2, epochs=2, lr=3e-3, controls=False, plot=False, eval_episodes=20)
    base.update(kw)
    return EncoderTrainConfig(**base)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    ds = small_vep()
    cfg = _quick_cfg(heldout_classes=3)
    full = train_encoder(cfg, tmp_path / "full", data=ds)
    unseen = full["unseen"]                                   # 3 classes never trained on: few-shot protocol
    assert len(unseen["classes"]) == 3 and not set(unseen["classes"]) & set(full["data"]["seen_classes"])
    assert unseen["aligned"]["fewshot"]["n_way"] == 3 and unseen["aligned"]["retrieval"]["n_way"] == 3

    class Killed(Exception):
        pass

    def kill_after_1(epoch, rec):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        train_encoder(cfg, tmp_path / "resumed", data=ds, callback=kill_after_1)
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    resumed = train_encoder(cfg, tmp_path / "resumed", data=ds)
    assert [h["epoch"] for h in resumed["train"]["history"]] == [1, 2]
    a = (tmp_path / "full" / "model" / "model.safetensors").read_bytes()
    b = (tmp_path / "resumed" / "model" / "model.safetensors").read_bytes()
    assert a == b
    assert full["seen"]["aligned"] == resumed["seen"]["aligned"]
    assert full["unseen"]["aligned"] == resumed["unseen"]["aligned"]
    assert [h["loss"] for h in full["train"]["history"]] == [h["loss"] for h in resumed["train"]["history"]]
    with pytest.raises(UserError, match="different config"):
        train_encoder(cfg.replace(epochs=3), tmp_path / "full", data=ds)


def test_local_hf_clip_image_encoder(tmp_path):
    """A CLIP vision tower saved to a local folder (random weights: no download) is used as the image side."""
    transformers = pytest.importorskip("transformers")
    from eegsine.models.image_encoder import ImageEncoderConfig, build_image_encoder, embed_images

    cfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8, projection_dim=24)
    clip = transformers.CLIPVisionModelWithProjection(cfg).eval()
    clip.save_pretrained(tmp_path / "clip")
    enc = build_image_encoder(ImageEncoderConfig(source="hf", hf_path=str(tmp_path / "clip")))
    x = load_images("digits").test_x[:6]                                          # (6, 1, 8, 8) grayscale
    z = embed_images(enc, x)
    rgb = torch.nn.functional.interpolate(torch.from_numpy(x).repeat(1, 3, 1, 1), size=(32, 32), mode="bilinear")
    mean = torch.tensor([0.4815, 0.4578, 0.4082]).view(1, 3, 1, 1)
    std = torch.tensor([0.2686, 0.2613, 0.2758]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(clip(pixel_values=(rgb - mean) / std).image_embeds, dim=-1)
    assert z.shape == (6, 24)
    np.testing.assert_allclose(z, ref.numpy(), atol=1e-5, rtol=0)
    with pytest.raises(UserError, match="not a local Hugging Face model folder"):
        build_image_encoder(ImageEncoderConfig(source="hf", hf_path=str(tmp_path / "nothing")))


# -- EEGCVPR40 protocol ----------------------------------------------------------------------------
def write_eegcvpr40(folder, n_classes=4, imgs_per_class=5, subjects=(1, 2, 3), seed=0, lengths=None, amp=1.5):
    """An EEGCVPR40-format pair of files (the published dict layout), small: 128 ch, T in [450, 600] drawn at
    random, or ``lengths[(image + subject) % len(lengths)]`` when given (to reach the loader's edge cases)."""
    rng = np.random.default_rng(seed)
    t = np.arange(max([600, *(lengths or [])])) / 1000.0
    wnids = [f"n0{1000000 + 17 * c}" for c in range(n_classes)]
    names, dataset, image_of = [], [], []
    for c in range(n_classes):
        for j in range(imgs_per_class):
            names.append(f"{wnids[c]}_{100 + j}")
    topo = rng.normal(size=(n_classes, 128))
    for m, name in enumerate(names):
        c = m // imgs_per_class
        for s in subjects:
            T = lengths[(m + s) % len(lengths)] if lengths else int(rng.integers(470, 560))
            erp = np.outer(topo[c], np.sin(2 * np.pi * (8 + 3 * c) * t) * np.exp(-((t - 0.25) / 0.08) ** 2))[:, :T]
            eeg = amp * erp + rng.normal(size=(128, T))
            dataset.append({"eeg": torch.tensor(eeg, dtype=torch.float32), "image": m, "label": c, "subject": s})
            image_of.append(m)
    image_of = np.array(image_of)
    part = np.arange(len(names)) % imgs_per_class             # by image: 3 train, 1 val, 1 test per class
    split = {"train": np.flatnonzero(part[image_of] < 3).tolist(), "val": np.flatnonzero(part[image_of] == 3).tolist(),
             "test": np.flatnonzero(part[image_of] == 4).tolist()}
    torch.save({"dataset": dataset, "labels": wnids, "images": names}, folder / "eeg_5_95_std.pth")
    torch.save({"splits": [split]}, folder / "block_splits_by_image_all.pth")
    return split


def test_eegcvpr40_format_runs_through_the_whole_protocol(tmp_path, capsys):
    from eegsine.commands.main import main
    from eegsine.io import read_json

    split = write_eegcvpr40(tmp_path)
    small = ["--encoder-d-model", "16", "--encoder-n-layers", "1", "--encoder-n-heads", "2", "--encoder-patch", "20",
             "--encoder-emb-dim", "16", "--n-way", "4", "--k-shot", "2", "--n-query", "2", "--epochs", "1",
             "--eval-episodes", "10", "--no-plot", "--data", "eegcvpr40", "--data-root", str(tmp_path)]
    rc = main(["train", "encoder", "--run", str(tmp_path / "run"), *small])
    assert rc == 0
    m = read_json(tmp_path / "run" / "metrics.json")["encoder"]
    assert m["data"]["n_test"] == len(split["test"]) and m["data"]["n_train"] == len(split["train"])
    assert m["data"]["n_times"] == 440 and m["data"]["n_chans"] == 128   # samples 20:460
    assert m["data"]["info"]["bandpass_hz"] == [5.0, 95.0]               # band-passed by default
    seen = m["seen"]
    assert {"aligned", "shuffled_labels", "class_only", "bandpower_logreg"} <= set(seen)
    assert "retrieval" not in seen["aligned"]                            # no stimulus pixels ship with EEGCVPR40
    assert m["train"]["best_epoch"] == 1 and len(m["train"]["history"]) == 1
    assert "shuffled_labels" in capsys.readouterr().out
    # leave-one-subject-out: subject 2 is the whole test split
    rc = main(["train", "encoder", "--run", str(tmp_path / "loso"), "--loso-subject", "2", "--no-controls", *small])
    assert rc == 0
    m = read_json(tmp_path / "loso" / "metrics.json")["encoder"]
    assert m["data"]["n_test"] == 4 * 5 and m["data"]["loso_subject"] == 2


# -- the claim: aligned encoder vs controls on synthetic-vep ---------------------------------------
def test_aligned_encoder_beats_the_shuffled_control_and_keeps_up_with_class_only(tmp_path):
    """synthetic-vep at snr 0.4 paired with real digits images, 16 ch x 55 samples at 125 Hz.

    Test split: 40 stimuli per class x 10 classes x 30 % = 120 images x 2 subjects = 240 trials.
    The spatial-filter-first encoder with each channel's line removed (``center="detrend"``: the
    generator's slow background puts offsets and drifts in every window, issue #18). Measured with
    these seeds (1 thread): aligned NCM 0.500 / retrieval 0.396 / k-means 0.396; class-only (raw-EEG
    class means) 0.367 / 0.325 / 0.367; shuffled labels 0.300 / 0.071 / 0.217; shrinkage LDA 0.529
    (chance ~0.1). The shuffled-label encoder's NCM and probe are not at chance, and should not be:
    a (near-)linear encoder keeps its input's class information whatever labels trained it, so a
    read-out fitted on true labels finds it; what it cannot learn is the EEG-image alignment, so its
    retrieval is at chance. k-means is compared with the shuffled control only: the class-only
    control's clusters are a supervised nearest-mean classifier's decisions.

    Margins are in standard deviations of the difference of two proportions on the 240 test trials,
    sd = sqrt((p1 (1 - p1) + p2 (1 - p2)) / 240) (~0.045 here), not fixed numbers: one training run on
    a given CPU lands anywhere within that noise. The aligned encoder must beat the shuffled-label
    control by more than 2 sd on NCM, retrieval and k-means (measured 4-9 sd: an encoder that learns
    nothing or a broken loss fails) and must not be more than 2 sd behind the class-only control or
    the shrinkage-LDA baseline (a label leak into the control, or a much weaker encoder, fails). That
    it *beats* the class-only control is not asserted: 240 trials cannot show it (measured +0.13 NCM,
    3 sd, but +0.07 retrieval, 1.6 sd).
    """
    from eegsine.data import load_eeg

    ds = load_eeg("synthetic-vep", image_set="digits", n_chans=16, sfreq=125.0, n_times=55, n_images_per_class=40,
                  n_subjects=2, val_fraction=0.15, test_fraction=0.3, snr=0.4, seed=0, progress=False)
    cfg = EncoderTrainConfig(
        data="synthetic-vep", image_set="digits",
        encoder=EEGEncoderConfig(arch="spatial", d_model=16, patch=5, kernel=3, emb_dim=32, dropout=0.1,
                                 center="detrend"),
        image_encoder=encoder_preset("tiny").image_encoder.replace(emb_dim=32), image_epochs=4,
        n_way=10, k_shot=4, n_query=4, epochs=20, lr=3e-3, weight_decay=0.05, plot=False, eval_episodes=50)
    m = train_encoder(cfg, tmp_path / "run", data=ds)
    from eegsine.runtime.preprocessing import load_spec

    assert load_spec(tmp_path / "run" / "model") == ds.preprocessing   # the run saves its input's spec (#16)
    seen = m["seen"]
    assert seen["n_trials"] == 240
    a, s, c = seen["aligned"], seen["shuffled_labels"], seen["class_only"]

    def z(p: float, q: float) -> float:  # (p - q) in sd of the difference of two proportions on these trials
        return (p - q) / max(1e-9, ((p * (1 - p) + q * (1 - q)) / seen["n_trials"]) ** 0.5)

    top1 = lambda r: (r["ncm_top1"], r["retrieval"]["top1"])  # noqa: E731
    for (pa, ps), what in zip(zip(top1(a), top1(s)), ("ncm", "retrieval")):
        assert z(pa, ps) > 2, (what, pa, ps)                         # beats the shuffled-label control
    assert z(a["kmeans_acc"], s["kmeans_acc"]) > 2, (a["kmeans_acc"], s["kmeans_acc"])
    for (pa, pc), what in zip(zip(top1(a), top1(c)), ("ncm", "retrieval")):
        assert z(pa, pc) > -2, (what, pa, pc)                        # not behind the class-only control
    assert z(a["ncm_top1"], seen["lda_windows"]["top1"]) > -2, (a["ncm_top1"], seen["lda_windows"])
    # shuffled pairs teach no alignment: chance 0.1, binomial sd on 240 trials 0.019, so 0.15 is 2.6 sd above it
    assert s["retrieval"]["top1"] <= 0.15
    assert len(m["train"]["history"]) == 20 and 1 <= m["train"]["best_epoch"] <= 20
