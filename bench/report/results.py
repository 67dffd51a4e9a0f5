"""Committed results: a run's JSON snapshot, and the README figures rendered from it (never typed by hand).

    python -m eegsine.bench.report.results snapshot runs/tiny docs/results/tiny-pipeline/run
    python -m eegsine.bench.report.results readme            # rewrite README.md's figure blocks from the snapshots
    python -m eegsine.bench.report.results readme --check    # exit 1 if README.md differs from what the files give
    python -m eegsine.bench.report.results readme --readme docs/results/uea/README.md --root .   # one page

A snapshot keeps exactly the files the report reads (:func:`eegsine.bench.report.data.load_run`), in the
run's own layout, so ``eegsine report`` renders a snapshot like the run itself. A README block is the text
between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->``; :data:`BLOCKS` maps each NAME to the
snapshot it is rendered from, with the summary card's key-figure table (value, 95 % interval, n, controls,
chance) and the host the run was measured on. A block between ``<!-- table:NAME -->`` and
``<!-- /table:NAME -->`` is the committed table file :data:`TABLES` names (each rendered from its JSON by
its own script, and tested to be).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

from eegsine.errors import UserError
from eegsine.bench.report.data import load_run
from eegsine.bench.report.doc import md_table
from eegsine.bench.report.summary import key_rows
from eegsine.io import atomic_write_text

SNAPSHOT_GLOBS = ("pipeline.json", "pipeline_config.json", ".stages/*.json", "classifier/*/metrics.json",
                  "classifier/*/model/config.json", "robustness/robustness.json", "robustness/metrics.json",
                  "encoder/metrics.json", "diffusion/metrics.json", "generation/metrics.json", "generation/index.json",
                  "bundle/verify.json", "bundle/verifications.json", "bundle/manifest.json", "stream/summary.json",
                  "bench/bench.json")
BLOCKS = {"tiny-pipeline": "docs/results/tiny-pipeline/run"}  # README block -> snapshot folder (repo-relative)
# the pages with figure / table blocks (repo-relative)
PAGES = ["README.md", "docs/results.md", "docs/results/uea/README.md", "docs/results/encoder/README.md", "docs/gpu.md"]
_BLOCK = re.compile(r"(<!-- figures:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.S)
# README table block -> the committed table (repo-relative), rendered from its JSON by the script named in it
TABLES = {"encoder": "docs/results/encoder/table.md", "two-stage": "docs/results/two-stage/table.md",
          "uea": "docs/results/uea/table.md#Summary",
          "uea-verdict": "docs/results/uea/table.md#Encoder linear probe vs the strongest baseline",
          "uea-best": "docs/results/uea/table.md#Best method per data set",
          "encoder-verdict": "docs/results/encoder/table.md#Encoder linear probe vs the strongest baseline",
          "paper-mnist-fgsmrs": "docs/results/paper-mnist-fgsmrs/eval/robustness.md"
                                "#Worst case per example over every attack at that eps",
          "paper-mnist-fgsmrs-seeds": "docs/results/paper-mnist-fgsmrs/seeds/seeds.md",
          "demo-times": "docs/results/demo-times/hosts.md#Wall time by CPU class",
          "gpu-memory": "docs/results/gpu-scale/memory-plan.md#Memory plan"}
_TABLE = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)", re.S)


def snapshot(run_root: str | Path, out: str | Path) -> list[Path]:
    """Copy the report's input files of ``run_root`` into ``out`` (same layout, paths under the current folder
    made relative); returns the files written."""
    run_root, out = Path(run_root), Path(out)
    if not (run_root / "pipeline.json").is_file():
        raise UserError(f"{run_root}: not a pipeline run folder (no pipeline.json)")
    if out.exists():
        shutil.rmtree(out)  # a snapshot is whole: files of an older run must not linger
    written = []
    here = str(Path.cwd().resolve()) + "/"  # absolute paths of this machine (a manifest's sources) become relative
    for pattern in SNAPSHOT_GLOBS:
        for src in sorted(run_root.glob(pattern)):
            dst = out / src.relative_to(run_root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(src.read_text().replace(here, ""))
            written.append(dst)
    return written


def figures_markdown(snapshot_dir: str | Path, shown_as: str = "") -> str:
    """The key-figure table of a snapshot as markdown, with the host and its source folder (``shown_as``:
    how the text names that folder, e.g. repo-relative)."""
    snapshot_dir = Path(snapshot_dir)
    run = load_run(snapshot_dir)
    if not run.pipeline:
        raise UserError(f"{snapshot_dir}: no pipeline.json "
                        "(make it with `python -m eegsine.bench.report.results snapshot`)")
    meta = (run.bench or {}).get("meta", {})
    host = meta.get("host") or {}
    cpu = (f"{host.get('cpu', '?')}, ISA class {host.get('isa_class', '?')}, {meta.get('threads', '?')} threads"
           if host else "host: see its bench.json")
    head = ["figure", "value [95% CI]", "n", "controls", "chance"]
    lines = [f"Rendered from `{shown_as or snapshot_dir.as_posix()}` by "
             "`python -m eegsine.bench.report.results readme` "
             f"(preset {run.pipeline.get('preset', '?')}, {cpu}).", ""]
    return "\n".join(lines + md_table(head, key_rows(run))) + "\n"


def table_text(root: Path, ref: str) -> str:
    """A committed table file, or with ``path#Heading`` only its ``## Heading`` (or ``###``) section."""
    rel, _, heading = ref.partition("#")
    path = root / rel
    if not path.is_file():
        raise UserError(f"README: table {rel} is missing")
    text = path.read_text()
    if not heading:
        return text
    m = re.search(rf"^#{{2,3}} {re.escape(heading)}\n(.*?)(?=^#{{2,3}} |\Z)", text, re.S | re.M)
    if m is None:
        raise UserError(f"README: {rel} has no '## {heading}' section")
    return m.group(1).strip("\n") + "\n"


