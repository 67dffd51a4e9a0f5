"""Issue #27, items 1 and 7 (library edges): thread counts bounded where they enter, runtime arguments and
``data export-recording``'s flags typed, a contract that does not fit its graph refused when ORT loads it.

Every bad value ends in one line (:class:`UserError`; exit 2 from a CLI) before anything runs: before the
fix ``--threads 1000000`` segfaulted (``data info``) or crashed in an import (``train classifier``), the
runtime took ``threads=-1``, ``1.5``, ``"2"`` and ``True``, and ``steps=nan``, ``seed=-1``, ``--isi nan``
reached numpy's ValueError/TypeError.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import export_helpers as h
from eegsine import config
from eegsine.commands.main import main
from eegsine.config import Config, check_threads, usable_cpus
from eegsine.errors import UserError
from eegsine.runtime import Bundle, EEGToImage, SineClassifier, check_eeg

MANY = 10 ** 6
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture
def cpus(monkeypatch):
    """This process "may use" 3 CPUs, whatever the test machine has: messages and bounds are exact."""
    monkeypatch.setattr(config, "usable_cpus", lambda: 3)
    return 3


def _one_line(err: str, *needles: str) -> None:
    assert err.count("\n") <= 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


# -- the one check ---------------------------------------------------------------------------------------------
def test_usable_cpus_is_the_affinity_mask_else_the_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    assert usable_cpus() == 3
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS / Windows have none
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert usable_cpus() == 7


@pytest.mark.parametrize("value, message", [
    (4, "threads 4: this process may use 3 CPUs; give 1..3"),
    (MANY, f"threads {MANY}: this process may use 3 CPUs"),
    (0, "threads must be >= 1, got 0"),
    (-1, "threads must be >= 1, got -1"),
    (True, "expected an int thread count, got bool True"),
    (1.5, "expected an int thread count, got float 1.5"),
    ("2", "expected an int thread count, got str '2'"),
    (None, "expected an int thread count, got NoneType"),
])
def test_check_threads_refuses(cpus, value, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        check_threads(value, "threads")
    assert "\n" not in str(e.value)


def test_check_threads_takes_one_to_the_cpus_and_numpy_integers(cpus):
    assert [check_threads(v, "t") for v in (1, 3, np.int64(2))] == [1, 3, 2]
    assert check_threads(0, "t", lo=0) == 0
    with pytest.raises(UserError, match=r"give 1\.\.3 \(or 0: the default\)"):
        check_threads(4, "t", lo=0)


# -- every config with a thread count --------------------------------------------------------------------------
CONFIG_MODULES = ("eegsine.training.configs", "eegsine.bench.robustness.configs", "eegsine.bench.speed.bench",
                  "eegsine.bench.pipeline.config", "eegsine.runtime.stream", "eegsine.runtime.verify",
                  "eegsine.export.bundle", "eegsine.training.encoder", "eegsine.training.diffusion",
                  "eegsine.bench.robustness.evaluate")
for _m in CONFIG_MODULES:
    importlib.import_module(_m)


def _subclasses(cls):
    for c in cls.__subclasses__():
        yield c
        yield from _subclasses(c)


THREADED = sorted({c for c in _subclasses(Config) if "threads" in {f.name for f in dataclasses.fields(c)}},
                  key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", THREADED, ids=lambda c: c.__name__)
def test_every_config_bounds_its_threads(cpus, cls):
    assert {c.__name__ for c in THREADED} >= {"ClassifierTrainConfig", "RobustnessConfig", "BenchConfig",
                                               "PipelineConfig", "StreamConfig"}  # the search finds them all
    assert cls(threads=3).threads == 3
    with pytest.raises(UserError, match=rf"^{cls.__name__}\.threads 4: this process may use 3 CPUs; give 1\.\.3"):
        cls(threads=4)
    with pytest.raises(UserError, match=rf"{cls.__name__}\.threads {MANY}: "):
        cls.from_dict({"threads": MANY})


@pytest.mark.parametrize("cls", THREADED, ids=lambda c: c.__name__)
def test_a_stored_config_from_a_bigger_host_still_reads(cpus, cls, tmp_path):
    """A run folder written on an 8-CPU machine is read (report, resume check) on this 3-CPU one: the stored
    count was that host's. An absurd stored count is still one line, and building a config here stays bounded."""
    cls(threads=3).save(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**data, "threads": 8}))
    assert cls.load(tmp_path).threads == 8
    (tmp_path / "config.json").write_text(json.dumps({**data, "threads": MANY}))
    with pytest.raises(UserError, match=rf"config.json: {cls.__name__}\.threads {MANY}: "):
        cls.load(tmp_path)
    with pytest.raises(UserError, match=rf"^{cls.__name__}\.threads 8: this process may use 3 CPUs"):
        cls(threads=8)  # the flag leaves load() with it


