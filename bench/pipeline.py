"""The main job: ``eegsine pipeline --preset tiny`` runs every stage end to end.

data -> sine classifier (both heads, adversarially trained) -> robustness table -> encoder
alignment -> diffusion -> generation + image quality -> export + INT8 -> verification ->
bench -> report. Each stage writes ``.stages/<name>.json`` atomically when it completes and
is skipped on the next run while that record exists, so a killed pipeline resumes (and the
training stages themselves resume from their checkpoints). ``--force STAGE`` re-runs one.
"""
from __future__ import annotations

import dataclasses
import time
import traceback
from pathlib import Path
from typing import Callable, Literal

from eegsine.config import Config
from eegsine.errors import UserError
from eegsine.io import read_json, run_logger, write_json

STAGE_NAMES = ("data", "classifier", "robustness", "encoder", "diffusion", "generation", "export", "verify",
               "stream", "bench", "report")


@dataclasses.dataclass
class PipelineConfig(Config):
    KIND = "pipeline"
    preset: Literal["tiny", "paper"] = dataclasses.field(default="tiny", metadata={
        "help": "tiny: the demo, sized for 2 CPU cores; paper: the full-size settings (paper-mnist classifier, "
                "EEGCVPR40 and a local Stable Diffusion folder for the EEG system; GPU)"})
    out: str = dataclasses.field(default="", metadata={"help": "output folder ('' = runs/<preset>)", "metavar": "DIR"})
    threads: int = dataclasses.field(default=2, metadata={"help": "--threads of every stage's command"})
    stages: list[str] = dataclasses.field(default_factory=lambda: list(STAGE_NAMES), metadata={
        "help": "stages to run (always in pipeline order): " + ", ".join(STAGE_NAMES), "metavar": "STAGE"})
    force: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "stages run again even when their record in OUT/.stages/ says they are done", "metavar": "STAGE"})
    keep_going: bool = dataclasses.field(default=False, metadata={
        "help": "continue after a failed stage (its dependants then fail too)"})

    def validate(self) -> None:
        for name in list(self.stages) + list(self.force):
            if name not in STAGE_NAMES:
                raise UserError(f"PipelineConfig.stages: unknown stage {name!r} (stages: {', '.join(STAGE_NAMES)})")
        if self.threads < 1:
            raise UserError(f"PipelineConfig.threads must be >= 1, got {self.threads}")

    @property
    def root(self) -> Path:
        return Path(self.out or f"runs/{self.preset}")


@dataclasses.dataclass
class Stage:
    name: str
    run: Callable[["Context"], dict]
    command: Callable[["Context"], str]   # the equivalent stand-alone command (for the report)


@dataclasses.dataclass
class Context:
    cfg: PipelineConfig
    log: object

    @property
    def root(self) -> Path:
        return self.cfg.root

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


def stage_record(root: Path, name: str) -> Path:
    return root / ".stages" / f"{name}.json"


def run_pipeline(cfg: PipelineConfig, stages: dict[str, Stage] | None = None) -> dict:
    """Run (or resume) the pipeline; return the summary written to ``pipeline.json``."""
    from eegsine.bench.stages import STAGES  # the stage bodies (they import every layer)

    stages = stages or STAGES
    root = cfg.root
    root.mkdir(parents=True, exist_ok=True)
    cfg.save(root, "pipeline_config.json")
    log = run_logger(root, "pipeline")
    ctx = Context(cfg, log)
    summary: dict = {"preset": cfg.preset, "threads": cfg.threads, "stages": []}
    t_all = time.perf_counter()
    failed: list[str] = []
    selected = [s for s in STAGE_NAMES if s in cfg.stages]
    for i, name in enumerate(selected, 1):
        stage = stages[name]
        rec = stage_record(root, name)
        entry = {"name": name, "command": stage.command(ctx)}
        if rec.exists() and name not in cfg.force:
            prev = read_json(rec)
            entry.update(status="skipped (done)", seconds=0.0, result=prev.get("result", {}))
            log.info(f"[{i}/{len(selected)}] {name}: outputs exist, skipped (--force {name} re-runs it)")
            summary["stages"].append(entry)
            continue
        if failed and not cfg.keep_going:
            entry.update(status="not run (an earlier stage failed)", seconds=0.0)
            summary["stages"].append(entry)
            continue
        log.info(f"[{i}/{len(selected)}] {name}: running  (total elapsed {time.perf_counter() - t_all:.0f} s)")
        t0 = time.perf_counter()
        try:
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
            log.info(f"[{i}/{len(selected)}] {name}: done in {dt:.1f} s")
        summary["stages"].append(entry)
        write_json(root / "pipeline.json", summary)
    summary["total_seconds"] = time.perf_counter() - t_all
    summary["failed"] = failed
    write_json(root / "pipeline.json", summary)
    if failed:
        raise UserError(f"pipeline: stage(s) failed: {', '.join(failed)} (see {root / 'log.txt'}); rerun to resume")
    log.info(f"pipeline done in {summary['total_seconds']:.0f} s; report: {root / 'report.html'}")
    return summary


def main_commands(cfg: PipelineConfig) -> list[str]:
    from eegsine.bench.stages import STAGES

    ctx = Context(cfg, None)
    return [STAGES[n].command(ctx) for n in STAGE_NAMES if n in cfg.stages]

