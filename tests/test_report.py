"""The pipeline report: self-contained HTML (figures embedded), markdown, and a real browser render."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from eegsine.bench.report import build_report, markdown_to_html
from eegsine.io import write_json


def _png(path, seed):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.imshow(np.random.default_rng(seed).random((8, 8)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _fake_run(root):
    _png(root / "robustness" / "curves.png", 0)
    _png(root / "diffusion" / "grids" / "epoch_001.png", 1)
    (root / "robustness" / "table.md").write_text(
        "| Attack | eps | Standard CNN | Sine |\n|---|---|---|---|\n| PGD-40 | 0.3 | 0.91 | 0.88 |\n")
    write_json(root / "pipeline.json", {"stages": [{"name": "robustness", "status": "done", "seconds": 1.5}]})


def test_markdown_subset():
    out = markdown_to_html("## T\n\n| a | b |\n|---|---|\n| `x` | **y** |\n\n- one\n- two\n\n```\ncmd <1>\n```")
    assert "<h3>T</h3>" in out
    assert "<th>a</th><th>b</th>" in out and "<td><code>x</code></td><td><b>y</b></td>" in out
    assert "<ul><li>one</li><li>two</li></ul>" in out and "<pre>cmd &lt;1&gt;</pre>" in out


def test_report_embeds_every_figure(tmp_path):
    _fake_run(tmp_path)
    paths = build_report(tmp_path, ["eegsine pipeline --preset tiny"])
    page = paths["html"].read_text()
    assert page.count('src="data:image/png;base64,') == 2 and "data-figures='2'" in page
    assert not re.search(r'src="(?!data:)', page), "a figure is linked, not embedded"
    assert "<td>PGD-40</td><td>0.3</td><td>0.91</td><td>0.88</td>" in page
    md = paths["md"].read_text()
    assert "![robustness/curves.png](robustness/curves.png)" in md and "eegsine pipeline --preset tiny" in md


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test-slow installs Debian's chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    _fake_run(tmp_path)
    html_path = build_report(tmp_path, ["eegsine pipeline --preset tiny"])["html"]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", html_path.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'data-images-ok="2/2"' in dom, "not every figure decoded in the browser"
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,1600", html_path.as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape == (1600, 1200)
    assert img.std() > 10.0, "the screenshot is blank"
