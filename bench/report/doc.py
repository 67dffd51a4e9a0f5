"""The report's document model: a few block types rendered to one self-contained HTML page and to markdown.

A section builder returns blocks (:class:`H`, :class:`P`, :class:`Table`, :class:`L`,
:class:`Fig`, :class:`Row`, :class:`Box`, :class:`Details`, :class:`Md`); :func:`to_html` and :func:`to_md`
render the same blocks, so the two outputs never drift. Figures are embedded as data URIs,
recompressed by :func:`png_bytes` (white background, downscaled, 64-colour palette): the
PNGs stages write are RGBA at 110-120 dpi, and 13 of them were 1.4 MB of the old 3.7 MB page;
after this they are ~0.4 MB.

Hand-written: the markdown stages emit is only headings, paragraphs, lists, code blocks and
pipe tables; a converter for that (:func:`markdown_to_html`) is ~50 lines, smaller than a
dependency.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import os
import re
from pathlib import Path
from typing import Union

Cell = Union[str, tuple[str, str]]   # text, or (text, css class: "pass", "fail", "muted", "num")


@dataclasses.dataclass
class H:
    level: int
    text: str
    id: str = ""


@dataclasses.dataclass
class P:
    text: str           # inline markdown: `code`, **bold**
    cls: str = ""


@dataclasses.dataclass
class Table:
    head: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    cls: str = ""
    align: str = ""     # one letter per column, l / r / c / - (default); "" = every column default


@dataclasses.dataclass
class Fig:
    path: Path          # the PNG on disk (report.md links it; report.html embeds a recompressed copy)
    caption: str
    width: int = 560    # display width in CSS px; the embedded copy is downscaled to it


@dataclasses.dataclass
class L:
    """A bullet list; each item inline markdown, or (text, css class)."""
    items: list[Cell]
    cls: str = ""


@dataclasses.dataclass
class Nav:
    """Links to the sections: (id, label) pairs; HTML only."""
    links: list[tuple[str, str]]


@dataclasses.dataclass
class Md:
    text: str           # a stage's own markdown file, headings shifted to start at ``top``
    top: int = 4


@dataclasses.dataclass
class Row:
    """Blocks side by side, one after another in markdown. Tables keep their width and figures
    shrink to fit one line; ``wrap``: a gallery that wraps onto more lines instead."""
    blocks: list
    wrap: bool = False


@dataclasses.dataclass
class Box:
    """A container with an id and a class (the summary card, a section)."""
    blocks: list
    cls: str = ""
    id: str = ""
    tag: str = "div"
    width: int = 0      # max width in CSS px (0: none); a box of paragraphs beside a figure needs one


@dataclasses.dataclass
class Details:
    """Collapsed by default in HTML: the long tables a reader opens only when needed."""
    summary: str
    blocks: list


# -- inline and markdown -------------------------------------------------------------------------
def inline(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)


def shift_headings(md: str, top: int) -> str:
    """Shift markdown headings so the highest one becomes level ``top`` (code blocks untouched)."""
    lines, fence = md.splitlines(), False
    levels = []
    for line in lines:
        fence ^= line.startswith("```")
        m = None if fence else re.match(r"^(#{1,6})\s", line)
        if m:
            levels.append(len(m.group(1)))
    if not levels:
        return md
    d, out, fence = top - min(levels), [], False
    for line in lines:
        fence ^= line.startswith("```")
        m = None if fence else re.match(r"^(#{1,6})(\s.*)", line)
        out.append("#" * max(1, min(6, len(m.group(1)) + d)) + m.group(2) if m else line)
    return "\n".join(out)


def markdown_to_html(md: str, top: int = 3) -> str:
    """Convert the subset of markdown eegsine writes; the highest heading becomes ``<h{top}>``."""
    out: list[str] = []
    lines = shift_headings(md, top).splitlines()
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
            out.append(_table_html(body[0], body[1:]))
            continue
        m = re.match(r"^(#{1,6})\s+(.*)", line)
        if m:
            out.append(f"<h{len(m.group(1))}>{inline(m.group(2))}</h{len(m.group(1))}>")
        elif line.startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].startswith(("- ", "* ")):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _cell(c: Cell) -> tuple[str, str]:
    return (c, "") if isinstance(c, str) else c


_ALIGN_CSS = {"l": "left", "r": "right", "c": "center"}


def _table_html(head: list[str], rows: list[list[Cell]], caption: str = "", cls: str = "", align: str = "") -> str:
    def style(i: int) -> str:
        a = _ALIGN_CSS.get(align[i:i + 1], "")
        return f" style='text-align:{a}'" if a else ""

    def td(c: Cell, i: int) -> str:
        text, k = _cell(c)
        return f"<td class='{k}'{style(i)}>{inline(text)}</td>" if k else f"<td{style(i)}>{inline(text)}</td>"

    cap = f"<caption>{inline(caption)}</caption>" if caption else ""
    thead = ("<thead><tr>" + "".join(f"<th{style(i)}>{inline(h)}</th>" for i, h in enumerate(head))
             + "</tr></thead>" if any(head) else "")
    return (f"<table class='{cls}'>" if cls else "<table>") + cap + thead + "<tbody>" \
        + "".join("<tr>" + "".join(td(c, i) for i, c in enumerate(r)) + "</tr>" for r in rows) + "</tbody></table>"


# -- figures -------------------------------------------------------------------------------------
def png_bytes(path: Path, width: int, colors: int = 64) -> bytes:
    """The PNG at ``path`` flattened on white, downscaled to ``width`` px at most, as a palette PNG.

    64 colours: matplotlib's anti-aliased lines and the grey sample grids look the same at a
    quarter of the bytes (strip.png 298 -> ~125 kB, grad_norms.png 102 -> 20 kB).
    """
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGBA")
    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
    bg.alpha_composite(im)
    rgb = bg.convert("RGB")
    if rgb.width > width:
        rgb = rgb.resize((width, max(1, round(rgb.height * width / rgb.width))), Image.Resampling.LANCZOS)
    r, g, b = rgb.split()
    grey = r.tobytes() == g.tobytes() == b.tobytes()
    out = (rgb.convert("L") if grey else rgb).quantize(colors=colors, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# -- rendering -----------------------------------------------------------------------------------
@dataclasses.dataclass
class Render:
    scale: float = 1.0          # embedded-figure size factor (the size budget lowers it)
    embed: bool = True          # False: figures become links (the last resort of the size budget)
    out_dir: Path | None = None  # where the page is written (links are relative to it)
    n_figures: int = 0


def to_html(blocks: list, r: Render) -> str:
    out = []
    for b in blocks:
        if isinstance(b, H):
            ident = f" id='{b.id}'" if b.id else ""
            out.append(f"<h{b.level}{ident}>{inline(b.text)}</h{b.level}>")
        elif isinstance(b, P):
            out.append(f"<p class='{b.cls}'>{inline(b.text)}</p>" if b.cls else f"<p>{inline(b.text)}</p>")
        elif isinstance(b, Table):
            out.append(_table_html(b.head, b.rows, b.caption, b.cls, b.align))
        elif isinstance(b, Fig) and not r.embed:
            rel = Path(os.path.relpath(b.path, r.out_dir or Path.cwd())).as_posix()
            out.append(f"<p class='note'>Figure not embedded (page size limit): <a href=\"{html.escape(rel)}\">"
                       f"{html.escape(rel)}</a>: {inline(b.caption)}</p>")
        elif isinstance(b, Fig):
            data = base64.b64encode(png_bytes(b.path, max(120, int(b.width * r.scale)))).decode("ascii")
            r.n_figures += 1
            out.append(f"<figure style='max-width:{b.width}px'><img src=\"data:image/png;base64,{data}\" "
                       f"alt=\"{html.escape(b.caption)}\"><figcaption>{inline(b.caption)}</figcaption></figure>")
        elif isinstance(b, L):
            items = "".join(f"<li class='{k}'>{inline(t)}</li>" if k else f"<li>{inline(t)}</li>"
                            for t, k in map(_cell, b.items))
            out.append(f"<ul class='{b.cls}'>{items}</ul>" if b.cls else f"<ul>{items}</ul>")
        elif isinstance(b, Nav):
            out.append("<nav>" + " ".join(f"<a href='#{i}'>{html.escape(t)}</a>" for i, t in b.links) + "</nav>")
        elif isinstance(b, Md):
            out.append(markdown_to_html(b.text, b.top))
        elif isinstance(b, Row):
            out.append(f"<div class='row{' wrap' if b.wrap else ''}'>"
                       + "".join(f"<div class='{'f' if isinstance(x, Fig) else 't'}'>{to_html([x], r)}</div>"
                                 for x in b.blocks) + "</div>")
        elif isinstance(b, Box):
            attrs = (f" id='{b.id}'" if b.id else "") + (f" class='{b.cls}'" if b.cls else "") + (
                f" style='max-width:{b.width}px'" if b.width else "")
            out.append(f"<{b.tag}{attrs}>" + to_html(b.blocks, r) + f"</{b.tag}>")
        elif isinstance(b, Details):
            out.append(f"<details><summary>{inline(b.summary)}</summary>" + to_html(b.blocks, r) + "</details>")
        elif isinstance(b, list):
            out.append(to_html(b, r))
        else:
            raise TypeError(f"report block {type(b).__name__}")
    return "\n".join(out)


def _md_cell(c: Cell) -> str:
    text, k = _cell(c)
    text = text.replace("|", "\\|")
    return f"**{text}**" if k == "fail" and text else text


_ALIGN_MD = {"l": ":---", "r": "---:", "c": ":---:", "-": "---"}


def md_table(head: list[str], rows: list[list[Cell]], align: str = "", caption: str = "") -> list[str]:
    """The one markdown pipe table: its lines, without a trailing blank line.

    ``caption``: a paragraph and a blank line before the table. ``align``: one letter per column, ``l`` / ``r`` /
    ``c`` (``:---`` / ``---:`` / ``:---:``) or ``-`` (``---``, the default for a column past its end). Cells are
    :data:`Cell`: a ``|`` inside one is escaped, a ``(text, "fail")`` cell is bold; header names are written as
    given."""
    if len(align) > len(head) or set(align) - set(_ALIGN_MD):
        raise ValueError(f"md_table: align {align!r} must be letters of l, r, c, - for {len(head)} columns")
    seps = [_ALIGN_MD[align[i]] if i < len(align) else "---" for i in range(len(head))]
    return (([caption, ""] if caption else []) + ["| " + " | ".join(head) + " |", "|" + "".join(f"{s}|" for s in seps)]
            + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows])


def to_md(blocks: list, out_dir: Path) -> list[str]:
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, H):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, P):
            lines += [b.text, ""]
        elif isinstance(b, Table):
            lines += md_table(b.head, b.rows, b.align, b.caption) + [""]
        elif isinstance(b, Fig):
            rel = Path(os.path.relpath(b.path, out_dir)).as_posix()
            lines += [f"![{b.caption}]({rel})", ""]
        elif isinstance(b, L):
            lines += [f"- {_cell(c)[0]}" for c in b.items] + [""]
        elif isinstance(b, Md):
            lines += [shift_headings(b.text, b.top), ""]
        elif isinstance(b, (Row, Box)):
            lines += to_md(b.blocks, out_dir)
        elif isinstance(b, Details):
            lines += [f"**{b.summary}**", ""] + to_md(b.blocks, out_dir)
        elif isinstance(b, list):
            lines += to_md(b, out_dir)
    return lines  # Nav: nothing (markdown viewers build their own outline)


CSS = """
body{font-family:system-ui,sans-serif;max-width:1320px;margin:0 auto;padding:.4em 1em 2em;color:#222;font-size:14px}
h1{font-size:20px;margin:.2em 0}h2{font-size:18px;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:.9em 0 .3em}h4{font-size:14px;margin:.7em 0 .3em}h5,h6{font-size:13px}
table{border-collapse:collapse;margin:.4em 0;font-size:12.5px}
td,th{border:1px solid #d4d4d4;padding:2px 6px;text-align:right;vertical-align:top}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}caption{text-align:left;font-size:12px;color:#555;padding:2px 0}
figure{margin:.4em 0}img{width:100%;height:auto;border:1px solid #e2e2e2}figcaption{font-size:12px;color:#555}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:12px}details{margin:.4em 0}
summary{cursor:pointer;color:#035}.row{display:flex;gap:14px;align-items:flex-start}.row.wrap{flex-wrap:wrap}
.row>.t{flex:0 0 auto;max-width:100%}.row>.f{flex:0 1 auto;min-width:160px}.fail{color:#b00;font-weight:bold}
.pass{color:#070}.muted{color:#777}.note{font-size:12px;color:#555}
#summary{background:#eef3fb;border:2px solid #9db7de;border-radius:6px;padding:.5em 1em .6em;margin:.3em 0 1em}
#summary h1{margin-top:0}#summary h3{margin:.4em 0 .15em}
#summary table{background:#fff;font-size:12px;margin:.2em 0}table.kv td,table.kv th{text-align:left}
td.num{white-space:nowrap;text-align:right}
.cols{display:grid;grid-template-columns:minmax(0,9fr) minmax(0,14fr);gap:14px}
.checks{columns:2;column-gap:24px;font-size:12px;line-height:1.3;margin:.2em 0;padding-left:1.1em}
.checks li{break-inside:avoid}.checks li.fail{font-weight:normal}.chips{font-size:12px;color:#333}
.status{font-size:13px;margin:.2em 0}nav{font-size:13px;margin:.2em 0 .8em}nav a{margin-right:.9em}"""

# Marks on <body> how many images decoded and where the summary card sits, so a headless
# browser test can tell a rendered page (card on the first screen) from a broken one.
CHECK_SCRIPT = """<script>window.addEventListener('load',function(){var im=document.images,ok=0;
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}
document.body.setAttribute('data-images-ok',ok+'/'+im.length);
document.body.setAttribute('data-height',document.documentElement.scrollHeight);
var s=document.getElementById('summary');if(s){var r=s.getBoundingClientRect();
document.body.setAttribute('data-summary',
Math.round(r.top)+' '+Math.round(r.bottom)+' '+window.innerHeight);}});</script>"""


def page(title: str, blocks: list, r: Render) -> str:
    body = to_html(blocks, r)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width'><style>{CSS}</style></head>"
            f"<body data-figures='{r.n_figures}'>" + body + CHECK_SCRIPT + "</body></html>\n")
