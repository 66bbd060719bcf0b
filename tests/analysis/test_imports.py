"""The analysis modules import one another without a cycle, at module level, and each imports on its own."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import convzoo.analysis

PACKAGE = "convzoo.analysis"
SOURCE = Path(convzoo.analysis.__file__).parent
MODULES = {PACKAGE if p.stem == "__init__" else f"{PACKAGE}.{p.stem}": p for p in SOURCE.glob("*.py")}


class _Imports(ast.NodeVisitor):
    """Collects the package modules a file imports, each with whether the import sits inside a def or class."""

    def __init__(self) -> None:
        self.found: list[tuple[str, bool]] = []
        self.depth = 0

    def _scope(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = _scope

    def _add(self, name: str) -> None:
        # `from convzoo.analysis import summary` names the submodule; `import convzoo.analysis.fields.x` its module.
        while name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in MODULES:
            self.found.append((name, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parent = PACKAGE.rsplit(".", node.level - 1)[0]
            base = f"{parent}.{base}".rstrip(".")
        for alias in node.names:
            self._add(f"{base}.{alias.name}")


def _graph() -> dict[str, dict[str, bool]]:
    """Module -> the package modules it imports -> whether any of those imports sits inside a def or class."""
    graph: dict[str, dict[str, bool]] = {}
    for module, path in MODULES.items():
        visitor = _Imports()
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        edges = graph.setdefault(module, {})
        for target, nested in visitor.found:
            if target != module:
                edges[target] = edges.get(target, False) or nested
    return graph


def _cycle(graph: dict[str, dict[str, bool]]) -> list[str] | None:
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in graph.get(node, {}):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_sees_every_kind_of_edge():
    graph = _graph()
    assert graph["convzoo.analysis.receptive"]["convzoo.analysis.summary"] is False
    assert graph["convzoo.analysis.summary"]["convzoo.analysis.fields"] is False
    assert set(graph[PACKAGE]) >= {"convzoo.analysis.summary", "convzoo.analysis.receptive"}
    visitor = _Imports()
    visitor.visit(ast.parse("def f():\n    from . import summary\n    from .fields import GLOBAL\n"))
    assert visitor.found == [("convzoo.analysis.summary", True), ("convzoo.analysis.fields", True)]
    assert _cycle({"a": {"b": False}, "b": {"c": False}, "c": {"a": True}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": False}, "b": {}, "c": {"a": False}}) is None


def test_analysis_modules_import_each_other_without_a_cycle():
    graph = _graph()
    cycle = _cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"
    # An import moved into a function hides a cycle from the interpreter, not from readers: none between these modules.
    hidden = sorted(f"{module} -> {target}" for module, edges in graph.items() for target, n in edges.items() if n)
    assert hidden == []


@pytest.mark.parametrize("module", sorted(m.rsplit(".", 1)[-1] for m in MODULES if m != PACKAGE))
def test_each_module_imports_alone(module):
    # importlib, not `import ... as`: the package's `summary` attribute is the function, not the module.
    code = f"import importlib; print(importlib.import_module('convzoo.analysis.{module}').__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"convzoo.analysis.{module}"
