"""Errors the trainer raises for bad input, and its one-line messages.

The trainer is a library under `bench/` (it imports nothing from there), so the base class
of user-facing errors lives here: `bench.errors.BenchError` *is* `UserError`, and the CLI
that prints a `BenchError` as one line (exit 2) prints the trainer's the same way.
"""
from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable


class UserError(Exception):
    """An error caused by the user's input (suite, data, paths, hyperparameters), shown as one line."""


class ModelNotFoundError(UserError):
    """A model path or hub id that cannot be resolved."""


class NetworkRequiredError(UserError):
    """A hub resource was asked for while the machine has no network."""


def nearest(name, options: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The option closest to a misspelt `name` (difflib's ratio at least `cutoff`), or None.

    The one "did you mean" rule of bench/ and trainers/: every registry and every suite field
    names its nearest valid value with it; each caller words the hint for its own message
    (cutoff 0.0 always names one, for short closed lists where any hint helps)."""
    match = difflib.get_close_matches(str(name), list(options), n=1, cutoff=cutoff)
    return match[0] if match else None


def say(message: str) -> None:
    """One line on stderr that stays readable between progress bars."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
