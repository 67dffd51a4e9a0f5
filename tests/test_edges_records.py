"""Issue #27, items 4 and 5: verification records and resumed runs refuse bad files in one line and lose nothing.

* concurrent ``eegsine-verify`` runs on one bundle all keep their records (the append is locked);
* a ``verifications.json`` of another or a future format, and a golden set that does not fit its
  model's contract, are one line (exit 2) and leave the records file as it was;
* a resumed run validates its stored ``config.json`` through the typed config (strict types, a
  ``version`` at every level), its checkpoint record's format and progress, and EEGCVPR40 splits
  that select no trial.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import export_helpers as h
from eegsine.runs.checkpoint import save_checkpoint
from eegsine.commands.verify import main as verify_main
from eegsine.runtime.records import RECORDS, load_records
from eegsine.errors import UserError
from eegsine.io import sha256_file
from test_data_eeg import make_cvpr


def _one_line(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and ": error: " in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


# -- concurrent verifies ----------------------------------------------------------------------------
WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from eegsine.commands.verify import main
    bundle, go, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    while not go.exists():
        time.sleep(0.002)
    sys.exit(max(main([bundle, "--threads", "1"]) for _ in range(n)))
""")


def test_concurrent_verifies_keep_every_record(tmp_path):
    """3 eegsine-verify processes x 4 runs each, started together: 12 appended records, none lost (before: the
    read-extend-replace of one writer overwrote another's record)."""
    b = h.copy_bundle(h.clf_bundle(), tmp_path / "b")
    before = len(load_records(b))
    go, n_proc, n_runs = tmp_path / "go", 3, 4
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(b), str(go), str(n_runs)], text=True, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(n_proc)]
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert out.count("record appended") == n_runs
    recs = load_records(b)
    assert len(recs) == before + n_proc * n_runs
    assert all(r["passed"] for r in recs)
    assert sorted(p.name for p in b.iterdir() if p.name.startswith(".")) == []  # no lock, no temporaries left


# -- the records file's format ----------------------------------------------------------------------
def _records_file(b: Path, edit) -> bytes:
    data = json.loads((b / RECORDS).read_text())
    edit(data)
    (b / RECORDS).write_text(json.dumps(data))
    return (b / RECORDS).read_bytes()


RECORD_FILES = {
    "future version": (lambda d: d.update(version=2), "records version 2 is not supported"),
    "float version": (lambda d: d.update(version=1.0), "records version 1.0 is not supported"),
    "bool version": (lambda d: d.update(version=True), "records version True is not supported"),
    "string version": (lambda d: d.update(version="1"), "records version '1' is not supported"),
    "other format": (lambda d: d.update(format="eegsine-verifications-v2"),
                     "format 'eegsine-verifications-v2' is not 'eegsine-verifications'"),
    "no format": (lambda d: d.pop("format"), "format None is not"),
    "record not an object": (lambda d: d["records"].append([1]), "records[1] must be an object"),
    "record without host": (lambda d: d["records"][0].pop("host"), "records[0].host must be an object"),
    "passed not a bool": (lambda d: d["records"][0].update(passed="yes"), "records[0].passed must be true or false"),
}


@pytest.mark.parametrize("case", sorted(RECORD_FILES))
def test_records_file_of_another_or_future_format_is_refused_and_kept(tmp_path, capsys, case):
    b = h.copy_bundle(h.clf_bundle(), tmp_path / "b")
    edit, message = RECORD_FILES[case]
    kept = _records_file(b, edit)
    with pytest.raises(UserError, match=re.escape(message)) as e:
        load_records(b)
    assert "\n" not in str(e.value) and str(b / RECORDS) in str(e.value)
    _one_line(capsys, verify_main([str(b), "--threads", "1"]), message.split(" is ")[0])
    assert (b / RECORDS).read_bytes() == kept  # not rewritten


