"""The wheel a researcher installs: built from this tree, run in a fresh venv with numpy + onnxruntime and no torch.

The venv lives in a pytest tmp dir; pip reads its usual indexes. The wheel goes in ``--no-deps``:
its toolkit extras would pull a torch (and a CUDA one where the index offers it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import eegsine
import export_helpers as h

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_PINS = [line for line in (ROOT / "requirements.lock").read_text().splitlines()
                if line.split("==")[0] in ("numpy", "onnxruntime")]  # the lock's, as `make` installs them


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": "", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel (--no-deps), numpy and onnxruntime: the device install."""
    tmp = tmp_path_factory.mktemp("packaging")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
          str(ROOT)], cwd=tmp)  # from outside the tree: the wheel, not the checkout, is what gets imported
    (wheel,) = (tmp / "dist").glob("eegsine-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel), *RUNTIME_PINS])
    return venv


def test_runtime_install_has_no_torch_and_one_version(runtime_venv):
    code = ("import importlib.metadata, importlib.util, json, sys\n"
            "import eegsine, eegsine.runtime\n"
            "print(json.dumps({'version': eegsine.__version__, 'dist': importlib.metadata.version('eegsine'),"
            " 'file': eegsine.__file__, 'torch': importlib.util.find_spec('torch') is not None,"
            " 'typed': (importlib.util.find_spec('eegsine').submodule_search_locations[0] + '/py.typed'),"
            " 'license': [str(f) for f in importlib.metadata.files('eegsine') if 'LICENSE' in str(f)]}))\n")
    info = json.loads(_run([str(runtime_venv / "bin" / "python"), "-c", code], cwd=runtime_venv).stdout)
    assert not info["torch"], "torch is importable in the runtime venv"
    assert str(runtime_venv) in info["file"]  # the installed wheel, not this checkout
    assert info["version"] == info["dist"] == eegsine.__version__
    assert Path(info["typed"]).exists() and info["license"]


def test_runtime_install_verifies_and_runs_a_bundle(runtime_venv, tmp_path):
    bundle = h.copy_bundle(h.clf_bundle(), tmp_path / "bundle")  # built here, with torch; run there, without
    bin_ = runtime_venv / "bin"
    out = _run([str(bin_ / "eegsine-verify"), str(bundle), "--threads", "1"], cwd=tmp_path).stdout
    assert "overall: PASSED" in out  # exit code 0 too (checked by _run)
    code = ("import sys, numpy as np\n"
            "from eegsine.runtime import SineClassifier\n"
            "x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)\n"
            "labels = SineClassifier(sys.argv[1], 'int8').predict(x)\n"
            "assert labels.shape == (5,), labels.shape\n"
            "assert 'torch' not in sys.modules\n")
    _run([str(bin_ / "python"), "-c", code, str(bundle)], cwd=tmp_path)
    help_ = _run([str(bin_ / "eegsine"), "--help"], cwd=tmp_path).stdout  # the toolkit's help, without the toolkit
    assert "train" in help_ and "export" in help_
    proc = subprocess.run([str(bin_ / "eegsine"), "train", "classifier", "--run", str(tmp_path / "r"),
                           "--dataset", "digits"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    # one line, not a traceback
    assert proc.returncode == 2 and 'pip install ".[cpu]"' in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
