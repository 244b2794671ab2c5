"""The registry of data sources: each source registers itself with what it needs and offers.

A source is one module in `bench/data/` that calls `register_rows_source` (rows read from a
file or a hub dataset, each turned into a pair by the source's `convert`) or
`register_task` (pairs made in code, with SFT demonstrations and a vocabulary).
`get_source` imports every module of the package the first time a name is asked for, so a
new source is one new file. Loading (`bench.data.sources.load_pairs`), validation and the
stage fingerprints ask the flags here instead of comparing `data.source` with names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from bench.errors import DataError
from trainers.errors import nearest
from trainers.registry import Registry

# A converted row: (prompt, chosen, rejected, chat messages or None, note or None), or the
# name of the reason it is skipped (bench.data.sources._REASONS).
Convert = Callable[[dict], "tuple | str"]


@dataclass(frozen=True)
class BuiltinTask:
    """Pairs made in code: `make_pairs(n, seed, **options)`, `make_sft_demos(n, seed, error_rate, **options)`."""

    name: str
    make_pairs: Callable        # (n, seed, **options) -> list[PreferencePair]
    make_sft_demos: Callable    # (n, seed, error_rate, **options) -> list[PreferencePair]
    default_size: int           # pairs made when the suite sets no data.limit
    words: tuple[str, ...] = () # the task's vocabulary (whole-word tokens of the word tokenizer)
    pair_kind: Callable | None = None   # (pair) -> which confound it carries, for scorer validity


@dataclass(frozen=True)
class DataSource:
    """A registered data source and its capability flags."""

    name: str
    reference: str                       # the dataset's paper or card
    convert: Convert | None = None       # rows sources: one row -> a pair or a skip reason
    task: BuiltinTask | None = None      # builtin tasks: the pair maker
    hub_id: str | None = None            # the hub dataset read when the suite gives neither data.path nor data.hub_id
    splits: tuple[str, ...] = ()         # the hub splits data.split may name (empty: any the dataset has)
    gold: str | None = None              # the gold verifier that checks its answers (scoring.gold)

    @property
    def builtin(self) -> bool:
        """Made in code: no file, no network, takes `data.task_options`, has SFT demonstrations."""
        return self.task is not None

    def hub_dataset(self, cfg) -> str | None:
        """The hub dataset a `DataConfig` reads (None: a local file or a builtin task)."""
        if self.builtin or cfg.path:
            return None
        return cfg.hub_id or self.hub_id

    def needs_network(self, cfg) -> bool:
        """True when the rows come from the hub (they are downloaded at run time)."""
        return not self.builtin and not cfg.path


SOURCES: Registry[DataSource] = Registry("data source", __package__)


def _add(source: DataSource) -> DataSource:
    return SOURCES.add(source.name, source)


def register_rows_source(name: str, *, reference: str, hub_id: str | None = None, splits: tuple[str, ...] = (),
                         gold: str | None = None) -> Callable[[Convert], Convert]:
    """Decorator registering a row converter as data source `name`; returns the function unchanged."""
    def wrap(convert: Convert) -> Convert:
        _add(DataSource(name, reference, convert=convert, hub_id=hub_id, splits=tuple(splits), gold=gold))
        return convert
    return wrap


def register_task(task: BuiltinTask, *, reference: str, gold: str | None = None) -> BuiltinTask:
    """Register a builtin task as data source `task.name`; returns the task."""
    _add(DataSource(task.name, reference, task=task, gold=gold))
    return task


def list_sources(*, builtin: bool | None = None) -> list[str]:
    """Names of the registered sources (builtin tasks only, rows sources only, or all), sorted."""
    return sorted(name for name, s in SOURCES.discover().items() if builtin is None or s.builtin == builtin)


def find_source(name: str) -> DataSource | None:
    """The source registered as `name`, or None."""
    return SOURCES.find(name)


def get_source(name: str) -> DataSource:
    """The source registered as `name`; an unknown name is one line naming the nearest."""
    source = find_source(name)
    if source is None:
        choices = list_sources()
        raise DataError(f"data.source: unknown source {name!r}; did you mean {nearest(name, choices, cutoff=0.0)!r}? "
                        f"(sources: {', '.join(choices)})")
    return source
