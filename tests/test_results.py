"""Committed results: snapshots of a run, and README figures rendered from them (never typed by hand)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from eegsine.bench.report import results
from eegsine.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _fake_run(root: Path, probe: float = 0.3) -> Path:
    (root / "encoder").mkdir(parents=True)
    (root / "pipeline.json").write_text(json.dumps({"preset": "tiny", "threads": 2, "stages": []}))
    enc = {"encoder": {"n_classes": 10, "seen": {"n_trials": 120, "aligned": {"linear_probe_top1": probe},
                                                 "shuffled_labels": {"linear_probe_top1": 0.1}}}}
    (root / "encoder" / "metrics.json").write_text(json.dumps(enc))
    (root / "encoder" / "weights.safetensors").write_bytes(b"not copied")
    return root


def test_snapshot_keeps_exactly_the_report_inputs(tmp_path):
    run = _fake_run(tmp_path / "run")
    out = tmp_path / "snap"
    (out / "stale").mkdir(parents=True)
    files = results.snapshot(run, out)
    assert sorted(p.relative_to(out).as_posix() for p in files) == ["encoder/metrics.json", "pipeline.json"]
    assert not (out / "stale").exists() and not (out / "encoder" / "weights.safetensors").exists()
    with pytest.raises(UserError, match="not a pipeline run folder"):
        results.snapshot(tmp_path / "nowhere", out)


def test_readme_blocks_are_rendered_from_their_snapshot_and_checked(tmp_path, monkeypatch, capsys):
    snap = tmp_path / "docs" / "snap"
    results.snapshot(_fake_run(tmp_path / "run", probe=0.3), snap)
    monkeypatch.setitem(results.BLOCKS, "demo", "docs/snap")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- figures:demo -->\nstale numbers\n<!-- /figures:demo -->\nafter\n")
    assert results.main(["readme", "--readme", str(readme), "--check"]) == 1
    assert results.main(["readme", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "stale numbers" not in text and "after" in text and "docs/snap" in text
    assert results.main(["readme", "--readme", str(readme), "--check"]) == 0
    # a new snapshot with another figure makes the committed README out of date
    results.snapshot(_fake_run(tmp_path / "run2", probe=0.9), snap)
    assert results.main(["readme", "--readme", str(readme), "--check"]) == 1
    readme.write_text("<!-- figures:nope -->\nx\n<!-- /figures:nope -->\n")
    assert results.main(["readme", "--readme", str(readme)]) == 2
    assert "unknown figures block 'nope'" in capsys.readouterr().err


def test_readme_table_blocks_are_the_committed_table_files(tmp_path, monkeypatch, capsys):
    (tmp_path / "t.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    monkeypatch.setitem(results.TABLES, "demo", "t.md")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- table:demo -->\nold\n<!-- /table:demo -->\n")
    assert results.main(["readme", "--readme", str(readme), "--check"]) == 1
    assert results.main(["readme", "--readme", str(readme)]) == 0
    assert readme.read_text() == ("<!-- table:demo -->\nFrom `t.md`:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
                                  "<!-- /table:demo -->\n")
    (tmp_path / "t.md").write_text("| a | b |\n|---|---|\n| 1 | 3 |\n")   # a new table: the README is stale
    assert results.main(["readme", "--readme", str(readme), "--check"]) == 1
    (tmp_path / "u.md").write_text("# t\n\n## Summary\n\n| x |\n|---|\n\n## Details\n\nmore\n")
    monkeypatch.setitem(results.TABLES, "sec", "u.md#Summary")
    readme.write_text("<!-- table:sec -->\n<!-- /table:sec -->\n")
    assert results.main(["readme", "--readme", str(readme)]) == 0
    assert readme.read_text() == "<!-- table:sec -->\nFrom `u.md#Summary`:\n\n| x |\n|---|\n<!-- /table:sec -->\n"
    readme.write_text("<!-- table:nope -->\nx\n<!-- /table:nope -->\n")
    assert results.main(["readme", "--readme", str(readme)]) == 2
    assert "unknown table block 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("page", results.PAGES)
def test_the_committed_readme_matches_its_committed_snapshots(page):
    """Every figure block of README.md, docs/results.md and the results READMEs that quote their tables' verdicts
    is what its committed snapshot or table renders: no hand-typed numbers there."""
    text = (ROOT / page).read_text()
    assert "<!-- figures:" in text or "<!-- table:" in text, page
    assert results.render_readme(text, ROOT, page) == text, page


def test_a_quoted_tables_relative_links_are_rebased_onto_the_page():
    t = "| [x86-amx](x86-amx/times.md) | [up](../uea/README.md#Summary) | [web](https://e.org/a) | [abs](/LICENSE) |"
    out = results.rebase_links(t, "docs/results/demo-times/hosts.md", "README.md")
    assert out == ("| [x86-amx](docs/results/demo-times/x86-amx/times.md) | [up](docs/results/uea/README.md#Summary) "
                   "| [web](https://e.org/a) | [abs](/LICENSE) |")
    assert results.rebase_links(t, "docs/results/demo-times/hosts.md", "docs/results/demo-times/README.md") == t
