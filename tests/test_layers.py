"""The library's layers, checked: a module imports only from its own layer or those below it,
there are no import cycles, and no import of a cptlib module hides in a function body unless
it says why (a lazy import of a heavy optional family)."""

from __future__ import annotations

import ast
from pathlib import Path

import cptlib

PACKAGE = Path(cptlib.__file__).resolve().parent

#: Layer of each module prefix (longest prefix wins), bottom first. See ARCHITECTURE.md.
LAYER_OF = {
    "cptlib": "foundation", "cptlib.paths": "foundation", "cptlib._io": "foundation",
    "cptlib._env": "foundation", "cptlib.config": "foundation", "cptlib.records": "foundation",
    "cptlib.balancers": "maths", "cptlib.grads": "maths", "cptlib.metrics": "maths",
    "cptlib.toy": "maths", "cptlib.choose_c": "maths",
    "cptlib.data": "data",
    "cptlib.models": "models",
    "cptlib.train": "training", "cptlib.distributed": "training",
    "cptlib.analysis": "analysis",
    "cptlib.report": "report", "cptlib.plots": "report",
    "cptlib.runs": "runs", "cptlib.launch": "runs",
    "cptlib.bench": "top", "cptlib.book": "top", "cptlib.cli": "top",
    "cptlib.run_profile": "top",
}
#: What each layer may import (besides itself).
MAY_IMPORT = {
    "foundation": set(),
    "maths": {"foundation"},
    "data": {"foundation"},
    "models": {"foundation", "data"},  # the embedded backbone pretrains on embedded data
    "training": {"foundation", "maths", "data", "models"},
    "analysis": {"foundation"},
    "report": {"foundation", "analysis"},
    "runs": {"foundation", "maths", "data", "models", "training"},
    "top": {"foundation", "maths", "data", "models", "training", "analysis", "report", "runs"},
}


def module_name(path: Path) -> str:
    parts = ["cptlib", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    best = max((p for p in LAYER_OF if module == p or module.startswith(p + ".")), key=len)
    return LAYER_OF[best]


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported cptlib module, line, inside a function body) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names
                             if a.name.split(".")[0] == "cptlib")
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module.split(".")[0] == "cptlib":
                    # ``from cptlib import records``: the imported names may be modules
                    subs = [f"{child.module}.{a.name}" for a in child.names]
                    real = [s for s in subs if _is_module(s)]
                    found.extend((m, child.lineno, in_function) for m in (real or [child.module]))
            visit(child, inside)

    visit(tree, False)
    return found


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_layer():
    for path in sources():
        assert layer(module_name(path)) in MAY_IMPORT


def test_no_module_imports_from_a_layer_above_it():
    bad = []
    for path in sources():
        here = module_name(path)
        for target, line, _ in imports(path):
            src, dst = layer(here), layer(target)
            if dst != src and dst not in MAY_IMPORT[src]:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} ({src}) imports {target} ({dst})")
    assert not bad, "\n".join(bad)


def test_imports_in_function_bodies_say_why():
    """A function-level import of a cptlib module is allowed only with a comment saying it is
    lazy on purpose (heavy optional family, or the command importing only what it uses)."""
    bad = []
    for path in sources():
        lines = path.read_text().splitlines()
        for target, line, in_function in imports(path):
            text = lines[line - 1] + (lines[line - 2] if line > 1 else "")
            if in_function and "lazy" not in text:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {target} in a function")
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_modules():
    graph = {module_name(p): {t for t, _, f in imports(p) if not f} for p in sources()}
    # a package's __init__ re-exporting its submodules is not a cycle with them
    state: dict[str, int] = {}
    cycle: list[str] = []

    def walk(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt == node or node.startswith(nxt + ".") and nxt in graph and _reexports(nxt):
                continue
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and nxt in graph and walk(nxt, [*stack, nxt]):
                return True
        state[node] = 2
        return False

    for start in graph:
        if state.get(start) is None and walk(start, [start]):
            break
    assert not cycle, " -> ".join(cycle)


def _reexports(package: str) -> bool:
    return (PACKAGE / Path(*package.split(".")[1:]) / "__init__.py").exists()


def test_the_library_never_runs_its_own_command():
    for path in sources():
        text = path.read_text()
        assert '"-m", "cptlib.cli"' not in text and "'cptlib.cli'" not in text, path
