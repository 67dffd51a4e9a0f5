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

from eegsine.config import Config, usable_cpus
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
    threads: int = dataclasses.field(default_factory=lambda: min(2, usable_cpus()),
                                     metadata={"help": "--threads of every stage's command"})
    stages: list[str] = dataclasses.field(default_factory=lambda: list(STAGE_NAMES), metadata={
        "help": "stages to run (always in pipeline order): " + ", ".join(STAGE_NAMES), "metavar": "STAGE"})
    force: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "stages run again even when their record in OUT/.stages/ says they are done", "metavar": "STAGE"})
    keep_going: bool = dataclasses.field(default=False, metadata={
        "help": "continue after a failed stage (its dependants then fail too)"})
    # the paper path: EEGCVPR40 files, the ImageNet stimulus photos, a local Stable Diffusion (and CLIP) folder
    eeg: str = dataclasses.field(default="", metadata={
        "help": "paper: EEGCVPR40 EEG file (eeg_*.pth, Spampinato et al.)", "metavar": "PTH"})
    splits: str = dataclasses.field(default="", metadata={
        "help": "paper: its splits file (block_splits_by_image_*.pth; default: the one next to --eeg)",
        "metavar": "PTH"})
    images_root: str = dataclasses.field(default="", metadata={
        "help": "paper: the stimulus photos, DIR/<wnid>/<name>.JPEG (ImageNet layout) or DIR/<name>.JPEG",
        "metavar": "DIR"})
    image_size: int = dataclasses.field(default=64, metadata={
        "help": "paper: stimulus photos are read at this size (shorter side + centre crop), px"})
    pretrained: str = dataclasses.field(default="", metadata={
        "help": "paper: a local Stable Diffusion folder in diffusers layout (vae/, unet/), never a hub id",
        "metavar": "DIR"})
    clip: str = dataclasses.field(default="", metadata={
        "help": "paper: a local CLIP vision folder (transformers layout) as the encoder's alignment target "
                "('' = the in-project image CNN)", "metavar": "DIR"})
    stage_args: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "extra flags for one stage's command, STAGE='--flag value ...' (e.g. encoder='--epochs 2'); "
                "they follow the preset's, so they win", "metavar": "STAGE=ARGS"})

    def validate(self) -> None:
        for name in list(self.stages) + list(self.force):
            if name not in STAGE_NAMES:
                raise UserError(f"PipelineConfig.stages: unknown stage {name!r} (stages: {', '.join(STAGE_NAMES)})")
        if self.threads < 1:
            raise UserError(f"PipelineConfig.threads must be >= 1, got {self.threads}")
        for item in self.stage_args:
            name, sep, _ = item.partition("=")
            if not sep or name not in STAGE_NAMES:
                raise UserError(f"PipelineConfig.stage_args: {item!r} is not STAGE=ARGS with a stage of "
                                f"{', '.join(STAGE_NAMES)}")
        paper_files = {"eeg": self.eeg, "splits": self.splits, "images_root": self.images_root,
                       "pretrained": self.pretrained, "clip": self.clip}
        if self.preset != "paper" and any(paper_files.values()):
            given = [k for k, v in paper_files.items() if v]
            raise UserError(f"PipelineConfig: --{given[0].replace('_', '-')} belongs to --preset paper")
        if self.splits and not self.eeg:
            raise UserError("PipelineConfig.splits: give --eeg too (the splits index its trials)")
        eeg_stages = [s for s in ("encoder", "diffusion", "generation", "export", "verify", "stream")
                      if s in self.stages]
        if self.preset == "paper" and eeg_stages and not (self.eeg and self.pretrained):
            raise UserError(f"PipelineConfig: --preset paper's EEG stages ({', '.join(eeg_stages)}) need your files: "
                            "--eeg PTH (EEGCVPR40) and --pretrained SD_DIR (a local Stable Diffusion folder), plus "
                            "--images-root DIR (the stimulus photos); or run only --stages data classifier robustness")
        if not 8 <= self.image_size <= 1024:
            raise UserError(f"PipelineConfig.image_size: must be in [8, 1024] px, got {self.image_size}")

    def extra_args(self, stage: str) -> list[str]:
        """The ``stage_args`` of ``stage``, split like a shell would."""
        import shlex

        return [a for item in self.stage_args if item.partition("=")[0] == stage
                for a in shlex.split(item.partition("=")[2])]

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

