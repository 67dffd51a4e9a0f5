"""Scale-out: ``eegsine attack`` sharded across processes, and data-parallel classifier training, both as
``accelerate launch`` runs them (here: spawned CPU processes on gloo), against one process."""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from cpu_identity import _drop_timing  # the timing keys that differ between any two runs

from eegsine.bench.experiments.paired_eval import Job, Settings
from eegsine.bench.robustness.configs import RobustnessConfig
from eegsine.bench.robustness.evaluate import evaluate_robustness
from eegsine.bench.robustness.shard import Processes
from eegsine.errors import UserError
from eegsine.models.classifier import ClassifierConfig
from eegsine.training.classifier import ClassifierTrainConfig, train_classifier

# n_eval 30 in chunks of 7 (5 chunks: 3 for one process, 2 for the other, the last one short); the
# expensive attacks on the first 10 (2 chunks); random starts and restarts, so the seeds matter
SHARD_CFG = dict(n_eval=30, n_eval_expensive=10, chunk=7, batch_size=4, eps=[0.1, 0.3], expensive_eps=[0.3],
                 attacks=["fgsm", "pgd-ce", "apgd-ce", "square", "autoattack", "transfer"], pgd_steps=3,
                 pgd_restarts=2, apgd_steps=4, fab_steps=3, square_queries=20, n_targets=2)
PAIRED_SETTINGS = Settings(dataset="digits", n_eval=24, n_aa=16, chunk=8, pgd_steps=3, pgd_restarts=2, apgd_steps=4,
                           fab_steps=3, square_queries=20, n_targets=2)
PAIRED_JOBS = [Job("fgsm", 0.1, 24), Job("pgd-ce", 0.3, 24), Job("autoattack", 0.3, 16)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Naturally trained digits models, one per head (a few seconds each)."""
    root = tmp_path_factory.mktemp("shard_runs")
    for name, head, init in (("standard", "linear", "default"), ("sine", "sine", "siren")):
        train_classifier(_digits_cfg(model=ClassifierConfig(head=head, init=init)), root / name)
    return root


def _digits_cfg(**kw) -> ClassifierTrainConfig:
    base = dict(dataset="digits", mode="natural", epochs=2, batch_size=32, lr=2e-3, n_val_eval=50, val_pgd_steps=1,
                grad_log_steps=0, device="cpu")
    base.update(kw)
    return ClassifierTrainConfig(**base)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, world: int, *args) -> None:
    import torch.multiprocessing as mp

    mp.start_processes(fn, args=(world, _free_port(), *args), nprocs=world, join=True, start_method="spawn")


def _as_rank(rank: int, world: int, port: int) -> None:
    """The environment accelerate launch gives process ``rank`` of ``world``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))


def _attack_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    _as_rank(rank, world, port)
    cfg = RobustnessConfig(**SHARD_CFG, transfer_from=str(Path(root) / "standard"))
    s = evaluate_robustness([Path(root) / "standard", Path(root) / "sine"], cfg, Path(out))
    Path(out, f"summary.rank{rank}.json").write_text(json.dumps(s, default=str))


def test_two_processes_give_one_process_table_exactly(runs, tmp_path):
    cfg = RobustnessConfig(**SHARD_CFG, transfer_from=str(runs / "standard"))
    one = evaluate_robustness([runs / "standard", runs / "sine"], cfg, tmp_path / "one")
    _spawn(_attack_worker, 2, str(runs), str(tmp_path / "two"))
    two = json.loads((tmp_path / "two" / "robustness.json").read_text())
    assert (one["processes"], two["processes"]) == (1, 2)
    one, two = json.loads(json.dumps(one, default=str)), two  # tuples, floats as JSON writes them
    for key in ("table", "paired", "attacks", "n_eval", "n_eval_expensive"):
        assert two[key] == one[key], key
    for label in one["models"]:
        a, b = _drop_timing(one["models"][label]), _drop_timing(two["models"][label])
        assert a == b, label
        aa = a["results"]["autoattack"]["0.3"]["first_success_by"]
        assert sum(aa.values()) > 0  # AutoAttack broke images in both runs, and they agree on which component did
    rank1 = json.loads((tmp_path / "two" / "summary.rank1.json").read_text())
    assert rank1["table"] == two["table"]  # every process returns the merged table
    md1, md2 = ((p / "robustness.md").read_text().split("### Speed")[0] for p in (tmp_path / "one", tmp_path / "two"))
    assert md1 == md2
    # each process cached its own chunks: 5 + 5 chunks per cheap (attack, eps) and model, 2 for the expensive ones
    cached = sorted(p.name for p in (tmp_path / "two").glob("cache/*/fgsm__eps0.3__*.safetensors"))
    assert cached == sorted([f"fgsm__eps0.3__{lo:06d}.safetensors" for lo in (0, 7, 14, 21, 28)] * 2)


