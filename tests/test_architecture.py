"""The layers of the house, read from the source (issue 14): an AST walk over every module under
``tnviz/``, imports at module level and inside functions alike.

Rules enforced here:

* **Layer order** ``core -> decompose -> nn -> model -> render -> cli``: a module imports only
  modules of its own layer or of a layer before it.  The core is the top-level modules plus
  ``bonds/``, except the bond modules that drive torch models (:data:`PLACED`).  The curated API
  ``tnviz/__init__.py`` re-exports every layer; only the CLI may import it.
* **streamlit** is imported nowhere under ``tnviz/``; **plotly** and **graphviz** only in ``render/``.
* **The core never imports torch at module level** (inside a function is fine: the array may be
  a tensor); a fresh interpreter importing every core module loads none of torch, streamlit,
  plotly, graphviz.
* **No import circles** between files (strongly connected parts of the import graph).

A known violation can be listed in :data:`PENDING` (``xfail(strict=False)`` per rule and package)
while a redesign is under way; none is listed today, so every (rule, package) pair must pass.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tnviz"
LAYERS = ("core", "decompose", "nn", "model", "render", "cli")
#: Modules placed in a layer other than their folder's (none today: what drives torch models of
#: the bond features lives in model/bonds.py, the core's bonds/ holds the arithmetic).
PLACED: dict[str, str] = {}
FACADE = "tnviz"
RENDER_ONLY = ("plotly", "graphviz")
HEAVY = ("torch",)

#: Modules reported on their own (not the core's, though top-level); none today.
APART: tuple[str, ...] = ()
#: (rule, package) -> why it fails today; the check xfails (not strictly) until it is fixed.
PENDING: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module ('tnviz.x.y', or a third-party top-level name)
    module_level: bool
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _targets(source: str, is_package: bool, node: ast.AST) -> list[str]:
    known = modules()
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = source.split(".") if is_package else source.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join(base) + (f".{node.module}" if node.module else "")
    else:
        module = node.module or ""
    # `from pkg import name`: the submodule pkg.name when there is one, else pkg itself
    return [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]


@lru_cache(maxsize=1)
def imports() -> tuple[Import, ...]:
    found = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        top = {id(n) for n in tree.body}
        # a module-level `if TYPE_CHECKING:` / `try:` block still runs at import time
        for n in tree.body:
            if isinstance(n, (ast.If, ast.Try)):
                top |= {id(m) for m in ast.walk(n) if isinstance(m, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                is_typing = _under_type_checking(tree, node)
                for target in _targets(name, path.name == "__init__.py", node):
                    if not is_typing:
                        found.append(Import(name, target, id(node) in top, node.lineno))
    return tuple(found)


def _under_type_checking(tree: ast.Module, node: ast.AST) -> bool:
    for block in tree.body:
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test):
            if any(m is node for m in ast.walk(block)):
                return True
    return False


def layer(module: str) -> str:
    """The layer of a module of ``tnviz``."""
    if module in PLACED:
        return PLACED[module]
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in LAYERS:
        return parts[1]
    return "core"


def group(module: str) -> str:
    """The package a check reports under: a module set apart, ``tnviz.bonds``, else its layer's."""
    if module in APART:
        return module
    parts = module.split(".")
    if module in PLACED or (len(parts) >= 2 and parts[1] == "bonds"):
        return "tnviz.bonds"
    return "tnviz (core)" if layer(module) == "core" else f"tnviz.{layer(module)}"


GROUPS = sorted({group(m) for m in modules() if m != FACADE})


def params(rule: str) -> list:
    """One test per package; a known violation (:data:`PENDING`) is an expected failure."""
    out = []
    for g in GROUPS:
        reason = PENDING.get((rule, g))
        marks = [pytest.mark.xfail(strict=False, reason=reason)] if reason else []
        out.append(pytest.param(g, marks=marks, id=g))
    return out


def _inside(module: str) -> bool:
    return module == FACADE or module.startswith(FACADE + ".")


