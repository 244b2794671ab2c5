"""Atomic file writes: a file is either its old content or its new content, never half of it.

Every whole-file write of the harness goes through `atomic_write` (results tables, leaderboards,
statistics settings, validity, the aggregate's key, generations, the accelerate launcher's
inputs), so a killed run never leaves a truncated file that a rerun would read as finished.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from trainers.checkpoint import unique_suffix


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` fills a temporary sibling, which then replaces `path` in one rename.

    The temporary name is unique to the process and call (two writers never share one), and
    carries `.tmp-` so that the stage store recognises a killed write's leftover.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{unique_suffix()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
