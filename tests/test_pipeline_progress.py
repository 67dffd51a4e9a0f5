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
