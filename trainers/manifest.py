"""File manifests: what a finished stage or checkpoint holds, so a damaged cache is noticed.

A manifest maps each file (path relative to its folder) to its size and a checksum: SHA-256
of the whole file for small files, and for large ones (model weights, where reading every
byte on each reuse would cost seconds) a BLAKE2b of the size and three 1 MiB samples (start,
middle, end). A truncated, emptied, removed or overwritten file changes the size or a
checksum; a bit flip inside a large file between its samples is not caught (the price of
the cheap check).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

FULL_HASH_LIMIT = 8 << 20      # files up to 8 MiB are hashed whole
SAMPLE = 1 << 20


def file_digest(path: Path, size: int | None = None) -> dict:
    size = path.stat().st_size if size is None else size
    if size <= FULL_HASH_LIMIT:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return {"size": size, "sha256": h.hexdigest()}
    h = hashlib.blake2b(str(size).encode(), digest_size=20)
    with open(path, "rb") as fh:
        for offset in (0, size // 2 - SAMPLE // 2, size - SAMPLE):
            fh.seek(offset)
            h.update(fh.read(SAMPLE))
    return {"size": size, "sample_blake2b": h.hexdigest()}


def build_manifest(folder: Path, exclude: tuple[str, ...] = ()) -> dict[str, dict]:
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel not in exclude:
            files[rel] = file_digest(path)
    return files


def check_manifest(folder: Path, manifest: dict[str, dict]) -> list[str]:
    """The problems found (empty when every listed file is as recorded): `name: what is wrong`."""
    folder = Path(folder)
    problems = []
    for rel, want in manifest.items():
        path = folder / rel
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            problems.append(f"{rel}: missing")
            continue
        except OSError as err:
            problems.append(f"{rel}: unreadable ({err.strerror or err})")
            continue
        if size != want.get("size"):
            problems.append(f"{rel}: {size} bytes, {want.get('size')} expected (truncated or overwritten)")
            continue
        try:
            got = file_digest(path, size)
        except OSError as err:
            problems.append(f"{rel}: unreadable ({err.strerror or err})")
            continue
        if got != want:
            problems.append(f"{rel}: checksum differs (damaged)")
    return problems
