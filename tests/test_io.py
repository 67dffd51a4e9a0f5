"""Atomic writes, safetensors weights and resumable checkpoints."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from eegsine.runs.checkpoint import load_checkpoint, load_state_into, save_checkpoint, save_weights
from eegsine.errors import UserError
from eegsine.io import atomic_path, atomic_write_text, read_json, update_metrics, write_json


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_killed_process_leaves_old_file(tmp_path):
    """SIGKILL in the middle of a write: the file still holds the old, complete content."""
    target = tmp_path / "weights.bin"
    atomic_write_text(target, "old-complete")
    script = (
        "import sys, time\n"
        "from eegsine.io import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    with open(tmp, 'w') as fh:\n"
        "        fh.write('new-partial'); fh.flush()\n"
        "        print('writing', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.read_text() == "old-complete"


def test_atomic_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.html", "x")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_json_has_no_nan_and_metrics_merge(tmp_path):
    write_json(tmp_path / "a.json", {"x": float("nan"), "y": [1.0, float("inf")]})
    assert read_json(tmp_path / "a.json") == {"x": None, "y": [1.0, None]}
    update_metrics(tmp_path, "train", {"loss": 1.5})
    update_metrics(tmp_path, "eval", {"acc": 0.9})
    assert read_json(tmp_path / "metrics.json") == {"train": {"loss": 1.5}, "eval": {"acc": 0.9}}


def test_weights_round_trip_and_mismatch(tmp_path):
    a = torch.nn.Linear(4, 3)
    save_weights(tmp_path / "model.safetensors", a.state_dict())
    b = torch.nn.Linear(4, 3)
    load_state_into(b, tmp_path / "model.safetensors")
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    with pytest.raises(UserError, match="weights do not fit Linear"):
        load_state_into(torch.nn.Linear(5, 3), tmp_path / "model.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_state_into(b, tmp_path / "bad.safetensors")


def _train(model, opt, steps, seed_data=0):
    g = torch.Generator().manual_seed(seed_data)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=g)
        loss = (model(x) ** 2).mean() + 0.01 * torch.rand(()).item()  # consumes the global RNG too
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_resume_equals_uninterrupted(tmp_path):
    torch.manual_seed(0)
    ref = torch.nn.Linear(4, 2)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.1)
    torch.manual_seed(0)
    run = torch.nn.Linear(4, 2)
    run_opt = torch.optim.Adam(run.parameters(), lr=0.1)
    state0 = {k: v.clone() for k, v in ref.state_dict().items()}

    torch.manual_seed(1)
    _train(ref, ref_opt, 2, seed_data=0)
    _train(ref, ref_opt, 2, seed_data=1)

    torch.manual_seed(1)
    _train(run, run_opt, 2, seed_data=0)
    save_checkpoint(tmp_path, {"model": run}, {"opt": run_opt}, {"step": 2})
    # "killed": rebuild from scratch and resume
    fresh = torch.nn.Linear(4, 2)
    fresh.load_state_dict(state0)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.1)
    torch.manual_seed(123)  # a different RNG state that the checkpoint must overwrite
    progress = load_checkpoint(tmp_path, {"model": fresh}, {"opt": fresh_opt})
    assert progress == {"step": 2}
    _train(fresh, fresh_opt, 2, seed_data=1)
    for k in ref.state_dict():
        assert torch.equal(ref.state_dict()[k], fresh.state_dict()[k]), k


def test_no_checkpoint_and_tampered_checkpoint(tmp_path):
    m = torch.nn.Linear(2, 2)
    assert load_checkpoint(tmp_path, {"model": m}, {}) is None
    save_checkpoint(tmp_path, {"model": m}, {}, {"step": 1})
    with open(tmp_path / read_json(tmp_path / "ckpt.json")["weights"], "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\xff\xff\xff\xff")
    with pytest.raises(UserError, match="hash differs"):
        load_checkpoint(tmp_path, {"model": m}, {})
