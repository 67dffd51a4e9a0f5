"""The pipeline's stages: each builds the typed configs of its library calls and calls them directly.

A stage is a list of :class:`Call` s: a library function, its keyword arguments (typed configs and
folders) and the ``eegsine`` command line that does the same, rendered from those configs
(:func:`eegsine.config.config_to_argv`): the command's own parser reads it back into equal configs
(tests/test_pipeline_stages.py checks every stage), so the report's "exact commands" reproduce each
stage by hand. A stage's configs start from the stage presets its :class:`PipelinePreset` names
(:data:`eegsine.bench.pipeline.presets.PRESETS`); ``--stage-args STAGE='--flag value ...'`` are parsed
onto its last call's configs with the command's config flags (:func:`eegsine.config.parse_config_args`),
so they win over the preset's values.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from eegsine import data
from eegsine.bench.pipeline.config import STAGE_NAMES, Context, PipelineConfig, Stage
from eegsine.bench.pipeline.presets import PIPELINE_PRESETS, PRESETS, PipelinePreset
from eegsine.bench.report.build import build_report
from eegsine.bench.robustness.configs import RobustnessConfig
from eegsine.bench.speed.bench import BenchConfig
from eegsine.bench.speed.cases import bench_folders
from eegsine.bench.speed.timing import diffusion_speed
from eegsine.config import Config, config_to_argv, parse_config_args
from eegsine.data.recording import export_recording
from eegsine.errors import UserError
from eegsine.export.configs import BundleConfig, VerifyConfig
from eegsine.export.tensorrt import TRTConfig
from eegsine.io import read_json
from eegsine.runtime.stream import StreamConfig, run_stream
from eegsine.training.configs import GenerateConfig


@dataclasses.dataclass
class Call:
    """One library call of a stage and the command line that reproduces it (rendered from ``kwargs``' configs)."""

    argv: list[str]
    fn: Callable[..., Any]
    kwargs: dict[str, Any]

    @property
    def command(self) -> str:
        return "eegsine " + shlex.join(self.argv)


@dataclasses.dataclass
class RecordingExport(Config):
    """``eegsine data export-recording``'s arguments: a data set's split as one continuous recording."""

    KIND = "recording-export"
    VERSION = 1

    name: str = dataclasses.field(default="synthetic-vep", metadata={"help": "EEG data set"})
    options: list[str] = dataclasses.field(default_factory=list, metadata={"help": "loader options KEY=VALUE"})
    split: str = dataclasses.field(default="test", metadata={"help": "split to record"})
    trials: int = dataclasses.field(default=0, metadata={"help": "first N trials of the split (0: all)"})
    board: str = dataclasses.field(default="synthetic", metadata={"help": ".csv: BrainFlow master board"})
    out: str = dataclasses.field(default="", metadata={"help": "REC.csv (BrainFlow playback) or REC.fif"})
    isi: float = dataclasses.field(default=0.5, metadata={"help": "inter-stimulus interval after each epoch, s"})
    isi_jitter: float = dataclasses.field(default=0.2, metadata={"help": "+ uniform jitter up to this, s"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the ISIs and the background noise"})

    def to_argv(self) -> list[str]:
        """The ``eegsine data export-recording`` command line (flags at their defaults left out)."""
        d = RecordingExport()
        argv = ["data", "export-recording", self.name, "--split", self.split]
        argv += ["--trials", str(self.trials)] if self.trials else []
        argv += ["--board", self.board] if self.board != d.board else []
        argv += ["--out", self.out]
        for flag, value, default in (("--isi", self.isi, d.isi), ("--isi-jitter", self.isi_jitter, d.isi_jitter),
                                     ("--seed", self.seed, d.seed)):
            argv += [flag, repr(value)] if value != default else []
        return argv + [a for kv in self.options for a in ("-o", kv)]


def loader_options(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` loader options as ``eegsine data -o`` reads them: a JSON value, else the bare string."""
    out: dict[str, Any] = {}
    for kv in items:
        key, _, val = kv.partition("=")
        try:
            out[key.strip().replace("-", "_")] = json.loads(val)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = val  # a bare string such as image_set=digits
    return out


# -- the library calls (torch and the training stack imported when a stage runs, not to render its command) ----
def _data_status() -> dict[str, str]:
    """``eegsine data list``: which data sets are here."""
    status = {}
    for name, spec in sorted(data.REGISTRY.items()):
        try:
            status[name] = "available" if spec.available() else f"missing ({spec.how_to_get})"
        except Exception as e:  # noqa: BLE001 - an availability probe must not fail the stage, as in `data list`
            status[name] = f"unknown ({e})"
    return status


def _train_classifiers(**kwargs: Any) -> dict:
    from eegsine.training.classifier import train_classifiers

    return train_classifiers(**kwargs)


def _attack(**kwargs: Any) -> dict:
    from eegsine.bench.robustness.evaluate import evaluate_robustness

    return evaluate_robustness(**kwargs)


def _train_encoder(**kwargs: Any) -> dict:
    from eegsine.training.encoder import train_encoder

    return train_encoder(**kwargs)


def _train_diffusion(**kwargs: Any) -> dict:
    from eegsine.training.diffusion import train_diffusion

    return train_diffusion(**kwargs)


def _train_domain_net(**kwargs: Any) -> dict:
    from eegsine.training.generate import train_domain_net

    return train_domain_net(**kwargs)


def _generate(**kwargs: Any) -> dict:
    from eegsine.training.generate import generate_and_evaluate

    return generate_and_evaluate(**kwargs)


def _export(**kwargs: Any) -> int:
    from eegsine.export.job import export_runs

    return export_runs(**kwargs)


def _record(job: RecordingExport) -> dict:
    ds = data.load_eeg(job.name, **loader_options(job.options))
    path, rec = export_recording(ds, job.out, board=job.board, split=job.split, n_trials=job.trials, isi=job.isi,
                                 isi_jitter=job.isi_jitter, seed=job.seed)
    return {"recording": str(path), "trials": len(rec.events)}


def _report(root: str, cfg: PipelineConfig) -> dict:
    return {k: str(v) for k, v in build_report(root, main_commands(cfg)).items()}


# -- each stage's configs and command lines -----------------------------------------------------------------------
def _preset(ctx: Context) -> PipelinePreset:
    return PIPELINE_PRESETS[ctx.cfg.preset]


def _overrides(ctx: Context, stage: str, configs: dict[str, Config]) -> dict[str, Config]:
    """``--stage-args STAGE=...`` over ``configs`` (flag prefix -> config)."""
    return parse_config_args(ctx.cfg.extra_args(stage), configs, f"--stage-args {stage}")


def _threads(ctx: Context) -> list[str]:
    return ["--threads", str(ctx.cfg.threads)]


def _user_eeg_options(ctx: Context, images: bool) -> list[str]:
    """``--preset paper`` on the user's files: EEGCVPR40's loader options (+ its stimulus photos), KEY=VALUE."""
    c = ctx.cfg
    opts = [f"eeg_file={c.eeg}"] + ([f"splits_file={c.splits}"] if c.splits else [])
    if images and c.images_root:
        opts += [f"images_root={c.images_root}", f"image_size={c.image_size}"]
    return opts


def _with_user_data(ctx: Context, cfg: Any) -> Any:
    """An EEG training config on the user's EEGCVPR40 files (unchanged without ``--eeg``)."""
    return cfg.replace(data="eegcvpr40", data_options=_user_eeg_options(ctx, images=True)) if ctx.cfg.eeg else cfg


def _data(ctx: Context) -> list[Call]:
    if ctx.cfg.extra_args("data"):
        raise UserError("--stage-args data: `eegsine data` takes no config flags")
    return [Call(["data", "fetch", "mnist"], data.fetch, {"name": "mnist"}),
            Call(["data", "list"], _data_status, {})]


def _classifier(ctx: Context) -> list[Call]:
    name, run = _preset(ctx).classifier, ctx.path("classifier")
    # what `eegsine --threads N train classifier --preset NAME` builds: the global flag fills the config's threads
    bases = {head: cfg.replace(threads=ctx.cfg.threads) for head, cfg in PRESETS["classifier"][name].items()}
    heads = {head: (run / head, _overrides(ctx, "classifier", {"": base})[""]) for head, base in bases.items()}
    flags = {head: config_to_argv(cfg, bases[head]) for head, (_, cfg) in heads.items()}
    if len({tuple(f) for f in flags.values()}) > 1:  # one command line sets the same flags on both heads
        raise UserError(f"--stage-args classifier: the heads' configs differ from their preset differently "
                        f"({flags}); one `--preset` command line cannot express that")
    argv = [*_threads(ctx), "train", "classifier", "--preset", name, "--run", str(run), *next(iter(flags.values()))]
    return [Call(argv, _train_classifiers, {"heads": heads, "init_probe": True})]


def _robustness(ctx: Context) -> list[Call]:
    name, clf = _preset(ctx).robustness, ctx.path("classifier")
    base = PRESETS["robustness"][name].replace(threads=ctx.cfg.threads)
    cfg: RobustnessConfig = _overrides(ctx, "robustness", {"": base.replace(transfer_from=str(clf / "standard"))})[""]
    runs, out = [str(clf / "standard"), str(clf / "sine")], ctx.path("robustness")
    argv = [*_threads(ctx), "attack", "--preset", name, *[a for r in runs for a in ("--run", r)], "--out", str(out),
            *config_to_argv(cfg, base)]
    return [Call(argv, _attack, {"runs": runs, "cfg": cfg, "out_dir": out})]


def _encoder(ctx: Context) -> list[Call]:
    name, run, c = _preset(ctx).encoder, ctx.path("encoder"), ctx.cfg
    base = PRESETS["encoder"][name]
    cfg = _with_user_data(ctx, base)
    if c.clip:  # the local CLIP vision tower as the alignment target
        cfg = cfg.replace(image_encoder=cfg.image_encoder.replace(source="hf", hf_path=c.clip))
    cfg = _overrides(ctx, "encoder", {"": cfg})[""]
    argv = [*_threads(ctx), "train", "encoder", "--preset", name, "--run", str(run), *config_to_argv(cfg, base)]
    return [Call(argv, _train_encoder, {"cfg": cfg, "run_dir": run})]


def _diffusion_config(ctx: Context):
    """The diffusion stage's config and its preset's (the features stage reads the same data)."""
    name, c = _preset(ctx).diffusion, ctx.cfg
    base = PRESETS["diffusion"][name]
    cfg = _with_user_data(ctx, base.replace(encoder_run=str(ctx.path("encoder"))))
    if c.pretrained:  # a local Stable Diffusion folder in diffusers layout
        cfg = cfg.replace(model=cfg.model.replace(pretrained_vae=c.pretrained,
                                                  pretrained_unet=str(Path(c.pretrained) / "unet")))
    return _overrides(ctx, "diffusion", {"": cfg})[""], base


def _diffusion(ctx: Context) -> list[Call]:
    name, run = _preset(ctx).diffusion, ctx.path("diffusion")
    cfg, base = _diffusion_config(ctx)
    argv = [*_threads(ctx), "train", "diffusion", "--preset", name, "--run", str(run), *config_to_argv(cfg, base)]
    return [Call(argv, _train_diffusion, {"cfg": cfg, "run_dir": run, "speed_probe": diffusion_speed})]


def _features(ctx: Context) -> list[Call]:
    """The generated images' feature network (domain CNN) into OUT/diffusion/domain-cnn-<images>, beside the
    diffusion training (it reads the images, not the model): generation and the export's gates load it."""
    name, run = _preset(ctx).diffusion, ctx.path("diffusion")
    cfg, base = _diffusion_config(ctx)
    argv = [*_threads(ctx), "train", "domain-net", "--preset", name, "--run", str(run), *config_to_argv(cfg, base)]
    return [Call(argv, _train_domain_net, {"cfg": cfg, "run": run})]


def _generation(ctx: Context) -> list[Call]:
    cfg = GenerateConfig(run=str(ctx.path("diffusion")), split="test", out=str(ctx.path("generation")), evaluate=True)
    cfg = _overrides(ctx, "generation", {"": cfg})[""]
    return [Call([*_threads(ctx), "generate", *config_to_argv(cfg)], _generate, {"cfg": cfg})]


def _export_call(ctx: Context, stage: str, bundle: BundleConfig, verify_only: bool) -> Call:
    """``eegsine export`` of what the pipeline trained (an EEG-only run, ``--stages encoder ...``, has no
    classifier) into OUT/bundle; ``verify_only``: verify that bundle against its runs."""
    clf = str(ctx.path("classifier", "sine")) if "classifier" in ctx.cfg.stages else None
    eeg, out = str(ctx.path("diffusion")), str(ctx.path("bundle"))
    cfgs = _overrides(ctx, stage, {"": bundle, "trt__": TRTConfig(), "verify__": VerifyConfig()})
    argv = [*_threads(ctx), "export", *(["--classifier", clf] if clf else []), "--eeg-run", eeg, "--out", out,
            *(["--verify-only"] if verify_only else []), *config_to_argv(cfgs[""]),
            *config_to_argv(cfgs["trt__"], prefix="trt__"), *config_to_argv(cfgs["verify__"], prefix="verify__")]
    return Call(argv, _export, {"out": out, "cfg": cfgs[""], "trt_cfg": cfgs["trt__"], "vcfg": cfgs["verify__"],
                                "classifier": clf, "eeg_run": eeg, "trt": False, "verify": False,
                                "verify_only": verify_only})


def _stream(ctx: Context) -> list[Call]:
    """The encoder's first 100 test trials as a continuous recording, replayed through the torch-free stream
    runtime at the preset's speed (tiny: 8x real time, ~105 s of signal in ~13 s). synthetic-vep: BrainFlow's
    PLAYBACK_FILE_BOARD with `--board auto` (the board with the recording's rate and channels; tiny, 32 ch @ 250 Hz:
    EXPLORE_PLUS_32_CHAN); eegcvpr40 (128 ch @ 1 kHz: no BrainFlow board has that) replays its FIF from
    file:. The summary comes with stream.md and latency_hist.png for the report."""
    folder = ctx.path("stream")
    if ctx.cfg.eeg:  # the recording needs the EEG only, not the photos
        rec = RecordingExport(name="eegcvpr40", options=_user_eeg_options(ctx, images=False), trials=100,
                              out=str(folder / "recording.fif"))
        source = f"file:{rec.out}"
    else:
        e = PRESETS["encoder"][_preset(ctx).encoder]
        opts = ([f"image_set={e.image_set}"] if e.data == "synthetic-vep" and e.image_set else []) + e.data_options
        csv = e.data == "synthetic-vep"
        rec = RecordingExport(name=e.data, options=opts, trials=100, board="auto" if csv else "synthetic",
                              out=str(folder / ("recording.csv" if csv else "recording.fif")))
        source = f"brainflow:playback:{rec.out}" if csv else f"file:{rec.out}"
    cfg = StreamConfig(source=source, bundle=str(ctx.path("bundle")), speed=_preset(ctx).stream_speed,
                       marker_labels=True, log=str(folder / "log.jsonl"), summary=str(folder / "summary.json"),
                       threads=ctx.cfg.threads)
    cfg = _overrides(ctx, "stream", {"": cfg})[""]
    argv = [*_threads(ctx), "stream", *config_to_argv(cfg, skip=("threads",))]  # eegsine --threads sets its threads
    return [Call(rec.to_argv(), _record, {"job": rec}), Call(argv, run_stream, {"cfg": cfg})]


def _bench(ctx: Context) -> list[Call]:
    p = _preset(ctx)
    cfg = BenchConfig(threads=ctx.cfg.threads)
    cfg = cfg.replace(**{k: v for k, v in (("iters", p.bench_iters), ("max_seconds", p.bench_max_seconds))
                         if v is not None})
    if p.bench_skip:
        cfg = cfg.replace(backends=[b for b in cfg.backends if b not in p.bench_skip])
    cfg = _overrides(ctx, "bench", {"": cfg})[""]
    root, out = str(ctx.root), str(ctx.path("bench"))
    argv = ["bench", "--pipeline", root, "--out", out, *config_to_argv(cfg, keep=("threads",))]
    return [Call(argv, bench_folders, {"cfg": cfg, "out": out, "pipeline": root, "bundle": None, "classifier": None,
                                       "eeg_run": None})]


def _report_calls(ctx: Context) -> list[Call]:
    if ctx.cfg.extra_args("report"):
        raise UserError("--stage-args report: `eegsine report` takes no config flags")
    return [Call(["report", str(ctx.root)], _report, {"root": str(ctx.root), "cfg": ctx.cfg})]


PLANS: dict[str, Callable[[Context], list[Call]]] = {
    "data": _data, "classifier": _classifier, "robustness": _robustness, "encoder": _encoder,
    "features": _features, "diffusion": _diffusion, "generation": _generation,
    "export": lambda ctx: [_export_call(ctx, "export", BundleConfig(int8=True, overwrite=True), False)],
    "verify": lambda ctx: [_export_call(ctx, "verify", BundleConfig(), True)],
    "stream": _stream, "bench": _bench, "report": _report_calls,
}


def _set_threads(n: int) -> None:
    """The pipeline's thread count for what each stage runs, as `eegsine --threads N` sets it for a command."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _runner(name: str, ok_codes: tuple[int, ...] = (0,)) -> Callable[[Context], dict]:
    def run(ctx: Context) -> dict:
        codes = []
        for call in PLANS[name](ctx):
            ctx.log.info("$ " + call.command)
            _set_threads(ctx.cfg.threads)
            result = call.fn(**call.kwargs)
            rc = result if isinstance(result, int) else 0  # export/verify return an exit code, the rest results
            codes.append(rc)
            if rc not in ok_codes:
                raise UserError(f"stage {name}: `{call.command}` exited with {rc}")
        return {"exit_codes": codes}
    return run


def _verify(ctx: Context) -> dict:
    """Verification gates decide exit code 1; the pipeline records a failed gate loudly and goes on."""
    result = _runner("verify", ok_codes=(0, 1))(ctx)
    v = ctx.root / "bundle" / "verify.json"
    found = read_json(v) if v.exists() else {}
    result.update(passed=found.get("passed"), failed_gates=found.get("failed_gates", []))
    if found.get("passed") is False:
        ctx.log.error("VERIFICATION GATES FAILED: " + "; ".join(found.get("failed_gates", [])))
    return result


def _report_stage(ctx: Context) -> dict:
    (call,) = PLANS["report"](ctx)
    ctx.log.info("$ " + call.command)
    return call.fn(**call.kwargs)


def _command_text(ctx: Context, name: str) -> str:
    return "\n".join(call.command for call in PLANS[name](ctx))


STAGES: dict[str, Stage] = {
    name: Stage(name, _runner(name), (lambda n: lambda ctx: _command_text(ctx, n))(name))
    for name in ("data", "classifier", "robustness", "features", "encoder", "diffusion", "generation", "export",
                 "stream", "bench")
}
STAGES["verify"] = Stage("verify", _verify, lambda ctx: _command_text(ctx, "verify"))
STAGES["report"] = Stage("report", _report_stage, lambda ctx: _command_text(ctx, "report"))


def main_commands(cfg: PipelineConfig) -> list[str]:
    """Each selected stage's command lines, in pipeline order (the report's "exact commands")."""
    ctx = Context(cfg, None)
    return [STAGES[n].command(ctx) for n in STAGE_NAMES if n in cfg.stages]
