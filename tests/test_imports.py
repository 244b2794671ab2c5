"""The import graph of bench/ and trainers/, drawn with `ast` from every import statement
(those inside functions too): no circles, trainers/ imports nothing from bench/, and every
import goes to the importer's floor or a floor below it (docs/DESIGN.md section 2)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Floors, lowest first; a module's floor is that of its longest matching prefix.
FLOORS = [
    ("trainers", "bench.errors", "bench.hashing", "bench.io", "bench.models", "bench.versions"),
    ("bench.data", "bench.suite", "bench.tables"),       # the suite's definition, data, tables
    ("bench.evaluation",),                               # one policy: generate and score
    # the stages (what a run is) and the executors (where it runs: the runner opens one, a task
    # runs the stages); validate's cross-checks load data; the gate reads what the stages record
    ("bench.run", "bench.executors", "bench.suite.validate", "bench.gate"),
    ("bench.perf", "bench.api", "bench.cli", "bench"),   # entry points
]


def modules() -> dict[str, Path]:
    found = {}
    for path in [*REPO.glob("bench/**/*.py"), *REPO.glob("trainers/**/*.py")]:
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph(found: dict[str, Path] | None = None) -> set[tuple[str, str]]:
    """(importer, imported) for every project module an import statement names. `from a import b`
    counts as importing `a.b` when that is a module, else `a`. An import of one's own package
    (or a package above it) is left out: Python runs a package's __init__ before its modules."""
    found = found or modules()
    edges = set()
    for name, path in found.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in found else base for a in node.names]
            else:
                continue
            for target in targets:
                if target in found and target != name and not name.startswith(target + "."):
                    edges.add((name, target))
    return edges


def find_cycle(edges) -> list[str] | None:
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def floor(module: str) -> int:
    best, rank = -1, None
    for i, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module} is on no floor; add it to FLOORS"
    return rank


def test_graph_sees_imports_inside_functions_and_relative_ones():
    edges = import_graph()
    assert ("bench.cli", "bench.run.runner") in edges            # imported inside a command
    assert ("trainers.objectives.dpo", "trainers.objectives.base") in edges   # `from .base import`
    assert find_cycle({("a", "b"), ("b", "c"), ("c", "a")}) == ["a", "b", "c", "a"]
    assert find_cycle({("a", "b"), ("b", "c")}) is None


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_trainers_import_nothing_from_bench():
    leaks = sorted((a, b) for a, b in import_graph() if a.startswith("trainers") and b.split(".")[0] == "bench")
    assert not leaks, f"trainers/ imports bench/: {leaks}"


def test_imports_go_to_the_same_floor_or_below():
    upward = sorted(f"{a} (floor {floor(a)}) -> {b} (floor {floor(b)})"
                    for a, b in import_graph() if floor(b) > floor(a))
    assert not upward, "imports to a higher floor:\n" + "\n".join(upward)


def test_every_module_is_on_a_floor():
    assert [floor(m) for m in ("trainers.trainer", "bench.suite.schema", "bench.suite.validate", "bench.executors.tasks",
                               "bench")] == [0, 1, 3, 3, 4]
    for name in modules():
        floor(name)
