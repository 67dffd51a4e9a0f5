"""Imports point along docs/design.md's layer table only; the torch-free parts stay torch-free."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> (package, eegsine packages it must not import)
RULES = {
    "core": ("eegsine", ("eegsine.training", "eegsine.export", "eegsine.bench")),
    "kernels": ("eegsine.kernels", ("eegsine",)),  # torch and triton only
    "training": ("eegsine.training", ("eegsine.export", "eegsine.bench")),
    "export": ("eegsine.export", ("eegsine.training", "eegsine.bench")),
    "bench": ("eegsine.bench", ()),
}
# A command-line entry point may reach across layers (docs/design.md): `cli.py` and `*_cli.py` are exempt.


def _is_cli(path: Path) -> bool:
    return path.name == "cli.py" or path.name.endswith("_cli.py")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_top_level_layout():
    for name in ("pyproject.toml", "README.md", "Makefile", "core", "kernels", "export", "training", "bench", "tests",
                 ".ci/run"):
        assert (ROOT / name).exists(), name


@pytest.mark.parametrize("folder", sorted(RULES))
def test_imports_point_down(folder):
    _, forbidden = RULES[folder]
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if _is_cli(path):
            continue
        for mod in _imports(path):
            if folder == "kernels" and mod.startswith("eegsine") and not mod.startswith("eegsine.kernels"):
                bad.append(f"{rel}: {mod}")
            elif folder != "kernels" and any(mod == f or mod.startswith(f + ".") for f in forbidden):
                bad.append(f"{rel}: {mod}")
    assert not bad, "imports pointing up the layer table:\n" + "\n".join(bad)


def test_package_import_does_not_import_torch():
    code = ("import sys, eegsine, eegsine.errors, eegsine.io, eegsine.config; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_io_has_no_torch_import_even_lazily():
    # issue #13: the safetensors weight helpers live in eegsine.checkpoint, so io.py (which the runtime
    # and eegsine-verify import on a torch-free device) has no torch import at all, not even inside a function
    heavy = [m for m in _imports(ROOT / "core" / "io.py") if m.split(".")[0] in ("torch", "safetensors")]
    assert not heavy, f"core/io.py imports {heavy}"
