"""The README's and docs/*.md's fenced shell commands hold: every one is checked, those that run offline are run.

* ``make T``: T is a Makefile target.
* ``pip install ...``: the files it names exist, its extras are pyproject's, its pins are the lock's, its index is
  the Makefile's CPU index (``tests/test_lock.py`` resolves the ``-c requirements.lock`` installs for real).
* ``eegsine``, ``eegsine-export``, ``eegsine-bench``, ``eegsine-verify`` (bare or under ``.venv/bin/``): parsed by
  the command's own parser (placeholders in capitals stand for paths; ``[opt]`` is optional, ``a|b`` picks one),
  and those that read nothing but the installed package run, exit 0.
* ``accelerate launch [its options] -m eegsine ARGS``: the options are ones this page may use, ARGS parse as above.
* ``python -m eegsine.MODULE ...``: the module exists (also checked for every page by
  :func:`test_every_python_m_module_in_the_docs_exists`).
* venv/activate/clone/cd lines are setup; any other program fails the test until a rule for it is added here.
"""
from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from eegsine.commands.main import command_parser, main

ROOT = Path(__file__).resolve().parents[1]
ALIASES = {"eegsine": [], "eegsine-export": ["export"], "eegsine-bench": ["bench"]}
SETUP = {"python3.11", "python3", ".", "source", "git", "cd"}
RUN_OFFLINE = [["env"], ["data", "list"], ["data", "info", "synthetic-vep"]]  # read only the installed package


def fenced_commands(path: Path | str) -> list[str]:
    """Every command of the file's (or markdown text's) bash/sh code blocks: continuations joined, comments dropped,
    split at && and ;."""
    out, block = [], None
    text = path.read_text() if isinstance(path, Path) else path
    for line in text.splitlines():
        if line.startswith("```"):
            if block is None:
                block = [] if line[3:].strip() in ("bash", "sh", "shell", "console") else None
                if block is None and line[3:].strip():  # another language: skip to its closing fence
                    block = False
            else:
                if block:
                    for logical in "\n".join(block).replace("\\\n", " ").splitlines():
                        toks = shlex.split(logical, comments=True)
                        cmd: list[str] = []
                        for t in toks + ["&&"]:
                            if t in ("&&", ";"):
                                if cmd:
                                    out.append(shlex.join(cmd))
                                cmd = []
                            else:
                                cmd.append(t)
                block = None
            continue
        if block is not None and block is not False:
            block.append(line)
    return out


def concrete(argv: list[str]) -> list[str]:
    """README notation to argv: ``[a b]`` is kept (optional parts are shown, so they must parse too), ``a|b`` keeps
    ``a``, ``...`` is dropped."""
    text = re.sub(r"\[([^\[\]]*)\]", lambda m: m.group(1).split("|")[0].strip(), shlex.join(argv).replace("'", ""))
    toks = [t.split("|")[0] for t in shlex.split(text) if t != "..."]
    return toks


def _parse(prog: str, argv: list[str]) -> argparse.Namespace:
    if prog == "eegsine-verify":
        from eegsine.commands.verify import add_arguments

        p = argparse.ArgumentParser(prog=prog)
        p.add_argument("--debug", action="store_true")
        add_arguments(p)
        return p.parse_args(argv)
    prepend = ALIASES[prog]
    return command_parser(prog, prepend).parse_args(prepend + argv)


# README.md and the hand-written pages under docs/ (the results folders hold records of past runs)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = list(dict.fromkeys(c for page in PAGES for c in fenced_commands(page)))


