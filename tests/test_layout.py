"""The floor plan, stated as rules and checked on the source (:mod:`import_graph`, nothing imported) and once
for real (a subprocess that blocks torch).

* One folder per concern. ``core/`` (the ``eegsine`` package) holds only its base modules flat; ``bench/``
  none. Every other module lives in a concern folder (``docs/design.md``, "Folder map").
* Layers. A folder imports only folders of a lower layer (module level and inside functions alike); the
  base (config, io, errors, locks) imports none. ``eegsine.commands`` is the top: the only folder that may
  import every layer.
* ``eegsine.runtime`` (the device wing), ``eegsine.commands`` and the base import no torch, nor any
  third-party package other than numpy, at module level: ``pip install ".[runtime]"`` and ``--help`` stay light.
* No import cycle, counting imports inside functions.
* An import of an eegsine module inside a function is there to avoid loading a package (torch, diffusers,
  matplotlib, ...) at the importer's import time: one that loads nothing new is written at module level.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

import import_graph as G

BASE = {"eegsine", "eegsine.config", "eegsine.io", "eegsine.errors", "eegsine.locks", "eegsine.progress",
        "eegsine.stats"}
# folder -> layer; a folder imports only folders of a lower layer (and the base, layer 0)
LAYERS = {
    "base": 0,
    "eegsine.runtime": 1, "eegsine.runs": 1, "eegsine.attacks": 1, "eegsine.kernels": 1, "eegsine.bench.report": 1,
    "eegsine.bench": 1,  # the package itself: a docstring
    "eegsine.data": 2,
    "eegsine.models": 3,
    "eegsine.metrics": 4,
    "eegsine.training": 5,
    "eegsine.export": 6,
    "eegsine.bench.robustness": 7, "eegsine.bench.speed": 7,
    "eegsine.bench.experiments": 8, "eegsine.bench.pipeline": 8,
    "eegsine.commands": 9,
}
# arrows against the layers, each with its reason (none: the pipeline's stages build configs and call the library;
# the command lines they show are rendered from those configs)
ALLOWED_UP: set[tuple[str, str]] = set()
LIGHT_FOLDERS = ("eegsine.runtime", "eegsine.commands")


def folder(mod: str) -> str:
    if mod in BASE:
        return "base"
    if mod == "eegsine.__main__":
        return "eegsine.commands"  # `python -m eegsine` is the command line
    parts = mod.split(".")
    n = 3 if parts[1] == "bench" and len(parts) > 2 else 2
    return ".".join(parts[:n])


@pytest.fixture(scope="module")
def graph() -> G.Graph:
    return G.build()


def test_every_module_lives_in_a_concern_folder(graph):
    flat = sorted(m for m in graph.files if folder(m) not in LAYERS)
    assert not flat, f"modules outside the folder map (add a folder to LAYERS and docs/design.md, or move them): {flat}"
    core_flat = sorted(f.name for m, f in graph.files.items() if f.parent == G.ROOT / "core")
    assert core_flat == ["__init__.py", "__main__.py", "config.py", "errors.py", "io.py", "locks.py",
                         "progress.py", "stats.py"], core_flat
    assert sorted(f.name for f in (G.ROOT / "bench").glob("*.py")) == ["__init__.py"]


def test_imports_go_down_the_layers(graph):
    wrong = []
    for e in graph.edges:
        a, b = folder(e.src), folder(e.dst)
        if a != b and LAYERS[b] >= LAYERS[a] and (a, b) not in ALLOWED_UP:
            wrong.append(f"{graph.files[e.src].relative_to(G.ROOT)}:{e.line}: {a} (layer {LAYERS[a]}) imports "
                         f"{e.dst} ({b}, layer {LAYERS[b]})")
    assert not wrong, "\n".join(wrong)
    used = {(folder(e.src), folder(e.dst)) for e in graph.edges}
    assert ALLOWED_UP <= used, "an allowed exception is gone: remove it from ALLOWED_UP"


def test_no_import_cycle_counting_function_level_imports(graph):
    assert graph.cycles(lazy=True) == []


def test_function_level_imports_of_own_modules_avoid_a_package(graph):
    needless = [f"{graph.files[e.src].relative_to(G.ROOT)}:{e.line}: {e.dst}" for e in graph.needless_lazy()]
    assert not needless, "import these at module level (they load nothing the importer does not):\n" + \
        "\n".join(needless)


@pytest.mark.parametrize("prefix", LIGHT_FOLDERS + ("base",))
def test_light_folders_import_nothing_heavy_at_module_level(graph, prefix):
    mods = [m for m in graph.files if folder(m) == prefix or (prefix != "base" and m.startswith(prefix + "."))]
    assert mods
    heavy = {m: sorted(graph.heavy(m)) for m in mods if graph.heavy(m)}
    assert not heavy, heavy


def test_light_folders_import_for_real_without_torch():
    """The same rule, run: every module of the light folders imported in a process where torch, diffusers
    and matplotlib cannot be imported at all."""
    mods = sorted(m for m in G.build().files if m in BASE or m.startswith(LIGHT_FOLDERS))
    code = ("import sys, importlib, importlib.abc\n"
            "BLOCK = {'torch', 'torchvision', 'diffusers', 'transformers', 'matplotlib', 'scipy', 'mne', 'sklearn'}\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in BLOCK:\n"
            "            raise ImportError(f'{name} is blocked', name=name)\n"
            "sys.meta_path.insert(0, Block())\n"
            f"for m in {mods!r}:\n"
            "    importlib.import_module(m)\n"
            "print(len(sys.modules))\n")
    done = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_graph_reader_sees_what_python_imports(graph):
    """The static reader is the proof of the rules above: it must find the imports a module really makes."""
    top = graph.top("eegsine.runtime.decoders")
    assert {"eegsine.runtime.contracts", "eegsine.runtime.records", "eegsine.errors"} <= top
    lazy = {e.dst for e in graph.edges if e.src == "eegsine.attacks.algorithms" and e.lazy}
    assert "torch" not in lazy  # third-party imports are not edges
    assert "torch" in graph.heavy("eegsine.models.classifier")
    assert graph.heavy("eegsine.runtime.stream") == set()


def test_top_level_layout():
    for name in ("pyproject.toml", "README.md", "Makefile", "core", "kernels", "export", "training", "bench", "tests",
                 ".ci/run"):
        assert (G.ROOT / name).exists(), name


@pytest.mark.parametrize("name", ["io.py", "locks.py", "errors.py", "config.py"])
def test_base_modules_have_no_heavy_import_even_in_a_function(name):
    # issue #13: the safetensors weight helpers live in eegsine.runs.checkpoint, so the base (which the runtime
    # and eegsine-verify import on a torch-free device) imports no torch at all, not even inside a function
    import ast

    tree = ast.parse((G.ROOT / "core" / name).read_text())
    mods = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    mods += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    heavy = [m for m in mods if m.split(".")[0] in ("torch", "safetensors", "diffusers", "matplotlib", "scipy")]
    assert not heavy, f"core/{name} imports {heavy}"


MAX_FUNCTION_LINES = 80


def test_no_function_over_80_lines():
    """No function or method of the library is longer than 80 lines, counted from its ``def`` line to its last
    line (signature, docstring, blank lines and comments included; decorators not): a longer one is split into
    named steps."""
    import ast

    long = []
    for top in ("core", "kernels", "training", "export", "bench"):
        for path in sorted((G.ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(G.ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n" + "\n".join(long)
