"""The deployment page's commands run as written on an exported EEG bundle (the demo's kind, test-sized).

Each `eegsine-verify`, `eegsine data export-recording --like` and `eegsine stream` line of docs/deployment.md
that needs no hardware is taken from the page itself, its placeholders (BUNDLE,
runs/tiny/bundle, rec.fif, ...) pointed at a bundle exported here, and run; streams stop after a few markers.
Lines for a board or an LSL outlet are only parsed (tests/test_readme_commands.py).
"""
from __future__ import annotations

import json
import re
import shlex

import pytest

import export_helpers as h
from test_readme_commands import ROOT, concrete, fenced_commands

from eegsine.commands.main import main
from eegsine.commands.verify import main as verify_main

NEEDS_HARDWARE = ("brainflow:synthetic", "lsl:", "brainflow:BOARD")


def deployment_commands() -> list[str]:
    section = fenced_commands(ROOT / "docs" / "deployment.md")
    keep = ("eegsine-verify BUNDLE", "eegsine data export-recording --like", "eegsine stream ")
    return [c for c in section if c.startswith(keep) and not any(k in c for k in NEEDS_HARDWARE)]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """An INT8 EEG bundle exported from a run whose provenance names its data set, as `eegsine export` writes it."""
    return h.vep_bundle(tmp_path_factory.mktemp("deploy"), int8=True)


def _concrete(command: str, bundle, tmp) -> list[str]:
    text = command.replace("runs/tiny/bundle", str(bundle)).replace("BUNDLE", str(bundle))
    for name in ("rec.fif", "rec.csv", "events.jsonl", "out/summary.json"):
        text = re.sub(rf"(?<![\w/]){re.escape(name)}", str(tmp / name), text)
    return concrete(shlex.split(text))


def test_the_section_has_the_commands_a_deployment_needs():
    cmds = deployment_commands()
    assert any(c.startswith("eegsine-verify") for c in cmds)
    assert sum(c.startswith("eegsine data export-recording --like") for c in cmds) >= 2
    assert sum(c.startswith("eegsine stream") for c in cmds) >= 3


def test_readme_deployment_commands_run_as_written(bundle, tmp_path, capsys):
    order = {"eegsine-": 0, "eegsine data": 1, "eegsine stream": 2}  # recordings exist before they are streamed
    cmds = sorted(deployment_commands(), key=lambda c: next(v for k, v in order.items() if c.startswith(k)))
    (tmp_path / "out").mkdir()
    ran = []
    for command in cmds:
        argv = _concrete(command, bundle, tmp_path)
        if argv[0] == "eegsine-verify":
            code = verify_main(argv[1:] + ["--threads", "1"])
            if code == 1 and "openvino" in argv:  # exit 1 = a gate failed, as documented: OpenVINO's own INT8
                last = json.loads((bundle / "verifications.json").read_text())["records"][-1]  # kernels may fail one
                assert last["backend"] == "openvino" and not last["passed"], command
                code = 0
        else:
            if argv[1] == "stream":
                argv += ["--max-markers", "6"] + (["--fast"] if "synthetic" in " ".join(argv) else [])
            code = main(argv[1:])
        out = capsys.readouterr()
        assert code == 0, f"{command}\n-> {' '.join(argv)}\nexit {code}: {out.err[-2000:]}"
        ran.append(" ".join(argv))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["decisions"] == 6  # the file: line streamed and decided its markers
    assert len(ran) == len(cmds) >= 6, ran
