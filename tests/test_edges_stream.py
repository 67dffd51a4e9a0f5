"""Recordings, sidecars and stream decisions checked at the edge (issue #27, items 2-3; #24, item 4).

Each class of bad input has a test that failed on the code before the fix (a traceback, exit 0, a decision
on the wrong electrodes or class, a marker lost, a recording read short): now a one-line
:class:`UserError` before a sample is decoded, or the marker reported apart. Recordings are small
(3 to 20 trials of 8 channels at 250 Hz) and in the real formats: the BrainFlow CSV and sidecar
`eegsine data export-recording` writes, EDF as MNE exports it (edfio).
"""
from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import export_helpers as h
from eegsine.errors import UserError
from eegsine.runtime.sources import Chunk, Source, SourceInfo

SYNTH_TS, SYNTH_MARKER = 30, 31           # SYNTHETIC_BOARD's timestamp and marker rows (columns 31, 32 of its CSV)


def _stream(source: str, **kw) -> dict:
    from eegsine.runtime.stream import StreamConfig, run_stream

    fast = {"fast": True} if source.startswith("file:") else {"speed": 8.0}
    with open(os.devnull, "w") as out:
        return run_stream(StreamConfig(source=source, bundle=str(h.stream_bundle()), **fast, **kw), out)


def _refused(source: str, *needles: str, **kw) -> str:
    with pytest.raises(UserError) as info:
        _stream(source, **kw)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


# -- BrainFlow CSV variants (of the 3-trial file export-recording writes) ------------------------------------
def _csv(tmp_path: Path, name: str, lines=None, side=None, data: bytes | None = None) -> Path:
    """A copy of the 3-trial BrainFlow CSV and its sidecar; ``lines(list) -> list`` / ``side(dict)`` edit them."""
    rec = h.recording("csv", 3)
    out = tmp_path / f"{name}.csv"
    text = rec.read_text().splitlines()
    out.write_bytes(data if data is not None else ("\n".join(lines(text) if lines else text) + "\n").encode())
    meta = json.loads(Path(str(rec) + ".json").read_text())
    if side:
        side(meta)
    Path(str(out) + ".json").write_text(json.dumps(meta))
    return out


def _cell(lines: list[str], i: int, j: int, value: str) -> list[str]:
    cells = lines[i].split("\t")
    cells[j] = value
    return lines[:i] + ["\t".join(cells)] + lines[i + 1:]


def _shift_ts(lines: list[str], start: int, f) -> list[str]:
    """Timestamps from line ``start`` on replaced by f(old timestamp, line index)."""
    out = list(lines[:start])
    for i, ln in enumerate(lines[start:], start):
        cells = ln.split("\t")
        cells[SYNTH_TS] = f"{f(float(cells[SYNTH_TS]), i):.6f}"
        out.append("\t".join(cells))
    return out


BAD_CSV = [  # name, edit, what the one line says
    ("empty", dict(data=b""), ["empty file"]),
    ("random-bytes", dict(data=np.random.default_rng(0).integers(128, 256, 3000, np.uint8).tobytes()),
     ["not a BrainFlow CSV (byte 0 is not text)"]),
    ("missing-columns", dict(lines=lambda L: ["\t".join(ln.split("\t")[:28]) for ln in L]),
     ["28 columns, a SYNTHETIC_BOARD file has 32"]),
    ("short-line", dict(lines=lambda L: L[:100] + ["\t".join(L[100].split("\t")[:20])] + L[101:]),
     ["line 101 has 20 columns"]),
    ("text-cell", dict(lines=lambda L: _cell(L, 100, 3, "abc")), ["line 101, column 4: 'abc' is not a number"]),
    ("one-row", dict(lines=lambda L: L[:1], side=lambda s: s.update(n_samples=1, events=[])),
     ["1 sample; a recording has at least 2"]),
    ("nan-timestamp", dict(lines=lambda L: _cell(L, 50, SYNTH_TS, "nan")), ["line 51, column 31: timestamp nan"]),
    ("timestamps-jump-forward", dict(lines=lambda L: _shift_ts(L, 300, lambda t, i: t + 1e6)),
     ["line 301: the timestamps jump 1e+06 s forward"]),
    ("timestamps-go-back", dict(lines=lambda L: _shift_ts(L, 300, lambda t, i: t - 5.0)),
     ["line 301: the timestamp goes back"]),
    ("timestamps-at-half-the-rate", dict(lines=lambda L: _shift_ts(L, 0, lambda t, i: t + i / 250.0)),
     ["its timestamps advance 125 samples/s, board SYNTHETIC_BOARD samples at 250 Hz"]),
    ("truncated-csv", dict(lines=lambda L: L[:500]), ["500 samples, its sidecar says 713"]),
]


