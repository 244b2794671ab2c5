"""The judgment cache: every answer an LLM judge gave, kept the moment it arrives.

One SQLite file (`stages/judge/.judgments.sqlite` of a results folder) maps a key of
(judge model, template fingerprint, decoding settings, prompt, the text shown as A, the text
shown as B) to the judge's answer. Each answer is committed on its own, so Ctrl-C, a kill or
a judge server dying mid-run loses none that arrived; a rerun, or a new policy, asks the
judge only for what is not there. The order is part of the key through which text is A.
SQLite rather than a JSONL file: concurrent writers (the request threads) and a torn last
write are its problem, not ours.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

CACHE_FILE = ".judgments.sqlite"   # hidden: not a stage (bench.run.verify skips it), not an output


def judgment_key(*, model: str, template: str, temperature: float, max_tokens: int, prompt: str,
                 text_a: str, text_b: str) -> str:
    """The cache key of one judge call (sha256 of its inputs as canonical JSON)."""
    payload = json.dumps({"model": model, "template": template, "temperature": float(temperature),
                          "max_tokens": int(max_tokens), "prompt": prompt, "a": text_a, "b": text_b},
                         sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgmentCache:
    """A thread-safe key -> answer (dict) store; `put` is durable when it returns."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # autocommit (isolation_level None): each INSERT is its own transaction, on disk at return.
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")   # WAL + NORMAL: a committed answer survives a killed process
        self._db.execute("CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT answer FROM judgments WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, answer: dict) -> None:
        text = json.dumps(answer, sort_keys=True, ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO judgments (key, answer) VALUES (?, ?)", (key, text))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
