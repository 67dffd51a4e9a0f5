"""Progress bars in a log file are whole lines: no carriage-return redraws, nothing for a bar done quickly."""
from __future__ import annotations

import io
import time

import pytest

from eegsine import progress


@pytest.fixture()
def fast_lines(monkeypatch):
    monkeypatch.delenv("EEGSINE_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.2)


def test_a_log_file_gets_lines_not_redraws(fast_lines):
    out = io.StringIO()  # not a terminal
    assert progress.mode(out) == "lines"
    for _ in progress.tqdm(range(50), desc="quick", file=out):  # done before the delay: no line at all
        pass
    bar = progress.tqdm(range(12), desc="slow", file=out)
    for i in bar:
        bar.set_postfix(loss=i)  # a redraw request every step: still at most one line per interval
        time.sleep(0.05)
    text = out.getvalue()
    assert "\r" not in text and "quick" not in text
    lines = text.splitlines()
    assert lines and all(line.startswith("slow:") for line in lines)
    assert len(lines) <= 12 * 0.05 / 0.2 + 2  # one per interval, plus the last state once
    assert lines[-1].startswith("slow: 100%") and sum("100%" in line for line in lines) == 1


def test_the_environment_chooses_the_mode(monkeypatch):
    monkeypatch.setenv("EEGSINE_PROGRESS", "bars")
    assert progress.mode(io.StringIO()) == "bars"
    monkeypatch.setenv("EEGSINE_PROGRESS", "off")
    out = io.StringIO()
    for _ in progress.tqdm(range(3), file=out):
        pass
    assert out.getvalue() == ""
