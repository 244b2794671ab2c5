"""The objective library: pure per-pair losses of per-token log-probs, with a registry.

    from trainers.objectives import get_objective, PairLogps
    out = get_objective("adpo")(pair, beta=0.1, granularity="adaptive", m=4)

Importing the family modules registers their objectives (in this order).
"""
from __future__ import annotations

from . import dpo, simpo, nll, adpo, adadpo  # noqa: F401  (registration side effects)
from .adpo import adaptive_segment_ids
from .base import (HyperParameter, Objective, ObjectiveError, ObjectiveOutput, PairLogps, describe_objectives,
                   get_objective, list_objectives)
from .composite import CompositeObjective, build_objective
from .metrics import pair_metrics

__all__ = ["CompositeObjective", "HyperParameter", "Objective", "ObjectiveError", "ObjectiveOutput", "PairLogps",
           "adaptive_segment_ids", "build_objective", "describe_objectives", "get_objective", "list_objectives",
           "pair_metrics"]
