"""No shadowing: run from the checkout's root, the top-level ``kernels/`` folder never stands in for a package of
that name (Hugging Face's ``kernels``, which transformers >= 5 imports on diffusers' PEFT path).

Each command runs in a subprocess with the repository root as working directory and *without* the Makefile's
``PYTHONSAFEPATH``, i.e. with the root first on ``sys.path`` as ``python -m``/``-c`` put it there.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def stub_site(tmp_path_factory) -> Path:
    """A site folder holding a package named ``kernels`` (whatever the venv has)."""
    site = tmp_path_factory.mktemp("site")
    (site / "kernels").mkdir()
    (site / "kernels" / "__init__.py").write_text("STUB = 'the installed kernels package'\n")
    return site


def test_a_folder_found_as_a_top_level_package_hands_off(stub_site, tmp_path):
    """The hazard is real (the root is first on sys.path, so Python finds the checkout's folder first); the folder
    then puts the installed package in its place, with no eegsine import before it; with none installed the
    import fails as it does outside the checkout."""
    code = ("import sys, os\n"
            "assert os.path.realpath(sys.path[0] or '.') == os.getcwd(), sys.path[:2]\n"
            "import kernels\n"
            "print(kernels.STUB)\n")
    assert "installed kernels" in _run(["-c", code], _env(PYTHONPATH=str(stub_site))).stdout
    for name in ("training", "export", "bench", "core"):
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, env=_env(), capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 1 and f"No module named '{name}'" in proc.stderr, proc.stderr[-2000:]


def test_import_eegsine_takes_the_root_off_sys_path(stub_site):
    code = ("import eegsine, kernels, sys, os\n"
            "print(kernels.STUB)\n"
            "assert not [p for p in sys.path if os.path.realpath(p or '.') == os.getcwd()], sys.path\n")
    assert "installed kernels" in _run(["-c", code], _env(PYTHONPATH=str(stub_site))).stdout


def test_python_m_eegsine_and_a_bench_entry_point_run_from_the_root(stub_site):
    env = _env(PYTHONPATH=str(stub_site))
    assert "usage: eegsine" in _run(["-m", "eegsine", "--help"], env).stdout
    assert "snapshot" in _run(["-m", "eegsine.bench.report.results", "--help"], env).stdout


def test_diffusers_peft_path_imports_from_the_root():
    """The crash that was seen: diffusers -> transformers -> ``from kernels import CUDAProperties``."""
    code = ("import eegsine, kernels, diffusers.loaders.peft, os\n"
            "print(os.path.realpath(kernels.__file__))\n")
    out = _run(["-c", code], _env()).stdout
    assert not Path(out.strip().splitlines()[-1]).is_relative_to(ROOT / "kernels")
    # the Makefile's way: PYTHONSAFEPATH, without eegsine imported first
    _run(["-c", "import diffusers.loaders.peft"], _env(PYTHONSAFEPATH="1"))
    # and a user's: plain Python from the root, nothing imported before diffusers
    _run(["-c", "from diffusers import AutoencoderKL"], _env())


def test_pytest_collects_the_diffusion_tests_from_the_root():
    out = _run(["-m", "pytest", "-p", "no:cacheprovider", "--co", "-q", "tests/test_diffusion.py"], _env()).stdout
    assert "error" not in out.lower() and "tests/test_diffusion.py::" in out
