"""Third-party output kept off the screen: lm-eval's log records, prints and bars go to a log file."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

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
