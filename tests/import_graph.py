"""The project's own import graph, read from the source with :mod:`ast` (nothing is imported).

Used by ``tests/test_layout.py``; also a tool: ``python tests/import_graph.py`` prints the counts, the
cycles and the function-level imports that buy nothing.

* A node is a module ``eegsine.x.y`` (a package is its ``__init__``); its file is found through the
  package folders of ``pyproject.toml`` (``eegsine`` = ``core/``, ``eegsine.bench`` = ``bench/``, ...).
* An edge ``a -> b`` is an import of ``b`` (or of a name from ``b``) written in ``a``: ``top`` if at
  module level (``if TYPE_CHECKING:`` blocks are left out: they never run), ``lazy`` if inside a
  function. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
* A module's *heavy* set: the third-party packages other than numpy that importing it loads, through
  its own and its eegsine dependencies' module-level imports.
"""
from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIGHT = {"numpy", "__future__"}  # third-party packages every eegsine module may load at module level


def package_dirs() -> dict[str, Path]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {pkg: ROOT / d for pkg, d in cfg["tool"]["setuptools"]["package-dir"].items()}


def modules() -> dict[str, Path]:
    """Every eegsine module -> its file."""
    dirs = package_dirs()
    out: dict[str, Path] = {}
    for pkg, d in dirs.items():
        for f in sorted(d.rglob("*.py")):
            rel = f.relative_to(d).with_suffix("").parts
            if any(p.startswith(".") for p in rel):
                continue
            sub = rel[:-1] if rel[-1] == "__init__" else rel
            out[".".join([pkg, *sub])] = f  # each top folder is one package (eegsine.bench = bench/, not core/bench/)
    return out


@dataclass
class Edge:
    src: str
    dst: str
    lazy: bool
    line: int


@dataclass
class Graph:
    files: dict[str, Path]
    edges: list[Edge] = field(default_factory=list)
    third: dict[str, set[str]] = field(default_factory=dict)  # module -> third-party tops imported at module level

    def top(self, src: str) -> set[str]:
        return {e.dst for e in self.edges if e.src == src and not e.lazy}

    def heavy(self, mod: str, _seen: set[str] | None = None) -> set[str]:
        """Third-party packages (numpy aside) that ``import mod`` loads, its eegsine dependencies' included."""
        seen = set() if _seen is None else _seen
        if mod in seen:
            return set()
        seen.add(mod)
        out = set(self.third.get(mod, set()))
        for parent in _parents(mod):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            if parent in self.files:
                out |= self.heavy(parent, seen)
        for d in self.top(mod):
            out |= self.heavy(d, seen)
        return out - LIGHT

    def cycles(self, lazy: bool = True) -> list[list[str]]:
        """Strongly connected components with more than one module (or a self-loop), over the chosen edges."""
        adj: dict[str, set[str]] = {m: set() for m in self.files}
        for e in self.edges:
            if (lazy or not e.lazy) and e.src != e.dst:
                adj[e.src].add(e.dst)
        return [sorted(c) for c in _scc(adj) if len(c) > 1]

    def needless_lazy(self) -> list[Edge]:
        """Function-level imports of eegsine modules that load no package the importer does not load already."""
        out = []
        for e in self.edges:
            if e.lazy and e.src != e.dst and not (self.heavy(e.dst) - self.heavy(e.src)):
                out.append(e)
        return out


def _parents(mod: str) -> Iterator[str]:
    parts = mod.split(".")
    for i in range(1, len(parts)):
        yield ".".join(parts[:i])


def _scc(adj: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in adj:
        if v not in index:
            visit(v)
    return out


class _Visitor(ast.NodeVisitor):
    def __init__(self, mod: str, is_pkg: bool, files: dict[str, Path]):
        self.mod, self.is_pkg, self.files = mod, is_pkg, files
        self.depth = 0
        self.edges: list[Edge] = []
        self.third: set[str] = set()

    def _func(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _func

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for n in node.orelse:
                self.visit(n)
            return
        self.generic_visit(node)

    def _add(self, target: str, line: int) -> None:
        if target.split(".")[0] != "eegsine":
            if self.depth == 0:
                self.third.add(target.split(".")[0])
            return
        while target not in self.files and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in self.files:
            self.edges.append(Edge(self.mod, target, self.depth > 0, line))

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self._add(a.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.mod.split(".")
            base = base if self.is_pkg else base[:-1]
            base = base[:len(base) - node.level + 1]
            pkg = ".".join(base + ([node.module] if node.module else []))
        else:
            pkg = node.module or ""
        for a in node.names:
            sub = f"{pkg}.{a.name}"
            self._add(sub if sub in self.files else pkg, node.lineno)


def build() -> Graph:
    files = modules()
    g = Graph(files)
    for mod, f in files.items():
        v = _Visitor(mod, f.name == "__init__.py", files)
        v.visit(ast.parse(f.read_text(), str(f)))
        g.edges += v.edges
        g.third[mod] = {t for t in v.third if t not in sys.stdlib_module_names}
    return g


if __name__ == "__main__":
    g = build()
    lazy = [e for e in g.edges if e.lazy]
    print(f"{len(g.files)} modules, {len(g.edges)} import edges ({len(lazy)} inside functions)")
    for c in g.cycles():
        print("cycle:", " ".join(c))
    needless = g.needless_lazy()
    print(f"{len(needless)} function-level imports that avoid nothing:")
    for e in needless:
        print(f"  {g.files[e.src].relative_to(ROOT)}:{e.line}: {e.dst}")
