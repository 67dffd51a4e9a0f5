"""The run protocol under faults (issue #15): SIGKILL at every checkpoint commit point, two writers,
stale locks and temporaries, a failed attempt then the corrected retry, config mismatches, damaged
checkpoint records, a full disk. 31 s on 1 thread, 26 s of it the five training processes of the
SIGKILL test (torch + torchattacks import: ~4 s each)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eegsine.runs.checkpoint import FAULT_ENV, load_checkpoint, load_weights, save_checkpoint
from eegsine.commands.main import main
from eegsine.errors import UserError
from eegsine.io import read_json, write_json
from eegsine.locks import _proc_start
from eegsine.runs.folder import LOCK_FILE
from eegsine.training.classifier import ClassifierTrainConfig, train_classifier

# The smallest real training: 1,293 digits images = 21 steps of 64 per epoch, 2 epochs; FGSM-RS draws
# its random start from the torch RNG, so a resume is bit-identical only if the RNG is restored too.
# A checkpoint every 4 steps and at each epoch end: 12 commits (steps 4, 8, ..., 20, 21, 24, ..., 40, 42).
FLAGS = {"dataset": "digits", "mode": "fgsm_rs", "eps": 0.1, "epochs": 2, "batch_size": 64, "n_val_eval": 50,
         "val_pgd_steps": 1, "eval_every_steps": 10, "ckpt_every_steps": 4, "grad_log_steps": 3, "threads": 1}
QUICK = ClassifierTrainConfig(dataset="digits", mode="natural", epochs=1, batch_size=128, n_val_eval=50,
                              val_pgd_steps=1, grad_log_steps=0, ckpt_every_steps=0)


def _argv(run: Path, **over) -> list[str]:
    out = ["train", "classifier", "--run", str(run), "--no-init-probe"]
    for k, v in {**FLAGS, **over}.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def _spawn(run: Path, fault: str | None = None, **over) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **({FAULT_ENV: fault} if fault else {}))
    return subprocess.Popen([sys.executable, "-m", "eegsine", *_argv(run, **over)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _record(run: Path) -> dict:
    return read_json(run / "ckpt.json")


def _weight_files(run: Path) -> list[str]:
    return sorted(p.name for p in run.glob("ckpt-*.safetensors"))


def _temporaries(run: Path) -> list[Path]:
    return [p for p in run.rglob(".*.tmp")]


def _equal_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- SIGKILL --------------------------------------------------------------------------------------------
def test_sigkill_at_every_commit_point_resumes_bit_identical(tmp_path):
    threads = torch.get_num_threads()
    try:
        ref = train_classifier(ClassifierTrainConfig(**FLAGS), tmp_path / "ref")
    finally:
        torch.set_num_threads(threads)
    run = tmp_path / "run"

    # 1. between the weights and the record: the record still names commit 1, whose file is still there
    rc, err = _finish(_spawn(run, "after-weights:2"))
    assert rc == -signal.SIGKILL, err[-2000:]
    assert _record(run)["progress"]["step"] == 4 and _record(run)["weights"] == "ckpt-1.safetensors"
    assert _weight_files(run) == ["ckpt-1.safetensors", "ckpt-2.safetensors"]  # 2: written, never committed

    # 2. in the middle of writing the weights: a temp file is left behind
    rc, err = _finish(_spawn(run, "mid-weights:2"))
    assert rc == -signal.SIGKILL, err[-2000:]
    assert _record(run)["progress"]["step"] == 8
    assert [p.name.startswith(".ckpt-3.safetensors.") for p in _temporaries(run)] == [True]

    # 3. after the commit, before the old weights are removed; the temp file of 2 is swept at the start
    rc, err = _finish(_spawn(run, "after-record:3"))
    assert rc == -signal.SIGKILL, err[-2000:]
    assert _record(run)["progress"]["step"] == 20 and _weight_files(run) == ["ckpt-4.safetensors", "ckpt-5.safetensors"]
    assert not _temporaries(run)

    # 4. at an arbitrary instant, from outside, as soon as the first checkpoint of this attempt is committed
    proc = _spawn(run)
    t0 = time.monotonic()
    while _record(run)["progress"]["step"] <= 20 and proc.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.005)
    proc.kill()
    rc, err = _finish(proc)
    assert rc == -signal.SIGKILL, err[-2000:]

    # 5. to the end
    rc, err = _finish(_spawn(run))
    assert rc == 0, err[-2000:]
    assert _equal_tensors(load_weights(run / "model" / "model.safetensors"),
                          load_weights(tmp_path / "ref" / "model" / "model.safetensors"))
    assert _equal_tensors(load_weights(run / _record(run)["weights"]),
                          load_weights(tmp_path / "ref" / _record(tmp_path / "ref")["weights"]))
    assert read_json(run / "metrics.json")["train"]["history"] == ref["history"]
    assert len(_weight_files(run)) == 1 and not (run / "ckpt.safetensors").exists()
    assert not _temporaries(run) and not (run / LOCK_FILE).exists()


def test_old_checkpoint_layout_resumes_and_is_replaced(tmp_path):
    """Today's runs: ckpt.json without 'weights' beside one ckpt.safetensors."""
    m = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path, {"model": m}, {}, {"step": 5})
    meta = _record(tmp_path)
    (tmp_path / meta.pop("weights")).rename(tmp_path / "ckpt.safetensors")
    meta.pop("format")
    write_json(tmp_path / "ckpt.json", meta)
    fresh = torch.nn.Linear(3, 2)
    assert load_checkpoint(tmp_path, {"model": fresh}, {}) == {"step": 5}
    assert torch.equal(fresh.weight, m.weight)
    save_checkpoint(tmp_path, {"model": fresh}, {}, {"step": 6})
    assert _weight_files(tmp_path) == ["ckpt-1.safetensors"] and not (tmp_path / "ckpt.safetensors").exists()


