"""Weighted sums of objectives built from a suite spec (e.g. RPO = dpo + 0.2·nll)."""
from __future__ import annotations

from typing import Any


from .base import ObjectiveError, ObjectiveOutput, PairLogps, get_objective


class CompositeObjective:
    """Σ_j weight_j · ℓ_j per pair; metrics of term j are prefixed `<name>/`.

    `terms` are (objective, weight, hyperparameters that `objective.validate` returned): they
    are validated once, before the composite is built (by `build_objective`, or by the suite
    loader, which names the suite field of a bad value), so a bad suite fails before training
    and no step validates them again; `needs_reference` is true when any term needs it.
    """

    def __init__(self, terms: list[tuple[Any, float, dict]]):
        self.terms = terms
        self.needs_reference = any(obj.needs_reference for obj, _, _ in terms)
        self.name = "+".join(obj.name if w == 1 else f"{w:g}*{obj.name}" for obj, w, _ in terms)
        self._prefixes = _prefixes([obj.name for obj, _, _ in terms])

    def __call__(self, pair: PairLogps) -> ObjectiveOutput:
        total, metrics = None, {}
        for (obj, weight, hp), prefix in zip(self.terms, self._prefixes):
            out = obj.compute(pair, hp)
            total = weight * out.losses if total is None else total + weight * out.losses
            metrics[f"{prefix}/loss"] = out.losses.detach()
            metrics.update({f"{prefix}/{key}": value for key, value in out.metrics.items()})
        return ObjectiveOutput(total, metrics)

    def __repr__(self) -> str:
        return f"CompositeObjective({self.name})"


def _prefixes(names: list[str]) -> list[str]:
    """Term names, with `#i` appended where a name repeats so that metrics never collide."""
    return [name if names.count(name) == 1 else f"{name}#{i}" for i, name in enumerate(names)]


def build_objective(spec: list[dict]) -> CompositeObjective:
    """A callable objective from `[{"name": str, "weight": float, **hyperparameters}, ...]`."""
    if isinstance(spec, dict):
        spec = [spec]
    if not spec:
        raise ObjectiveError("objective spec is empty: give at least one {name: ..., weight: ...} term",
                             param="name")
    terms = []
    for i, item in enumerate(spec):
        item = dict(item)
        if "name" not in item:
            raise ObjectiveError(f"objective spec term {i} has no 'name': {item!r}", param="name")
        obj = get_objective(item.pop("name"))
        weight = item.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ObjectiveError(f"objective {obj.name!r}: parameter 'weight' = {weight!r} is not allowed; "
                                 f"expected a number", objective=obj.name, param="weight", value=weight)
        terms.append((obj, float(weight), obj.validate(**item)))
    return CompositeObjective(terms)
