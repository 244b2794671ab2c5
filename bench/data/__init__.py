"""Preference data: records, sources (hub / local files, HH-RLHF, generic), splits, builtin tasks."""
from bench.data.records import LoadResult, PreferencePair
from bench.data.sources import load_pairs
from bench.data.splits import Splits, split_pairs
from bench.data.tasks import TASKS, get_task

__all__ = ["LoadResult", "PreferencePair", "Splits", "TASKS", "get_task", "load_pairs", "split_pairs"]
