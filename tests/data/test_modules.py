"""How the modules of convzoo.data depend on one another: no import cycles, nothing from the rest of convzoo.

Read from the source, so imports inside functions count as much as those at the top of a module.
"""

import ast
from pathlib import Path

import convzoo.data

PACKAGE = "convzoo.data"
SOURCE = Path(convzoo.data.__file__).parent
MODULES = {(PACKAGE if p.stem == "__init__" else f"{PACKAGE}.{p.stem}"): p for p in sorted(SOURCE.glob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """The modules that import statements anywhere in ``path`` name (``from P import m`` names ``P.m`` if a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = PACKAGE.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return found


def data_imports() -> dict[str, set[str]]:
    """The graph: each data module and the data modules it imports."""
    return {name: {m for m in imported_modules(path) if m in MODULES} for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that returns to its start, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_the_modules_and_their_imports():
    assert {f"{PACKAGE}.{m}" for m in ("arrays", "classic", "datasets", "readers", "shapes", "stats")} <= set(MODULES)
    graph = data_imports()
    assert f"{PACKAGE}.arrays" in graph[f"{PACKAGE}.shapes"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_data_modules_import_one_another_without_a_cycle():
    graph = data_imports()
    # Submodules come after the package's __init__, so none of them may take names from the package itself.
    for name, imports in graph.items():
        assert name == PACKAGE or PACKAGE not in imports, f"{name} imports from the package {PACKAGE} itself"
    cycle = find_cycle({name: imports - {PACKAGE} for name, imports in graph.items()})
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_data_modules_import_nothing_else_from_convzoo():
    # So that the registry, the models and the training engine can all import from convzoo.data. convzoo._files
    # (where convzoo keeps its files) imports nothing of convzoo, so it closes no cycle.
    leaves = {"convzoo._files"}
    for name, path in MODULES.items():
        outside = sorted(
            m for m in imported_modules(path) if m.split(".")[0] == "convzoo" and m not in MODULES and m not in leaves
        )
        assert not outside, f"{name} imports {outside}"


def test_stats_imports_nothing():
    tree = ast.parse(MODULES[f"{PACKAGE}.stats"].read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not imports
    from convzoo.data import stats

    for name in stats.__all__:
        value = getattr(stats, name)
        assert isinstance(value, tuple) and len(value) == 3 and all(0 < v < 1 for v in value), name
