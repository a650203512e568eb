"""The package's shape: no import cycle, small files and functions (the layer contracts
themselves are import-linter's, in pyproject.toml, run by `make lint`)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

SOURCE = Path(__file__).parents[1] / "src" / "omnifuse"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_modules_or_parts():
    graph = grimp.build_graph("omnifuse")
    modules = {m for m in graph.modules if m != "omnifuse"}  # the root imports the built-ins
    edges = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}
    assert cycles(edges) == []
    parts = {m: m.split(".")[1] for m in modules}
    squashed: dict[str, set[str]] = {}
    for module, imported in edges.items():
        squashed.setdefault(parts[module], set()).update(
            parts[i] for i in imported if parts[i] != parts[module]
        )
    assert cycles(squashed) == []


def test_tarjan_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_file_over_600_lines_and_no_function_over_80():
    long = []
    for path in sorted(SOURCE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 600:
            long.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 80:
                    long.append(f"{path.name}: {node.name} has {length} lines")
    assert long == []
