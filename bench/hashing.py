"""Canonical JSON and content hashes: equal content gives equal text and equal keys.

Run ids, stage cache keys and the results table's `params` column all go through here,
so a configuration hashes the same wherever it is hashed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def _jsonable(obj: Any):
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"cannot hash {type(obj).__name__}")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)


def content_hash(*parts: Any, length: int = 12) -> str:
    """Short sha256 of the canonical JSON of `parts`: a cache key independent of key order."""
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:length]
