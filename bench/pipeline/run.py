"""The main job: ``eegsine pipeline --preset tiny`` runs every stage end to end.

data -> sine classifier (both heads, adversarially trained) -> robustness table -> encoder
alignment -> diffusion -> generation + image quality -> export + INT8 -> verification ->
bench -> report. Each stage writes ``.stages/<name>.json`` atomically when it completes and
is skipped on the next run while that record exists, so a killed pipeline resumes (and the
training stages themselves resume from their checkpoints). ``--force STAGE`` re-runs one.
"""
from __future__ import annotations

import time
import traceback

from eegsine.errors import UserError
from eegsine.io import read_json, run_logger, write_json
from eegsine.bench.pipeline.config import STAGE_NAMES, Context, PipelineConfig, Stage, stage_record
from eegsine.bench.pipeline.progress import Eta, Heartbeat, eta_text, expected_seconds
from eegsine.bench.report.build import build_report
from eegsine.bench.pipeline.stages import STAGES


def run_pipeline(cfg: PipelineConfig, stages: dict[str, Stage] | None = None) -> dict:
    """Run (or resume) the pipeline; return the summary written to ``pipeline.json``."""

    stages = stages or STAGES
    root = cfg.root
    root.mkdir(parents=True, exist_ok=True)
    cfg.save(root, "pipeline_config.json")
    log = run_logger(root, "pipeline")
    ctx = Context(cfg, log)
    selected = [s for s in STAGE_NAMES if s in cfg.stages]
    eta = Eta(expected_seconds(root, cfg.preset, selected), selected)
    # every selected stage is listed from the start, so a report of a running pipeline counts what is to come
    summary: dict = {"preset": cfg.preset, "threads": cfg.threads,
                     "stages": [{"name": n, "status": "pending"} for n in selected]}
    t_all = time.perf_counter()
    failed: list[str] = []
    for i, name in enumerate(selected, 1):
        stage = stages[name]
        rec = stage_record(root, name)
        entry = summary["stages"][i - 1]
        entry.update(command=stage.command(ctx))
        if rec.exists() and name not in cfg.force:
            prev = read_json(rec)
            entry.update(status="skipped (done)", seconds=0.0, result=prev.get("result", {}))
            log.info(f"[{i}/{len(selected)}] {name}: outputs exist, skipped (--force {name} re-runs it)")
            continue
        if failed and not cfg.keep_going:
            entry.update(status="not run (an earlier stage failed)", seconds=0.0)
            continue
        todo = [s["name"] for s in summary["stages"][i - 1:] if s["status"] == "pending"]
        log.info(f"[{i}/{len(selected)}] {name}: running ({eta_text(eta, name, todo)}; "
                 f"total elapsed {time.perf_counter() - t_all:.0f} s)")
        entry.update(status="running", started=time.time(), expected_s=eta.stage(name))
        write_json(root / "pipeline.json", summary)
        t0 = time.perf_counter()
        try:
            with Heartbeat(log.info, name, eta.stage(name)):
                result = stage.run(ctx) or {}
        except UserError as e:
            failed.append(name)
            entry.update(status=f"failed: {e}", seconds=time.perf_counter() - t0)
            log.error(f"[{i}/{len(selected)}] {name}: FAILED: {e}")
        except Exception as e:  # noqa: BLE001 - a stage bug is recorded with its traceback, then re-raised below
            failed.append(name)
            entry.update(status=f"failed: {type(e).__name__}: {e}", seconds=time.perf_counter() - t0)
            log.error(f"[{i}/{len(selected)}] {name}: FAILED\n{traceback.format_exc()}")
        else:
            dt = time.perf_counter() - t0
            entry.update(status="done", seconds=dt, result=result)
            write_json(rec, {"name": name, "seconds": dt, "result": result, "finished": time.time()})
            eta.finished(name, dt)
            log.info(f"[{i}/{len(selected)}] {name}: done in {dt:.1f} s")
        write_json(root / "pipeline.json", summary)
        if name != "report":
            _partial_report(root, log)
    summary["total_seconds"] = time.perf_counter() - t_all
    summary["failed"] = failed
    write_json(root / "pipeline.json", summary)
    if failed:
        raise UserError(f"pipeline: stage(s) failed: {', '.join(failed)} (see {root / 'log.txt'}); rerun to resume")
    log.info(f"pipeline done in {summary['total_seconds']:.0f} s; report: {root / 'report.html'}")
    return summary


def _partial_report(root, log) -> None:
    """The report of the run so far (under a second), so there is something to open long before the end."""
    try:
        paths = build_report(root)
    except Exception as e:  # noqa: BLE001 - a report that cannot render yet never stops the pipeline; it says why
        log.info(f"report so far: not rendered ({type(e).__name__}: {e})")
    else:
        log.info(f"report so far: {paths['html']}")


