"""Preference data: records, sources (hub / local files, HH-RLHF, generic), splits, builtin tasks."""
from bench.data.records import LoadResult, PreferencePair
from bench.data.sources import load_pairs
from bench.data.splits import Splits, split_pairs
from bench.data.registry import DataSource, get_source, list_sources
from bench.data.tasks import get_task, list_tasks

__all__ = ["DataSource", "LoadResult", "PreferencePair", "Splits", "get_source", "get_task", "list_sources",
           "list_tasks", "load_pairs", "split_pairs"]
