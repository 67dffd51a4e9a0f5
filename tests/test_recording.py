"""`eegsine data export-recording` (issue #24 item 3): --like BUNDLE reads the data set and options from the
bundle's manifest, the board is checked before a trial is generated, --trials picks every class."""
from __future__ import annotations

import json

import numpy as np
import pytest

from eegsine.commands.main import main
from eegsine.data import describe_eeg, load_eeg
from eegsine.data import synthetic_vep
from eegsine.data.recording import continuous_recording, options_like, pick_stratified
from eegsine.errors import UserError

SMALL = {"image_set": "digits", "n_chans": 6, "n_times": 40, "sfreq": 200.0, "n_images_per_class": 5,
         "n_subjects": 2, "n_classes": 3, "tmin": 0.05, "progress": False}


def _bundle(tmp_path, options: dict | None = SMALL, name: str = "synthetic-vep"):
    """A bundle folder as far as --like reads it: the manifest's EEG encoder entry (preprocessing and data)."""
    spec = describe_eeg(name, options or SMALL).preprocessing
    entry = {"preprocessing": spec.to_dict()}
    if options is not None:
        entry["data"] = {"name": name, "options": options}
    b = tmp_path / "bundle"
    b.mkdir(parents=True, exist_ok=True)
    (b / "manifest.json").write_text(json.dumps({"models": {"eeg_encoder": entry}}))
    return b, spec


def _never_generate(monkeypatch):
    def no(*a, **k):
        raise AssertionError("the set was generated before the check that refuses it")

    monkeypatch.setattr(synthetic_vep, "generate", no)


# -- --like -----------------------------------------------------------------------------------------------------
def test_like_fills_the_options_from_the_bundle(tmp_path, capsys):
    b, spec = _bundle(tmp_path)
    name, opts = options_like(b)
    assert name == "synthetic-vep" and opts.n_chans == 6 and opts.sfreq == 200.0 and opts.tmin == 0.05
    ds = load_eeg(name, opts)
    assert (ds.ch_names, ds.sfreq, ds.n_times) == (spec.ch_names, spec.sfreq, spec.n_times)
    out = tmp_path / "rec.fif"
    assert main(["data", "export-recording", "--like", str(b), "--out", str(out), "--trials", "6",
                 "-o", "snr=0.5"]) == 0  # an option on top that keeps the geometry
    side = json.loads((tmp_path / "rec.fif.json").read_text())
    assert side["ch_names"] == spec.ch_names and side["sfreq"] == spec.sfreq and side["tmin"] == spec.tmin
    assert len(side["events"]) == 6
    assert "6 trials of synthetic-vep (test), 6 ch" in capsys.readouterr().out


def test_like_refuses_before_generating(tmp_path, monkeypatch, capsys):
    b, _ = _bundle(tmp_path)
    _never_generate(monkeypatch)
    cases = [
        (["-o", "n_chans=8"], "has channels 8 (Fpz, F3, T7, Cz...), the bundle"),          # geometry changed by -o
        (["-o", "sfreq=250"], "has sfreq 250.0, the bundle"),
        (["--out", str(tmp_path / "r.csv"), "--board", "auto"], "no BrainFlow board samples 6 EEG channels at 200 Hz"),
        (["eegcvpr40"], "the bundle's encoder was trained on synthetic-vep, not eegcvpr40"),
    ]
    for extra, message in cases:
        argv = ["data", "export-recording", "--like", str(b), *extra]
        argv += [] if "--out" in extra else ["--out", str(tmp_path / "r.fif")]
        assert main(argv) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)
    old, _ = _bundle(tmp_path / "old", options=None)
    assert main(["data", "export-recording", "--like", str(old), "--out", str(tmp_path / "r.fif")]) == 2
    err = capsys.readouterr().err
    assert "its manifest does not name the encoder's data set" in err and "re-export" in err
    assert not list(tmp_path.glob("r.*"))


def test_board_is_checked_before_the_default_set_is_generated(tmp_path, monkeypatch, capsys):
    """The default synthetic-vep (128 ch @ 1 kHz, 12,000 trials) is refused by --board auto without being made."""
    _never_generate(monkeypatch)
    for board, message in (("auto", "no BrainFlow board samples 128 EEG channels at 1000 Hz"),
                           ("synthetic", "board SYNTHETIC_BOARD samples at 250 Hz, the recording at 1000 Hz")):
        assert main(["data", "export-recording", "synthetic-vep", "--out", str(tmp_path / "r.csv"),
                     "--board", board]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["data", "export-recording", "synthetic-vep", "--out", str(tmp_path / "r.edf")]) == 2
    assert "must end with .csv (BrainFlow playback) or .fif (MNE)" in capsys.readouterr().err


