"""The core's import graph: acyclic (function-level imports included, so no cycle hides behind one),
no module imports another's private names, and the method classes never import the modes."""

from __future__ import annotations

import ast
from pathlib import Path

import linmultistep

CORE = Path(linmultistep.__file__).parent
MODULES = {p.stem: p for p in CORE.glob("*.py")}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported core module, names) for every import of a core module in ``path``, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module
            elif node.level == 0 and node.module and node.module.split(".")[0] == "linmultistep":
                base = ".".join(node.module.split(".")[1:]) or None
            else:
                continue
            if base is None:  # from . import x, y: each is a module (or a name of __init__)
                for a in node.names:
                    out.append((a.name if a.name in MODULES else "__init__", [a.name]))
            else:
                out.append((base.split(".")[0], [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "linmultistep" and len(parts) > 1 and parts[1] in MODULES:
                    out.append((parts[1], []))
    return out


def _graph() -> dict[str, set[str]]:
    return {name: {m for m, _ in _imports(p) if m in MODULES and m != name} for name, p in MODULES.items()}


def test_the_core_import_graph_is_acyclic():
    graph = _graph()
    graph.pop("__init__")  # the package re-exports everything; no core module imports it ...
    for name, deps in graph.items():
        assert "__init__" not in deps or name == "cli", f"{name} imports the package __init__"
        deps.discard("__init__")
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path + [n]))
        if state.get(n) == 2:
            return
        state[n] = 1
        for d in sorted(graph.get(n, ())):
            visit(d, path + [n])
        state[n] = 2

    for n in sorted(graph):
        visit(n, [])


def test_no_module_imports_private_names_of_another():
    bad = [(name, mod, n) for name, p in MODULES.items() for mod, names in _imports(p) for n in names
           if n.startswith("_") and not n.startswith("__")]
    assert not bad, f"private names imported across modules: {bad}"


def test_methods_and_forms_never_import_the_mode_registry():
    for name in ("methods", "forms", "stable", "fixedpoint", "guards", "entries", "context", "rules", "generated_belm"):
        assert "modes" not in {m for m, _ in _imports(MODULES[name])}, name


def test_the_core_runs_from_a_source_checkout_without_the_backends(tmp_path):
    """The numpy backend lives in the core: with linmultistep.backends unimportable (a plain source
    checkout, nothing installed) invert and sample still run."""
    import subprocess
    import sys

    code = f"""
import sys
sys.path.insert(0, {str(CORE.parent)!r})

class _NoBackends:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("linmultistep.backends") or name.startswith("linmultistep.analysis"):
            raise ImportError("not in a source checkout: " + name)

sys.meta_path.insert(0, _NoBackends())
import numpy as np
import linmultistep as lm
assert lm.__file__.startswith({str(CORE)!r}), lm.__file__
grid = lm.Grid.from_alphas_cumprod(lm.alphas_cumprod_for("linear"), 10)
eps = lambda x, i: np.tanh(x)
lat = lm.invert(eps, np.ones(3), grid)
print(float(np.abs(lm.sample(eps, lat, grid) - 1).max()))
assert "torch" not in sys.modules and "sympy" not in sys.modules
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 1e-12
