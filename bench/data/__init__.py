"""Preference data: records, sources (hub / local files, HH-RLHF, generic), splits, builtin tasks."""
from bench.data.records import LoadResult, PreferencePair

__all__ = ["LoadResult", "PreferencePair"]