# -- --trials: stratified -------------------------------------------------------------------------------------
def test_pick_stratified_takes_every_class_evenly_and_is_seeded():
    y = np.repeat(np.arange(10), 120)                       # stored by class, like the default set's test split
    idx = np.arange(len(y))
    assert set(y[idx[:20]]) == {0}                          # what "the first 20" gave: one class
    got = pick_stratified(idx, y, 20, seed=0)
    counts = np.bincount(y[got], minlength=10)
    assert len(got) == 20 and len(set(got.tolist())) == 20 and counts.min() == counts.max() == 2
    odd = np.bincount(y[pick_stratified(idx, y, 23, seed=5)], minlength=10)
    assert odd.sum() == 23 and odd.min() >= 1 and odd.max() - odd.min() <= 1
    np.testing.assert_array_equal(got, pick_stratified(idx, y, 20, seed=0))
    assert not np.array_equal(got, pick_stratified(idx, y, 20, seed=1))
    scarce = np.r_[np.zeros(1, int), np.ones(50, int), np.full(50, 2)]  # class 0 has one trial: the rest share
    s = np.bincount(scarce[pick_stratified(np.arange(101), scarce, 9, seed=2)], minlength=3)
    assert s.tolist() == [1, 4, 4]
    np.testing.assert_array_equal(pick_stratified(idx[:5], y, 10), idx[:5])  # fewer than asked: all, in order


def test_recording_trials_cover_every_class():
    ds = load_eeg("synthetic-vep", {**SMALL, "n_classes": 3})
    test = ds.split("test")
    rec = continuous_recording(ds, split="test", n_trials=5, seed=4)
    codes = np.bincount(rec.events[:, 1] - 1, minlength=3)
    assert codes.min() >= 1 and codes.max() - codes.min() <= 1 and set(rec.trials.tolist()) <= set(test.tolist())
    np.testing.assert_array_equal(rec.events[:, 1] - 1, ds.y[rec.trials])
    again = continuous_recording(ds, split="test", n_trials=5, seed=4)
    np.testing.assert_array_equal(rec.trials, again.trials)
    np.testing.assert_array_equal(rec.data, again.data)
    with pytest.raises(UserError, match="n_trials must be >= 0"):
        continuous_recording(ds, n_trials=-1)


def test_export_records_the_encoders_data_set():
    """What --like reads is written at export: the encoder's provenance (else the diffusion run's)."""
    from types import SimpleNamespace

    from eegsine.export.bundle import training_data
    from eegsine.models.protocol import Provenance

    enc = SimpleNamespace(provenance=Provenance(data="synthetic-vep", data_options={"n_chans": 6}))
    run = Provenance(data="eegcvpr40")
    assert training_data(SimpleNamespace(eeg_encoder=enc, provenance=run)) == {
        "name": "synthetic-vep", "options": {"n_chans": 6}}
    bare = SimpleNamespace(provenance=Provenance())
    assert training_data(SimpleNamespace(eeg_encoder=bare, provenance=run)) == {"name": "eegcvpr40", "options": {}}
    assert training_data(SimpleNamespace(eeg_encoder=bare, provenance=Provenance())) is None


def test_an_exported_bundle_is_recorded_like_itself(tmp_path):
    """export writes the data entry from the run's provenance; --like makes a playback file the bundle streams."""

    import export_helpers as h
    from eegsine.runtime import Bundle

    h.vep_bundle(tmp_path, int8=False)
    entry = Bundle(tmp_path / "bundle").manifest["models"]["eeg_encoder"]   # the manifest's schema and hashes hold
    assert entry["data"] == {"name": "synthetic-vep", "options": h.STREAM_VEP_OPTIONS}
    rec = tmp_path / "rec.csv"
    assert main(["data", "export-recording", "--like", str(tmp_path / "bundle"), "--trials", "20", "--board", "auto",
                 "--out", str(rec)]) == 0
    side = json.loads((tmp_path / "rec.csv.json").read_text())
    assert side["ch_names"] == entry["preprocessing"]["ch_names"] and side["sfreq"] == h.STREAM_SFREQ
    assert side["board"] == "SYNTHETIC_BOARD" and len({c for _, c in side["events"]}) == 10  # every class
