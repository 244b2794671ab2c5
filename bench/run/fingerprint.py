"""Content fingerprints of a suite's inputs, for stage keys and provenance.

A stage key must change when what the stage reads changes, not only when its name does: new
weights written at the same model path, a data file edited in place, or a hub repository
that moved on. So a local file or directory is fingerprinted by its bytes (sha256 over names
and contents), and a hub id by the commit it resolves to (asked of the hub when there is
network, else read from the local Hugging Face cache, which is what an offline run loads).
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from bench.suite.paths import tasks_dir
from bench.data.registry import find_source
from trainers import net   # module, not name: tests replace the network probe

BUILTIN_PREFIX = "builtin:"


def _files(root: Path) -> list[Path]:
    """The files a fingerprint covers: a file itself, or a directory's files except Python's
    byte-code caches and hidden files (lm-eval importing a task's utils.py writes
    __pycache__/ beside it, which must not change the tasks' key)."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


@functools.lru_cache(maxsize=64)
def _sha256(path: str, stamp: tuple) -> str:
    """sha256 over a file's bytes, or over a directory's relative file names and bytes.
    `stamp` (sizes and mtimes) is part of the cache key: an edited file is hashed again."""
    h = hashlib.sha256()
    root = Path(path)
    files = _files(root)
    for file in files:
        if root.is_dir():
            h.update(str(file.relative_to(root)).encode() + b"\0")
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _stamp(path: Path) -> tuple:
    files = _files(path)
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


def local_fingerprint(path) -> str:
    path = Path(os.path.expanduser(str(path))).resolve()
    return "sha256:" + _sha256(str(path), _stamp(path))


def hub_revision(repo_id: str, repo_type: str = "model") -> str:
    """The commit `repo_id`'s main branch resolves to: the hub's answer with network, else the
    local cache's `refs/main`; "unresolved" when neither knows (the run then fails on loading)."""
    if net.network_available():
        try:
            from huggingface_hub import HfApi

            api = HfApi()
            info = api.dataset_info(repo_id) if repo_type == "dataset" else api.model_info(repo_id)
            return info.sha
        except Exception:   # a private or renamed repo: the cache may still know it
            pass
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        folder = Path(HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "refs" / "main"
        return folder.read_text().strip()
    except OSError:
        return "unresolved"


def fingerprint(name_or_path: str | None, repo_type: str = "model") -> str | None:
    """`sha256:<hex>` of a local file or directory, `hub:<id>@<commit>` of a hub id, the name
    itself for a model built in code, None for nothing."""
    if not name_or_path:
        return None
    text = str(name_or_path)
    if text.startswith(BUILTIN_PREFIX):
        return text
    if Path(os.path.expanduser(text)).exists():
        return local_fingerprint(text)
    return f"hub:{text}@{hub_revision(text, repo_type)}"


def _default_hub_id(source_name: str) -> str | None:
    """The hub dataset a source reads when the suite names none (bench.data.registry)."""
    source = find_source(source_name)
    return source.hub_id if source is not None else None


def suite_fingerprints(suite) -> dict[str, str | None]:
    """Fingerprints of everything a suite reads from outside: policy, data, reward model, lm-eval tasks."""

    data = suite.data
    if data.path:
        data_fp = fingerprint(data.path)
    elif data.hub_id or _default_hub_id(data.source):
        data_fp = fingerprint(data.hub_id or _default_hub_id(data.source), "dataset")
    else:
        data_fp = f"builtin:{data.source}"
    rm = suite.reward_model
    tasks = tasks_dir(suite) if suite.scoring.lm_eval.tasks else None
    return {"policy": fingerprint(suite.model.policy), "data": data_fp,
            "reward_model": fingerprint(rm.path) if rm.kind == "load" else None,
            "lm_eval_tasks": fingerprint(str(tasks)) if tasks is not None else None}
