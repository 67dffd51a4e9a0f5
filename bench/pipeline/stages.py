"""The pipeline's stages, each one the stand-alone ``eegsine`` command it is equivalent to.

A stage runs its command(s) in-process through :func:`eegsine.commands.main.main`, so the report's
"exact commands" are literally what ran, and every stage can be re-run by hand.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable

from eegsine.bench.pipeline.config import STAGE_NAMES, Context, PipelineConfig, Stage
from eegsine.errors import UserError
from eegsine.io import read_json
from eegsine.bench.report.build import build_report
from eegsine.commands.main import main

PRESETS = {
    # preset -> per-stage preset names (the stages' own presets)
    "tiny": {"classifier": "tiny", "robustness": "tiny", "encoder": "tiny", "diffusion": "tiny"},
    "paper": {"classifier": "paper-mnist", "robustness": "paper-mnist", "encoder": "paper", "diffusion": "paper"},
}


def _argv(ctx: Context) -> dict[str, list[list[str]]]:
    r = ctx.root
    p = PRESETS[ctx.cfg.preset]
    t = ["--threads", str(ctx.cfg.threads)]
    clf = r / "classifier"
    c = ctx.cfg
    # an EEG-only run (--stages encoder ...) exports no classifier
    clf_flag = ["--classifier", str(clf / "sine")] if "classifier" in c.stages else []
    eeg_name, eeg_opts = _encoder_data(p["encoder"], ctx)
    argv = {
        "data": [["data", "fetch", "mnist"], ["data", "list"]],
        "classifier": [[*t, "train", "classifier", "--preset", p["classifier"], "--run", str(clf)]],
        "robustness": [[*t, "attack", "--preset", p["robustness"], "--run", str(clf / "standard"), "--run",
                        str(clf / "sine"), "--transfer-from", str(clf / "standard"), "--out", str(r / "robustness")]],
        "encoder": [[*t, "train", "encoder", "--preset", p["encoder"], "--run", str(r / "encoder"), *_user_data(ctx),
                     *(["--image-encoder-source", "hf", "--image-encoder-hf-path", c.clip] if c.clip else [])]],
        "diffusion": [[*t, "train", "diffusion", "--preset", p["diffusion"], "--encoder-run", str(r / "encoder"),
                       "--run", str(r / "diffusion"), *_user_data(ctx),
                       *(["--model-pretrained-vae", c.pretrained, "--model-pretrained-unet",
                          str(Path(c.pretrained) / "unet")] if c.pretrained else [])]],
        "generation": [[*t, "generate", "--run", str(r / "diffusion"), "--split", "test", "--out",
                        str(r / "generation"), "--evaluate"]],
        "export": [[*t, "export", *clf_flag, "--eeg-run", str(r / "diffusion"), "--out", str(r / "bundle"), "--int8",
                    "--overwrite"]],
        "verify": [[*t, "export", *clf_flag, "--eeg-run", str(r / "diffusion"), "--out", str(r / "bundle"),
                    "--verify-only"]],
        # the encoder's first 100 test trials as a continuous recording, replayed by BrainFlow's PLAYBACK_FILE_BOARD
        # at 4x real time (~105 s of signal in ~30 s) through the torch-free stream runtime; `--board auto`: the
        # board with the recording's rate and channels (tiny, 32 ch @ 250 Hz: EXPLORE_PLUS_32_CHAN). eegcvpr40
        # (128 ch @ 1 kHz: no BrainFlow board has that) replays its FIF from file: instead. The summary comes with
        # stream.md and latency_hist.png for the report.
        "stream": [["data", "export-recording", eeg_name, "--split", "test", "--trials", "100",
                    *(["--board", "auto", "--out", str(r / "stream" / "recording.csv")]
                      if eeg_name == "synthetic-vep" else
                      ["--out", str(r / "stream" / "recording.fif")]), *eeg_opts],
                   [*t, "stream", "--source", f"brainflow:playback:{r / 'stream' / 'recording.csv'}"
                    if eeg_name == "synthetic-vep" else f"file:{r / 'stream' / 'recording.fif'}",
                    "--bundle", str(r / "bundle"), "--speed", "4", "--marker-labels", "--log",
                    str(r / "stream" / "log.jsonl"), "--summary", str(r / "stream" / "summary.json")]],
        # 30 batch-1 calls (3 s cap per cell) keep the tiny bench near 3 minutes; `paper` times longer
        "bench": [["bench", "--pipeline", str(r), "--out", str(r / "bench"), "--threads", str(ctx.cfg.threads),
                   *(["--iters", "30", "--max-seconds", "3"] if ctx.cfg.preset == "tiny" else [])]],
        "report": [["report", str(r)]],
    }
    for name, cmds in argv.items():  # --stage-args NAME='...': appended to the stage's (last) command, so they win
        cmds[-1] += c.extra_args(name)
    return argv


def _user_eeg_options(ctx: Context, images: bool) -> list[str]:
    """``--preset paper`` on the user's files: EEGCVPR40's loader options (+ its stimulus photos), KEY=VALUE."""
    c = ctx.cfg
    opts = [f"eeg_file={c.eeg}"] + ([f"splits_file={c.splits}"] if c.splits else [])
    if images and c.images_root:
        opts += [f"images_root={c.images_root}", f"image_size={c.image_size}"]
    return opts


def _user_data(ctx: Context) -> list[str]:
    """The EEG training stages' data flags on the user's EEGCVPR40 files ([] without ``--eeg``)."""
    return ["--data", "eegcvpr40", "--data-options", *_user_eeg_options(ctx, images=True)] if ctx.cfg.eeg else []


def _encoder_data(preset: str, ctx: Context | None = None) -> tuple[str, list[str]]:
    """The encoder stage's data set and its loader options as ``-o KEY=VALUE`` flags (the user's EEGCVPR40
    files when ``--eeg`` is given, else the encoder preset's)."""
    from eegsine.training.encoder import encoder_preset

    if ctx is not None and ctx.cfg.eeg:  # the recording needs the EEG only, not the photos
        return "eegcvpr40", [a for kv in _user_eeg_options(ctx, images=False) for a in ("-o", kv)]
    e = encoder_preset(preset)
    opts = ([f"image_set={e.image_set}"] if e.data == "synthetic-vep" and e.image_set else []) + list(e.data_options)
    return e.data, [a for kv in opts for a in ("-o", kv)]