def test_the_readme_has_the_commands_this_test_knows():
    progs = {shlex.split(c)[0].removeprefix(".venv/bin/") for c in COMMANDS}
    assert {"make", "pip", "eegsine", "eegsine-export", "eegsine-bench", "eegsine-verify"} <= progs
    assert len(COMMANDS) > 30
    assert not progs - {"make", "pip", *ALIASES, "eegsine-verify", "accelerate", "python", *SETUP}, \
        "add a rule for these programs"


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command(command, capsys):
    argv = shlex.split(command)
    prog = argv[0].removeprefix(".venv/bin/")
    args = concrete(argv[1:])
    if prog in SETUP:
        return
    if prog == "make":
        targets = set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
        assert set(args) <= targets, f"{command}: no such make target"
        return
    if prog == "pip":
        _check_pip(command, argv[1:])  # as written: ".[cpu]" is an extra, not README notation
        return
    if prog == "python":
        import importlib.util

        assert args[0] == "-m" and importlib.util.find_spec(args[1]) is not None, command
        return
    if prog == "accelerate":
        prog, args = _accelerate_launch(command, args)
    try:
        ns = _parse(prog, args)
    except SystemExit as e:  # argparse's error, already printed
        pytest.fail(f"{command}: {prog} does not accept it (exit {e.code}): {capsys.readouterr().err.strip()}")
    assert getattr(ns, "func", None) is not None or prog == "eegsine-verify", command
    if prog == "eegsine" and args in RUN_OFFLINE:
        from eegsine.data import REGISTRY

        if args[-1] == "synthetic-vep" and not REGISTRY["mnist"].available():  # `make test` fetches it first
            pytest.skip("synthetic-vep pairs with MNIST, not fetched (run `eegsine data fetch mnist`)")
        assert main(args) == 0, command


ACCELERATE_OPTIONS = {"--num_processes": 1, "--cpu": 0, "--multi_gpu": 0, "--mixed_precision": 1}


def _accelerate_launch(command: str, args: list[str]) -> tuple[str, list[str]]:
    """``accelerate launch [options] -m eegsine ARGS`` -> ("eegsine", ARGS), its options checked."""
    assert args[0] == "launch", command
    i = 1
    while args[i] != "-m":
        assert args[i] in ACCELERATE_OPTIONS, f"{command}: unchecked accelerate option {args[i]}"
        i += 1 + ACCELERATE_OPTIONS[args[i]]
    assert args[i + 1] == "eegsine", command
    return "eegsine", args[i + 2:]


def _check_pip(command: str, args: list[str]) -> None:
    from test_lock import LOCK, canon, read_pins

    assert args[0] == "install", command
    lock = read_pins(LOCK)
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    torch_index = re.search(r"^TORCH_INDEX \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    it = iter(args[1:])
    for a in it:
        if a in ("-c", "-r"):
            assert (ROOT / next(it)).is_file(), command
        elif a == "--index-url":
            assert next(it) == torch_index, command
        elif a.startswith("-"):
            assert a in ("--no-deps", "-q", "--upgrade"), f"{command}: unchecked pip option {a}"
        elif a.startswith("."):
            m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", a)
            assert m, command
            assert set((m.group(1) or "").split(",")) - {""} <= extras, f"{command}: no such extra"
        else:
            name, _, version = a.partition("==")
            assert version, f"{command}: {a} is not pinned"
            name = canon(name)
            assert name in lock, f"{command}: {name} is not in the lock"
            # the GPU line pins PyPI's CUDA torch: the lock's version, another build
            assert version in (lock[name], lock[name].split("+")[0]), f"{command}: {a}, the lock has {lock[name]}"


def _docs() -> list[Path]:
    """README.md and every hand-written page and script under docs/ (generated reports and logs excluded)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "docs").rglob("*.sh"))]
    return [p for p in pages if "records" not in p.parts and p.name not in ("report.md",)]


MODULE = re.compile(r"python3?(?: -P)? -m (eegsine(?:\.[a-z_0-9]+)*)")


def test_every_python_m_module_in_the_docs_exists():
    """A moved module leaves no `python -m eegsine.old_place` behind in a page or a results script."""
    import importlib.util

    used = {(m, p.relative_to(ROOT).as_posix()) for p in _docs() for m in MODULE.findall(p.read_text())}
    assert len({m for m, _ in used}) >= 5, "the pattern no longer finds the docs' module commands"
    missing = sorted(f"{page}: {mod}" for mod, page in used if importlib.util.find_spec(mod) is None)
    assert not missing, "python -m of a module that does not exist:\n" + "\n".join(missing)


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_relative_link_in_the_docs_resolves():
    """README and docs links to files in the repository point at files that exist."""
    broken, seen = [], 0
    for page in _docs():
        if page.suffix != ".md":
            continue
        for target in LINK.findall(page.read_text()):
            seen += 1
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert seen >= 20, "the pattern no longer finds the docs' links"
    assert not broken, "links to missing files:\n" + "\n".join(broken)
