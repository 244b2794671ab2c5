"""Test-local one-file parts (a generation backend, a data source, a scorer), each registered
by importing its module, exactly as a user's new part would be."""
from __future__ import annotations

import contextlib
import importlib
import sys


@contextlib.contextmanager
def registered(*parts):
    """Import each (module, registry, name) part for the duration of a test, then remove it:
    the registries are global, and a part left behind would change other tests' choices."""
    for module, _, _ in parts:
        sys.modules.pop(module, None)
        importlib.import_module(module)
    try:
        yield
    finally:
        for _, registry, name in parts:
            registry.parts.pop(name, None)
