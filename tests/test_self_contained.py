"""The repository stands alone: no file points outside it (a sibling folder, one machine's absolute paths)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# a sibling folder of one checkout, and the absolute home/work paths of one machine
OUTSIDE = re.compile(r"\.\./shared|/work/|/root/")


def _repo_files() -> list[str]:
    """Tracked files plus new ones not ignored (what the next commit can hold); git is only read."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [p for p in out.decode().split("\0") if p]


def test_no_file_points_outside_the_repository():
    me = Path(__file__).resolve().relative_to(ROOT).as_posix()
    bad = []
    for rel in _repo_files():
        path = ROOT / rel
        if rel == me or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:  # images, weights
            continue
        bad += [f"{rel}:{i}: {line.strip()[:120]}" for i, line in enumerate(text.splitlines(), 1)
                if OUTSIDE.search(line)]
    assert not bad, "paths outside the repository:\n" + "\n".join(bad)