def test_records_file_of_the_current_format_round_trips(tmp_path):
    """A file written before records carried a version (version 1) is read, and the next append versions it."""
    b = h.copy_bundle(h.clf_bundle(), tmp_path / "b")
    _records_file(b, lambda d: d.pop("version", None))
    assert len(load_records(b)) == 1
    assert verify_main([str(b), "--threads", "1"]) == 0
    data = json.loads((b / RECORDS).read_text())
    assert data["format"] == "eegsine-verifications" and data["version"] == 1 and len(data["records"]) == 2


# -- the golden set's schema ------------------------------------------------------------------------
def _rewrite_npz(b: Path, rel: str, edit) -> None:
    """Replace a golden .npz with an edited one and re-hash it in the manifest (a consistent, wrong bundle)."""
    with np.load(b / rel) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (b / rel).write_bytes(buf.getvalue())
    m = json.loads((b / "manifest.json").read_text())
    m["files"][rel] = {"sha256": sha256_file(b / rel), "bytes": (b / rel).stat().st_size}
    (b / "manifest.json").write_text(json.dumps(m))


def _rename(old, new):
    return lambda a: a.update({new: a.pop(old)})


def _set(key, fn):
    return lambda a: a.update({key: fn(a[key])})


GOLDEN = {  # file, edit, what the one line says after the file's name
    "renamed input": ("classifier", _rename("feed0.in.images", "feed0.in.image"),
                      "feed0.in holds ['image'], classifier's contract has ['images']"),
    "key without a feed": ("classifier", _rename("feed0.in.images", "images"), "unexpected array 'images'"),
    "bad feed number": ("classifier", _rename("feed0.in.images", "feedX.in.images"), "unexpected array 'feedX"),
    "missing output": ("classifier", lambda a: a.pop("feed0.out.logits"), "feed0.out holds []"),
    "input float64": ("classifier", _set("feed0.in.images", lambda v: v.astype(np.float64)),
                      "feed0.in.images: dtype float64, the contract's is float32"),
    "input wrong shape": ("classifier", _set("feed0.in.images", lambda v: v[:, :, :4]),
                          "feed0.in.images: shape (8, 1, 4, 8), the contract's is (batch, 1, 8, 8)"),
    "output batch differs": ("classifier", _set("feed0.out.logits", lambda v: v[:3]),
                             "feed0.out.logits: shape (3, 10): batch = 3, the feed's other arrays have 8"),
    "output NaN": ("classifier", _set("feed0.out.logits", lambda v: np.full_like(v, np.nan)),
                   "feed0.out.logits: contains NaN or inf"),
    "no feeds": ("classifier", lambda a: a.clear(), "holds no feeds"),
    "eval labels renamed": ("classifier_eval", _rename("labels", "label"), "no 'labels' array"),
    "eval labels short": ("classifier_eval", _set("labels", lambda v: v[:-1]), "labels must be 360 integers"),
    "eval labels float": ("classifier_eval", _set("labels", lambda v: v.astype(np.float32)),
                          "labels must be 360 integers"),
    "eval label out of range": ("classifier_eval", _set("labels", lambda v: v + 10), "labels outside [0, 10)"),
    "eval adv shape": ("classifier_eval", _set("adv_images", lambda v: v[:, :, :, :7]),
                       "adv_images: shape (360, 1, 8, 7), the contract's is (batch, 1, 8, 8)"),
    "eval adv count": ("classifier_eval", _set("adv_images", lambda v: v[:5]),
                       "adv_images: shape (5, 1, 8, 8): batch = 5, the feed's other arrays have 360"),
    "eval extra array": ("classifier_eval", lambda a: a.update(extra=np.zeros(1)), "unexpected array 'extra'"),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_golden_set_that_does_not_fit_its_contract_is_one_line(tmp_path, capsys, case):
    b = h.copy_bundle(h.clf_bundle(), tmp_path / "b")
    which, edit, message = GOLDEN[case]
    rel = f"golden/{which}.npz"
    _rewrite_npz(b, rel, edit)
    kept = (b / RECORDS).read_bytes()
    _one_line(capsys, verify_main([str(b), "--threads", "1"]), f"{b / rel}: {message}")
    assert (b / RECORDS).read_bytes() == kept


def test_golden_set_that_is_not_an_npz_is_one_line(tmp_path, capsys):
    b = h.copy_bundle(h.clf_bundle(), tmp_path / "b")
    rel = "golden/classifier.npz"
    (b / rel).write_bytes((b / rel).read_bytes()[:200])  # a truncated zip: BadZipFile escaped before
    m = json.loads((b / "manifest.json").read_text())
    m["files"][rel] = {"sha256": sha256_file(b / rel), "bytes": 200}
    (b / "manifest.json").write_text(json.dumps(m))
    _one_line(capsys, verify_main([str(b), "--threads", "1"]), f"{b / rel}: not a readable golden-set .npz")


# -- a resumed run's stored config ------------------------------------------------------------------
def _classifier_cfg():
    from eegsine.models.classifier import ClassifierConfig
    from eegsine.training.classifier import ClassifierTrainConfig

    return ClassifierTrainConfig(dataset="digits", mode="natural", epochs=1, batch_size=128, n_val_eval=50,
                                 val_pgd_steps=1, grad_log_steps=0, ckpt_every_steps=0,
                                 model=ClassifierConfig(image_size=8, in_channels=1, fc_width=16))


def _drop(*keys):
    def edit(d):
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
    return edit


def _put(value, *keys):
    def edit(d):
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return edit


STORED_CONFIGS = {
    "no version": (_drop("version"), "no 'version' key"),
    "no nested version": (_drop("model", "version"), "model has no 'version' key"),
    "no nested kind": (_drop("model", "kind"), "model has no 'kind' key"),
    "float version": (_put(1.0, "version"), "config version 1.0 is not supported"),
    "float nested version": (_put(1.0, "model", "version"), "ClassifierConfig: config version 1.0 is not supported"),
    "future version": (_put(2, "version"), "config version 2 is not supported (this eegsine reads 1)"),
    "bool for int": (_put(True, "epochs"), "ClassifierTrainConfig.epochs: expected int, got bool True"),
    "bool for nested int": (_put(True, "model", "fc_width"), "ClassifierConfig.fc_width: expected int, got bool"),
    "float for int": (_put(1.0, "epochs"), "ClassifierTrainConfig.epochs: expected int, got float 1.0"),
}


@pytest.mark.parametrize("case", sorted(STORED_CONFIGS))
def test_resume_validates_the_stored_config_and_keeps_it(tmp_path, case):
    """Each of these equals the command's config under Python's ``==`` (``True == 1 == 1.0``; a missing version
    was filled in): they used to be accepted and the file rewritten."""
    from eegsine.training.loop import open_run

    cfg = _classifier_cfg()
    run = tmp_path / "run"
    cfg.save(run)
    (run / "metrics.json").write_text("{}")  # results: this is a resume
    with open_run(run, cfg) as r:  # the file as written resumes
        r.write_config(cfg)
    data = cfg.to_dict()
    edit, message = STORED_CONFIGS[case]
    edit(data)
    (run / "config.json").write_text(json.dumps(data))
    kept = (run / "config.json").read_bytes()
    with pytest.raises(UserError, match=re.escape(message)) as e:
        with open_run(run, cfg):
            pass
    assert "\n" not in str(e.value) and str(run / "config.json") in str(e.value)
    assert (run / "config.json").read_bytes() == kept


# -- a resumed run's checkpoint record --------------------------------------------------------------
FRESH = {"step": 0, "history": [], "best": None, "train_s": 0.0}

RECORDS_DAMAGE = {
    "step missing": (lambda m: m["progress"].pop("step"), "progress has no 'step'"),
    "step a string": (lambda m: m["progress"].update(step="3"), "progress.step is a str '3', expected int"),
    "step negative": (lambda m: m["progress"].update(step=-1), "progress.step is -1, not a count in [0, 42]"),
    "step beyond the run": (lambda m: m["progress"].update(step=10**9),
                            "progress.step is 1000000000, not a count in [0, 42] (this run has 42 steps)"),
    "step 1e9": (lambda m: m["progress"].update(step=1e9), "progress.step is a float 1000000000.0, expected int"),
    "step a bool": (lambda m: m["progress"].update(step=True), "progress.step is a bool True, expected int"),
    "history not a list": (lambda m: m["progress"].update(history={}), "progress.history is a dict"),
    "train_s a string": (lambda m: m["progress"].update(train_s="0"), "progress.train_s is a str"),
    "future format": (lambda m: m.update(format=3), "checkpoint record format 3 is newer than this eegsine reads"),
    "format a string": (lambda m: m.update(format="2"), "'format' is '2', not a format number"),
}


@pytest.mark.parametrize("case", sorted(RECORDS_DAMAGE))
def test_resume_refuses_a_checkpoint_record_it_cannot_trust(tmp_path, case):
    from eegsine.training.loop import Checkpoint

    m = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    # the run's last step, and an int train_s where a fresh run has a float: both resume
    save_checkpoint(tmp_path, {"model": m}, {"opt": opt}, {**FRESH, "step": 42, "history": [{"loss": 1.0}],
                                                           "train_s": 3})
    ckpt = Checkpoint(tmp_path, {"model": torch.nn.Linear(3, 2)}, {"opt": opt})
    assert ckpt.resume(dict(FRESH), None, "training", "step", 42)["step"] == 42  # the record as written resumes
    meta = json.loads((tmp_path / "ckpt.json").read_text())
    edit, message = RECORDS_DAMAGE[case]
    edit(meta)
    (tmp_path / "ckpt.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=re.escape(message)) as e:
        ckpt.resume(dict(FRESH), None, "training", "step", 42)
    assert "\n" not in str(e.value) and str(tmp_path / "ckpt.json") in str(e.value)


def test_training_refuses_a_checkpoint_beyond_its_run(tmp_path, capsys):
    """End to end: a finished run whose record claims step 10**9 used to skip training and exit 0."""
    from eegsine.commands.main import main

    run = tmp_path / "run"
    argv = ["--threads", "1", "train", "classifier", "--run", str(run), "--dataset", "digits", "--mode", "natural",
            "--epochs", "1", "--batch-size", "256", "--n-val-eval", "20", "--val-pgd-steps", "1", "--grad-log-steps",
            "0", "--no-init-probe", "--model-fc-width", "8"]
    threads = torch.get_num_threads()
    try:
        assert main(argv) == 0
        capsys.readouterr()
        meta = json.loads((run / "ckpt.json").read_text())
        meta["progress"]["step"] = 10**9
        (run / "ckpt.json").write_text(json.dumps(meta))
        _one_line(capsys, main(argv), "progress.step is 1000000000, not a count in [0, 6]")
    finally:
        torch.set_num_threads(threads)


# -- splits that select nothing ---------------------------------------------------------------------
@pytest.mark.parametrize("splits, message", [
    ({"train": [], "val": [], "test": []}, "splits[0] has empty train, val and test lists"),
    ({"train": torch.zeros(0, dtype=torch.int64), "val": [], "test": torch.tensor([], dtype=torch.int64)},
     "splits[0] has empty train, val and test lists"),
    ({"train": [1], "val": [3], "test": []}, "splits[0] keeps no trial: its 2 entries all name dropped trials"),
])
def test_eegcvpr40_splits_that_select_no_trial_are_refused(tmp_path, capsys, splits, message):
    from eegsine.commands.main import main
    from eegsine.data import load_eeg

    root = make_cvpr(tmp_path / "cvpr", splits={"splits": [splits]})  # trials 1 and 3 are dropped (T=440, 620)
    with pytest.raises(UserError, match=re.escape(message)) as e:
        load_eeg("eegcvpr40", root=str(root), bandpass=None)
    assert "block_splits_by_image_all.pth" in str(e.value) and "\n" not in str(e.value)
    _one_line(capsys, main(["data", "info", "eegcvpr40", "--root", str(root), "-o", "bandpass=null"]),
              "block_splits_by_image_all.pth")