def test_bench_default_threads_fit_a_one_cpu_process(monkeypatch):
    from eegsine.bench.speed.bench import BenchConfig

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)  # taskset -c 0
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert BenchConfig().threads == 1  # the default (2 elsewhere) must not refuse `eegsine bench` on one CPU


# -- every command-line entry point: 10**6 is one line, at once ------------------------------------------------
def _entry(prog: str) -> list[str]:
    fn = {"eegsine": "eegsine.commands.main:main", "eegsine-bench": "eegsine.commands.main:bench_main",
          "eegsine-export": "eegsine.commands.main:export_main", "eegsine-verify": "eegsine.commands.verify:main"}[prog]
    mod, name = fn.split(":")
    return [sys.executable, "-P", "-c", f"import sys; from {mod} import {name}; sys.exit({name}(sys.argv[1:]))"]


CLI_CASES = [
    ("eegsine", ["--threads", str(MANY), "data", "info", "digits"]),
    ("eegsine", ["train", "classifier", "--run", "RUN", "--threads", str(MANY)]),
    ("eegsine", ["attack", "--run", "RUN", "--threads", str(MANY)]),
    ("eegsine", ["pipeline", "--out", "RUN", "--threads", str(MANY)]),
    ("eegsine", ["--threads", str(MANY), "stream", "--bundle", "B", "--source", "file:REC.fif"]),
    ("eegsine", ["--threads", str(MANY), "verify", "B"]),
    ("eegsine-bench", ["--threads", str(MANY)]),
    ("eegsine-export", ["--threads", str(MANY), "--out", "B"]),
    ("eegsine-verify", ["B", "--threads", str(MANY)]),
]


@pytest.mark.parametrize("prog, argv", CLI_CASES, ids=[f"{p}-{'-'.join(a[:3])}" for p, a in CLI_CASES])
def test_a_million_threads_is_one_line_at_once(tmp_path, prog, argv):
    argv = [str(tmp_path / a) if a in ("RUN", "B") else a for a in argv]
    t0 = time.perf_counter()
    r = subprocess.run(_entry(prog) + argv, capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=120)
    took = time.perf_counter() - t0
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    _one_line(r.stderr, f"{prog}: error: ", f"threads {MANY}: this process may use {usable_cpus()} CPU")
    assert took < 15, took  # python + argparse only: ~0.5 s here; before, torch was imported or OpenMP spun up
    assert not (tmp_path / "RUN").exists()


# -- runtime ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("threads, message", [
    (MANY, f"threads {MANY}: this process may use"), (-1, "threads must be >= 1, got -1"),
    (0, "threads must be >= 1, got 0"), (1.5, "got float 1.5"), ("2", "got str '2'"), (True, "got bool True"),
])
@pytest.mark.parametrize("opener", [Bundle, SineClassifier], ids=lambda f: f.__name__)
def test_runtime_threads_are_checked(opener, threads, message):
    bundle = h.clf_bundle()
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=message) as e:
        opener(bundle, threads=threads)
    assert "\n" not in str(e.value) and time.perf_counter() - t0 < 1.0


