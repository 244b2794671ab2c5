"""Cached, atomic stages: a stage's output lives in `stages/<name>/<key>/`, complete or absent.

A stage function writes into a temporary sibling directory; only when it returns is the
directory renamed into place (rename is atomic on one filesystem). A killed run therefore
leaves no half-written stage, and a rerun finds every finished stage and redoes none.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable


DONE_MARKER = "STAGE_DONE.json"


class StageStore:
    """The stage folders of one suite output directory."""

    def __init__(self, root: Path):
        self.root = Path(root) / "stages"
        self.reused: list[str] = []
        self.computed: list[str] = []

    def path(self, name: str, key: str) -> Path:
        return self.root / name / key

    def is_done(self, name: str, key: str) -> bool:
        return (self.path(name, key) / DONE_MARKER).exists()

    def run(self, name: str, key: str, build: Callable[[Path], dict | None]) -> Path:
        """Return the finished stage directory, building it with `build(tmp_dir)` if needed.

        `build` may return a small JSON-able dict recorded in the done marker.
        """
        final = self.path(name, key)
        if self.is_done(name, key):
            self.reused.append(f"{name}/{key}")
            return final
        tmp = final.parent / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        info = build(tmp) or {}
        (tmp / DONE_MARKER).write_text(json.dumps(info, sort_keys=True, default=str))
        shutil.rmtree(final, ignore_errors=True)  # a stale, unfinished directory of an old layout
        os.replace(tmp, final)
        self.computed.append(f"{name}/{key}")
        return final

    def info(self, name: str, key: str) -> dict:
        return json.loads((self.path(name, key) / DONE_MARKER).read_text())

    def work_dir(self, name: str, key: str) -> Path:
        """A persistent (non-atomic) directory for work that resumes itself, such as training."""
        path = self.root / name / key
        path.mkdir(parents=True, exist_ok=True)
        return path
