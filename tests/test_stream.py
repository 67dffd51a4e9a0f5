"""From amplifier to decision: the preprocessing spec and its filters, raw: recordings, bundle prototypes,
EEGDecoder, `eegsine data export-recording` and `eegsine stream` (file:, brainflow:playback:, lsl:)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import export_helpers as h
from eegsine.errors import UserError
from eegsine.runtime.preprocessing import (PreprocessingSpec, SOSFilter, causal_filter, steady_state, unit_factor,
                                   zero_phase_filter)

EEGSINE = [sys.executable, "-m", "eegsine"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _spec(**kw) -> PreprocessingSpec:
    base = dict(l_freq=0.5, h_freq=95.0, order=4, notch=[50.0], tmin=0.02, tmax=0.46)
    base.update(kw)
    return PreprocessingSpec.design(1000.0, ["Cz", "Pz", "Oz"], **base)


# -- the filter ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(), dict(l_freq=0.0, h_freq=30.0, notch=[], order=3), dict(l_freq=1.0, h_freq=0.0),
                                dict(l_freq=0.0, h_freq=0.0, notch=[50.0, 100.0])])
def test_causal_filter_streamed_chunk_by_chunk_equals_one_offline_call(kw):
    from scipy.signal import sosfilt, sosfilt_zi

    sos = _spec(**kw).sos_array()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 12_345)) * 20 + 7.0                    # an offset: the steady-state start matters
    offline = causal_filter(x, sos)
    f, parts, i = SOSFilter(sos), [], 0
    while i < x.shape[1]:                                              # odd chunk sizes, 1 sample to > one block
        n = int(rng.choice([1, 2, 7, 31, 32, 33, 250, 1023]))
        parts.append(f(x[:, i:i + n]))
        i += n
    np.testing.assert_allclose(np.concatenate(parts, axis=1), offline, rtol=0, atol=1e-6)
    ref = sosfilt(sos, x, zi=sosfilt_zi(sos)[:, None, :] * x[None, :, :1])[0]   # scipy, the same DF2T start
    np.testing.assert_allclose(offline, ref, rtol=0, atol=1e-8)
    np.testing.assert_allclose(steady_state(sos), sosfilt_zi(sos), atol=1e-12)


def test_zero_phase_is_scipy_sosfiltfilt_and_3d_arrays_filter_along_time():
    from scipy.signal import sosfiltfilt

    sos = _spec().sos_array()
    x = np.random.default_rng(1).standard_normal((4, 3, 700))
    np.testing.assert_allclose(zero_phase_filter(x, sos), sosfiltfilt(sos, x), atol=1e-8)
    np.testing.assert_allclose(causal_filter(x, sos)[2, 1], causal_filter(x[2, 1][None], sos)[0], atol=1e-12)


def test_spec_round_trips_and_refuses_what_it_cannot_run(tmp_path):
    spec = _spec(reference="average", units="V", scale=2.0)
    spec.save(tmp_path)
    assert PreprocessingSpec.load(tmp_path) == spec and spec.n_times == 440 and spec.offset == 20
    assert "0.5-95 Hz band-pass" in spec.describe() and "causal" in spec.describe()
    d = spec.to_dict()
    with pytest.raises(UserError, match=r"PreprocessingSpec.sos has 4 sections, the declared filters .* need 5"):
        PreprocessingSpec.from_dict({**d, "sos": d["sos"][:4]})
    with pytest.raises(UserError, match=r"sos\[0\] is unstable"):
        PreprocessingSpec.from_dict({**d, "sos": [[1, 0, 0, 1, -2.5, 1.5]] + d["sos"][1:]})
    with pytest.raises(UserError, match="h_freq=600: must be in"):
        PreprocessingSpec.design(1000.0, ["Cz"], h_freq=600.0, tmin=0, tmax=1)
    with pytest.raises(UserError, match="unknown key 'colour'"):
        PreprocessingSpec.from_dict({**d, "colour": 1})
    assert unit_factor("V", "uV") == 1e6 and unit_factor("uV", "V") == 1e-6 and unit_factor("a.u.", "uV") == 1.0


def test_encoder_folder_keeps_its_preprocessing(tmp_path):
    from eegsine.models.eeg_encoder import EEGEncoder, EEGEncoderConfig, build_encoder

    enc = build_encoder(EEGEncoderConfig(arch="lstm", n_chans=3, n_times=440, emb_dim=4, d_model=4, n_layers=1))
    enc.preprocessing = _spec()
    enc.save_pretrained(tmp_path / "a")
    loaded = EEGEncoder.from_pretrained(tmp_path / "a")
    assert loaded.preprocessing == _spec()
    loaded.save_pretrained(tmp_path / "b")                             # a model folder copying the encoder keeps it
    assert PreprocessingSpec.load(tmp_path / "b", "preprocessing.json") == _spec()


def test_data_set_loaders_produce_their_spec():
    ds = h.vep_set()
    s = ds.preprocessing
    assert (s.sfreq, s.ch_names, s.units, s.n_times, s.tmin) == (250.0, ds.ch_names, "uV", 64, 0.02)
    assert not s.has_filters


# -- raw: recordings ---------------------------------------------------------------------------------------
def test_raw_fif_loader_epochs_the_recording_at_its_annotations():
    from eegsine.data import load_eeg

    ds, rec = h.vep_set(), h.recording("fif")
    side = json.loads(Path(str(rec) + ".json").read_text())
    raw = load_eeg(f"raw:{rec}", tmin=h.STREAM_TMIN, tmax=h.STREAM_TMIN + h.N_TIMES / h.STREAM_SFREQ)
    assert raw.ch_names == ds.ch_names and raw.classes == ds.classes and raw.info["events"] == "annotations"
    order = np.asarray(side["trials"])
    np.testing.assert_allclose(raw.x, ds.x[order], rtol=1e-5, atol=1e-4)   # float32 volts in the file
    np.testing.assert_array_equal(raw.y, ds.y[order])
    stim = load_eeg(f"raw:{rec}", tmin=h.STREAM_TMIN, tmax=h.STREAM_TMIN + h.N_TIMES / h.STREAM_SFREQ, events="stim")
    np.testing.assert_array_equal(stim.x, raw.x)
    assert stim.classes == [str(c + 1) for c in range(10)]             # stim codes are class index + 1
    # filtered: the continuous signal went through the causal filter in one call, then was cut
    filt = h.stream_set()
    spec = filt.preprocessing
    assert (spec.phase, spec.l_freq, spec.h_freq, spec.notch, spec.units) == ("causal", 1.0, 40.0, [50.0], "uV")
    import mne

    cont = mne.io.read_raw_fif(rec, preload=True, verbose="error").get_data(picks=ds.ch_names) * 1e6
    y = causal_filter(cont, spec.sos_array())
    starts = np.asarray(side["events"])[:, 0] + spec.offset
    np.testing.assert_allclose(filt.x, np.stack([y[:, s:s + spec.n_times] for s in starts]), atol=1e-3)
    assert sum(len(v) for v in filt.splits.values()) == len(filt.x) and set(filt.splits) == {"train", "val", "test"}


def test_raw_edf_loader(tmp_path):
    pytest.importorskip("edfio", reason="MNE writes EDF through edfio (pip install edfio)")
    import mne

    from eegsine.data import load_eeg

    raw = mne.io.read_raw_fif(h.recording("fif"), preload=True, verbose="error")
    raw.export(tmp_path / "rec.edf", fmt="edf", verbose="error")
    fif = load_eeg(f"raw:{h.recording('fif')}", tmax=0.256)
    edf = load_eeg(f"raw:{tmp_path / 'rec.edf'}", tmax=0.256)
    assert edf.ch_names == fif.ch_names and edf.classes == fif.classes and len(edf.x) == len(fif.x)
    span = float(np.ptp(fif.x))
    assert np.abs(edf.x - fif.x).max() < 1e-3 * span                  # EDF stores 16-bit integers


@pytest.mark.parametrize("kw, message", [
    (dict(path="/nonexistent/rec.fif"), "/nonexistent/rec.fif: recording does not exist"),
    (dict(picks=["Xx"]), r"picks \['Xx'\] not in the recording"),
    (dict(tmin=0.0, tmax=1e4), "no event has its whole epoch"),
    (dict(h_freq=200.0), "h_freq=200: must be in"),
])
def test_raw_loader_one_line_errors(kw, message):
    from eegsine.data import load_eeg

    kw = {"path": str(h.recording("fif")), **kw}
    with pytest.raises(UserError, match=message) as info:
        load_eeg(f"raw:{kw.pop('path')}", **kw)
    assert "\n" not in str(info.value)


# -- export-recording -----------------------------------------------------------------------------------------
def test_export_recording_cli_writes_playback_csv_and_fif(tmp_path):
    from eegsine.runtime.sources import import_brainflow

    common = ["-o", "image_set=digits", "-o", "n_chans=8", "-o", "n_times=64", "-o", "sfreq=250",
              "-o", "n_images_per_class=10", "-o", "n_subjects=1", "--split", "test", "--isi", "0.4"]
    for name in ("rec.csv", "rec.fif"):
        r = subprocess.run(EEGSINE + ["data", "export-recording", "synthetic-vep", "--out", str(tmp_path / name)]
                           + common, capture_output=True, text=True, timeout=300, env=ENV)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "10 trials of synthetic-vep (test)" in r.stdout
    d = import_brainflow().DataFilter.read_file(str(tmp_path / "rec.csv"))
    side = json.loads((tmp_path / "rec.csv.json").read_text())
    assert d.shape[0] == 32 and side["board"] == "SYNTHETIC_BOARD" and len(side["ch_names"]) == 8
    at = np.flatnonzero(d[31])                                          # SYNTHETIC_BOARD's marker row
    assert at.tolist() == [e[0] for e in side["events"]] and d[31, at].tolist() == [e[1] for e in side["events"]]
    assert np.all(np.diff(at) >= 64 + 0.4 * 250)                        # an epoch plus the ISI between markers
    bad = subprocess.run(EEGSINE + ["data", "export-recording", "synthetic-vep", "--out", str(tmp_path / "x.csv"),
                                    "-o", "image_set=digits", "-o", "n_images_per_class=10", "-o", "n_subjects=1"],
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert bad.returncode == 2 and "board SYNTHETIC_BOARD samples at 250 Hz, the recording at 1000 Hz" in bad.stderr
    errors = [ln for ln in bad.stderr.splitlines() if "error" in ln]
    assert errors[0].startswith("eegsine: error: board SYNTHETIC_BOARD")


# -- bundle: preprocessing + prototypes, EEGDecoder ---------------------------------------------------------------
def test_bundle_carries_preprocessing_and_prototypes_and_decodes():
    from eegsine.runtime import EEGDecoder

    b = h.stream_bundle()
    m = json.loads((b / "manifest.json").read_text())
    e = m["models"]["eeg_encoder"]
    ds = h.stream_set()
    assert PreprocessingSpec.from_dict(e["preprocessing"]) == ds.preprocessing
    assert e["prototypes"]["file"] in m["files"] and e["prototypes"]["classes"] == ds.classes
    dec = EEGDecoder(b)
    tr = ds.splits["train"]
    z = dec.embed(ds.x[tr])                                              # ONNX FP32 vs the torch prototypes
    means = np.stack([z[ds.y[tr] == c].mean(0) for c in range(10)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_allclose(dec.prototypes, means, atol=1e-4)
    labels, conf, emb = dec.decode(ds.x[ds.splits["val"]])
    cos = emb @ dec.prototypes.T
    p = np.exp(dec.scale * (cos - cos.max(1, keepdims=True)))
    p /= p.sum(1, keepdims=True)                                         # softmax(scale * cos) == softmax(-scale/2 d^2)
    np.testing.assert_array_equal(labels, cos.argmax(1))
    np.testing.assert_allclose(conf, p.max(1), atol=1e-5)


def test_manifest_preprocessing_is_checked(tmp_path):
    from eegsine.runtime import Bundle

    b = h.copy_bundle(h.stream_bundle(), tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    m["models"]["eeg_encoder"]["preprocessing"]["ch_names"] = ["Cz"]
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="preprocessing describes 1 ch x 64 samples, the encoder takes 8 x 64"):
        Bundle(b)


# -- eegsine stream ---------------------------------------------------------------------------------------------------
def _offline(rec: Path, spec: PreprocessingSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The recording filtered in one call and cut at its markers -> (epochs, marker samples, codes)."""
    side = json.loads(Path(str(rec) + ".json").read_text())
    if rec.suffix == ".csv":
        from eegsine.runtime.sources import import_brainflow

        cont = import_brainflow().DataFilter.read_file(str(rec))[1:1 + len(side["ch_names"])]   # uV rows
    else:
        import mne

        cont = mne.io.read_raw_fif(rec, preload=True, verbose="error").get_data(picks=side["ch_names"]) * 1e6
    y = causal_filter(cont, spec.sos_array())
    ev = np.asarray(side["events"])
    ep = np.stack([y[:, s + spec.offset:s + spec.offset + spec.n_times] for s in ev[:, 0]]).astype(np.float32)
    return ep, ev[:, 0], ev[:, 1]


