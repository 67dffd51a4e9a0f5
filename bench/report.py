"""The pipeline report: one self-contained HTML page plus markdown, in the run folder.

Every PNG is embedded as a data URI so the page renders anywhere with no missing images;
every markdown table a stage wrote is included verbatim (the markdown file) and rendered
(the HTML). Hand-written: the markdown we emit is only headings, paragraphs, lists, code
blocks and pipe tables, and a converter for that is ~60 lines, smaller than a dependency.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import re
from pathlib import Path

from eegsine.io import atomic_write_text, read_json


@dataclasses.dataclass
class Section:
    title: str
    folder: str                     # relative to the pipeline root
    tables: tuple[str, ...] = ()    # markdown files (globs) to include
    figures: tuple[str, ...] = ()   # PNG globs
    text: str = ""


SECTIONS = (
    Section("Sine-bounded classifier: training", "classifier", ("*/train.md",), ("*/grad_norms*.png", "*/curves*.png"),
            "Both heads adversarially trained on the same data; per-layer gradient norms in the first steps show "
            "whether the initialisation keeps early-layer gradients alive."),
    Section("Robustness (eps in [0, 1] pixel units)", "robustness", ("*.md",), ("*.png",),
            "Tables in the source's format; sanity checks are printed with every table."),
    Section("EEG encoder alignment", "encoder", ("*.md",), ("*.png",),
            "Aligned encoder vs the shuffled-label and class-only controls."),
    Section("EEG-conditioned diffusion", "diffusion", ("*.md",), ("grids/strip*.png", "*.png", "grids/epoch_*.png"),
            "Fixed-seed sample grids per epoch (quality can jump between two epochs) and the training curves."),
    Section("Generation and image quality", "generation", ("*.md",), ("*.png",),
            "Several samples per EEG trial, ground truth in the rightmost column; metrics name their feature network."),
    Section("Export, INT8 and verification after compression", "bundle", ("*.md",), ("*.png",),
            "FP32 vs INT8 on the same inputs; gates fail loudly."),
    Section("Benchmarks (ratios vs torch eager, same run)", "bench", ("*.md",), ("*.png",), ""),
)


def _inline(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)
    return t


def markdown_to_html(md: str) -> str:
    """Convert the subset of markdown eegsine writes (headings, lists, code, pipe tables)."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre>" + html.escape("\n".join(lines[i + 1:j])) + "</pre>")
            i = j + 1
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
            body = [r for k, r in enumerate(cells) if not (k == 1 and all(set(c) <= set("-: ") for c in r))]
            head, rest = body[0], body[1:]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rest)
                       + "</tbody></table>")
            continue
        m = re.match(r"^(#{1,6})\s+(.*)", line)
        if m:
            level = min(len(m.group(1)) + 1, 6)
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif line.startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].startswith(("- ", "* ")):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}
img{max-width:100%;border:1px solid #ddd}figcaption{font-size:12px;color:#555}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
.fail{color:#b00;font-weight:bold}.pass{color:#070}"""


# Marks on <body> how many images actually decoded, so a headless browser test can tell a
# rendered page from one with broken figures.
CHECK_SCRIPT = """<script>window.addEventListener('load',function(){var im=document.images,ok=0;
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}
document.body.setAttribute('data-images-ok',ok+'/'+im.length);});</script>"""


def build_report(root: str | Path, commands: list[str] | None = None, title: str = "eegsine pipeline report") -> dict[str, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` into ``root``; return their paths."""
    root = Path(root)
    md: list[str] = [f"# {title}", ""]
    body: list[str] = [f"<h1>{html.escape(title)}</h1>"]
    meta_path = root / "pipeline.json"
    if meta_path.exists():
        meta = read_json(meta_path)
        rows = [f"| {s['name']} | {s['status']} | {s.get('seconds', 0):.1f} |" for s in meta.get("stages", [])]
        table = "\n".join(["| stage | status | seconds |", "|---|---|---|", *rows])
        md += ["## Stages", "", table, ""]
        body.append("<h2>Stages</h2>" + markdown_to_html(table))
    if commands:
        block = "```\n" + "\n".join(commands) + "\n```"
        md += ["## Exact commands", "", block, ""]
        body.append("<h2>Exact commands</h2>" + markdown_to_html(block))
    n_figures = 0
    for sec in SECTIONS:
        folder = root / sec.folder
        if not folder.exists():
            continue
        md += [f"## {sec.title}", "", sec.text, ""]
        body.append(f"<h2>{html.escape(sec.title)}</h2><p>{_inline(sec.text)}</p>")
        seen: set[Path] = set()
        for pattern in sec.tables:
            for tpath in sorted(folder.glob(pattern)):
                if tpath in seen or tpath.name.startswith("report"):
                    continue
                seen.add(tpath)
                text = tpath.read_text()
                md += [f"### {tpath.relative_to(root)}", "", text, ""]
                body.append(f"<h3>{html.escape(str(tpath.relative_to(root)))}</h3>" + markdown_to_html(text))
        for pattern in sec.figures:
            for fpath in sorted(folder.glob(pattern)):
                if fpath in seen:
                    continue
                seen.add(fpath)
                rel = fpath.relative_to(root).as_posix()
                md += [f"![{rel}]({rel})", ""]
                body.append(f'<figure><img src="{_png_data_uri(fpath)}" alt="{html.escape(rel)}">'
                            f"<figcaption>{html.escape(rel)}</figcaption></figure>")
                n_figures += 1
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body data-figures='{n_figures}'>" + "\n".join(body) + CHECK_SCRIPT
            + "</body></html>\n")
    paths = {"html": root / "report.html", "md": root / "report.md"}
    atomic_write_text(paths["html"], page)
    atomic_write_text(paths["md"], "\n".join(md) + "\n")
    return paths