def _command_text(ctx: Context, name: str) -> str:
    return "\n".join("eegsine " + shlex.join(a) for a in _argv(ctx)[name])


def _runner(name: str, ok_codes: tuple[int, ...] = (0,)) -> Callable[[Context], dict]:
    def run(ctx: Context) -> dict:
        codes = []
        for argv in _argv(ctx)[name]:
            ctx.log.info("$ eegsine " + shlex.join(argv))
            rc = main(argv)
            codes.append(rc)
            if rc not in ok_codes:
                raise UserError(f"stage {name}: `eegsine {shlex.join(argv)}` exited with {rc}")
        return {"exit_codes": codes}
    return run


def _verify(ctx: Context) -> dict:
    """Verification gates decide exit code 1; the pipeline records a failed gate loudly and goes on."""
    result = _runner("verify", ok_codes=(0, 1))(ctx)
    v = ctx.root / "bundle" / "verify.json"
    data = read_json(v) if v.exists() else {}
    result.update(passed=data.get("passed"), failed_gates=data.get("failed_gates", []))
    if data.get("passed") is False:
        ctx.log.error("VERIFICATION GATES FAILED: " + "; ".join(data.get("failed_gates", [])))
    return result


def _report(ctx: Context) -> dict:
    paths = build_report(ctx.root, main_commands(ctx.cfg))
    return {k: str(v) for k, v in paths.items()}


STAGES: dict[str, Stage] = {
    name: Stage(name, _runner(name), (lambda n: lambda ctx: _command_text(ctx, n))(name))
    for name in ("data", "classifier", "robustness", "encoder", "diffusion", "generation", "export", "stream", "bench")
}
STAGES["verify"] = Stage("verify", _verify, lambda ctx: _command_text(ctx, "verify"))
STAGES["report"] = Stage("report", _report, lambda ctx: _command_text(ctx, "report"))



def main_commands(cfg: PipelineConfig) -> list[str]:
    ctx = Context(cfg, None)
    return [STAGES[n].command(ctx) for n in STAGE_NAMES if n in cfg.stages]