def test_chunked_evaluation_resumes_per_chunk(runs, tmp_path, monkeypatch):
    import eegsine.bench.robustness.evaluate as rb

    cfg = RobustnessConfig(n_eval=20, attacks=["pgd-ce"], eps=[0.3], chunk=8, pgd_steps=2, pgd_restarts=1)
    first = evaluate_robustness([runs / "standard"], cfg, tmp_path)
    chunks = sorted(tmp_path.glob("cache/*/pgd-ce__eps0.3__*.safetensors"))
    assert [p.name[-20:] for p in chunks] == [f"__{lo:06d}.safetensors" for lo in (0, 8, 16)]
    chunks[1].with_suffix(".json").unlink()  # a shard killed before its second chunk was committed (its record last)
    calls = []
    real = rb.run_attack
    monkeypatch.setattr(rb, "run_attack", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    again = evaluate_robustness([runs / "standard"], cfg, tmp_path)
    assert calls == [8]  # only the missing chunk ran again, the other two came from the cache
    assert _drop_timing(again["models"]) == _drop_timing(first["models"])


def test_several_processes_need_chunks():
    procs = Processes(torch.device("cpu"))
    procs.count = 2  # as under accelerate launch --num_processes 2
    with pytest.raises(UserError, match="2 processes .* set --chunk N"):
        procs.check(0)
    procs.check(50)
    procs.rank = 1
    assert procs.mine("abcde") == [(1, "b"), (3, "d")]
    with pytest.raises(UserError, match="RobustnessConfig.chunk: must be >= 0"):
        RobustnessConfig(chunk=-1)


def _paired_worker(rank: int, world: int, port: int, specs: dict, out: str) -> None:
    from eegsine.bench.experiments.paired_eval import run_plan

    _as_rank(rank, world, port)
    run_plan(out, specs, PAIRED_SETTINGS, PAIRED_JOBS, log=lambda m: None)


def test_paired_eval_chunks_shared_by_two_processes_equal_one(runs, tmp_path):
    import numpy as np

    from eegsine.bench.experiments.paired_eval import run_plan

    specs = {"standard": str(runs / "standard"), "sine": str(runs / "sine")}
    run_plan(tmp_path / "one", specs, PAIRED_SETTINGS, PAIRED_JOBS, log=lambda m: None)
    _spawn(_paired_worker, 2, specs, str(tmp_path / "two"))
    files = {d: {p.relative_to(tmp_path / d): p for p in (tmp_path / d).glob("cache/*/*/*.npz")}
             for d in ("one", "two")}
    assert len(files["one"]) == 2 * (3 + 3 + 2) and set(files["one"]) == set(files["two"])
    for rel, p in files["one"].items():
        with np.load(p) as a, np.load(files["two"][rel]) as b:
            assert np.array_equal(a["robust"], b["robust"]), rel
            if "success_by" in a.files:
                assert np.array_equal(a["success_by"], b["success_by"]), rel
    assert not list((tmp_path / "two").glob(".paired_eval.lock*"))  # each process gave its lock back


# -- data-parallel classifier training -------------------------------------------------------------------------
DP_CFG = dict(n_train=201, epochs=1, batch_size=32, lr=2e-3)  # 7 steps, the last one of 9 images (5 + 4)


def _train_worker(rank: int, world: int, port: int, run: str) -> None:
    _as_rank(rank, world, port)
    m = train_classifier(_digits_cfg(**DP_CFG), Path(run))
    assert m == {"process_index": 1, "processes": 2} if rank else m["processes"] == 2


def test_classifier_two_gloo_processes_match_one(tmp_path):
    from eegsine.models.classifier import Classifier

    one = train_classifier(_digits_cfg(**DP_CFG), tmp_path / "one")
    _spawn(_train_worker, 2, str(tmp_path / "two"))
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())["train"]
    assert "processes" not in one and two["processes"] == 2 and two["steps"] == one["steps"] == 7
    a, b = (Classifier.from_pretrained(tmp_path / d) for d in ("one", "two"))
    va = torch.cat([p.flatten() for p in a.state_dict().values()])
    vb = torch.cat([p.flatten() for p in b.state_dict().values()])
    # the all-reduced mean differs from one process's in the last bits, which Adam's per-weight scaling can
    # raise to ~lr on weights whose gradient is ~0 (as in tests/test_diffusion.py's 2-process check); a
    # process that trained on the wrong slice, or an unscaled loss, moves the weights by orders more
    assert float((va - vb).norm() / va.norm()) < 1e-5
    assert two["test_clean_accuracy"] == one["test_clean_accuracy"]
    gn1, gn2 = one["grad_norms_first_steps"], two["grad_norms_first_steps"]
    for layer in gn1:  # the gradients the main process logs are the whole batch's (all-reduced)
        assert gn2[layer] == pytest.approx(gn1[layer], rel=1e-5), layer