def test_runtime_threads_reach_ort_and_are_not_dropped_with_an_open_bundle():
    clf = SineClassifier(h.clf_bundle(), "fp32", threads=np.int64(1))
    assert clf.bundle.session("classifier", "fp32").get_session_options().intra_op_num_threads == 1
    with pytest.raises(UserError, match=r"threads=1 with an open Bundle \(threads=None\)"):
        SineClassifier(Bundle(h.clf_bundle()), threads=1)  # was ignored without a word


@pytest.mark.parametrize("kw, message", [
    ({"steps": math.nan}, "steps must be an integer, got float nan"),
    ({"steps": 2.5}, "steps must be an integer, got float 2.5"),
    ({"steps": True}, "steps must be an integer, got bool True"),
    ({"steps": 0}, "steps must be >= 1, got 0"),
    ({"seed": -1}, "seed must be >= 0, got -1"),
    ({"seed": 1.5}, "seed must be an integer, got float 1.5"),
    ({"seed": "0"}, "seed must be an integer, got str '0'"),
    ({"guidance": "x"}, "guidance must be a finite number >= 0, got str 'x'"),
    ({"guidance": True}, "guidance must be a finite number >= 0, got bool True"),
    ({"latents": "x"}, "latents must be a float numpy array (N, C, h, w), got str 'x'"),
    ({"latents": np.full((1, 4, 4, 4), np.nan, np.float32)}, "latents contain NaN or inf"),
    ({"callback": 3}, "callback must be callable, got int 3"),
    # the torch pipeline's names, each error naming the argument as given
    ({"num_inference_steps": math.nan}, "num_inference_steps must be an integer, got float nan"),
    ({"generator": -1}, "generator must be >= 0, got -1"),
    ({"generator": 1.5}, "generator must be an integer, got float 1.5 (or a numpy.random.Generator)"),
    ({"guidance_scale": "x"}, "guidance_scale must be a finite number >= 0, got str 'x'"),
    ({"output_type": "pil"}, "output_type must be np or latent, got str 'pil'"),
])
def test_generate_arguments_are_one_line_before_anything_runs(kw, message):
    # the arguments are checked before the bundle is touched: an instance without one proves it (an EEG bundle
    # costs ~25 s to build here); before the fix these reached int()/float()/default_rng or the encoder
    gen = EEGToImage.__new__(EEGToImage)
    gen.default_steps, gen.default_guidance, gen.scheduler_config = 25, 1.0, {}
    with pytest.raises(UserError) as e:
        gen.generate(np.zeros((1, h.N_CHANS, h.N_TIMES), np.float32), **kw)
    assert str(e.value) == message or str(e.value).startswith(message), str(e.value)


def test_a_numpy_scalar_is_named_as_one():
    clf = SineClassifier(h.clf_bundle(), "fp32")
    with pytest.raises(UserError, match=r"images must be a float32 numpy array \(N, 1, 8, 8\), got a numpy float32 "
                                        r"scalar, shape \(\)$"):
        clf.predict(np.float32(0.5))
    with pytest.raises(UserError, match=r"got a float64 array of shape \(1, 1, 8, 8\)$"):
        clf.predict(np.zeros((1, 1, 8, 8)))
    with pytest.raises(UserError, match=r"EEG: expected a numpy array \(batch, 8, 64\) of float32, got a numpy "
                                        r"float32 scalar, shape \(\)$"):
        check_eeg(np.float32(1.0), 8, 64)
    with pytest.raises(UserError, match=r"classifier \(fp32\): images must be a numpy array, got a numpy float32 "
                                        r"scalar, shape \(\)$"):
        clf.bundle.run("classifier", {"images": np.float32(0.5)})


