"""The pipeline report: one self-contained HTML page plus markdown, built from a run folder's JSON.

Layout, for a reader with one minute: the summary card first (data, key figures with their
intervals, controls and chance, every gate and target pass/fail;
:mod:`eegsine.bench.report.summary`), then one section per stage with its numbers beside its
figures (:mod:`eegsine.bench.report.sections`). Figures are embedded as recompressed data URIs
and the page is kept under :data:`MAX_BYTES`; long tables are collapsed.
"""
from __future__ import annotations

from pathlib import Path

from eegsine.bench.report import sections
from eegsine.bench.report.data import load_run
from eegsine.bench.report.doc import Nav, Render, markdown_to_html, page, to_md
from eegsine.bench.report.summary import summary_card
from eegsine.io import atomic_write_text

MAX_BYTES = 1_000_000   # the whole page, figures included
FIG_DIR = "report_figures"  # the figures the report draws itself, beside report.md (which links them)
NAV = [("classifier", "classifier"), ("robustness", "robustness"), ("encoder", "encoder"), ("diffusion", "diffusion"),
       ("generation", "generation"), ("export", "INT8 + verification"), ("stream", "streaming"), ("bench", "bench"),
       ("stages", "stages + commands")]


def report_blocks(root: str | Path, commands: list[str] | None = None, title: str = "",
                  fig_dir: str | Path | None = None) -> list:
    """The summary card, the section links, then one section per stage.

    ``commands``: the exact commands to list (default: those pipeline.json recorded per stage).
    """
    run = load_run(root)
    if commands is None:
        commands = [s["command"] for s in (run.pipeline or {}).get("stages", []) if s.get("command")]
    fig_dir = Path(fig_dir) if fig_dir is not None else Path(root) / FIG_DIR
    preset = (run.pipeline or {}).get("preset")
    title = title or f"eegsine pipeline report: {Path(root).resolve().name}" + (f" (preset {preset})" if preset else "")
    return [summary_card(run, title), Nav(NAV),
            sections.classifier(run), sections.robustness(run), sections.encoder(run), sections.diffusion(run, fig_dir),
            sections.generation(run), sections.export(run, fig_dir), sections.stream(run), sections.bench(run, fig_dir),
            sections.stages(run, commands)]


def build_report(root: str | Path, commands: list[str] | None = None, title: str = "",
                 out: str | Path | None = None) -> dict[str, Path]:
    """Write ``report.html`` (self-contained, under 1 MB) and ``report.md`` into ``out`` (default: ``root``).

    Also ``report_figures/`` there: the figures the report draws from the JSON (report.md links them).
    """
    root = Path(root)
    out = Path(out) if out is not None else root
    out.mkdir(parents=True, exist_ok=True)
    blocks = report_blocks(root, commands, title, out / FIG_DIR)
    title = blocks[0].blocks[0].text
    # shrink the embedded figures until the page fits; links instead of figures as the last resort
    for render in [Render(scale=s, out_dir=out) for s in (1.0, 0.75, 0.55, 0.4)] + [Render(embed=False, out_dir=out)]:
        text = page(title, blocks, render)
        if len(text.encode()) <= MAX_BYTES:
            break
    paths = {"html": out / "report.html", "md": out / "report.md"}
    atomic_write_text(paths["html"], text)
    atomic_write_text(paths["md"], "\n".join(to_md(blocks, out)).rstrip() + "\n")
    return paths


__all__ = ["build_report", "report_blocks", "markdown_to_html", "MAX_BYTES"]