@pytest.mark.parametrize("kind", ["file", "brainflow:playback"])
@pytest.mark.parametrize("name, edit, needles", BAD_CSV, ids=[b[0] for b in BAD_CSV])
def test_bad_brainflow_csv_is_refused_before_streaming(tmp_path, kind, name, edit, needles):
    """Refused before the board starts: a forward jump used to hang the playback board (it sleeps the gap, and
    BrainFlow's stop_stream waits for it), the other variants gave tracebacks or decided nothing with exit 0."""
    rec = _csv(tmp_path, name, **edit)
    _refused(f"{kind}:{rec}", str(rec), *needles)


BAD_SIDECARS = [  # what the sidecar says, what the one line says
    ({"sfreq": "abc"}, "sfreq must be a sampling rate > 0"),
    ({"sfreq": 500.0}, "its sidecar says 500 Hz, board SYNTHETIC_BOARD samples at 250 Hz"),
    ({"ch_names": "Fpz,F3"}, "ch_names must be a list of distinct channel names"),
    ({"ch_names": ["Cz", "Cz", "Oz"]}, "ch_names must be a list of distinct channel names"),
    ({"ch_names": [f"E{i}" for i in range(20)]}, "its sidecar names 20 channels, board SYNTHETIC_BOARD has 16"),
    ({"units_in_file": "mV"}, "units_in_file must be one of V, uV, a.u."),
    ({"version": 2}, "sidecar version 2 is newer than this eegsine reads (1)"),
    ({"version": True}, "version must be an integer >= 1"),
    ({"n_samples": 700}, "713 samples, its sidecar says 700"),
    ({"events": [[245, 1], [397, 1]]}, "its marker row holds 3 markers, its sidecar 2 events"),
    ({"events": [[245, "one"]]}, "events must be a list of [sample, code] pairs"),
    ({"board": "CYTON_BOARD"}, "32 columns, a CYTON_BOARD file has"),
]


@pytest.mark.parametrize("kind", ["file", "brainflow:playback"])
@pytest.mark.parametrize("fields, needle", BAD_SIDECARS, ids=[next(iter(b[0])) + str(i) for i, b in
                                                                enumerate(BAD_SIDECARS)])
def test_bad_sidecar_is_refused(tmp_path, kind, fields, needle):
    rec = _csv(tmp_path, "rec", side=lambda s: s.update(fields))
    _refused(f"{kind}:{rec}", needle)


@pytest.mark.parametrize("units_in_file, gain", [("V", 1e6), ("a.u.", 1.0)])
def test_playback_uses_the_sidecar_units(tmp_path, units_in_file, gain):
    """The sidecar's units_in_file is what the playback source reports and the runner converts from (it was
    taken as microvolts whatever the sidecar said)."""
    from eegsine.runtime.stream import StreamConfig, StreamRunner

    rec = _csv(tmp_path, "rec", side=lambda s: s.update(units_in_file=units_in_file))
    with open(os.devnull, "w") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")                                   # a.u.: the runner warns, checked below
        runner = StreamRunner(StreamConfig(source=f"brainflow:playback:{rec}", bundle=str(h.stream_bundle())), out)
    assert runner.source.info.units == units_in_file and runner.gain == pytest.approx(gain * runner.spec.scale)
    assert any("no conversion applied" in w for w in runner.warnings) == (units_in_file == "a.u.")


