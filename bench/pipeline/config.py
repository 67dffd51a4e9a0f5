"""The pipeline's typed config (``eegsine pipeline``'s flags), its stage names and what a stage is given."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Literal

from eegsine.config import Config, usable_cpus
from eegsine.errors import UserError

STAGE_NAMES = ("data", "classifier", "robustness", "features", "encoder", "diffusion", "generation", "export",
               "verify", "stream", "bench", "report")


def default_threads(jobs: int, cpus: int | None = None) -> int:
    """Threads per stage: the usable cores less one (left to the rest of the machine), shared by ``jobs`` lanes."""
    cpus = usable_cpus() if cpus is None else cpus
    return max(1, (cpus - 1) // max(1, jobs))


@dataclasses.dataclass
class PipelineConfig(Config):
    KIND = "pipeline"
    preset: Literal["tiny", "paper"] = dataclasses.field(default="tiny", metadata={
        "help": "tiny: the demo, sized for 2 CPU cores; paper: the full-size settings (paper-mnist classifier, "
                "EEGCVPR40 and a local Stable Diffusion folder for the EEG system; GPU)"})
    out: str = dataclasses.field(default="", metadata={"help": "output folder ('' = runs/<preset>)", "metavar": "DIR"})
    jobs: int = dataclasses.field(default_factory=lambda: min(2, usable_cpus()), metadata={
        "help": "stages run side by side when neither reads the other's outputs, each in its own process "
                "(1: one after another)"})
    threads: int = dataclasses.field(default_factory=lambda: default_threads(min(2, usable_cpus())), metadata={
        "help": "--threads of every stage's command (default: the cores less one, shared by the jobs; 1 on 2 "
                "cores, where two spinning OpenMP threads beside one other busy process ran 5.7x slower than one)"})
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
        "help": "config flags of one stage's command, STAGE='--flag value ...' (e.g. encoder='--epochs 2'): set "
                "over the preset's values", "metavar": "STAGE=ARGS"})

    def validate(self) -> None:
        for name in list(self.stages) + list(self.force):
            if name not in STAGE_NAMES:
                raise UserError(f"PipelineConfig.stages: unknown stage {name!r} (stages: {', '.join(STAGE_NAMES)})")
        if self.threads < 1:
            raise UserError(f"PipelineConfig.threads must be >= 1, got {self.threads}")
        if self.jobs < 1:
            raise UserError(f"PipelineConfig.jobs must be >= 1, got {self.jobs}")
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
        eeg_stages = [s for s in ("features", "encoder", "diffusion", "generation", "export", "verify", "stream")
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
