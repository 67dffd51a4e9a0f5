"""What a person watching `eegsine pipeline` sees: ETAs from measured costs, a heartbeat, a report after each stage."""
from __future__ import annotations

import re
import time

from eegsine.bench.pipeline import progress
from eegsine.bench.pipeline.config import PipelineConfig, Stage
from eegsine.bench.pipeline.run import run_pipeline
from eegsine.io import read_json, write_json


def test_eta_rescales_by_the_stages_already_measured():
    eta = progress.Eta({"a": 10.0, "b": 20.0, "c": 30.0}, ["a", "b", "c", "d"])
    assert eta.stage("b") == 20.0 and eta.left(["b", "c", "d"]) == (50.0, 1)
    eta.finished("a", 40.0)  # a is expected to take 10 s: too short to judge this machine by
    assert eta.scale() == 1.0
    eta.finished("b", 80.0)  # this machine ran b 4x slower than the estimate: so will the rest
    assert eta.scale() == 4.0 and eta.stage("c") == 120.0
    assert "expected ~2 min; pipeline ~2 min left + 1 stage(s) without an estimate" == \
        progress.eta_text(eta, "c", ["c", "d"])


def test_this_folders_previous_run_beats_the_preset_estimate(tmp_path):
    write_json(tmp_path / "pipeline.json", {"stages": [
        {"name": "encoder", "status": "done", "seconds": 99.0},
        {"name": "diffusion", "status": "failed: x", "seconds": 3.0}]})  # a failed stage's time says nothing
    write_json(tmp_path / ".stages" / "bench.json", {"seconds": 7.0})
    exp = progress.expected_seconds(tmp_path, "tiny", ["encoder", "diffusion", "bench"])
    assert exp == {"encoder": 99.0, "diffusion": progress.EXPECTED["tiny"]["diffusion"], "bench": 7.0}
    assert progress.expected_seconds(tmp_path, "paper", ["diffusion"]) == {}  # no estimate rather than a wrong one


def test_heartbeat_names_the_stage_while_it_is_silent():
    said: list[str] = []
    with progress.Heartbeat(said.append, "diffusion", 267.0, every=0.02):
        deadline = time.monotonic() + 30.0  # a loaded host may wake the thread late: wait for the beats, not a time
        while len(said) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    n = len(said)
    time.sleep(0.06)
    assert n >= 2 and len(said) == n  # it beats while the stage runs and stops with it
    assert re.fullmatch(r"diffusion: still running, \d+ s of ~4 min expected", said[0]), said[0]


def test_pipeline_lists_every_stage_from_the_start_and_renders_a_report_after_each(tmp_path):
    root = tmp_path / "run"
    seen: dict[str, list] = {}

    def stage(name):
        def run(ctx):
            # while this stage runs, pipeline.json already lists it as running and the later ones as pending
            seen[name] = [(s["name"], s["status"]) for s in read_json(root / "pipeline.json")["stages"]]
            seen[name + ":report"] = (root / "report.html").is_file()
            return {}
        return Stage(name, run, lambda ctx: f"eegsine {name}")

    fake = {n: stage(n) for n in ("data", "classifier", "robustness")}
    cfg = PipelineConfig(out=str(root), stages=["data", "classifier", "robustness"], threads=1)
    run_pipeline(cfg, fake)
    assert seen["classifier"] == [("data", "done"), ("classifier", "running"), ("robustness", "pending")]
    assert seen["data:report"] is False and seen["classifier:report"] is True  # something to open after stage 1
    text = (root / "log.txt").read_text()
    assert "[2/3] classifier: running (expected ~" in text and "pipeline ~" in text
    assert f"report so far: {root / 'report.html'}" in text


DEMO_SECONDS = {"data": 5, "classifier": 100, "robustness": 50, "encoder": 50, "diffusion": 300, "generation": 100,
                "export": 20, "verify": 20, "stream": 30, "bench": 100, "report": 2}