def test_cli_one_row_recording_is_one_line_exit_2(tmp_path, capsys):
    """It exited 0 with "latency p50 nan" before."""
    from eegsine.commands.main import main

    rec = _csv(tmp_path, "one", lines=lambda L: L[:1], side=lambda s: s.update(n_samples=1, events=[]))
    rc = main(["stream", "--source", f"file:{rec}", "--bundle", str(h.stream_bundle()), "--fast"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "1 sample" in err and "Traceback" not in err, err


def test_recording_shorter_than_one_epoch_is_refused(tmp_path):
    import mne

    raw = mne.io.read_raw_fif(h.recording("fif", 3), preload=True, verbose="error")
    raw.crop(0, 30 / raw.info["sfreq"]).save(tmp_path / "short.fif", verbose="error")
    _refused(f"file:{tmp_path / 'short.fif'}", "31 samples, shorter than one epoch of the bundle (64 samples")


# -- EDF truncated: checked against its own header ------------------------------------------------------------------
@pytest.fixture(scope="module")
def edf(tmp_path_factory) -> Path:
    pytest.importorskip("edfio", reason="MNE writes EDF through edfio (pip install edfio)")
    import mne

    path = tmp_path_factory.mktemp("edf") / "rec.edf"
    mne.io.read_raw_fif(h.recording("fif", 20), preload=True, verbose="error").export(path, fmt="edf",
                                                                                       verbose="error")
    return path


@pytest.mark.parametrize("keep", [1 / 3, "all but 100 bytes"])
def test_truncated_edf_is_refused_not_read_short(edf, tmp_path, keep):
    from eegsine.data import load_eeg

    data = edf.read_bytes()
    cut = tmp_path / "cut.edf"
    cut.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else len(data) - 100])
    assert len(load_eeg(f"raw:{edf}", tmax=0.256).x) == 20                 # the whole file: all 20 trials
    for read in (lambda: load_eeg(f"raw:{cut}", tmax=0.256), lambda: _stream(f"file:{cut}")):
        with pytest.raises(UserError, match=r"cut.edf: truncated: its header declares 14 data records of 1 s") as e:
            read()
        assert "\n" not in str(e.value)


# -- channels: by name unless asked --------------------------------------------------------------------------------
def _renamed_fif(tmp_path: Path, mapping: dict[str, str]) -> Path:
    import mne

    raw = mne.io.read_raw_fif(h.recording("fif", 3), preload=True, verbose="error")
    raw.rename_channels(mapping)
    raw.save(tmp_path / "renamed.fif", verbose="error")
    return tmp_path / "renamed.fif"


RENAMES = [  # the recording's channel names changed, the bundle's missing names in the error
    ("none in common", {n: f"E{i}" for i, n in enumerate(["Fpz", "F3", "T7", "Cz", "T8", "P3", "P4", "Oz"])},
     "the bundle needs channels Fpz, F3, T7, Cz, T8, P3 ... (8 of 8 missing; the stream has 8: E0, E1"),
    ("two renamed", {"T7": "T3", "T8": "T4"}, "the bundle needs channels T7, T8 (2 of 8 missing; the stream has 8"),
]


@pytest.mark.parametrize("what, mapping, needle", RENAMES, ids=[r[0] for r in RENAMES])
def test_channel_names_that_differ_are_refused_by_default(tmp_path, what, mapping, needle):
    rec = _renamed_fif(tmp_path, mapping)
    _refused(f"file:{rec}", needle, "--channel-map by-position")
    s = _stream(f"file:{rec}", channel_map="by-position")                  # on request: by position, all decided
    assert s["channel_mapping"] == "by position" and s["decisions"] == s["markers"] == 3


def test_playback_sidecar_names_that_differ_are_refused(tmp_path):
    rec = _csv(tmp_path, "rec", side=lambda s: s.update(ch_names=[f"E{i}" for i in range(8)]))
    _refused(f"brainflow:playback:{rec}", "(8 of 8 missing; the stream has 8: E0")


class ArraySource(Source):
    """A live source in memory: what a board or an LSL outlet hands the runner (channel names optional, markers
    not known before they come)."""

    def __init__(self, data: np.ndarray, markers: list[tuple[int, object]], names: list[str] | None, chunk: int = 8):
        self.data, self.markers, self.chunk, self.pos = data, markers, chunk, 0
        self.info = SourceInfo(h.STREAM_SFREQ, data.shape[0], names, "uV", "array source")
        self.info.max_chunk = chunk                                         # live: marker_codes stays None

    def read(self) -> Chunk | None:
        a, b = self.pos, min(self.pos + self.chunk, self.data.shape[1])
        if a >= b:
            return None
        self.pos = b
        return Chunk(self.data[:, a:b], [(s - a, c) for s, c in self.markers if a <= s < b])


def _live(monkeypatch, data: np.ndarray, markers, names=None, **kw) -> tuple[dict, list[dict]]:
    import io

    import eegsine.runtime.stream as stream
    from eegsine.runtime.stream import StreamConfig, run_stream

    monkeypatch.setattr(stream, "open_source", lambda *a, **k: ArraySource(data, markers, names))
    out = io.StringIO()
    s = run_stream(StreamConfig(source="lsl:fake", bundle=str(h.stream_bundle()), **kw), out)
    return s, [json.loads(line) for line in out.getvalue().splitlines()]


