"""Where a suite command's time went: one JSON line per finished command in logs/phases.jsonl.

    started   the runner began (the suite file read; the process started a little before)
    prepared  the shared stages are done (data, reference SFT, reward model, reference log-probs)
    runs_done every run and the reference are trained and evaluated
    aggregated the results, leaderboard and plots are written

An executor changes the runs' phase (and, for the local one, parts of the others); `bench.py
perf grid` prints the phases side by side, so that a ratio can be read against them.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

FILE = Path("logs") / "phases.jsonl"
MARKS = ("started", "prepared", "runs_done", "aggregated")


class PhaseClock:
    def __init__(self, executor: str, started: float):
        self.executor = executor
        self.marks = {"started": started}

    def mark(self, name: str) -> None:
        assert name in MARKS, name
        self.marks[name] = time.time()

    def write(self, out: Path) -> None:
        """Append this command's marks; a full disk costs the record, never the results."""
        line = json.dumps({"executor": self.executor, "pid": os.getpid(), **self.marks}, sort_keys=True)
        try:
            (out / FILE).parent.mkdir(parents=True, exist_ok=True)
            with open(out / FILE, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        except OSError:
            pass


def last_phases(out: Path) -> dict[str, float] | None:
    """The last command's phases in seconds ({setup, runs, aggregate}), or None."""
    try:
        lines = (Path(out) / FILE).read_text(encoding="utf-8").splitlines()
        marks = json.loads(lines[-1])
    except (OSError, IndexError, ValueError):
        return None
    if not all(isinstance(marks.get(name), (int, float)) for name in MARKS):
        return None
    return {"setup": marks["prepared"] - marks["started"], "runs": marks["runs_done"] - marks["prepared"],
            "aggregate": marks["aggregated"] - marks["runs_done"]}
