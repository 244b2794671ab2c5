"""Parts of one kind that register themselves, found by name: the mechanism behind the
generation-backend, scorer and data-source registries (bench.evaluation.generation.registry,
bench.evaluation.scoring.registry, bench.data.registry).

A part is added by its own module; the first lookup imports every module of the part's
package once, so a new part is one new file. Each registry words its own unknown-name error
(the field it belongs to, its list of choices) with `nearest`.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

from trainers.errors import nearest

Part = TypeVar("Part")


class Registry(Generic[Part]):
    def __init__(self, kind: str, package: str):
        self.kind, self.package = kind, package      # "scorer", "bench.evaluation.scoring"
        self.parts: dict[str, Part] = {}             # in registration order
        self._discovered = False

    def add(self, name: str, part: Part) -> Part:
        if name in self.parts:
            raise RuntimeError(f"{self.kind} {name!r} is registered twice")
        self.parts[name] = part
        return part

    def discover(self) -> dict[str, Part]:
        """Import every module of the package once (each registers its parts); the parts."""
        if not self._discovered:
            self._discovered = True
            package = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{self.package}.{info.name}")
        return self.parts

    def find(self, name: str) -> Part | None:
        return self.discover().get(name)

    def did_you_mean(self, name: str, choices=None, cutoff: float = 0.6) -> str:
        """' (did you mean 'x'?)' for the nearest registered name, or ''."""
        near = nearest(name, self.discover() if choices is None else choices, cutoff=cutoff)
        return f" (did you mean {near!r}?)" if near else ""