# -- locks --------------------------------------------------------------------------------------------
def _wait_for_lock(run: Path, proc: subprocess.Popen, timeout: float = 60) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        try:
            holder = json.loads((run / LOCK_FILE).read_text())
            if isinstance(holder, dict) and "pid" in holder:
                return holder
        except (OSError, json.JSONDecodeError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"no lock appeared in {run} (process rc {proc.poll()})")


def test_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    first = _spawn(run, epochs=50)  # long enough to still be training when the second one starts
    try:
        assert _wait_for_lock(run, first)["pid"] == first.pid
        rc = main(_argv(run))
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and f"PID {first.pid}" in err[0] and "in use" in err[0], err
        assert first.poll() is None  # the first writer carries on
    finally:
        first.kill()
        first.wait()


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@pytest.mark.parametrize("holder", ["dead", "reused-pid", "alive"])
def test_stale_lock_is_taken_over_live_one_is_not(tmp_path, monkeypatch, holder):
    """A lock whose PID is dead (or now belongs to a process started later) is taken over; the PID check
    alone (no flock held, as on a file system without flock) still refuses a live holder."""
    if holder != "dead" and _proc_start(os.getppid()) is None:
        pytest.skip("needs /proc to read process start times")
    pid = _dead_pid() if holder == "dead" else os.getppid()
    start = -1 if holder != "alive" else _proc_start(pid)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "proc_start": start,
                                             "started": "earlier"}))
    if holder == "alive":
        with pytest.raises(UserError, match=f"PID {pid} ") as e:
            train_classifier(QUICK, run)
        assert "\n" not in str(e.value) and json.loads((run / LOCK_FILE).read_text())["pid"] == pid
        return
    import eegsine.training.classifier as tc

    seen = {}
    real = tc.build_classifier

    def build_and_look(cfg):  # while the run holds the folder
        seen.update(json.loads((run / LOCK_FILE).read_text()))
        return real(cfg)

    monkeypatch.setattr(tc, "build_classifier", build_and_look)
    train_classifier(QUICK, run)
    assert seen["pid"] == os.getpid()
    assert not (run / LOCK_FILE).exists()
    assert f"took over the lock of dead process {pid}" in (run / "log.txt").read_text()


# -- temporaries, failed attempts, config changes -------------------------------------------------------
def test_temporaries_of_dead_writers_are_swept(tmp_path):
    run = tmp_path / "run"
    (run / "grids").mkdir(parents=True)
    (run / ".bundle.k2j3.tmp").mkdir()
    (run / ".bundle.k2j3.tmp" / "model.onnx").write_bytes(b"half")
    stale = [run / ".config.json.a1b2.tmp", run / ".ckpt.safetensors.c3d4.tmp", run / "grids" / ".epoch_001.png.e5.tmp"]
    for p in stale:
        p.write_bytes(b"")
    keep = [run / "notes.tmp", run / ".keep", run / "other" / ".x.tmp"]  # not ours: not dot+.tmp, or another run's
    (run / "other").mkdir()
    (run / "other" / LOCK_FILE).write_text("{}")
    for p in keep:
        p.write_bytes(b"x")
    train_classifier(QUICK, run)
    assert not any(p.exists() for p in stale) and not (run / ".bundle.k2j3.tmp").exists()
    assert all(p.exists() for p in keep)
    assert "removed 4 temporaries of a killed writer" in (run / "log.txt").read_text()


def test_failed_attempt_does_not_block_the_corrected_retry(tmp_path):
    from test_encoder import _quick_cfg, small_vep

    from eegsine.training.encoder import train_encoder

    ds = small_vep()
    with pytest.raises(UserError, match="heldout_classes=9"):
        train_encoder(_quick_cfg(heldout_classes=9, epochs=1), tmp_path / "run", data=ds)
    m = train_encoder(_quick_cfg(epochs=1), tmp_path / "run", data=ds)
    assert [h["epoch"] for h in m["train"]["history"]] == [1]
    assert read_json(tmp_path / "run" / "config.json")["heldout_classes"] == 0


