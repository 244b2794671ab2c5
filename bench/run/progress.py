"""Suite-level progress: which stage, which run, how many are left, and an ETA.

Printed as one line per step on stderr (through tqdm.write, so the inner bars of the
trainer and the generator are not torn apart).
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}m{seconds % 60:02d}s"


class StageProgress:
    def __init__(self, *, total_runs: int, enabled: bool = True):
        self.total, self.done, self.enabled = total_runs, 0, enabled
        self.started = time.time()
        self.first_run_started: float | None = None

    def stage(self, name: str, run=None) -> None:
        if run is not None and self.first_run_started is None:
            self.first_run_started = time.time()
        if not self.enabled:
            return
        elapsed = time.time() - self.started
        what = f" run {self.done + 1}/{self.total} {run.label} seed={run.seed}" if run is not None else ""
        tqdm.write(f"[{name}]{what} | elapsed {_clock(elapsed)}{self._eta()}", file=sys.stderr)

    def run_done(self) -> None:
        self.done += 1

    def _eta(self) -> str:
        if not self.done or self.first_run_started is None:
            return ""
        per_run = (time.time() - self.first_run_started) / self.done
        return f" | ETA {_clock(per_run * (self.total - self.done))}"

    def close(self) -> None:
        if self.enabled:
            tqdm.write(f"[done] {self.done}/{self.total} runs in {_clock(time.time() - self.started)}", file=sys.stderr)
