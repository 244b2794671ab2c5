"""Errors the trainer raises for bad input, and its one-line messages.

The trainer is a library under `bench/` (it imports nothing from there), so the base class
of user-facing errors lives here: `bench.errors.BenchError` *is* `UserError`, and the CLI
that prints a `BenchError` as one line (exit 2) prints the trainer's the same way.
"""
from __future__ import annotations

import sys


class UserError(Exception):
    """An error caused by the user's input (suite, data, paths, hyperparameters), shown as one line."""


class ModelNotFoundError(UserError):
    """A model path or hub id that cannot be resolved."""


class NetworkRequiredError(UserError):
    """A hub resource was asked for while the machine has no network."""


def say(message: str) -> None:
    """One line on stderr that stays readable between progress bars."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
