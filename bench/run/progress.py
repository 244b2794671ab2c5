"""Suite-level progress: which stage, which run, how many are left, and an ETA.

Printed as one line per step on stderr (through tqdm.write, so the inner bars of the
trainer and the generator are not torn apart).
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

# Libraries whose messages and bars are written to a log instead of the screen: lm-eval
# repeats a notice per task and request (19 times in one smoke run) and draws unlabelled bars.
CAPTURED_LOGGERS = ("lm_eval", "lm-eval")


@contextlib.contextmanager
def output_to_log(log_path: Path):
    """Inside: third-party log records, prints and progress bars go to `log_path`."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        saved = []
        for name in CAPTURED_LOGGERS:
            logger = logging.getLogger(name)
            saved.append((logger, logger.handlers[:], logger.propagate))
            logger.handlers, logger.propagate = [handler], False
        try:
            with contextlib.redirect_stderr(fh), contextlib.redirect_stdout(fh):
                yield
        finally:
            for logger, handlers, propagate in saved:
                logger.handlers, logger.propagate = handlers, propagate


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
