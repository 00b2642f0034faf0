"""The package ``tnviz.nn`` (its ``__init__``): the built-in strategies registered in order, the
layers loaded on first use, and an import graph of its modules without circles (imports inside
functions count too), in which the measured choice never imports the layer."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tnviz.nn as tnn

ROOT = Path(__file__).resolve().parents[1]
NN = ROOT / "tnviz" / "nn"


def _imports(path: Path) -> set[str]:
    """The ``tnviz.nn`` modules that ``path`` imports anywhere in it (relative imports resolved)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:  # from . import x, y
                names.update(a.name for a in node.names if (NN / f"{a.name}.py").exists())
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tnviz.nn."):
            names.add(node.module.split(".")[2])
    return {n for n in names if (NN / f"{n}.py").exists()}


def _graph() -> dict[str, set[str]]:
    """Module -> the modules it imports (``__init__`` registers and re-exports; it is the top)."""
    return {p.stem: _imports(p) - {p.stem} for p in NN.glob("*.py") if p.stem != "__init__"}


def test_the_modules_of_tnviz_nn_import_each_other_without_circles():
    graph = _graph()
    assert {"plan", "strategies", "chain", "chain_strategy", "ring", "modes", "rebuild", "factorized", "fused", "autotune"} <= set(graph)
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import circle: {' -> '.join(path + [module])}"
        state[module] = "open"
        for dep in sorted(graph[module]):
            visit(dep, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])
    assert "linear" not in graph["autotune"] and "linear" not in graph["strategies"]
    assert "strategies" not in graph["fused"] and graph["plan"] == set()


def test_the_built_in_strategies_are_registered_in_order():
    assert list(tnn.STRATEGIES) == ["factorized", "rebuilt", "chain", "ring", "modes", "fused"]
    assert all(name == s.name for name, s in tnn.STRATEGIES.items())


def test_the_layers_load_on_first_use_and_every_exported_name_resolves():
    code = ("import sys, tnviz.nn as tnn\n"
            "assert 'torch' not in sys.modules\n"
            "from tnviz.nn import TNLinear, TNEmbedding, graphed\n"
            "assert 'torch' in sys.modules and TNLinear.__module__ == 'tnviz.nn.linear'\n"
            "missing = [n for n in tnn.__all__ if not hasattr(tnn, n)]\n"
            "assert not missing, missing\n"
            "from tnviz.nn import workspace, measure\n"  # submodules still import as such
            "assert workspace.__name__ == 'tnviz.nn.workspace' and measure.__name__ == 'tnviz.nn.measure'\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
    assert set(tnn.__all__) <= set(dir(tnn))
