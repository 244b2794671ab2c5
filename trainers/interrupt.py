"""Stopping training cleanly: Ctrl-C (SIGINT) or SIGTERM, and saving state on a clock.

During the loop, the first SIGINT or SIGTERM only sets a flag: the loop finishes the step
in progress, saves the resume state and raises `TrainingInterrupted`, whose message says
how to resume. A second signal interrupts at once (the default behaviour).

Resume state is also saved on a clock, so kill -9 (which no handler sees) loses at most
about `SAVE_SECONDS` of work; the interval stretches to ten times the last save's duration
when saving is slow (large models), so saving never costs more than about a tenth of the
training time. Saving is read-only for the run: results are identical either way.
"""
from __future__ import annotations

import os
import signal
import threading
import time

SAVE_SECONDS = float(os.environ.get("PREFBENCH_SAVE_SECONDS", "60"))


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training, after the state was saved; the message says how to resume."""


class StopRequest:
    """Context manager: SIGINT/SIGTERM set `requested` instead of raising (main thread only)."""

    def __init__(self):
        self.requested: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.requested:       # a second signal: stop now
            self.__exit__()
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        return False


class SaveClock:
    """When to save resume state on time: every SAVE_SECONDS, or 10x the last save's duration."""

    def __init__(self, seconds: float | None = None):
        self.seconds = SAVE_SECONDS if seconds is None else seconds
        self.last = time.monotonic()
        self.cost = 0.0

    def due(self) -> bool:
        return time.monotonic() - self.last >= max(self.seconds, 10 * self.cost)

    def saved(self, started: float) -> None:
        now = time.monotonic()
        self.cost, self.last = now - started, now