def test_attack_with_a_missing_run_writes_nothing(tmp_path, capsys):
    rc = main(["attack", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "rob")])
    assert rc == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "rob").exists()


def test_config_mismatch_names_the_keys(tmp_path):
    train_classifier(QUICK, tmp_path)
    with pytest.raises(UserError) as e:
        train_classifier(QUICK.replace(lr=0.002, epochs=2), tmp_path)
    msg = str(e.value)
    assert "different configuration" in msg and "lr: 0.001 -> 0.002" in msg and "epochs: 1 -> 2" in msg
    assert "\n" not in msg and "n_train" not in msg  # only the keys that differ


# -- damaged checkpoint records -------------------------------------------------------------------------
def _drop(key):
    return lambda meta: {k: v for k, v in meta.items() if k != key}


DAMAGE = {
    "missing progress": (_drop("progress"), "missing key 'progress'"),
    "missing rng": (_drop("rng_torch"), "missing key 'rng_torch'"),
    "rng out of range": (lambda meta: {**meta, "rng_torch": [999] * 10}, "'rng_torch' is not a byte list"),
    "rng wrong size": (lambda meta: {**meta, "rng_torch": [0] * 10}, "'rng_torch' is not a torch RNG state"),
    "not an object": (lambda meta: [meta], "not an object"),
    "weights outside the folder": (lambda meta: {**meta, "weights": "../model.safetensors"}, "'weights' names"),
    "no optimizer state": (lambda meta: {**meta, "optimizers": {}}, "no state for optimizer 'opt'"),
    "optimizer of another model": (lambda meta: {**meta, "optimizers": {"opt": {"state": {}, "param_groups": [
        {**meta["optimizers"]["opt"]["param_groups"][0], "params": [0]}]}}}, "optimizer 'opt' state does not fit"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_checkpoint_record_is_a_one_line_error(tmp_path, damage):
    m = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(m.parameters())
    m(torch.ones(1, 4)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path, {"model": m}, {"opt": opt}, {"step": 1})
    edit, message = DAMAGE[damage]
    write_json(tmp_path / "ckpt.json", edit(_record(tmp_path)))
    with pytest.raises(UserError, match=message) as e:
        load_checkpoint(tmp_path, {"model": m}, {"opt": torch.optim.Adam(m.parameters())})
    assert "\n" not in str(e.value) and "ckpt.json" in str(e.value)


def test_checkpoint_of_another_architecture_is_a_one_line_error(tmp_path):
    save_checkpoint(tmp_path, {"model": torch.nn.Linear(4, 3)}, {}, {"step": 1})
    with pytest.raises(UserError, match="weights do not fit Linear") as e:
        load_checkpoint(tmp_path, {"model": torch.nn.Linear(5, 3)}, {})
    assert "\n" not in str(e.value) and "ckpt-1.safetensors" in str(e.value)


# -- full disk ------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (needs root and mount; skips otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` up, then give back ``leave`` bytes."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


@pytest.mark.parametrize("fails", ["weights", "record"])
def test_full_disk_is_a_one_line_error_and_keeps_the_previous_checkpoint(small_disk, fails):
    m = torch.nn.Linear(64, 64)  # 16.8 kB of weights; the record (RNG state as JSON) 39.6 kB
    save_checkpoint(small_disk, {"model": m}, {}, {"step": 1})
    w1 = m.weight.detach().clone()
    before = {p.name: p.read_bytes() for p in small_disk.iterdir()}
    weights_size = max(p.stat().st_size for p in small_disk.glob("*.safetensors"))
    _fill(small_disk, 0 if fails == "weights" else weights_size + 8192)
    with torch.no_grad():
        m.weight.add_(1.0)
    with pytest.raises(UserError, match="no space left on device") as e:
        save_checkpoint(small_disk, {"model": m}, {}, {"step": 2})
    target = "ckpt-2.safetensors" if fails == "weights" else "ckpt.json"
    assert "\n" not in str(e.value) and str(small_disk / target) in str(e.value)
    (small_disk / "filler").unlink()
    assert {p.name: p.read_bytes() for p in small_disk.iterdir()} == before  # nothing new, nothing changed
    fresh = torch.nn.Linear(64, 64)
    assert load_checkpoint(small_disk, {"model": fresh}, {}) == {"step": 1}
    assert torch.equal(fresh.weight, w1)


def test_training_onto_a_full_disk_exits_2_with_one_line(small_disk, capsys):
    _fill(small_disk, 0)
    rc = main(_argv(small_disk / "run", epochs=1))
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln]
    assert rc == 2 and len(err) == 1 and "no space left on device" in err[0], err
