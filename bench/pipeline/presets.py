"""Every named preset, one registry: per stage, name -> a typed config (``eegsine.config.Presets``).

Each stage's table lives beside its config class (torch-free): ``eegsine.training.configs`` (classifier,
encoder, diffusion), ``eegsine.bench.robustness.configs`` (robustness). The pipeline's own presets are
here: a :class:`PipelinePreset` names one preset per stage. Every ``--preset`` flag takes its choices
from :data:`PRESETS` and the pipeline builds its stages' configs from it, so a name means the same
config wherever it is given.
"""
from __future__ import annotations

import dataclasses

from eegsine.bench.robustness.configs import ROBUSTNESS_PRESETS
from eegsine.bench.speed.bench import INT8_BACKENDS
from eegsine.config import Config, Presets
from eegsine.errors import UserError
from eegsine.training.configs import CLASSIFIER_PRESETS, DIFFUSION_PRESETS, ENCODER_PRESETS


@dataclasses.dataclass
class PipelinePreset(Config):
    """What ``eegsine pipeline --preset NAME`` runs: one preset per training/evaluation stage, and the bench's
    budget."""

    KIND = "pipeline-preset"
    VERSION = 1

    classifier: str = dataclasses.field(default="tiny", metadata={"help": "classifier preset (both heads)"})
    robustness: str = dataclasses.field(default="tiny", metadata={"help": "robustness (attack) preset"})
    encoder: str = dataclasses.field(default="tiny", metadata={"help": "encoder preset"})
    diffusion: str = dataclasses.field(default="tiny", metadata={"help": "diffusion preset"})
    bench_iters: int | None = dataclasses.field(default=None, metadata={
        "help": "bench: timed batch-1 calls (None: BenchConfig's default)"})
    bench_max_seconds: float | None = dataclasses.field(default=None, metadata={
        "help": "bench: time cap per cell, s (None: BenchConfig's default)"})
    bench_skip: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "bench: backends left out (the rest of BenchConfig's list is timed)"})
    stream_speed: float = dataclasses.field(default=4.0, metadata={
        "help": "stream: replay speed of the recording (x real time)"})

    def validate(self) -> None:
        for stage in ("classifier", "robustness", "encoder", "diffusion"):
            if getattr(self, stage) not in PRESETS[stage]:
                raise UserError(f"PipelinePreset.{stage}: unknown {stage} preset {getattr(self, stage)!r} "
                                f"(known: {', '.join(PRESETS[stage])})")


PIPELINE_PRESETS: Presets[PipelinePreset] = Presets("pipeline", {
    "tiny": lambda: PipelinePreset(classifier="tiny", robustness="tiny", encoder="tiny", diffusion="tiny",
                                   # 20 batch-1 calls (2 s cap per cell); torch.compile left out: compiling
                                   # the four models took 162 of the bench's 253 s (1 thread, 2026-12-07) and it
                                   # was never the fastest row (`eegsine bench` times it); nor the INT8 files
                                   # re-quantized for other targets (20 of its 57 s; the bundle ships one, and
                                   # docs/results/int8-crossover/ compares them). The recording replays
                                   # at 8x real time (~105 s of signal in ~13 s): a trial every ~130 ms, where
                                   # one decision takes a few ms (p99) against the stream's 100 ms deadline
                                   bench_iters=20, bench_max_seconds=2.0,
                                   bench_skip=["torch-compile", *INT8_BACKENDS],
                                   stream_speed=8.0),
    "paper": lambda: PipelinePreset(classifier="paper-mnist", robustness="paper-mnist", encoder="paper",
                                    diffusion="paper"),
})

# stage -> its presets: the one list every --preset flag and the pipeline read
PRESETS: dict[str, Presets] = {
    "classifier": CLASSIFIER_PRESETS,
    "robustness": ROBUSTNESS_PRESETS,
    "encoder": ENCODER_PRESETS,
    "diffusion": DIFFUSION_PRESETS,
    "pipeline": PIPELINE_PRESETS,
}