_LINK = re.compile(r"\]\((?P<target>[^)\s#:]+)(?P<anchor>#[^)\s]*)?\)")


def rebase_links(text: str, src: str, page: str) -> str:
    """Relative markdown links of ``text`` (written in the file ``src``) made relative to ``page`` (both paths
    relative to the same root): a table quoted in another folder's page keeps working links."""
    def one(m: re.Match) -> str:
        t = m.group("target")
        if t.startswith("/"):
            return m.group(0)
        new = os.path.relpath(os.path.normpath(os.path.join(os.path.dirname(src), t)), os.path.dirname(page) or ".")
        return f"]({new}{m.group('anchor') or ''})"

    return _LINK.sub(one, text)


def render_readme(text: str, root: Path, page: str | None = None) -> str:
    """``text`` with every figure block re-rendered from its snapshot (an unknown block name is an error).
    ``page``: the page's path relative to ``root``; quoted tables' relative links are rebased onto it."""
    def one(m: re.Match) -> str:
        name = m.group("name")
        if name not in BLOCKS:
            raise UserError(f"README: unknown figures block {name!r} (known: {', '.join(BLOCKS)})")
        return m.group(1) + figures_markdown(root / BLOCKS[name], BLOCKS[name]) + m.group(4)

    def table(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise UserError(f"README: unknown table block {name!r} (known: {', '.join(TABLES)})")
        body = table_text(root, TABLES[name])
        if page is not None:
            body = rebase_links(body, TABLES[name].partition("#")[0], page)
        return m.group(1) + f"From `{TABLES[name]}`:\n\n" + body + m.group(4)

    return _TABLE.sub(table, _BLOCK.sub(one, text))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eegsine.bench.report.results", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snapshot", help="copy a run's report inputs into a committed folder")
    s.add_argument("run", help="pipeline run folder (e.g. runs/tiny)")
    s.add_argument("out", help="snapshot folder (replaced whole)")
    r = sub.add_parser("readme", help="re-render the figure blocks of README.md and docs/results.md")
    r.add_argument("--readme", nargs="+", default=None, metavar="PAGE",
                   help=f"the pages to update, snapshot paths relative to the first one's folder (default: "
                        f"{', '.join(PAGES)}, relative to the working directory: the repository root)")
    r.add_argument("--check", action="store_true", help="only compare: exit 1 when the README is out of date")
    r.add_argument("--root", default=None, help="the folder the blocks' snapshot and table paths are relative to "
                                                "(default: the README's folder; the repository root for "
                                                "docs/results/*/README.md)")
    ns = p.parse_args(argv)
    try:
        if ns.cmd == "snapshot":
            files = snapshot(ns.run, ns.out)
            print(f"snapshot: {len(files)} files -> {ns.out}")
            return 0
        pages = [Path(p) for p in (ns.readme or PAGES)]
        root = Path(ns.root) if ns.root else Path(".") if ns.readme is None else pages[0].resolve().parent
        stale = 0
        for readme in pages:
            text = readme.read_text()
            new = render_readme(text, root, os.path.relpath(readme.resolve(), root.resolve()))
            if ns.check:
                if new != text:
                    print(f"{readme}: figure blocks differ from their snapshots; run "
                          "`python -m eegsine.bench.report.results readme`", file=sys.stderr)
                    stale += 1
                continue
            if new != text:
                atomic_write_text(readme, new)
            print(f"{readme}: {len(_BLOCK.findall(text))} figure block(s), {len(_TABLE.findall(text))} table block(s) "
                  "rendered")
        return 1 if stale else 0
    except UserError as e:
        print(f"eegsine results: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