def _where(imp: Import) -> str:
    return f"{imp.source}:{imp.line} imports {imp.target} ({'module level' if imp.module_level else 'in a function'})"


# ---------------------------------------------------------------------- the walk itself
def test_the_walk_sees_imports_at_module_level_and_inside_functions():
    edges = {(i.source, i.target, i.module_level) for i in imports()}
    assert ("tnviz.cost", "tnviz.paths", True) in edges
    assert ("tnviz.cli", "tnviz.stack", False) in edges  # `from .stack import stack_report` in cmd_stack
    assert ("tnviz.render.exports", "tnviz.export", True) in edges  # `from .. import export`
    assert ("tnviz.model.bonds", "tnviz.nn", False) in edges  # `from ..nn import TNLinear` in BondCapture
    assert layer("tnviz.bonds.cut") == "core" and layer("tnviz.bonds") == "core" and layer("tnviz.model.bonds") == "model"
    assert layer("tnviz.render.scene") == "render" and layer("tnviz.layout") == "core"
    assert {"tnviz (core)", "tnviz.bonds", "tnviz.render", "tnviz.cli"} <= set(GROUPS)


# ---------------------------------------------------------------------- rules
@pytest.mark.parametrize("package", params("layers"))
def test_imports_follow_the_layer_order(package):
    bad = []
    for imp in imports():
        if group(imp.source) != package or not _inside(imp.target) or imp.source == FACADE:
            continue
        if imp.target == FACADE:
            if layer(imp.source) != "cli":
                bad.append(f"{_where(imp)}: only the CLI may import the package facade")
            continue
        if LAYERS.index(layer(imp.target)) > LAYERS.index(layer(imp.source)):
            bad.append(f"{_where(imp)}: layer {layer(imp.source)} may not import layer {layer(imp.target)}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", params("frameworks"))
def test_streamlit_nowhere_plotly_and_graphviz_only_in_render(package):
    bad = []
    for imp in imports():
        if group(imp.source) != package:
            continue
        top = imp.target.split(".")[0]
        if top == "streamlit":
            bad.append(f"{_where(imp)}: nothing under tnviz/ imports streamlit")
        elif top in RENDER_ONLY and layer(imp.source) != "render":
            bad.append(f"{_where(imp)}: {top} belongs to render/")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", params("torch"))
def test_the_core_never_imports_torch_at_module_level(package):
    bad = [
        _where(imp) for imp in imports()
        if group(imp.source) == package and layer(imp.source) == "core" and imp.module_level
        and imp.target.split(".")[0] in HEAVY
    ]
    assert not bad, "\n".join(bad)


def _circles() -> list[list[str]]:
    """Strongly connected parts (Tarjan) of the graph of imports between files, both levels."""
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for imp in imports():
        if imp.target in graph and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("package", params("circles"))
def test_no_import_circles_between_files(package):
    mine = [c for c in _circles() if any(group(m) == package for m in c)]
    assert not mine, "import circles: " + "; ".join(" <-> ".join(c) for c in mine)


def test_the_circle_finder_finds_a_circle(tmp_path, monkeypatch):
    # non-vacuous: two files importing each other inside functions are found
    pkg = tmp_path / "tnviz"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from .a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    modules.cache_clear()
    imports.cache_clear()
    try:
        assert _circles() == [["tnviz.a", "tnviz.b"]]
    finally:
        modules.cache_clear()
        imports.cache_clear()


def test_a_fresh_interpreter_importing_the_core_loads_no_framework():
    core = sorted(m for m in modules() if layer(m) == "core" and m not in APART and m != FACADE)
    assert {"tnviz.cost", "tnviz.paths", "tnviz.layout", "tnviz.gauge", "tnviz.bonds.cut"} <= set(core)
    code = (
        "import importlib, sys\n"
        f"for name in {core!r}:\n"
        "    importlib.import_module(name)\n"
        "print(','.join(m for m in ('torch', 'streamlit', 'plotly', 'graphviz') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT.parent)
    assert out.stdout.strip() == "", f"importing the core loaded {out.stdout.strip()}"
