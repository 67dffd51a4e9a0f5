"""Validation at every entry point (issue #15, part 2): bad configs, numbers and loader options are one line.

Each class of bad input found by the tester has a test that failed on the code before the fix:
the command exits 2 with ``eegsine: error: ...`` on one line (or the library raises a one-line
:class:`UserError`) and writes nothing. The last section sweeps the validators with seeded random
values (no hypothesis dependency): every config class, every loader's options, the sampler's
steps/guidance, and :func:`eegsine.config.check_value` itself.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import pickle
import random
import typing

import numpy as np
import pytest
import torch

from eegsine.commands.main import main
from eegsine.config import Config
from eegsine.errors import UserError

# every module that defines a Config subclass (imported so __subclasses__ sees them all)
CONFIG_MODULES = ("eegsine.models.classifier", "eegsine.models.diffusion", "eegsine.models.eeg_encoder",
                  "eegsine.models.image_encoder", "eegsine.data.synthetic_vep", "eegsine.metrics.images",
                  "eegsine.runtime.verify", "eegsine.training.classifier", "eegsine.training.encoder",
                  "eegsine.training.diffusion", "eegsine.export.bundle", "eegsine.export.verify",
                  "eegsine.export.tensorrt", "eegsine.bench.speed.bench", "eegsine.bench.robustness.evaluate",
                  "eegsine.bench.pipeline.config")


def _one_line_exit_2(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("eegsine") and ": error: " in err and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


# -- fixtures: a tiny classifier run and a tiny diffusion run (random weights: only validation runs) ---------
@pytest.fixture
def classifier_run(tmp_path):
    from eegsine.models.classifier import ClassifierConfig, build_classifier
    from eegsine.training.classifier import classifier_provenance
    from eegsine.training.classifier import ClassifierTrainConfig

    torch.manual_seed(0)
    mcfg = ClassifierConfig(image_size=8, fc_width=16)
    run = tmp_path / "clf"
    tcfg = ClassifierTrainConfig(dataset="digits", eps=0.1, model=mcfg)
    tcfg.save(run)
    build_classifier(mcfg).eval().save_pretrained(run / "model", classifier_provenance(tcfg))
    return run


def _patch_config(run, file="config.json", **changes):
    data = json.loads((run / file).read_text())
    for k, v in changes.items():
        if v is ...:
            data.pop(k)
        else:
            data[k] = v
    (run / file).write_text(json.dumps(data))


# what export / attack read of a classifier run: its model folder (model/config.json, model/provenance.json)
BAD_MODEL_FILES = [
    ("model/config.json", {"colour": "red"}, "unknown key 'colour'"),
    ("model/config.json", {"fc_width": "ten"}, "ClassifierConfig.fc_width: expected int"),
    ("model/config.json", {"version": 2}, "version 2 is not supported"),
    ("model/config.json", {"kind": "encoder-train"}, "kind 'encoder-train'"),
    ("model/provenance.json", {"train_eps": 5.0}, "train_eps"),
    ("model/provenance.json", {"version": ...}, "no 'version' key"),
]


@pytest.fixture
def diffusion_run(tmp_path):
    import export_helpers as h

    model = h.tiny_diffusion()
    run = tmp_path / "diff"
    model.eval().save_pretrained(run / "model")
    np.save(tmp_path / "eeg.npy", np.zeros((4, 32), np.float32))
    return run


# -- 1. a model folder's files, read through the model protocol --------------------------------------------
@pytest.mark.parametrize("file, changes, message", BAD_MODEL_FILES)
def test_export_cli_validates_the_classifier_model_folder(classifier_run, tmp_path, capsys, file, changes, message):
    from eegsine.commands.main import export_main

    _patch_config(classifier_run, file, **changes)
    out = tmp_path / "bundle"
    _one_line_exit_2(capsys, export_main(["--classifier", str(classifier_run), "--out", str(out)]), message,
                     str(classifier_run / file))
    assert not out.exists() and not list(tmp_path.glob(".bundle*"))


@pytest.mark.parametrize("file, changes, message", [
    ("model/config.json", {"version": 2}, "version 2 is not supported"),
    ("model/config.json", {"kind": "encoder-train"}, "kind 'encoder-train'"),
    ("model/provenance.json", {"train_eps": 5.0}, "train_eps: must be in [0, 1]"),
    ("model/provenance.json", {"train_eps": "0.3"}, "train_eps: expected float"),
    ("model/provenance.json", {"data": 3}, "data: expected str"),
    ("model/provenance.json", {"version": ...}, "no 'version' key"),
])
def test_library_readers_of_model_folders_check_the_fields_they_read(classifier_run, tmp_path, file, changes, message):
    """export/bundle.py (which cannot import eegsine.training) and bench/robustness/evaluate.py."""
    from eegsine.bench.robustness.evaluate import RobustnessConfig, evaluate_robustness
    from eegsine.export.bundle import BundleConfig, classifier_item

    _patch_config(classifier_run, file, **changes)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        classifier_item(classifier_run, BundleConfig())
    assert "\n" not in str(info.value) and str(classifier_run / file) in str(info.value)
    out = tmp_path / "robustness"
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        evaluate_robustness([classifier_run], RobustnessConfig(n_eval=5, attacks=["fgsm"]), out)
    assert not out.exists()


def test_a_model_without_training_data_says_which_flag_supplies_it(classifier_run):
    from eegsine.export.bundle import BundleConfig, classifier_item

    _patch_config(classifier_run, "model/provenance.json", data="", data_options={})
    with pytest.raises(UserError, match="names no training data set"):
        classifier_item(classifier_run, BundleConfig())


def test_attack_cli_checks_run_configs_before_writing(classifier_run, tmp_path, capsys):
    _patch_config(classifier_run, "model/provenance.json", train_eps=5.0)
    out = tmp_path / "rob"
    _one_line_exit_2(capsys, main(["attack", "--run", str(classifier_run), "--out", str(out), "--attacks", "fgsm"]),
                     "eps")
    assert not out.exists()


def test_generation_scoring_checks_the_model_provenance(diffusion_run):
    from eegsine.metrics.images import evaluate_generation

    prov = diffusion_run / "model" / "provenance.json"
    prov.write_text(json.dumps({"kind": "provenance", "version": 1, "image_cond_frac": "half"}))
    with pytest.raises(UserError, match="image_cond_frac: expected float"):
        evaluate_generation(diffusion_run, None)
    prov.write_text(json.dumps({"kind": "provenance", "version": 1, "image_cond_frac": 1.5}))
    with pytest.raises(UserError, match=r"image_cond_frac: must be in \[0, 1\]"):
        evaluate_generation(diffusion_run, None)
    prov.write_text(json.dumps({"kind": "provenance", "version": 2}))
    with pytest.raises(UserError, match="version 2 is not supported"):
        evaluate_generation(diffusion_run, None)


# -- 2. a config file without kind/version ------------------------------------------------------------------
@pytest.mark.parametrize("missing", ["version", "kind"])
def test_config_file_without_kind_or_version_is_refused(tmp_path, missing):
    from eegsine.training.classifier import ClassifierTrainConfig

    ClassifierTrainConfig().save(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    del data[missing]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=f"no '{missing}' key") as info:
        ClassifierTrainConfig.load(tmp_path)
    assert str(tmp_path / "config.json") in str(info.value) and "\n" not in str(info.value)


def test_every_config_class_writes_kind_and_version(tmp_path):
    saved = 0
    for cls in _config_classes():
        try:
            cfg = cls()
        except UserError:  # no valid defaults (a spec filled from data): nothing to save without values
            continue
        saved += 1
        cfg.save(tmp_path, f"{cls.__name__}.json")
        data = json.loads((tmp_path / f"{cls.__name__}.json").read_text())
        assert data["kind"] == cls.KIND and data["version"] == cls.VERSION, cls.__name__
        assert cls.load(tmp_path, f"{cls.__name__}.json") == cfg, cls.__name__
    assert saved >= 15


# -- 3. numbers ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--lr", "inf"], "ClassifierTrainConfig.lr: must be a finite number"),
    (["--lr", "nan"], "ClassifierTrainConfig.lr: must be a finite number"),
    (["--weight-decay", "-1"], "ClassifierTrainConfig.weight_decay: must be >= 0"),
    (["--eps-ramp-epochs", "-1"], "ClassifierTrainConfig.eps_ramp_epochs: must be >= 0"),
    (["--threads", "-2"], "ClassifierTrainConfig.threads: must be >= 0"),
    (["--alpha", "nan"], "ClassifierTrainConfig.alpha: must be a finite number"),  # nan <= 0 is False: was accepted
    (["--seed", "-1"], "ClassifierTrainConfig.seed: must be >= 0"),
])
def test_train_classifier_numbers(tmp_path, capsys, argv, message):
    run = tmp_path / "run"
    _one_line_exit_2(capsys, main(["train", "classifier", "--run", str(run), *argv]), message)
    assert not run.exists()


def test_global_threads_must_be_positive(tmp_path, capsys):
    run = tmp_path / "run"
    _one_line_exit_2(capsys, main(["--threads", "-1", "train", "classifier", "--run", str(run)]),
                     "--threads must be >= 1")
    assert not run.exists()


@pytest.mark.parametrize("argv, message", [
    (["--warmup", "-5"], "BenchConfig.warmup: must be >= 0"),
    (["--max-seconds", "-1"], "BenchConfig.max_seconds: must be > 0"),
    (["--max-seconds", "inf"], "BenchConfig.max_seconds: must be a finite number"),
    (["--threads", "0"], "BenchConfig.threads: must be >= 1"),
])
def test_bench_numbers(tmp_path, capsys, argv, message):
    from eegsine.commands.main import bench_main

    out = tmp_path / "bench"
    _one_line_exit_2(capsys, bench_main(["--out", str(out), *argv]), message)
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "steps=0: must be an int in [1, 100]"),
    (["--steps", "100000"], "steps=100000: must be an int in [1, 100]"),
    (["--guidance", "nan"], "guidance=nan: must be a finite number >= 0"),
    (["--guidance", "-1"], "guidance=-1.0: must be a finite number >= 0"),
])
def test_generate_steps_and_guidance(diffusion_run, tmp_path, capsys, argv, message):
    out = tmp_path / "gen"
    rc = main(["generate", "--run", str(diffusion_run), "--eeg", str(tmp_path / "eeg.npy"), "--out", str(out), *argv])
    _one_line_exit_2(capsys, rc, message)
    assert not out.exists()


def test_generate_still_runs_with_valid_numbers(diffusion_run, tmp_path, capsys):
    out = tmp_path / "gen"
    rc = main(["generate", "--run", str(diffusion_run), "--eeg", str(tmp_path / "eeg.npy"), "--out", str(out),
               "--samples", "1", "--steps", "1", "--guidance", "1"])
    assert rc == 0, capsys.readouterr().err
    index = json.loads((out / "index.json").read_text())
    assert index["steps"] == 1 and index["guidance"] == 1.0


def test_diverging_lr_stops_with_one_line_before_writing_weights(tmp_path):
    from eegsine.data import load_images
    from eegsine.models.classifier import ClassifierConfig
    from eegsine.training.classifier import ClassifierTrainConfig, train_classifier

    ds = load_images("digits")
    t = torch.from_numpy
    data = {"train_x": t(ds.train_x[:200]), "train_y": t(ds.train_y[:200]), "val_x": t(ds.train_x[200:260]),
            "val_y": t(ds.train_y[200:260]), "test_x": t(ds.test_x[:60]), "test_y": t(ds.test_y[:60]),
            "n_classes": 10, "source": "digits"}
    cfg = ClassifierTrainConfig(dataset="digits", mode="natural", lr=1e30, epochs=1, batch_size=50, n_val_eval=50,
                                val_pgd_steps=1, grad_log_steps=0, model=ClassifierConfig(image_size=8, fc_width=16))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(UserError, match=r"training diverged: .*lr=1e\+30") as info:
            train_classifier(cfg, tmp_path / "run", data=data)
    finally:
        torch.set_num_threads(n)
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "run").glob("*.safetensors"))


# -- 4. loader options --------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["data", "info", "eegcvpr40", "-o", "split_index=abc"],
     "eegcvpr40: option 'split_index': expected int, got str"),
    (["data", "info", "eegcvpr40", "-o", "split_index=1.5"],
     "eegcvpr40: option 'split_index': expected int, got float"),
    (["data", "info", "eegcvpr40", "-o", "bandpass=5"], "eegcvpr40: option 'bandpass': expected a list, got int 5"),
    (["data", "info", "eegcvpr40", "-o", "sfreq=NaN"], "eegcvpr40: option 'sfreq': must be a finite number"),
    (["data", "info", "digits", "-o", "seed=abc"], "digits: option 'seed': expected int, got str 'abc'"),
    (["data", "info", "digits", "-o", "seed=-1"], "digits: option 'seed': must be >= 0"),
    (["data", "info", "mnist", "-o", "verify=1"], "mnist: option 'verify': expected bool, got int"),
    (["data", "info", "synthetic-vep", "-o", "n_trials=ten"], "synthetic-vep: option 'n_trials': expected int"),
    (["data", "info", "synthetic-vep", "-o", "sfreq=Infinity"],
     "synthetic-vep: option 'sfreq': must be a finite number"),
    (["data", "info", "uea:Tiny", "-o", "val_fraction=x"], "uea:Tiny: option 'val_fraction': expected float"),
])
def test_loader_options_are_type_checked(capsys, argv, message):
    _one_line_exit_2(capsys, main(argv), message)


TS_HEADER = ("@problemName Tiny\n@timeStamps false\n@missing false\n@univariate false\n@dimensions 1\n"
             "@equalLength true\n@seriesLength 3\n@classLabel true up down\n@data\n")


def test_uea_sfreq_must_be_a_positive_rate(tmp_path):
    from eegsine.data import load_eeg

    (tmp_path / "Tiny").mkdir()
    for split, n in (("TRAIN", 6), ("TEST", 2)):
        rows = [f"{k},{k + 1},{k + 2}:{'up' if k % 2 else 'down'}" for k in range(n)]
        (tmp_path / "Tiny" / f"Tiny_{split}.ts").write_text(TS_HEADER + "\n".join(rows) + "\n")
    assert load_eeg("uea:Tiny", root=str(tmp_path), sfreq=50.0, val_fraction=0.0).sfreq == 50.0
    for bad in (0, -10.0):
        with pytest.raises(UserError, match=f"sfreq={bad:g}: must be a finite sampling rate > 0"):
            load_eeg("uea:Tiny", root=str(tmp_path), sfreq=bad)


def _cvpr(folder, trials, splits):
    folder.mkdir(parents=True, exist_ok=True)
    data = {"dataset": [{"eeg": torch.zeros(128, T), "label": lab, "subject": s, "image": im}
                        for T, lab, s, im in trials],
            "labels": ["n01", "n02"], "images": ["n01_1", "n02_2", "n01_3", "n02_4"]}
    torch.save(data, folder / "eeg_5_95_std.pth")
    torch.save(splits, folder / "block_splits_by_image_all.pth")
    return folder


def test_eegcvpr40_loso_fold_without_test_trials(tmp_path):
    from eegsine.data import load_eeg

    # subject 3's only trial is 440 samples long: the length filter drops it, leaving its fold empty
    trials = [(500, 0, 1, 0), (500, 1, 2, 1), (550, 0, 1, 2), (600, 1, 2, 3), (440, 0, 3, 0)]
    root = _cvpr(tmp_path / "cvpr", trials, {"splits": [{"train": [0, 1], "val": [2], "test": [3, 4]}]})
    assert len(load_eeg("eegcvpr40", root=str(root), bandpass=None, loso_subject=2).splits["test"]) == 2
    with pytest.raises(UserError, match="loso_subject=3 leaves 0 test trials"):
        load_eeg("eegcvpr40", root=str(root), bandpass=None, loso_subject=3)


@pytest.mark.parametrize("bad", [1.5, 1.0, True, "1"])
def test_eegcvpr40_split_indices_must_be_ints(tmp_path, bad):
    from eegsine.data import load_eeg

    trials = [(500, 0, 1, 0), (500, 1, 2, 1), (550, 0, 1, 2)]
    root = _cvpr(tmp_path / "cvpr", trials, {"splits": [{"train": [0, bad], "val": [2], "test": []}]})
    with pytest.raises(UserError, match=r"splits\[0\]\['train'\] must be a list of ints, found") as info:
        load_eeg("eegcvpr40", root=str(root), bandpass=None)
    assert "block_splits_by_image_all.pth" in str(info.value)


def test_encoder_loso_fold_without_training_trials():
    from eegsine.data.base import EEGSet
    from eegsine.training.encoder import EncoderTrainConfig, split_indices

    n = 6
    ds = EEGSet(name="one-subject", x=np.zeros((n, 2, 8), np.float32), y=np.arange(n) % 2, subject=np.ones(n, np.int64),
                image=np.full(n, -1), sfreq=64.0, ch_names=["a", "b"], classes=["0", "1"],
                splits={"train": np.arange(4), "val": np.array([4]), "test": np.array([5])})
    with pytest.raises(UserError, match="loso_subject=1 leaves 0 train trials"):
        split_indices(ds, EncoderTrainConfig(loso_subject=1))


# -- 5. global vs subcommand --threads ----------------------------------------------------------------------
def test_global_threads_reaches_the_subcommand_config(monkeypatch, tmp_path, capsys):
    import eegsine.training.classifier as tc

    seen = []

    def fake_train(cfg, run_dir, data=None):
        seen.append(cfg.threads)
        return {"best": None, "test_clean_accuracy": 0.0, "train_wall_s": 0.0, "catastrophic_overfitting": []}

    monkeypatch.setattr(tc, "train_classifier", fake_train)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    n = torch.get_num_threads()
    try:
        run = str(tmp_path / "r")
        assert main(["--threads", "1", "train", "classifier", "--run", run]) == 0
        assert main(["--threads", "1", "train", "classifier", "--run", run, "--threads", "2"]) == 0  # its own flag wins
        assert main(["train", "classifier", "--run", run]) == 0
    finally:
        torch.set_num_threads(n)
    assert seen == [1, 2, 0]


def test_bench_threads_flag_and_global_flag(monkeypatch, tmp_path):
    import eegsine.commands.bench as cases  # where the command looks build_cases up

    seen = []

    class Stop(Exception):
        pass

    def fake_build(cfg, *a, **kw):
        seen.append(cfg.threads)
        raise Stop

    monkeypatch.setattr(cases, "build_cases", fake_build)
    monkeypatch.setattr("eegsine.config.usable_cpus", lambda: 4)  # --threads 3 is within bounds on any host
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from eegsine.commands.main import bench_main

    n = torch.get_num_threads()
    try:
        for argv in (["--threads", "3"], []):
            with pytest.raises(Stop):
                bench_main(["--out", str(tmp_path / "b"), *argv])
        with pytest.raises(Stop):
            main(["--threads", "1", "bench", "--out", str(tmp_path / "b")])
    finally:
        torch.set_num_threads(n)
    assert seen == [3, 2, 1]


# -- 6. CIFAR-10 reader -------------------------------------------------------------------------------------
def _cifar_py(folder, labels_of_test):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = labels_of_test if name == "test_batch" else rng.integers(0, 10, 4).tolist()
        d = {b"labels": labels, b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8)}
        with open(folder / name, "wb") as fh:
            pickle.dump(d, fh, protocol=2)
    return folder


@pytest.mark.parametrize("labels, message", [
    ([0, 1, "cat", 3], r"labels\[2\] = 'cat' is not a class index"),
    ([0, 1, 2, 10], r"labels\[3\] = 10 is not a class index"),
    ([0, 1, 2.5, 3], r"labels\[2\] = 2.5 is not a class index"),
    ([0, 1, 2], "4 images but 3 labels"),
])
def test_cifar_bad_labels_name_the_file(tmp_path, labels, message):
    from eegsine.data import load_images

    folder = _cifar_py(tmp_path / "c", labels)
    with pytest.raises(UserError, match=message) as info:
        load_images("cifar10", root=folder)
    assert str(folder / "test_batch") in str(info.value) and "\n" not in str(info.value)


def test_cifar_bin_folder_missing_test_batch(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)]:
        rows = np.concatenate([rng.integers(0, 10, (2, 1)), rng.integers(0, 256, (2, 3072))], 1)
        rows.astype(np.uint8).tofile(folder / name)
    _one_line_exit_2(capsys, main(["data", "info", "cifar10", "--root", str(folder)]),
                     f"{folder / 'test_batch.bin'}: file does not exist")


# -- property sweeps over the validators (seeded) -----------------------------------------------------------
def _config_classes() -> list[type[Config]]:
    for m in CONFIG_MODULES:
        importlib.import_module(m)
    out, todo = [], list(Config.__subclasses__())
    while todo:
        c = todo.pop()
        todo.extend(c.__subclasses__())
        if c.__module__.startswith("eegsine") and dataclasses.fields(c):  # DataOptions itself: a base, no field
            out.append(c)
    return sorted(set(out), key=lambda c: c.__name__)


def _float_fields(cls) -> list[str]:
    hints = typing.get_type_hints(cls)

    def has_float(tp) -> bool:
        return tp is float or any(has_float(a) for a in typing.get_args(tp))

    return [f.name for f in dataclasses.fields(cls) if has_float(hints[f.name]) and not f.metadata.get("nonfinite")]


def test_sweep_finds_every_config_class():
    names = {c.__name__ for c in _config_classes()}
    assert {"ClassifierTrainConfig", "EncoderTrainConfig", "DiffusionTrainConfig", "BenchConfig", "RobustnessConfig",
            "PipelineConfig", "BundleConfig", "DiffusionConfig", "SyntheticVEPConfig", "Int8Config"} <= names


def _with_float(tp, value):
    """``value`` shaped as ``tp`` holds a float.

    ``list[list[float]]`` -> ``[[value]]``, ``float | None`` -> ``value``.
    """
    if tp is float:
        return value
    if typing.get_origin(tp) in (list, tuple):
        return [_with_float(typing.get_args(tp)[0], value)]
    arm = next(a for a in typing.get_args(tp) if a is float or typing.get_args(a))  # the Union arm holding the float
    return _with_float(arm, value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_no_config_float_field_takes_a_non_finite_value(value):
    checked = 0
    for cls in _config_classes():
        hints = typing.get_type_hints(cls)
        for name in _float_fields(cls):
            bad = _with_float(hints[name], value)
            with pytest.raises(UserError, match=rf"{cls.__name__}\.{name}: must be a finite number") as info:
                cls.from_dict({name: bad})
            assert "\n" not in str(info.value)
            checked += 1
    assert checked > 60  # every float of every config, not a handful


# values a JSON file or a flag can carry, biased towards the edges the tester hit
EDGE_VALUES = [0, 1, -1, 2, 10, 10**6, -(10**6), 0.0, 0.5, 1.0, -0.5, 1e-12, 1e30, -1e30, math.nan, math.inf, -math.inf,
               True, False, None, "", "abc", "1", [], [1], [0.5, 2.0], ["a"], {}, {"x": 1}]


def _random_value(rng: random.Random):
    r = rng.random()
    if r < 0.5:
        return rng.choice(EDGE_VALUES)
    if r < 0.7:
        return rng.randint(-5, 2000)
    if r < 0.9:
        return rng.uniform(-3.0, 3.0) * 10 ** rng.randint(-4, 4)
    return [rng.uniform(-2, 2) for _ in range(rng.randint(0, 3))]


def _finite_everywhere(v) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, (list, tuple)):
        return all(_finite_everywhere(x) for x in v)
    if isinstance(v, dict):
        return all(_finite_everywhere(x) for x in v.values())
    return True


def test_sweep_configs_accept_or_raise_one_line_user_error():
    """Any value in any field: the config is built (finite, round-trips exactly) or the error is one UserError line."""
    rng = random.Random(15)
    built = refused = 0
    for cls in _config_classes():
        fields = [f.name for f in dataclasses.fields(cls)]
        for _ in range(40):
            patch = {rng.choice(fields): _random_value(rng) for _ in range(rng.randint(1, 2))}
            try:
                cfg = cls.from_dict(patch)
            except UserError as e:
                assert "\n" not in str(e) and str(e), (cls.__name__, patch)
                refused += 1
                continue
            d = cfg.to_dict()
            assert _finite_everywhere(d), (cls.__name__, patch)
            assert cls.from_dict(json.loads(json.dumps(d))) == cfg, (cls.__name__, patch)
            built += 1
    assert built > 50 and refused > 50


def test_sweep_loader_options_accept_or_raise_one_line_user_error():
    """Any value for any option of any data set: its typed options are built (the value kept, or None for a
    "none" word on an optional field) or the error is one line naming the data set and an option."""
    from eegsine import data

    rng = random.Random(16)
    for name, spec in sorted(data.REGISTRY.items()):
        keys = spec.options.keys()
        for _ in range(60):
            key, value = rng.choice(keys), _random_value(rng)
            try:
                opts = spec.make_options(name, {key: value})
            except UserError as e:
                assert str(e).startswith(f"{name}: option '") and "\n" not in str(e), (name, key, value, str(e))
                continue
            got = getattr(opts, key)
            assert (got == value or got is None) and _finite_everywhere(value), (name, key, value)
        with pytest.raises(UserError, match=f"{name}: unknown option 'no_such_option'"):
            spec.make_options(name, {"no_such_option": 1})


def test_sweep_sampling_steps_and_guidance():
    from eegsine.models.diffusion import DiffusionConfig

    cfg = DiffusionConfig(num_train_timesteps=50, sample_steps=10)
    rng = random.Random(17)
    for _ in range(400):
        steps = rng.choice([None, True, 0, 1, 50, 51, -3, 2.0, "5", rng.randint(-10, 80)])
        guidance = rng.choice([None, True, 0, 1, -0.1, math.nan, math.inf, "2", rng.uniform(-5, 20)])
        ok_steps = steps is None or (type(steps) is int and 1 <= steps <= 50)
        ok_g = guidance is None or (type(guidance) in (int, float) and math.isfinite(guidance) and guidance >= 0)
        if ok_steps and ok_g:
            n, g = cfg.sampling(steps, guidance)
            assert n == (10 if steps is None else steps) and g == (2.0 if guidance is None else float(guidance))
        else:
            with pytest.raises(UserError) as info:
                cfg.sampling(steps, guidance)
            assert "\n" not in str(info.value)


def test_sweep_check_value_numbers():
    from eegsine.config import check_value

    rng = random.Random(18)
    for _ in range(500):
        v = _random_value(rng)
        is_num = type(v) in (int, float)
        for tp, ok in ((float, is_num and math.isfinite(v)), (int, type(v) is int), (bool, type(v) is bool),
                       (float | None, v is None or (is_num and math.isfinite(v))),
                       (list[float], isinstance(v, list)
                        and all(type(x) in (int, float) and math.isfinite(x) for x in v))):
            if ok:
                got = check_value("f", tp, v)
                assert got == v or (got is None and v is None)
                if tp is float:
                    assert type(got) is float
            else:
                with pytest.raises(UserError, match=r"^f: "):
                    check_value("f", tp, v)
    assert check_value("f", float, math.inf, finite=False) == math.inf


def test_read_config_fields_checks_header_and_types(tmp_path):
    from eegsine.config import read_config_fields

    p = tmp_path / "config.json"
    p.write_text(json.dumps({"kind": "classifier-train", "version": 1, "eps": 0.3, "other": object.__name__}))
    assert read_config_fields(p, {"classifier-train": 1}, {"eps": float, "dataset": str}) == {
        "kind": "classifier-train", "version": 1, "eps": 0.3}
    for data, message in (({"version": 1, "eps": 0.3}, "no 'kind' key"), ({"kind": "classifier-train", "version": True},
                          "version True is not supported"), ([1, 2], "expected a JSON object")):
        p.write_text(json.dumps(data))
        with pytest.raises(UserError, match=message):
            read_config_fields(p, {"classifier-train": 1}, {})