def _check_stream_log(events: list[dict], rec: Path, tol: float = 1e-5) -> dict:
    from eegsine.runtime import EEGDecoder

    dec = EEGDecoder(h.stream_bundle())
    epochs, samples, codes = _offline(rec, dec.preprocessing)
    ref = dec.decode(epochs)
    start, summary = events[0], events[-1]
    assert start["type"] == "start" and summary["type"] == "summary"
    assert start["n_chans"] == 8 and start["channel_mapping"] == "by name"
    decisions = [e for e in events if e["type"] == "decision"]
    assert [d["sample"] for d in decisions] == samples.tolist()        # every marker: exactly one decision, in order
    assert [d["marker"] for d in decisions] == codes.tolist()
    for d in decisions:
        for key in ("time_s", "epoch", "label", "class", "confidence", "latency_ms", "nan_in_epoch", "embedding"):
            assert key in d, key
    np.testing.assert_allclose(np.array([d["embedding"] for d in decisions]), ref.embeddings, rtol=0, atol=tol)
    np.testing.assert_array_equal([d["label"] for d in decisions], ref.labels)
    for key in ("markers", "decisions", "dropped_markers", "dropped_samples", "deadline_misses", "latency_ms",
                "flat_channels_s", "nan_samples", "warnings", "cpu", "stopped"):
        assert key in summary, key
    assert summary["markers"] == summary["decisions"] == len(samples) and summary["dropped_markers"] == 0
    assert summary["latency_ms"]["p50"] > 0 and summary["latency_ms"]["p99"] >= summary["latency_ms"]["p50"]
    return summary