def test_two_lanes_overlap_the_independent_stages_and_time_the_timed_ones_alone():
    from eegsine.bench.pipeline.config import STAGE_NAMES
    from eegsine.bench.pipeline.lanes import by_priority, makespan

    names = list(STAGE_NAMES)
    assert makespan(DEMO_SECONDS, names, names, 1) == sum(DEMO_SECONDS.values())
    # data 5; classifier + robustness beside encoder + diffusion (5..355); generation (355..455) beside export
    # and verify; the stream waits for generation (timed: alone), then bench, then report
    assert makespan(DEMO_SECONDS, names, names, 2) == 5 + 50 + 300 + 100 + 30 + 100 + 2
    # resumed mid-run: diffusion has run 200 of its 300 s, the classifier side is done
    todo = names[names.index("diffusion"):]
    assert makespan(DEMO_SECONDS, todo, names, 2, {"diffusion": 200.0}) == 100 + 100 + 30 + 100 + 2
    # the feature network (150 s) fits beside the diffusion: the critical path is unchanged
    with_features = {**DEMO_SECONDS, "features": 150}
    assert makespan(with_features, names, names, 2) == 5 + 50 + 300 + 100 + 30 + 100 + 2
    # the longest remaining path starts first: encoder (-> diffusion) before the classifier
    assert by_priority(["classifier", "features", "encoder"], names, with_features)[0] == "encoder"
    # without the features stage the domain CNN comes from generation: verification waits for it
    no_features = [n for n in names if n != "features"]
    assert makespan(DEMO_SECONDS, no_features, no_features, 2) == 5 + 50 + 300 + 100 + 20 + 30 + 100 + 2
    # stages not selected never block
    assert makespan(DEMO_SECONDS, ["export", "bench"], ["export", "bench"], 2) == 120


def test_pipeline_runs_independent_stages_side_by_side(tmp_path):
    import threading

    root = tmp_path / "run"
    spans: dict[str, tuple[float, float]] = {}
    started = {n: threading.Event() for n in ("classifier", "encoder")}

    def stage(name):
        def run(ctx):
            t0 = time.monotonic()
            if name in started:  # each of the two waits for the other to have started: only lanes get past this
                started[name].set()
                assert started["encoder" if name == "classifier" else "classifier"].wait(30)
            time.sleep(0.05)
            spans[name] = (t0, time.monotonic())
            return {}
        return Stage(name, run, lambda ctx: f"eegsine {name}")

    names = ["data", "classifier", "robustness", "encoder", "diffusion", "export", "bench"]
    cfg = PipelineConfig(out=str(root), stages=names, threads=1, jobs=2)
    summary = run_pipeline(cfg, {n: stage(n) for n in names})
    assert [s["status"] for s in summary["stages"]] == ["done"] * len(names)
    for first, then in [("data", "classifier"), ("data", "encoder"), ("classifier", "robustness"),
                        ("encoder", "diffusion"), ("diffusion", "export"), ("classifier", "export")]:
        assert spans[first][1] <= spans[then][0], (first, then)
    bench = spans["bench"]  # timed: nothing else runs while it does
    assert all(e <= bench[0] for n, (_, e) in spans.items() if n != "bench")


def test_a_failed_lane_stops_new_stages_and_the_rest_are_marked_not_run(tmp_path):
    import pytest

    from eegsine.errors import UserError

    def stage(name):
        def run(ctx):
            if name == "encoder":
                raise UserError("encoder: no data")
            return {}
        return Stage(name, run, lambda ctx: f"eegsine {name}")

    names = ["data", "classifier", "encoder", "diffusion"]
    cfg = PipelineConfig(out=str(tmp_path / "run"), stages=names, threads=1, jobs=2)
    with pytest.raises(UserError, match="stage\\(s\\) failed: encoder"):
        run_pipeline(cfg, {n: stage(n) for n in names})
    status = {s["name"]: s["status"] for s in read_json(tmp_path / "run" / "pipeline.json")["stages"]}
    assert status["encoder"] == "failed: encoder: no data"
    assert status["diffusion"] == "not run (an earlier stage failed)"
    assert status["data"] == "done"


