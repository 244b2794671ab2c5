"""Skip the aggregate of a rerun when nothing it reads has changed.

The aggregate (tables, paired bootstrap statistics, leaderboard, plots) is a pure function of
the runs' evaluation folders, the suite and the harness's code. Recomputing it costs about
15 s on the default suite, most of a rerun whose stages are all reused. Its key covers each
evaluation folder's done marker (which holds the checksums of every file in it), each run's
record (status, reason, training summary), the resolved suite and the code of `bench` and
`trainers`; its outputs' checksums are kept beside the key, so a deleted or edited output
is rewritten, never served.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from bench.hashing import content_hash
from bench.io import atomic_write
from bench.run.store import DONE_MARKER
from trainers.manifest import file_digest

KEY_FILE = ".aggregate.json"
# and every hidden path (the key file, the folder and stage locks); superseded/: tables of another
# suite (bench.run.runner.keep_apart)
_NOT_OUTPUTS = {"stages", "logs", "superseded"}
# `report --compare-to` writes its sub-reports here (bench.tables.report.compare_folder): not the run's outputs.
_REPORT_PREFIX = "compare-to-"


AGGREGATE_LIBRARIES = ("numpy", "pandas", "pyarrow", "scipy", "matplotlib")


def code_digest() -> str:
    """Checksum of every Python file of the harness and the versions of the libraries the tables
    are computed with: a code change is a new input. Not cached for the process's life: a
    long-lived process (a notebook, the tests) may run the suite again after an edit."""
    import bench
    import trainers
    from bench.run.code_keys import library_versions

    digest = hashlib.sha256(repr(library_versions(AGGREGATE_LIBRARIES)).encode())
    for package in (bench, trainers):
        root = Path(package.__file__).resolve().parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def aggregate_key(records, *, extra: dict) -> str:
    """The aggregate's inputs, as one key. ``records`` are `PolicyRecord`s (the reference first)."""
    parts = []
    for record in records:
        fields = {k: str(v) for k, v in dataclasses.asdict(record).items() if k != "train_summary"}
        fields["train_summary"] = json.dumps(record.train_summary, sort_keys=True, default=str)
        fields["eval_marker"] = marker_text(record.eval_dir) if record.eval_dir is not None else ""
        parts.append(fields)
    return content_hash("aggregate", code_digest(), json.dumps({"records": parts, **extra}, sort_keys=True, default=str))


def marker_text(stage_dir) -> str:
    """A stage folder's done marker: its identity and the checksums of its files ("" if unfinished)."""
    marker = Path(stage_dir) / DONE_MARKER
    return marker.read_text() if marker.is_file() else ""


def outputs(out: Path) -> dict[str, dict]:
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if (path.is_file() and rel.parts[0] not in _NOT_OUTPUTS and not rel.parts[0].startswith(_REPORT_PREFIX)
                and not any(p.startswith(".") for p in rel.parts)):
            files[rel.as_posix()] = file_digest(path)   # the stage manifests' digest
    return files


def reuse(out: Path, key: str) -> str | None:
    """The leaderboard of an aggregate already written for ``key`` with its files intact, else None."""
    try:
        saved = json.loads((out / KEY_FILE).read_text())
        if saved["key"] != key or not saved["files"] or outputs(out) != saved["files"]:
            return None
        return (out / "leaderboard.md").read_text(encoding="utf-8")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember(out: Path, key: str) -> None:
    """Record the key and the outputs' checksums (after every output is written)."""

    text = json.dumps({"key": key, "files": outputs(out)}, indent=1, sort_keys=True)
    atomic_write(out / KEY_FILE, lambda tmp: tmp.write_text(text))
