"""Suite-level progress: which stage, which run, how many are left, and an ETA.

Printed as one line per step on stderr (through tqdm.write, so the inner bars of the
trainer and the generator are not torn apart).
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


def quiet_library_noise() -> None:
    """The harness's own lines say where a run is; transformers' per-load bars only add noise
    (here, not in the CLI: the executors' workers call it too)."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


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


class GridProgress:
    """One view of the runs spread over workers (bench.executors): done, running, failed, ETA.

    One line on stderr each time a run starts or ends. The ETA is the throughput so far (runs
    ended per second since the fan-out began) applied to the runs left, so it accounts for the
    workers running side by side. A failed run's line, with its reason, is shown even when quiet.
    """

    def __init__(self, *, total_runs: int, enabled: bool = True, running_word: str = "running"):
        self.total, self.enabled, self.running_word = total_runs, enabled, running_word
        self.done = self.failed = self.running = 0
        self.stored = 0     # runs found finished in the store: done, but no measure of the pace
        self.started_at = time.time()

    def begin(self) -> None:
        """The fan-out starts now: elapsed time and ETA count from here, not from the shared stages."""
        self.started_at = time.time()

    def note(self, text: str) -> None:
        if self.enabled:
            tqdm.write(f"[grid] {text}", file=sys.stderr)

    def found_stored(self, count: int) -> None:
        if count:
            self.done += count
            self.stored += count
            self._line(f"{count} run(s) already finished in the results folder")

    def started(self, name: str) -> None:
        self.running += 1
        self._line(f"started {name}")

    def finished(self, name: str, *, ok: bool, reason: str | None = None) -> None:
        self.running -= 1
        self.done += 1
        if not ok:
            self.failed += 1
            tqdm.write(f"[grid] FAILED {name}: {reason}", file=sys.stderr)   # quiet or not
        self._line(f"{'finished' if ok else 'failed'} {name}")

    def status(self) -> str:
        left = self.total - self.done
        elapsed = time.time() - self.started_at
        ran = self.done - self.stored
        eta = f" | ETA {_clock(elapsed / ran * left)}" if ran and left else ""
        return (f"{self.done - self.failed}/{self.total} done, {self.running} {self.running_word}, "
                f"{self.failed} failed | elapsed {_clock(elapsed)}{eta}")

    def _line(self, what: str) -> None:
        if self.enabled:
            tqdm.write(f"[grid] {self.status()} | {what}", file=sys.stderr)

    def close(self) -> None:
        if self.enabled:
            tqdm.write(f"[grid] {self.status()}", file=sys.stderr)
