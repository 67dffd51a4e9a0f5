"""`--help` is the documentation of record: every flag explained, readable placeholders, no torch to print it."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

import eegsine
from eegsine.commands.main import bench_main, build_parser, export_main, main

SPHINX = re.compile(r":(class|func|mod|meth|attr|data|exc|obj):`|``")


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


COMMANDS = list(_parsers(build_parser()))


def _where(path: tuple[str, ...], action: argparse.Action) -> str:
    return f"eegsine {' '.join(path)} {'/'.join(action.option_strings) or action.dest}".replace("  ", " ")


def test_every_subcommand_is_walked():
    names = {p for p, _ in COMMANDS}
    assert {(), ("data",), ("verify",), ("train", "classifier"), ("train", "encoder"), ("train", "diffusion"),
            ("attack",), ("export",), ("bench",), ("pipeline",), ("generate",), ("report",)} <= names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "eegsine")
def test_every_flag_has_help_and_a_readable_metavar(path):
    parser = dict(COMMANDS)[path]
    formatter = parser._get_formatter()
    missing, internal = [], []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            missing += [f"eegsine {' '.join(path + (a.dest,))}" for a in action._choices_actions if not a.help]
            continue
        text = action.help or ""
        if text == argparse.SUPPRESS and _listed_twin(parser, action):
            continue  # a deprecated alias, accepted but unlisted: its twin is documented
        # a config field without metadata help still gets "(default: ...)": that is not an explanation
        if text == argparse.SUPPRESS or not text.strip() or text.lstrip().startswith("(default"):
            missing.append(_where(path, action))
        if action.option_strings and action.nargs != 0:
            shown = formatter._format_args(action, formatter._get_default_metavar_for_optional(action))
            if "_" in re.sub(r"\{[^}]*\}", "", shown):  # MODEL__NUM_TRAIN_TIMESTEPS: argparse's dest, not a word
                internal.append(f"{_where(path, action)} {shown}")
    assert not missing, "flags without help:\n" + "\n".join(missing)
    assert not internal, "internal metavars:\n" + "\n".join(internal)


def _listed_twin(parser: argparse.ArgumentParser, action: argparse.Action) -> bool:
    return any(a is not action and a.dest == action.dest and a.help != argparse.SUPPRESS for a in parser._actions)


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "eegsine")
def test_one_listed_flag_per_setting_and_one_default_per_flag(path):
    """`--target` and `--quant-target` both listed for one setting, or "(default: x) (default: '')", trip readers."""
    parser = dict(COMMANDS)[path]
    listed = [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]
    dests = [a.dest for a in listed if a.dest != "help"]
    assert len(dests) == len(set(dests)), f"eegsine {' '.join(path)}: several listed flags set one setting: " + \
        str(sorted({d for d in dests if dests.count(d) > 1}))
    twice = [_where(path, a) for a in listed if (a.help or "").count("(default") > 1]
    assert not twice, "help states its default twice:\n" + "\n".join(twice)


def test_required_arguments_are_shown_as_required(capsys):
    """`eegsine stream` cannot run without a source and a bundle: the usage line says so, not "(default: '')"."""
    parser = dict(COMMANDS)[("stream",)]
    required = {a.dest for a in parser._actions if a.required}
    assert {"source", "bundle"} <= required
    usage = parser.format_usage()
    assert "--source STR --bundle STR" in usage and "[--source" not in usage
    for a in parser._actions:
        if a.dest in ("source", "bundle"):
            assert "(default" not in a.help
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--bundle", "b"])
    assert e.value.code == 2 and "required: --source" in capsys.readouterr().err


def test_deprecated_alias_still_sets_the_setting():
    """`--quant-target` is unlisted in favour of `--target` but an old command line keeps working."""
    ns = build_parser().parse_args(["export", "--out", "b", "--quant-target", "tensorrt", "--quant-act-type", "u8"])
    assert (ns.quant__target, ns.quant__act_type) == ("tensorrt", "u8")


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "eegsine")
def test_help_has_no_sphinx_markup(path):
    text = dict(COMMANDS)[path].format_help()
    assert not SPHINX.search(text), f"eegsine {' '.join(path)} --help: {SPHINX.search(text).group(0)!r} in\n{text}"


def test_verify_script_help_has_no_sphinx_markup(capsys):
    from eegsine.commands.verify import main as verify_main

    with pytest.raises(SystemExit):
        verify_main(["--help"])
    assert not SPHINX.search(capsys.readouterr().out)


@pytest.mark.parametrize("entry, prog", [(main, "eegsine"), (export_main, "eegsine-export"),
                                         (bench_main, "eegsine-bench")])
def test_version(entry, prog, capsys):
    with pytest.raises(SystemExit) as info:
        entry(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} {eegsine.__version__}"


@pytest.mark.parametrize("argv", [[], ["train", "classifier"], ["export"], ["attack"], ["bench"], ["pipeline"]],
                         ids=lambda a: " ".join(a) or "eegsine")
def test_help_imports_no_torch(argv):
    """Printing help builds every parser from the config dataclasses alone (timings: the closing report)."""
    code = ("import sys\nfrom eegsine.commands.main import main\n"
            "try:\n    main(sys.argv[1:] + ['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'torchattacks', 'onnxruntime', 'diffusers') if m in sys.modules)\n"
            "assert not heavy, f'--help imported {heavy}'\n")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


def _script_modules() -> list[str]:
    """Every ``python -m eegsine...`` script outside the command line: a module with a ``__main__`` guard."""
    import import_graph

    return sorted(m for m, f in import_graph.modules().items()
                  if not m.startswith("eegsine.commands") and m != "eegsine.__main__"
                  and 'if __name__ == "__main__"' in f.read_text())


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__()
        self.parser = parser


def test_the_scripts_are_found():
    assert {"eegsine.bench.experiments.paired_eval", "eegsine.bench.experiments.uea_table",
            "eegsine.bench.report.results", "eegsine.bench.speed.kernels"} <= set(_script_modules())


@pytest.mark.parametrize("module", _script_modules())
def test_every_script_flag_has_help(module, monkeypatch):
    """The experiment and report scripts (``python -m eegsine.bench...``) explain every flag, as the commands do."""
    import importlib

    def capture(self, *a, **k):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(_Parsed) as got:
        importlib.import_module(module).main([])
    missing = []
    for path, parser in _parsers(got.value.parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{module} {' '.join(path + (a.dest,))}" for a in action._choices_actions if not a.help]
            elif not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{module} {' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "flags without help:\n" + "\n".join(missing)


BLOCKED_TOOLKIT = ("import sys, importlib.abc\n"
                   "BLOCK = {'torch', 'torchvision', 'diffusers', 'transformers', 'accelerate', 'safetensors',\n"
                   "         'matplotlib', 'scipy'}\n"
                   "class Block(importlib.abc.MetaPathFinder):\n"
                   "    def find_spec(self, name, path=None, target=None):\n"
                   "        if name.split('.')[0] in BLOCK:\n"
                   "            raise ImportError(f'{name} is not installed', name=name)\n"
                   "sys.meta_path.insert(0, Block())\n"
                   "from eegsine.commands.main import main\n"
                   "sys.exit(main(sys.argv[1:]))\n")


def _without_toolkit(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-P", "-c", BLOCKED_TOOLKIT, *argv], capture_output=True, text=True,
                          timeout=120)


def test_a_device_install_lists_only_what_it_can_run():
    """Without torch (`pip install ".[runtime]"`), `eegsine --help` lists data, env, verify and stream, and names
    the toolkit's commands apart with the install line; calling one is one line naming the extra, exit 2."""
    from eegsine.commands.main import TOOLKIT_COMMANDS

    done = _without_toolkit("--help")
    assert done.returncode == 0, done.stderr
    listed = re.findall(r"^    (\w+) ", done.stdout, re.M)
    assert listed == ["data", "env", "verify", "stream"], done.stdout
    assert "Not installed here" in done.stdout and '".[cpu]"' in done.stdout
    for name in TOOLKIT_COMMANDS:
        assert name in done.stdout.split("Not installed here", 1)[1]
    for argv in (["train", "classifier", "--run", "x"], ["attack", "--run", "x"], ["export", "--out", "b"]):
        run = _without_toolkit(*argv)
        assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
        assert f"`eegsine {argv[0]}` needs the toolkit" in run.stderr and '".[cpu]"' in run.stderr
    assert _without_toolkit("verify", "--help").returncode == 0


