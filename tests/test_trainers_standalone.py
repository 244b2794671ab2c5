"""`trainers/` is the library under `bench/`: it imports nothing from `bench` (issue 13)."""
from __future__ import annotations

import ast
from pathlib import Path

TRAINERS = Path(__file__).resolve().parents[1] / "trainers"


def bench_imports(root: Path) -> list[str]:
    """`file:line module` of every import of `bench` (at the top or inside a function) under `root`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            found += [f"{path.relative_to(root.parent)}:{node.lineno} {n}" for n in names
                      if n == "bench" or n.startswith("bench.")]
    return found


def test_trainers_import_nothing_from_bench():
    assert bench_imports(TRAINERS) == []


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    pkg = tmp_path / "trainers"
    pkg.mkdir()
    (pkg / "x.py").write_text("import os\n\ndef f():\n    from bench.errors import BenchError\n")
    assert bench_imports(pkg) == ["trainers/x.py:4 bench.errors"]


def test_a_trainer_error_is_a_bench_error():
    """The CLI prints a BenchError as one line; the trainer's errors are the same class."""
    from bench.errors import BenchError
    from trainers.checkpoint import CorruptStateError
    from trainers.errors import UserError
    from trainers.objectives.base import ObjectiveError

    assert BenchError is UserError
    assert issubclass(ObjectiveError, BenchError) and issubclass(CorruptStateError, BenchError)
