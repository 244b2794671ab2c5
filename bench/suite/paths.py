"""Relative paths of a suite: resolved against the suite file's folder, or the shell's.

`data.path`, `reward_model.path`, `model.policy` and `scoring.lm_eval.include_path` are
resolved against the directory of the suite file when they start with `./` or `../` (so a
suite and its data can move together), and against the current directory when given with
`--set` on the command line; `~` is expanded; any other value is kept as written (absolute
paths, hub ids such as `Qwen/Qwen2.5-0.5B`, and paths relative to the working directory).
"""
from __future__ import annotations

import os
from pathlib import Path

# The suite fields that hold a file or folder path (each, as a path of section keys).
PATH_FIELDS = (("data", "path"), ("reward_model", "path"), ("model", "policy"), ("scoring", "lm_eval", "include_path"))


def _resolve_path(value: str | None, base: Path) -> str | None:
    if not value:
        return value
    if value.startswith(("./", "../")):
        return str((base / value).resolve())
    return os.path.expanduser(value) if value.startswith("~") else value


def _resolve_at(data: dict, field: tuple, base: Path) -> None:
    *sections, key = field
    block = data
    for section in sections:
        block = block.get(section) if isinstance(block, dict) else None
    if isinstance(block, dict) and isinstance(block.get(key), str):
        block[key] = _resolve_path(block[key], base)


def resolve_paths(data: dict, base: Path) -> None:
    """The path fields written in the suite file: relative to the file's folder `base`."""
    for field in PATH_FIELDS:
        _resolve_at(data, field, base)


def resolve_override_path(data: dict, override: str) -> None:
    """A `--set data.path=../x` value: made absolute against the current directory."""
    key = tuple(p.strip() for p in override.partition("=")[0].split("."))
    if key in PATH_FIELDS:
        _resolve_at(data, key, Path.cwd())


def tasks_dir(suite) -> Path | None:
    """lm-eval's include path: `scoring.lm_eval.include_path`, else `tasks/` beside the suite file."""
    if suite.scoring.lm_eval.include_path:
        return Path(suite.scoring.lm_eval.include_path)
    tasks = suite.suite_dir / "tasks"
    return tasks if tasks.is_dir() else None
