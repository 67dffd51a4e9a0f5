"""The locked environment: requirements.lock names every package `make` installs, at the version it installs.

`make install` installs the lock with ``--no-deps``; these tests fail when the venv holds a package or a version the
lock does not name, when the lock and the direct requirements disagree, and when the README's pip installs would
resolve something else than the lock (a CUDA torch, triton, nvidia-* wheels on a CPU user's install).
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")


def canon(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """{normalized name: version} of a requirements file whose every non-comment line is ``name==version``."""
    pins: dict[str, str] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        m = PIN.match(line)
        assert m, f"{path.name}:{i}: not an exact pin: {line!r}"
        name = canon(m.group(1))
        assert name not in pins, f"{path.name}:{i}: {name} pinned twice"
        pins[name] = m.group(2)
    return pins


def public(version: str) -> str:
    return version.split("+")[0]


def test_lock_pins_every_line_exactly_and_holds_the_build_tools():
    lock = read_pins(LOCK)
    assert {"pip", "setuptools", "torch", "numpy", "onnxruntime"} <= set(lock)
    assert lock["torch"].endswith("+cpu"), "the lock is the CPU environment: torch's CPU build"
    assert not [n for n in lock if n.startswith("nvidia-")], "CUDA wheels in the CPU lock"
    assert "eegsine" not in lock


def test_direct_requirements_agree_with_the_lock():
    lock = read_pins(LOCK)
    for req in ("requirements.txt", "requirements-nodeps.txt"):
        for name, version in read_pins(ROOT / req).items():
            assert name in lock, f"{req} pins {name}, the lock does not: run `make lock`"
            # requirements.txt says torch==2.13.0; the lock names the build that matched it (2.13.0+cpu)
            want = version if "+" in version else public(lock[name])
            assert want == version, f"{req}: {name}=={version}, the lock has {lock[name]}: run `make lock`"


def _venv_distributions() -> dict[str, str]:
    site = [Path(p).resolve() for p in sys.path if p.startswith(sys.prefix) and p.endswith("site-packages")]
    dists: dict[str, str] = {}
    for d in md.distributions(path=[str(p) for p in site]):
        dists.setdefault(canon(d.metadata["Name"]), d.version)
    return dists


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="not run inside a venv (make test runs in .venv)")
def test_the_venv_holds_exactly_the_lock():
    lock = read_pins(LOCK)
    have = _venv_distributions()
    have.pop("eegsine", None)  # this checkout, installed -e
    extra = sorted(f"{n}=={v}" for n, v in have.items() if n not in lock)
    missing = sorted(f"{n}=={v}" for n, v in lock.items() if n not in have)
    wrong = sorted(f"{n}: venv {have[n]}, lock {v}" for n, v in lock.items() if n in have and have[n] != v)
    assert not (extra or missing or wrong), (
        f"venv and requirements.lock differ (rerun `make install`, or `make lock` after changing requirements):\n"
        f"not in the lock: {extra}\nnot in the venv: {missing}\nother versions: {wrong}")


def test_makefile_installs_the_lock_without_resolving():
    make = (ROOT / "Makefile").read_text()
    assert "LOCK := requirements.lock" in make
    assert "-m pip install --no-deps -r $(LOCK)" in make
    stamp = re.search(r"^\$\(STAMP\):(.*)$", make, re.M)
    assert stamp and "$(LOCK)" in stamp.group(1), "the venv is not rebuilt when the lock changes"
    assert "export PYTHONSAFEPATH = 1" in make


@pytest.mark.parametrize("extra", ["cpu", "runtime"])
def test_readme_installs_resolve_to_the_lock_without_cuda_or_triton(extra, tmp_path):
    """`pip install -c requirements.lock ".[extra]"`, as the README says, resolved for real (a dry run)."""
    report = tmp_path / "report.json"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
                           "--report", str(report), "--no-build-isolation", "-c", str(LOCK), f".[{extra}]"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {canon(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    got.pop("eegsine")
    lock = read_pins(LOCK)
    assert not [n for n in got if n.startswith("nvidia-") or n == "triton"], sorted(got)
    assert {n: v for n, v in got.items() if lock.get(n) != v} == {}, "resolved outside the lock"
    if extra == "runtime":
        assert set(got) <= {"numpy", "onnxruntime", "coloredlogs", "flatbuffers", "packaging", "protobuf", "sympy",
                            "mpmath", "humanfriendly"} and "torch" not in got, sorted(got)
    else:
        assert got["torch"].endswith("+cpu") and {"diffusers", "onnxruntime", "mne"} <= set(got)