def test_stream_file_fast_matches_the_offline_runtime(tmp_path):
    rec = h.recording("fif")
    log, summ = tmp_path / "log.jsonl", tmp_path / "summary.json"
    r = subprocess.run(EEGSINE + ["stream", "--source", f"file:{rec}", "--bundle", str(h.stream_bundle()), "--fast",
                                  "--embeddings", "--marker-labels", "--log", str(log), "--summary", str(summ)],
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    summary = _check_stream_log(events, rec)
    assert json.loads(summ.read_text()) == summary and summary["stopped"] == "end of stream"
    assert summary["accuracy"] is not None and summary["flat_channels_s"] == {} and summary["nan_samples"] == {}
    assert f"stream (end of stream): {len(events) - 2} decisions / {len(events) - 2} markers" in r.stderr
    assert "| latency, chunk arrival to decision | p50 " in (tmp_path / "stream.md").read_text()
    assert (tmp_path / "latency_hist.png").stat().st_size > 1000


def test_file_source_paces_at_speed():
    """file: --speed S delivers each chunk once its last sample is due at S x real time (--fast: no waiting)."""
    from eegsine.runtime.sources import open_source

    rec = h.recording("fif", 12)
    for speed in (20.0, 40.0):
        src = open_source(f"file:{rec}", speed=speed)
        src.start()
        t0, n = time.perf_counter(), 0
        while (c := src.read()) is not None:
            n += c.data.shape[1]
        wall, signal_s = time.perf_counter() - t0, n / src.info.sfreq
        assert signal_s / speed * 0.95 < wall < signal_s / speed + 0.5, (speed, wall, signal_s)
        assert src.info.description.endswith(f"({speed:g}x real time)")


def test_stream_brainflow_playback_cli_is_torch_free_faster_than_real_time_and_matches_offline(tmp_path):
    """`eegsine stream --source brainflow:playback:REC.csv --speed 4` (the demo's stream stage) in a process that
    never imports torch: every marker decided as offline, and the summary's markdown and latency histogram."""
    rec = h.recording("csv", 12)                                        # 12 trials: 8.3 s of signal
    log, summ = tmp_path / "log.jsonl", tmp_path / "summary.json"
    argv = ["stream", "--source", f"brainflow:playback:{rec}", "--bundle", str(h.stream_bundle()), "--speed", "4",
            "--embeddings", "--marker-labels", "--log", str(log), "--summary", str(summ)]
    code = ("import sys\nfrom eegsine.commands.main import main\n"
            f"rc = main({argv!r})\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "print('ok', rc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok 0"), r.stderr[-2000:]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    summary = _check_stream_log(events, rec)
    assert summary["latency_from_sample_ms"]["p50"] > 0                # BrainFlow timestamps are time.time()
    assert "BrainFlow SYNTHETIC_BOARD playback" in summary["description"]
    assert summary["description"].endswith("at 4x real time") and summary["speed"] == 4.0
    assert summary["wall_s"] < summary["signal_s"] / 2, summary        # 4x: measured 2.1 s for 8.3 s of signal
    md = (tmp_path / "stream.md").read_text()
    assert "| markers | 12 |" in md and "| dropped markers | 0 |" in md and "(latency_hist.png)" in md
    assert (tmp_path / "latency_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stream_report_without_matplotlib(tmp_path, monkeypatch):
    """A runtime-only device may lack matplotlib: the markdown says so, no PNG, the stream still succeeds."""
    from eegsine.runtime.stream import write_report

    monkeypatch.setitem(sys.modules, "matplotlib", None)               # import matplotlib -> ImportError
    s = {"source": "file:r.fif", "description": "recording r.fif (fast)", "bundle": "b", "precision": "fp32",
         "n_chans": 8, "n_times": 64, "sfreq": 250.0, "channel_mapping": "by name", "stopped": "end of stream",
         "signal_s": 8.4, "wall_s": 0.1, "markers": 2, "decisions": 2, "windows": 0, "dropped_markers": 0,
         "latency_ms": {"p50": 1.0, "p99": 2.0, "max": 2.0, "n": 2}, "latency_from_sample_ms": None,
         "dropped_samples": 0, "deadline_ms": 100.0, "deadline_misses": 0, "buffer_overruns": 0, "accuracy": 0.5,
         "n_classes": 10, "warnings": []}
    md = write_report(tmp_path / "summary.json", s, [1.0, 2.0], [])
    assert md == tmp_path / "stream.md" and "No latency histogram: matplotlib is not installed." in md.read_text()
    assert "| decisions | 2 (accuracy 0.500, chance 0.10) |" in md.read_text()
    assert not (tmp_path / "latency_hist.png").exists() and json.loads((tmp_path / "summary.json").read_text()) == s


def test_stream_brainflow_synthetic_board_runs(tmp_path):
    """The live synthetic board (16 rows at 250 Hz, no markers): sliding windows, positional channel mapping."""
    from eegsine.runtime.stream import StreamConfig, run_stream

    with pytest.raises(UserError, match="the bundle needs channels Fpz, T7"):    # the board names its 16 rows
        run_stream(StreamConfig(source="brainflow:synthetic", bundle=str(h.stream_bundle())), open(os.devnull, "w"))
    with open(tmp_path / "log.jsonl", "w") as out, pytest.warns(RuntimeWarning, match="mapped by position"):
        s = run_stream(StreamConfig(source="brainflow:synthetic", bundle=str(h.stream_bundle()), window_step=0.25,
                                    duration=1.5, channel_map="by-position"), out)
    assert s["stopped"] == "duration" and s["windows"] >= 3 and s["markers"] == 0
    assert s["channel_mapping"].startswith("by position")


LSL_CFG = "[ports]\nIPv6 = disable\n[multicast]\nResolveScope = machine\n"   # loopback only (127.0.0.1)


@pytest.fixture(scope="module")
def lsl(tmp_path_factory):
    """pylsl with discovery kept on 127.0.0.1 (liblsl reads LSLAPICFG once, at first use in the process)."""
    pylsl = pytest.importorskip("pylsl", reason="pylsl is not installed")
    cfg = tmp_path_factory.mktemp("lsl") / "lsl_api.cfg"
    cfg.write_text(LSL_CFG)
    os.environ["LSLAPICFG"] = str(cfg)
    return pylsl


def _lsl_outlets(pylsl, tag: str, ch_names: list[str]):
    info = pylsl.StreamInfo(f"eegsine-{tag}-eeg", "EEG", len(ch_names), h.STREAM_SFREQ, "float32", f"eegsine-{tag}-eeg")
    chans = info.desc().append_child("channels")
    for n in ch_names:
        c = chans.append_child("channel")
        c.append_child_value("label", n)
        c.append_child_value("unit", "microvolts")
    try:
        eeg = pylsl.StreamOutlet(info, 8)
        mk = pylsl.StreamOutlet(pylsl.StreamInfo(f"eegsine-{tag}-markers", "Markers", 1, 0, "int32",
                                                 f"eegsine-{tag}-mk"))
    except Exception as e:  # noqa: BLE001 - no usable network stack for liblsl here
        pytest.skip(f"liblsl cannot open outlets on this machine ({e})")
    return eeg, mk


def _push(pylsl, eeg, mk, data: np.ndarray, events: dict[int, int], stop: threading.Event, lag: dict[int, int]):
    """Push ``data`` (C, S) in 8-sample chunks at real time, each marker right after the chunk ``lag[sample]``
    chunks after the one holding its sample (-1: before its sample exists), timestamps on one grid. liblsl queues
    for an inlet only what is pushed after it subscribed, so nothing is pushed before both inlets have (a fixed
    head start lost the first samples and markers on a loaded machine: a shifted filter start, and a run waiting
    for a marker that never came)."""
    if not (eeg.wait_for_consumers(120) and mk.wait_for_consumers(120)):
        return
    t0 = pylsl.local_clock()
    due: dict[int, list[int]] = {}
    for s in events:
        due.setdefault(max(0, s // 8 + lag.get(s, 0)), []).append(s)
    for k, a in enumerate(range(0, data.shape[1], 8)):
        if stop.is_set():
            return
        ts = t0 + np.arange(a, min(a + 8, data.shape[1])) / h.STREAM_SFREQ
        time.sleep(max(0.0, ts[-1] - pylsl.local_clock()))             # as an amplifier: once its last sample is taken
        eeg.push_chunk(data[:, a:a + 8].T.astype(np.float32), ts.tolist())
        for s in due.pop(k, []):
            mk.push_sample([events[s]], t0 + s / h.STREAM_SFREQ)
    for k in sorted(due):                                                # markers due after the last chunk
        for s in due[k]:
            mk.push_sample([events[s]], t0 + s / h.STREAM_SFREQ)


def _stream_lsl(lsl, tag: str, data: np.ndarray, events: dict[int, int], lag: dict[int, int], tmp_path, **kw):
    from eegsine.runtime.stream import StreamConfig, run_stream

    side = json.loads(Path(str(h.recording("fif", 12)) + ".json").read_text())
    bundle = h.stream_bundle()          # before the pusher starts its wait: building it took > 60 s on a loaded machine
    eeg, mk = _lsl_outlets(lsl, tag, side["ch_names"])
    stop = threading.Event()
    th = threading.Thread(target=_push, args=(lsl, eeg, mk, data, events, stop, lag), daemon=True)
    th.start()
    try:
        with open(tmp_path / "log.jsonl", "w") as out:
            s = run_stream(StreamConfig(source=f"lsl:eegsine-{tag}-eeg", bundle=str(bundle), embeddings=True,
                                        lsl_markers=f"eegsine-{tag}-markers", **kw), out)
    except UserError as e:
        if "no LSL stream" in str(e):
            pytest.skip(f"LSL discovery on the loopback interface failed here ({e})")
        raise
    finally:
        stop.set()
        th.join(10)
    return s, [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]


def _lsl_recording() -> tuple[Path, np.ndarray, dict[int, int]]:
    import mne

    rec = h.recording("fif", 12)
    side = json.loads(Path(str(rec) + ".json").read_text())
    data = mne.io.read_raw_fif(rec, preload=True, verbose="error").get_data(picks=side["ch_names"]) * 1e6
    return rec, data, {int(s): int(c) for s, c in side["events"]}


@pytest.mark.timeout(300)  # a hang fails here instead of stalling `make test`
def test_stream_lsl_matches_offline(lsl, tmp_path):
    """Real time over loopback, markers out of step with their samples: every second marker is pushed three chunks
    (96 ms) after the chunk holding its sample, every fourth one chunk before it; each lands on its sample."""
    rec, data, events = _lsl_recording()
    lag = {s: (3 if i % 2 else -1 if i % 4 == 0 else 0) for i, s in enumerate(sorted(events))}
    s, log = _stream_lsl(lsl, "parity", data, events, lag, tmp_path, max_markers=len(events), lsl_timeout=10.0)
    assert s["stopped"] == "max markers", {k: s[k] for k in ("stopped", "samples", "markers", "decisions", "wall_s")}
    # the pusher waits for both inlets, so the stream sees the outlet's first sample: the offline reference
    # (filter started on the recording's first sample) is what the stream sees
    _check_stream_log(log, rec, tol=1e-5)
    assert s["latency_from_sample_ms"]["p50"] > 0 and s["dropped_samples"] == 0


@pytest.mark.timeout(300)
def test_stream_lsl_outlet_that_stops_ends_the_stream(lsl, tmp_path):
    """The outlet stops after 3 of 5 trials: no sample for lsl_timeout seconds ends the stream (no hang), and
    the two markers whose epochs never came are reported dropped."""
    rec, data, events = _lsl_recording()
    first = sorted(events)[:5]
    end = first[3] - 1                                                   # the 4th marker's sample is never sent
    s, log = _stream_lsl(lsl, "stops", data[:, :end], {k: events[k] for k in first}, {}, tmp_path, lsl_timeout=1.5)
    assert s["stopped"] == "no samples from lsl:eegsine-stops-eeg for 1.5 s"
    assert (s["markers"], s["decisions"], s["dropped_markers"]) == (5, 3, 2)
    dropped = [e for e in log if e["type"] == "dropped_marker"]
    assert [d["sample"] for d in dropped] == first[3:]
    assert all(d["reason"] == "the stream ended before its epoch was complete" for d in dropped)
    assert any("the stream ended early" in w for w in s["warnings"])


@pytest.mark.parametrize("argv, message", [
    (["--source", "file:/nonexistent/rec.fif"], "/nonexistent/rec.fif: recording does not exist"),
    (["--source", "tcp:1234"], "unknown stream source 'tcp:1234'"),
    (["--source", "brainflow:playback:/nonexistent/rec.csv"], "/nonexistent/rec.csv: playback file does not exist"),
    (["--source", "brainflow:nosuchboard"], "unknown BrainFlow board 'nosuchboard'"),
    (["--source", "brainflow:synthetic", "--speed", "2"], "brainflow:synthetic: --speed paces recordings"),
    (["--source", "brainflow:synthetic", "--fast"], "brainflow:synthetic: --fast replays file: recordings"),
    (["--source", "file:x.fif", "--speed", "0"], "StreamConfig.speed must be > 0, got 0.0"),
])
def test_stream_bad_inputs_are_one_line_errors(argv, message):
    r = subprocess.run(EEGSINE + ["stream", "--bundle", str(h.stream_bundle())] + argv, capture_output=True, text=True,
                       timeout=120, env=ENV)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1


def test_stream_refuses_bundles_and_recordings_that_do_not_fit(tmp_path):
    import mne

    from eegsine.runtime.stream import StreamConfig, run_stream

    no_pre = h.copy_bundle(h.stream_bundle(), tmp_path / "no_pre")
    m = json.loads((no_pre / "manifest.json").read_text())
    del m["models"]["eeg_encoder"]["preprocessing"]
    (no_pre / "manifest.json").write_text(json.dumps(m))
    rec = h.recording("fif")
    with pytest.raises(UserError, match="the bundle carries no preprocessing"):
        run_stream(StreamConfig(source=f"file:{rec}", bundle=str(no_pre), fast=True), open(os.devnull, "w"))
    raw = mne.io.read_raw_fif(rec, preload=True, verbose="error")
    raw.drop_channels(raw.ch_names[:3]).save(tmp_path / "five.fif", verbose="error")
    with pytest.raises(UserError, match=r"needs channels Fpz, F3, T7 \(3 of 8 missing; the stream has 5: Cz"):
        run_stream(StreamConfig(source=f"file:{tmp_path / 'five.fif'}", bundle=str(h.stream_bundle()), fast=True),
                   open(os.devnull, "w"))
    raw.resample(125.0, verbose="error").save(tmp_path / "slow.fif", verbose="error")
    with pytest.raises(UserError, match="samples at 125 Hz, the bundle needs 250 Hz"):
        run_stream(StreamConfig(source=f"file:{tmp_path / 'slow.fif'}", bundle=str(h.stream_bundle()), fast=True),
                   open(os.devnull, "w"))


def test_stream_warns_on_zero_phase_bundles_and_reports_bad_channels(tmp_path):
    import mne

    from eegsine.runtime.stream import StreamConfig, run_stream

    zp = h.copy_bundle(h.stream_bundle(), tmp_path / "zp")
    m = json.loads((zp / "manifest.json").read_text())
    m["models"]["eeg_encoder"]["preprocessing"]["phase"] = "zero-phase"
    (zp / "manifest.json").write_text(json.dumps(m))
    raw = mne.io.read_raw_fif(h.recording("fif"), preload=True, verbose="error")
    raw._data[raw.ch_names.index("Cz")] = 0.0                           # a dead electrode
    raw._data[raw.ch_names.index("Oz"), 1000:1010] = np.nan
    raw.save(tmp_path / "bad.fif", verbose="error")
    shutil.copy(str(h.recording("fif")) + ".json", str(tmp_path / "bad.fif") + ".json")
    with open(tmp_path / "log.jsonl", "w") as out, pytest.warns(RuntimeWarning, match="zero-phase"):
        s = run_stream(StreamConfig(source=f"file:{tmp_path / 'bad.fif'}", bundle=str(zp), fast=True), out)
    assert any("zero-phase" in w for w in s["warnings"])
    assert s["flat_channels_s"].get("Cz", 0) >= 10 and s["nan_samples"] == {"Oz": 10}
    events = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert any(e["type"] == "warning" and "Cz is flat" in e["message"] for e in events)
    assert sum(e.get("nan_in_epoch", False) for e in events) <= 1


def test_stream_ctrl_c_stops_cleanly_and_flushes(tmp_path):
    log = tmp_path / "log.jsonl"
    p = subprocess.Popen(EEGSINE + ["stream", "--source", f"file:{h.recording('fif')}", "--bundle",
                                    str(h.stream_bundle()), "--log", str(log)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                         # as in a terminal: a test run started in the background (`make test &`) passes SIGINT
                         # ignored to its children, and Python keeps an inherited SIG_IGN
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or log.read_text().count('"decision"') < 2):
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err[-2000:]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[-1]["type"] == "summary" and events[-1]["stopped"] == "interrupted"
    assert events[-1]["decisions"] >= 2 and "stream (interrupted)" in err
    n_markers = events[-1]["markers"]
    assert sum(e["type"] in ("decision", "dropped_marker") for e in events) == n_markers


# -- the board-free live source ------------------------------------------------------------------------------
def test_synthetic_source_streams_trials_made_at_the_bundles_geometry(tmp_path, capsys):
    """`--source synthetic:N`: N trials of synthetic-vep at the bundle's channels (by name), rate and epoch, every
    marker decided and scored (the stream bundle's classes are the digits synthetic-vep draws)."""
    from eegsine.commands.main import main

    log = tmp_path / "events.jsonl"
    rc = main(["stream", "--source", "synthetic:6", "--bundle", str(h.stream_bundle()), "--fast", "--marker-labels",
               "--log", str(log)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "synthetic source: 6 synthetic-vep trials" in err
    events = [json.loads(line) for line in log.read_text().splitlines()]
    summary = events[-1]
    assert summary["type"] == "summary" and summary["markers"] == 6 and summary["decisions"] == 6, summary
    assert summary["accuracy"] is not None and summary["channel_mapping"] == "by name"  # scored: the digits
    made = Path(err.split("(", 1)[1].split(")", 1)[0])  # "... @ 64 Hz (/tmp/eegsine-stream-XXXX/synthetic.fif)"
    assert made.name == "synthetic.fif" and not made.parent.exists()  # a temporary folder, removed after


@pytest.mark.parametrize("source, needle", [("synthetic:x", "expected synthetic or synthetic:N"),
                                            ("synthetic:0", "N must be 1..100000"),
                                            ("synthetic", "no EEG encoder with a preprocessing spec")])
def test_synthetic_source_bad_input_is_one_line(capsys, source, needle):
    from eegsine.commands.main import main

    bundle = h.clf_bundle() if source == "synthetic" else h.stream_bundle()
    assert main(["stream", "--source", source, "--bundle", str(bundle), "--fast"]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