DEVICE_INSTALL = BLOCKED_TOOLKIT.replace("'matplotlib', 'scipy'}", "'matplotlib', 'scipy', 'sklearn', 'mne', 'tqdm',\n"
                                         "         'threadpoolctl'}")


def test_a_device_install_lists_only_the_data_sets_it_can_load():
    """`pip install ".[runtime]"` has no scikit-learn, scipy, MNE or tqdm: `data list` marks the data sets whose
    loaders import them unavailable, naming the packages and the install line, and `data info` on one is that line
    (exit 2) instead of an ImportError deep in the loader."""
    assert "'sklearn', 'mne'" in DEVICE_INSTALL  # the replacement above took
    done = subprocess.run([sys.executable, "-P", "-c", DEVICE_INSTALL, "data", "list"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    status = dict(re.findall(r"^(\S+)\s+(?:image|eeg)\s+(.*)$", done.stdout, re.M))
    for name in ("digits", "synthetic-vep", "uea", "raw", "eegcvpr40"):
        assert status[name].startswith("unavailable (needs "), (name, status[name])
        assert '".[cpu]"' in status[name], status[name]
    assert "scikit-learn" in status["digits"] and "MNE-Python" in status["synthetic-vep"]
    assert not status["mnist"].startswith("unavailable") and not status["cifar10"].startswith("unavailable")
    for argv in (["data", "info", "digits"], ["data", "info", "synthetic-vep", "-o", "image_set=digits"]):
        run = subprocess.run([sys.executable, "-P", "-c", DEVICE_INSTALL, *argv], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
        assert f"{argv[2]}: needs scikit-learn" in run.stderr and '".[cpu]"' in run.stderr, run.stderr

