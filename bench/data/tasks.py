"""Registry of builtin synthetic tasks (data + gold verifier), looked up by name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from bench.data import arith
from bench.errors import BenchError
from trainers.errors import nearest


@dataclass(frozen=True)
class BuiltinTask:
    name: str
    make_pairs: Callable        # (n, seed, **options) -> list[PreferencePair]
    make_sft_demos: Callable    # (n, seed, error_rate, **options) -> list[PreferencePair]
    default_size: int           # pairs made when the suite sets no data.limit
    words: tuple[str, ...] = () # the task's vocabulary (whole-word tokens of the word tokenizer)
    pair_kind: Callable | None = None   # (pair) -> which confound it carries, for scorer validity


_REGISTRY = {
    "arith": BuiltinTask("arith", arith.make_pairs, arith.make_sft_demos, default_size=2000,
                         words=arith.WORDS, pair_kind=arith.pair_kind),
}
TASKS = sorted(_REGISTRY)


def get_task(name: str) -> BuiltinTask:
    """The builtin task called `name`; an unknown name is a BenchError naming the nearest."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    near = nearest(name, TASKS, cutoff=0.0)
    raise BenchError(f"unknown builtin task {name!r}; did you mean {near!r}? (tasks: {', '.join(TASKS)})")


def builtin_words(source: str) -> tuple[str, ...]:
    """The vocabulary of builtin task `source`; () for data that is not a builtin task."""
    return _REGISTRY[source].words if source in _REGISTRY else ()


def builtin_pair_kind(source: str):
    """The pair classifier of builtin task `source` (None for other data)."""
    return _REGISTRY[source].pair_kind if source in _REGISTRY else None
