"""Presets are one typed mechanism, and the pipeline's stages build configs whose command lines read back to them.

* Every preset of every stage (:data:`eegsine.bench.pipeline.presets.PRESETS`) round-trips through its config
  file, and ``--preset X`` on the command line gives exactly the library's preset X; each ``--preset`` flag
  takes its choices from the registry.
* Every pipeline stage's command line (what the report shows) is rendered from the configs the stage calls
  the library with, and the command's own parser reads it back into equal configs: for each stage, on the
  tiny and the paper path, with ``--stage-args``.
* :func:`eegsine.config.config_to_argv` is the inverse of :func:`eegsine.config.config_from_args`.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

import pytest

from eegsine.bench.pipeline import stages as S
from eegsine.bench.pipeline.config import STAGE_NAMES, Context, PipelineConfig
from eegsine.bench.pipeline.presets import PIPELINE_PRESETS, PRESETS, PipelinePreset
from eegsine.bench.robustness.configs import RobustnessConfig, robustness_preset
from eegsine.commands import attack, bench, export, generate, main as main_mod, stream, train_classifier, \
    train_diffusion, train_domain, train_encoder
from eegsine.config import Config, Presets, add_config_args, config_from_args, config_to_argv, parse_config_args
from eegsine.errors import UserError
from eegsine.runtime.stream import StreamConfig
from eegsine.export.configs import BundleConfig
from eegsine.models.configs import ClassifierConfig
from eegsine.training.configs import ClassifierTrainConfig, DiffusionTrainConfig, EncoderTrainConfig, \
    classifier_preset, diffusion_preset, encoder_preset

PARSER = main_mod.build_parser()


def parse(argv: list[str], monkeypatch=None) -> argparse.Namespace:
    """``eegsine ARGV`` parsed as the command line does, ``eegsine --threads N`` applied to the namespace (the
    process's thread setting itself is left alone)."""
    ns = PARSER.parse_args(argv)
    set_threads = main_mod._set_threads
    main_mod._set_threads = lambda n, import_torch: None
    try:
        main_mod.apply_global_threads(ns)
    finally:
        main_mod._set_threads = set_threads
    return ns


# -- presets -------------------------------------------------------------------------------------------------
def _configs(value) -> dict[str, Config]:
    return value if isinstance(value, dict) else {"": value}


@pytest.mark.parametrize("stage,name", [(s, n) for s, table in PRESETS.items() for n in table])
def test_every_preset_round_trips_through_its_config_file(stage, name, tmp_path):
    table = PRESETS[stage]
    assert isinstance(table, Presets) and table.stage == stage
    for head, cfg in _configs(table[name]).items():
        assert isinstance(cfg, Config)
        cfg.save(tmp_path, f"{head or stage}.json")
        assert type(cfg).load(tmp_path, f"{head or stage}.json") == cfg
    a, b = _configs(table[name]), _configs(table[name])  # a lookup is a fresh config: changing one leaves the table
    assert a == b and all(a[k] is not b[k] for k in a)


def test_the_old_preset_functions_are_the_tables():
    for name in PRESETS["classifier"]:
        assert classifier_preset(name) == PRESETS["classifier"][name]
    for name in PRESETS["encoder"]:
        assert encoder_preset(name) == PRESETS["encoder"][name]
    for name in PRESETS["diffusion"]:
        assert diffusion_preset(name) == PRESETS["diffusion"][name]
    for name in PRESETS["robustness"]:
        assert robustness_preset(name) == PRESETS["robustness"][name]
    with pytest.raises(UserError, match="unknown encoder preset 'huge' .known: tiny, synthetic-default"):
        encoder_preset("huge")


def test_each_pipeline_preset_names_known_stage_presets():
    assert list(typing.get_args(typing.get_type_hints(PipelineConfig)["preset"])) == list(PIPELINE_PRESETS)
    for name in PIPELINE_PRESETS:
        p = PIPELINE_PRESETS[name]
        assert all(getattr(p, s) in PRESETS[s] for s in ("classifier", "robustness", "encoder", "diffusion"))
    with pytest.raises(UserError, match="unknown encoder preset 'nope'"):
        PipelinePreset(encoder="nope")


def _preset_action(path: tuple[str, ...]) -> argparse.Action:
    parser = PARSER
    for word in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return next(a for a in parser._actions if "--preset" in a.option_strings)


@pytest.mark.parametrize("path,stage", [(("train", "classifier"), "classifier"), (("train", "encoder"), "encoder"),
                                        (("train", "diffusion"), "diffusion"), (("attack",), "robustness"),
                                        (("pipeline",), "pipeline")])
def test_every_preset_flag_offers_the_registry(path, stage):
    assert list(_preset_action(path).choices) == list(PRESETS[stage])


@pytest.mark.parametrize("name", list(PRESETS["classifier"]))
def test_cli_classifier_preset_is_the_library_preset(name, tmp_path):
    ns = parse(["train", "classifier", "--preset", name, "--run", str(tmp_path)])
    assert train_classifier.heads_from_args(ns) == {h: (tmp_path / h, cfg)
                                                    for h, cfg in PRESETS["classifier"][name].items()}
    ns = parse(["train", "classifier", "--preset", name, "--run", str(tmp_path), "--heads", "sine", "--epochs", "2"])
    assert train_classifier.heads_from_args(ns) == {"sine": (tmp_path / "sine",
                                                             PRESETS["classifier"][name]["sine"].replace(epochs=2))}


@pytest.mark.parametrize("name", list(PRESETS["encoder"]))
def test_cli_encoder_preset_is_the_library_preset(name, tmp_path):
    ns = parse(["train", "encoder", "--preset", name, "--run", str(tmp_path)])
    assert train_encoder.kwargs_from_args(ns) == {"cfg": PRESETS["encoder"][name], "run_dir": tmp_path}


@pytest.mark.parametrize("name", list(PRESETS["diffusion"]))
def test_cli_diffusion_preset_is_the_library_preset(name, tmp_path):
    ns = parse(["train", "diffusion", "--preset", name, "--run", str(tmp_path)])
    assert train_diffusion.kwargs_from_args(ns)["cfg"] == PRESETS["diffusion"][name]


@pytest.mark.parametrize("name", list(PRESETS["robustness"]))
def test_cli_robustness_preset_is_the_library_preset(name, tmp_path):
    ns = parse(["attack", "--preset", name, "--run", str(tmp_path / "a")])
    assert attack.kwargs_from_args(ns) == {"runs": [str(tmp_path / "a")], "cfg": PRESETS["robustness"][name],
                                           "out_dir": tmp_path / "robustness"}


# -- config -> argv -> config --------------------------------------------------------------------------------
def _read_back(cfg: Config, argv: list[str], base: Config | None = None, prefix: str = "") -> Config:
    p = argparse.ArgumentParser()
    add_config_args(p, type(cfg), prefix=prefix)
    return config_from_args(type(cfg), p.parse_args(argv), base=base, prefix=prefix)


@pytest.mark.parametrize("cfg,base", [
    (ClassifierTrainConfig(eps=8 / 255, dataset="cifar10", alpha=2 / 255, lr=1e-5, n_train=7), None),
    (ClassifierTrainConfig(model=ClassifierConfig(head="sine", in_channels=2, mean=[0.5, -0.25], std=[0.2, 0.3])),
     None),
    (RobustnessConfig(eps=[], attacks=["fgsm"], pgd_alpha=0.01), robustness_preset("tiny")),
    (encoder_preset("tiny").replace(controls=False, data_options=[], image_set=""), encoder_preset("tiny")),
    (diffusion_preset("tiny").replace(model=diffusion_preset("tiny").model.replace(
        unet_cross_attention=[False, True], guidance=1.5)), diffusion_preset("tiny")),
    (BundleConfig(guidance=-1.0, int8_models=[], int8=True), BundleConfig(guidance=3.0)),  # "-1", an empty list
])
def test_config_to_argv_is_read_back_by_the_config_flags(cfg, base):
    argv = config_to_argv(cfg, base)
    assert _read_back(cfg, argv, base) == cfg
    assert argv == config_to_argv(_read_back(cfg, argv, base), base)
    assert config_to_argv(base or type(cfg)(), base) == []  # nothing changed, no flags


def test_config_to_argv_writes_changes_only_and_refuses_what_no_flag_can_say():
    base = classifier_preset("paper-mnist-fgsmrs")["sine"]  # alpha 0.375
    assert config_to_argv(base.replace(epochs=2), base) == ["--epochs", "2"]
    assert config_to_argv(base.replace(lr=5e-3 / 3), base) == ["--lr", repr(5e-3 / 3)]
    with pytest.raises(UserError, match="alpha: None"):
        config_to_argv(base.replace(alpha=None), base)


def test_parse_config_args_names_an_unknown_flag():
    with pytest.raises(UserError, match="--stage-args x: --bogus 1: not a flag of EncoderTrainConfig"):
        parse_config_args(["--bogus", "1"], {"": EncoderTrainConfig()}, "--stage-args x")
    with pytest.raises(UserError, match="invalid choice"):
        parse_config_args(["--mode", "nope"], {"": DiffusionTrainConfig()}, "--stage-args x")


# -- every stage's command line reads back to the configs it runs with ---------------------------------------
def _recording(ns: argparse.Namespace) -> S.RecordingExport:
    return S.RecordingExport(name=ns.name, options=list(ns.option or []), split=ns.split, trials=ns.trials or 0,
                             board=ns.board, out=ns.out, isi=ns.isi, isi_jitter=ns.isi_jitter, seed=ns.seed)


def check_reads_back(stage: str, argv: list[str], call: S.Call) -> None:
    """``eegsine ARGV``, parsed by the command's own parser and turned into its library call's arguments the way
    the command does it, gives the stage's call."""
    ns = parse(argv)
    command = (ns.command, getattr(ns, "what", None) if ns.command == "train" else None)
    if stage == "data":
        want = ("fetch", call.kwargs["name"]) if call.kwargs else ("list", None)
        assert (ns.action, getattr(ns, "name", None)) == want
        return
    expected = {
        ("train", "classifier"): lambda: {"heads": train_classifier.heads_from_args(ns), "init_probe": ns.init_probe},
        ("train", "encoder"): lambda: train_encoder.kwargs_from_args(ns),
        ("train", "diffusion"): lambda: train_diffusion.kwargs_from_args(ns),
        ("train", "domain-net"): lambda: train_domain.kwargs_from_args(ns),
        ("attack", None): lambda: attack.kwargs_from_args(ns),
        ("generate", None): lambda: {"cfg": generate.config_from_ns(ns)},
        ("export", None): lambda: export.kwargs_from_args(ns),
        ("data", None): lambda: {"job": _recording(ns)},
        ("stream", None): lambda: {"cfg": stream.config_from_ns(ns)},
        ("bench", None): lambda: bench.kwargs_from_args(ns),
        ("report", None): lambda: {"root": ns.run, "cfg": call.kwargs["cfg"]},
    }[command]()
    assert expected == call.kwargs, f"{stage}: {argv}"


def _pipelines(tmp: Path) -> dict[str, PipelineConfig]:
    return {
        "tiny": PipelineConfig(out=str(tmp / "tiny"), threads=1),
        "tiny+stage-args": PipelineConfig(out=str(tmp / "t2"), threads=1, stage_args=[
            "classifier=--epochs 1 --model-omega 2.5", "robustness=--n-eval 50 --eps 0.1 0.3",
            "encoder=--epochs 2 --no-controls",
            "diffusion=--epochs 1 --model-sample-steps 2", "generation=--max-trials 8 --steps 2",
            "export=--calib-trials 4 --quant-target x86-vnni", "verify=--verify-n-eval 8", "stream=--speed 50",
            "bench=--iters 2 --max-seconds 1.5"]),
        "paper": PipelineConfig(preset="paper", out=str(tmp / "paper"), threads=1, eeg="/d/eeg.pth",
                                splits="/d/splits.pth", images_root="/d/img", pretrained="/d/sd", clip="/d/clip",
                                stages=[s for s in STAGE_NAMES if s not in ("data", "classifier", "robustness")]),
        "paper-classifier": PipelineConfig(preset="paper", out=str(tmp / "p2"), threads=1,
                                           stages=["data", "classifier", "robustness"]),
    }


@pytest.mark.parametrize("which", ["tiny", "tiny+stage-args", "paper", "paper-classifier"])
def test_every_stage_command_line_reads_back_to_its_configs(which, tmp_path):
    cfg = _pipelines(tmp_path)[which]
    ctx = Context(cfg, None)
    seen = set()
    for stage in [s for s in STAGE_NAMES if s in cfg.stages]:
        calls = S.PLANS[stage](ctx)
        assert calls and S.STAGES[stage].command(ctx) == "\n".join(c.command for c in calls)
        for call in calls:
            check_reads_back(stage, call.argv, call)
        seen.add(stage)
    assert seen == set(cfg.stages)


def test_stage_args_land_in_the_configs_and_the_command_line(tmp_path):
    ctx = Context(_pipelines(tmp_path)["tiny+stage-args"], None)
    (clf,) = S.PLANS["classifier"](ctx)
    for head, (run, c) in clf.kwargs["heads"].items():
        preset = PRESETS["classifier"]["tiny"][head]
        assert run == tmp_path / "t2" / "classifier" / head
        assert c == preset.replace(epochs=1, threads=1, model=preset.model.replace(omega=2.5))
    assert clf.argv[-4:] == ["--model-omega", "2.5", "--epochs", "1"]  # in field order
    (enc,) = S.PLANS["encoder"](ctx)
    assert enc.kwargs["cfg"] == PRESETS["encoder"]["tiny"].replace(epochs=2, controls=False)
    (exp,) = S.PLANS["export"](ctx)
    assert exp.kwargs["cfg"].quant.target == "x86-vnni" and exp.kwargs["cfg"].calib_trials == 4
    (ben,) = S.PLANS["bench"](ctx)
    assert (ben.kwargs["cfg"].iters, ben.kwargs["cfg"].max_seconds, ben.kwargs["cfg"].threads) == (2, 1.5, 1)
    # the tiny preset's own bench budget and replay speed without them
    tiny, preset = Context(_pipelines(tmp_path)["tiny"], None), PIPELINE_PRESETS["tiny"]
    (ben,) = S.PLANS["bench"](tiny)
    assert (ben.kwargs["cfg"].iters, ben.kwargs["cfg"].max_seconds) == (preset.bench_iters, preset.bench_max_seconds)
    assert "torch-compile" not in ben.kwargs["cfg"].backends
    _, strm = S.PLANS["stream"](tiny)
    assert strm.kwargs["cfg"].speed == preset.stream_speed != StreamConfig().speed


def test_a_stage_arg_no_config_has_is_refused_by_name(tmp_path):
    cfg = PipelineConfig(out=str(tmp_path), threads=1, stage_args=["encoder=--epochz 2"])
    with pytest.raises(UserError, match="--stage-args encoder: --epochz 2: not a flag of EncoderTrainConfig"):
        S.main_commands(cfg)


def test_the_paper_path_runs_on_the_users_files(tmp_path):
    ctx = Context(_pipelines(tmp_path)["paper"], None)
    (enc,) = S.PLANS["encoder"](ctx)
    c = enc.kwargs["cfg"]
    assert c.data == "eegcvpr40" and c.image_encoder.source == "hf" and c.image_encoder.hf_path == "/d/clip"
    assert c.data_options == ["eeg_file=/d/eeg.pth", "splits_file=/d/splits.pth", "images_root=/d/img",
                              "image_size=64"]
    (dif,) = S.PLANS["diffusion"](ctx)
    assert dif.kwargs["cfg"].model.pretrained_unet == "/d/sd/unet"
    assert dif.kwargs["cfg"].encoder_run == str(tmp_path / "paper" / "encoder")
    rec, strm = S.PLANS["stream"](ctx)
    assert rec.kwargs["job"].out.endswith("recording.fif") and strm.kwargs["cfg"].source.startswith("file:")
    (exp,) = S.PLANS["export"](ctx)
    assert exp.kwargs["classifier"] is None  # an EEG-only run exports no classifier


def test_loader_options_read_json_values_else_strings():
    assert S.loader_options(["n_chans=32", "snr=0.4", "image_set=mnist", "eeg_file=/a b"]) == {
        "n_chans": 32, "snr": 0.4, "image_set": "mnist", "eeg_file": "/a b"}


def test_record_fields_match_the_data_command_defaults():
    ns = PARSER.parse_args(["data", "export-recording", "synthetic-vep", "--out", "x.csv"])
    assert _recording(ns) == S.RecordingExport(out="x.csv")
    assert [f.name for f in dataclasses.fields(S.RecordingExport)]  # typed, like every stage's config
