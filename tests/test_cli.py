"""The `eegsine` command: help everywhere, one-line errors with exit code 2, --debug tracebacks."""
from __future__ import annotations

import subprocess
import sys

import pytest

from eegsine.commands.main import build_parser, main


def _all_parsers(parser, prefix=()):
    yield prefix, parser
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, prefix + (name,))


def test_help_everywhere(capsys):
    commands = list(_all_parsers(build_parser()))
    assert {c for c, _ in commands} >= {(), ("data",), ("env",), ("train",)}
    for cmd, _ in commands:
        with pytest.raises(SystemExit) as info:
            main([*cmd, "--help"])
        assert info.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_data_list_and_info(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist", "fashion-mnist", "digits", "cifar10"):
        assert name in out
    assert main(["data", "info", "digits"]) == 0
    out = capsys.readouterr().out
    assert "images     1437 train / 360 test, shape (1, 8, 8)" in out and "classes    10: 0, 1, 2" in out
    assert "digits options (-o KEY=VALUE):\n  root str | None = null" in out and "  seed int = 0  " in out


@pytest.mark.parametrize("argv, message", [
    (["data", "info", "cifar10", "--root", "/nonexistent/cifar"], "/nonexistent/cifar does not exist"),
    (["data", "info", "mnist", "--root", "/nonexistent/mnist"], "/nonexistent/mnist/train-images-idx3-ubyte missing"),
    (["data", "info", "imagenet"], "unknown data set 'imagenet'"),
])
def test_bad_input_one_line_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("action", ["info", "fetch"])
def test_data_action_without_a_name_is_argparse_usage(capsys, action):
    """NAME is a required argument of the action's own parser: usage and "required", exit 2."""
    with pytest.raises(SystemExit) as info:
        main(["data", action])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: eegsine data {action} ") and "the following arguments are required: NAME" in err


def test_debug_shows_traceback():
    proc = subprocess.run([sys.executable, "-m", "eegsine", "--debug", "data", "info", "imagenet"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "UserError" in proc.stderr


def test_env_reports_accelerators(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for key in ("torch", "cuda", "tensorrt", "triton", "onnxruntime_providers", "torch_threads"):
        assert key in out


def test_console_script_aliases(capsys):
    """`eegsine-export ARGS` is `eegsine export ARGS`; `eegsine-bench ARGS` is `eegsine bench ARGS`."""
    from eegsine.commands.main import bench_main, export_main

    for alias, word in ((export_main, "--verify-only"), (bench_main, "--pipeline")):
        with pytest.raises(SystemExit) as info:
            alias(["--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert word in out
        assert out.startswith(f"usage: eegsine-{alias.__name__.split('_')[0]} [")  # not "eegsine-bench bench"
    assert export_main(["--out", "/nonexistent/bundle"]) == 2
    assert "give --classifier RUN and/or --eeg-run RUN" in capsys.readouterr().err


@pytest.mark.parametrize("entry, argv, message", [
    ("main", ["data", "info", "imagenet"], "unknown data set 'imagenet'"),
    ("export_main", ["--out", "/nonexistent/bundle"], "give --classifier RUN and/or --eeg-run RUN"),
    ("bench_main", ["--bundle", "/nonexistent/bundle"], "/nonexistent/bundle"),
    ("verify", ["/nonexistent/bundle"], "/nonexistent/bundle"),
])
def test_threads_is_taken_by_every_entry_point(capsys, monkeypatch, entry, argv, message):
    """`--threads N` before the command's own arguments, as every usage line shows it: parsed, applied, and the
    command then fails on its bad input (one line, exit 2), not on the flag."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # restored after: the flag sets it for the command's subprocesses
    torch.set_num_threads(2)  # so that "applied" is seen whatever the host's OMP_NUM_THREADS was

    import eegsine.commands.main as cli
    from eegsine.commands.verify import main as verify_main

    fn = verify_main if entry == "verify" else getattr(cli, entry)
    try:
        assert fn(["--threads", "1", *argv]) == 2
        if entry != "verify":  # eegsine-verify's --threads is ONNX Runtime's (the device has no torch)
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    err = capsys.readouterr().err
    assert message in err and "unrecognized" not in err and err.count("\n") == 1, err