def _contract_mutated(tmp_path, where: str, axis: int, size: int):
    b = shutil.copytree(h.clf_bundle(), tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    m["models"]["classifier"]["contract"][where][0]["shape"][axis] = size
    (b / "manifest.json").write_text(json.dumps(m))
    return b


@pytest.mark.parametrize("where, axis, size, message", [
    ("inputs", 2, 10, r"input 'images' axis 2 is 8 in the graph, the contract says 10"),
    ("inputs", 1, 3, r"input 'images' axis 1 is 1 in the graph, the contract says 3"),
    ("outputs", 1, 12, r"output 'logits' axis 1 is 10 in the graph, the contract says 12"),
])
def test_a_contract_whose_fixed_axes_differ_from_the_graph_is_refused_at_load(tmp_path, where, axis, size, message):
    b = _contract_mutated(tmp_path, where, axis, size)
    with pytest.raises(UserError, match=message) as e:
        Bundle(b).session("classifier", "fp32")
    assert "the manifest's contract does not fit the file" in str(e.value) and "\n" not in str(e.value)
    shape = [1, 1, 8, 8]
    if where == "inputs":
        shape[axis] = size
    with pytest.raises(UserError, match=message):  # before: onnxruntime's InvalidArgument from run()
        SineClassifier(b).predict(np.full(shape, 0.5, np.float32))


# -- data export-recording ------------------------------------------------------------------------------------
SMALL_VEP = ["-o", "image_set=digits", "-o", "n_chans=4", "-o", "n_times=32", "-o", "sfreq=100.0",
             "-o", "n_images_per_class=3", "-o", "n_subjects=1", "-o", "n_classes=2", "-o", "progress=false"]


RECORDING_FLAGS = {  # flags -> the error (before: numpy's ValueError, a traceback, or every trial and exit 0)
    "--isi nan": "recording: isi: must be a finite number, got nan",
    "--isi inf": "recording: isi: must be a finite number, got inf",
    "--isi-jitter nan": "recording: isi_jitter: must be a finite number, got nan",
    "--isi -0.5": "recording: isi must be >= 0 s, got -0.5",
    "--seed -1": "recording: seed must be >= 0, got -1",
    **{f"--trials {n}": f"--trials must be >= 1 (leave it out for every trial of the split), got {n}" for n in (-1, 0)},
}


@pytest.mark.parametrize("flags", RECORDING_FLAGS)
def test_export_recording_flags_are_one_line(tmp_path, capsys, flags):
    out = tmp_path / "rec.csv"
    assert main(["data", "export-recording", "synthetic-vep", *SMALL_VEP, "--out", str(out), *flags.split()]) == 2
    _one_line(capsys.readouterr().err, "eegsine: error: ", RECORDING_FLAGS[flags])
    assert not out.exists()


@pytest.mark.parametrize("kw, message", [
    ({"n_trials": -1}, "n_trials must be >= 0"), ({"n_trials": 1.5}, "n_trials: expected int, got float"),
    ({"n_trials": True}, "n_trials: expected int, got bool"), ({"seed": -1}, "seed must be >= 0"),
    ({"seed": 2.0}, "seed: expected int, got float"), ({"isi": math.nan}, "isi: must be a finite number"),
    ({"isi": "0.5"}, "isi: expected float, got str"), ({"lead": -1.0}, "lead must be >= 0 s"),
])
def test_continuous_recording_arguments_are_typed(kw, message):
    from eegsine.data import load_eeg
    from eegsine.data.recording import continuous_recording

    ds = load_eeg("synthetic-vep", image_set="digits", n_chans=4, n_times=32, sfreq=100.0, n_images_per_class=3,
                  n_subjects=1, n_classes=2, progress=False)
    with pytest.raises(UserError, match=message):
        continuous_recording(ds, split="all", **kw)
    assert len(continuous_recording(ds, split="all", n_trials=2).events) == 2