def test_the_threads_table_compares_each_cell_with_its_idle_twin():
    from eegsine.bench.speed.threads import render

    rows = [{"load": load, "threads": n, "wait_policy": "default", "ms_per_step": ms, "steps": 10}
            for load, n, ms in [("idle", 1, 10.0), ("idle", 2, 5.0), ("busy", 1, 12.0), ("busy", 2, 60.0)]]
    text = render({"host": {"cpu": "cpu", "isa": "x86-avx2", "cpus": 2, "load_before": 0.1, "torch": "2"},
                   "seconds": 6.0, "rows": rows})
    assert "| busy | 2 | default | 60.00 | 10 | 12.00x |" in text
    assert "| busy | 1 | default | 12.00 | 10 | 1.20x |" in text


def test_the_demo_record_is_one_clean_run_per_label(tmp_path):
    import pytest

    from eegsine.bench.pipeline import times
    from eegsine.errors import UserError

    def run(name, seconds, total, status="done"):
        root = tmp_path / name
        write_json(root / "pipeline.json", {"preset": "tiny", "jobs": 2, "threads": 1, "total_seconds": total,
                                            "failed": [], "stages": [{"name": n, "status": status, "seconds": s}
                                                                     for n, s in seconds.items()]})
        return root

    idle = times.read_run(run("idle", {"encoder": 20.0, "diffusion": 500.0}, 600.0))
    busy = times.read_run(run("busy", {"encoder": 30.0, "diffusion": 800.0}, 900.0))
    text = times.render({"host": {"cpu": "cpu", "cpus": 2, "isa_class": "x86-avx2", "int8_features": ["avx2"]},
                         "runs": {"idle": idle, "beside one busy process": busy}})
    assert "| diffusion | 500.0 | 800.0 |" in text and "| beside one busy process | 900 s (15.0 min) | 1.50x |" in text
    with pytest.raises(UserError, match="kept from an earlier invocation"):
        times.read_run(run("resumed", {"encoder": 0.0}, 10.0, status="skipped (done)"))

    # one record per CPU class under the folder, summarised one row each (sorted by class folder)
    for cls, k in (("x86-vnni", 1.0), ("x86-amx", 1.2)):
        write_json(tmp_path / "rec" / cls / "times.json",
                   {"host": {"cpu": f"cpu-{cls}", "cpus": 2, "isa_class": cls, "int8_features": []},
                    "runs": {"idle": {**idle, "total_seconds": 600.0 * k},
                             "beside one busy process": {**busy, "total_seconds": 900.0 * k}}})
    hosts = times.render_hosts(tmp_path / "rec")
    rows = [ln for ln in hosts.splitlines() if ln.startswith("| cpu-")]
    assert rows == ["| cpu-x86-amx (x86-amx) | 720 s (12.0 min) | 1080 s (18.0 min) | 1.50x | "
                    "[x86-amx](x86-amx/times.md) |",
                    "| cpu-x86-vnni (x86-vnni) | 600 s (10.0 min) | 900 s (15.0 min) | 1.50x | "
                    "[x86-vnni](x86-vnni/times.md) |"]
    with pytest.raises(UserError, match="no \\*/times.json"):
        times.render_hosts(tmp_path / "empty")


def _returns(x):
    return ("done", {"x": x})


def _dies():
    import os

    os._exit(3)


def test_a_lane_process_that_dies_is_a_failed_stage_and_none_outlives_the_pipeline():
    from eegsine.bench.pipeline.run import _Spawn

    pool = _Spawn()
    ok, dead = pool.submit(_returns, 7), pool.submit(_dies)
    assert ok.result(timeout=120) == ("done", {"x": 7})
    status, message = dead.result(timeout=120)
    assert status == "failed" and "exit code 3" in message
    pool.shutdown()
    assert not any(p.is_alive() for p in pool.procs)