def _signal(n_chans: int = 8) -> tuple[np.ndarray, list[int]]:
    from eegsine.runtime.sources import import_brainflow

    rec = h.recording("csv", 3)
    d = import_brainflow().DataFilter.read_file(str(rec))
    side = json.loads(Path(str(rec) + ".json").read_text())
    return d[1:1 + n_chans], [e[0] for e in side["events"]]


def test_unnamed_channels_map_by_position_only_at_the_bundles_count(monkeypatch):
    data, at = _signal(16)
    with pytest.warns(RuntimeWarning, match="the stream names none of its channels: its 8 rows mapped by position"):
        s, _ = _live(monkeypatch, data[:8], [(a, 1) for a in at])
    assert s["channel_mapping"] == "by position (unnamed)" and s["decisions"] == 3
    with pytest.raises(UserError, match="names none of its 16 channels and the bundle needs 8: --channel-map "
                                        "by-position takes its first 8 rows"):
        _live(monkeypatch, data, [])
    with pytest.warns(RuntimeWarning, match="the stream's 16 channels mapped by position: the first 8 are used"):
        s, _ = _live(monkeypatch, data, [(a, 1) for a in at], channel_map="by-position")
    assert s["decisions"] == 3


# -- marker codes outside the classes ------------------------------------------------------------------------------
@pytest.mark.parametrize("code", ["99", "-1", "2.5"])
@pytest.mark.parametrize("kind", ["file", "brainflow:playback"])
def test_recording_with_marker_codes_outside_the_classes_is_refused(tmp_path, kind, code):
    def side(s):
        s["events"][1][1] = float(code)

    rec = _csv(tmp_path, "rec", lines=lambda L: _cell(L, 397, SYNTH_MARKER, f"{float(code):.6f}"), side=side)
    _refused(f"{kind}:{rec}", f"--marker-labels: 1 of 3 markers have codes that are no class of the bundle ({code};",
             "class codes: 1..10", marker_labels=True)
    if kind == "file":                                                    # without --marker-labels: all decided
        s = _stream(f"file:{rec}")
        assert s["decisions"] == 3 and s["accuracy"] is None


def test_live_markers_outside_the_classes_are_reported_apart(monkeypatch):
    data, at = _signal()
    codes = [1, 99, -1, 2.5, "x"]
    starts = [at[0], at[0] + 30, at[1], at[1] + 30, at[2]]
    s, log = _live(monkeypatch, data, list(zip(starts, codes)), names=json.loads(
        Path(str(h.recording("csv", 3)) + ".json").read_text())["ch_names"], marker_labels=True)
    decided = [e["marker"] for e in log if e["type"] == "decision"]
    apart = [e for e in log if e["type"] == "dropped_marker"]
    assert decided == [1] and [e["marker"] for e in apart] == [99, -1, 2.5, "x"]
    assert all("is no class of the bundle (--marker-labels: class codes 1..10)" in e["reason"] for e in apart)
    assert (s["markers"], s["decisions"], s["unknown_markers"], s["dropped_markers"]) == (5, 1, 4, 4)
    assert s["accuracy"] in (0.0, 1.0)                                     # scored over the one class-coded marker


# -- ring buffer vs chunk --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_ms, buffer_s", [(60_000.0, 1.0), (1_500.0, 1.0)])
def test_chunk_longer_than_the_ring_buffer_loses_no_marker(chunk_ms, buffer_s):
    rec = h.recording("fif", 20)
    with pytest.warns(RuntimeWarning, match=f"ring buffer grown from {buffer_s:g} s"):
        s = _stream(f"file:{rec}", chunk_ms=chunk_ms, buffer_s=buffer_s)
    assert (s["markers"], s["decisions"], s["dropped_markers"], s["buffer_overruns"]) == (20, 20, 0, 0)


def test_brainflow_playback_reads_are_bounded(tmp_path):
    """BrainFlow hands out what accumulated since the last poll; a read takes at most max_chunk (one second)."""
    from eegsine.runtime.sources import open_source

    src = open_source(f"brainflow:playback:{h.recording('csv', 3)}", speed=8.0)
    assert src.info.max_chunk == 250
    src.start()
    try:
        time.sleep(0.6)                                                 # 713 samples replayed at 8x: all queued
        sizes = []
        while (c := src.read()) is not None:
            sizes.append(c.data.shape[1])
    finally:
        src.stop()
    assert sum(sizes) == 713 and max(sizes) <= 250 and len(sizes) >= 3, sizes
