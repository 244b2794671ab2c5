"""Builtin synthetic tasks (data + gold verifier): the data sources made in code, by name.

Each task registers itself in `bench.data.registry` (`register_task`, e.g. at the end of
`bench.data.arith`); these helpers are the task-only views the stages use.
"""
from __future__ import annotations

from bench.data.registry import BuiltinTask, find_source, list_sources
from bench.errors import BenchError
from trainers.errors import nearest

__all__ = ["BuiltinTask", "builtin_pair_kind", "builtin_words", "get_task", "list_tasks"]


def list_tasks() -> list[str]:
    """Names of the builtin tasks, sorted."""
    return list_sources(builtin=True)


def get_task(name: str) -> BuiltinTask:
    """The builtin task called `name`; an unknown name is a BenchError naming the nearest."""
    source = find_source(name)
    if source is not None and source.builtin:
        return source.task
    tasks = list_tasks()
    raise BenchError(f"unknown builtin task {name!r}; did you mean {nearest(name, tasks, cutoff=0.0)!r}? "
                     f"(tasks: {', '.join(tasks)})")


def builtin_words(source: str) -> tuple[str, ...]:
    """The vocabulary of builtin task `source`; () for data that is not a builtin task."""
    found = find_source(source)
    return found.task.words if found is not None and found.builtin else ()


def builtin_pair_kind(source: str):
    """The pair classifier of builtin task `source` (None for other data)."""
    found = find_source(source)
    return found.task.pair_kind if found is not None and found.builtin else None
