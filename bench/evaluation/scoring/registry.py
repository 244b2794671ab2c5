"""The registry of scorers: each scorer registers itself with what it needs and what it produces.

Two kinds, as the evaluation runs them (`bench.evaluation.evaluate.evaluate_policy`):
- a *sample* scorer gives one number per generated sample (`score(ctx, generations, pairs)`),
  stored as the judgments column `column`; a registered sample scorer of one's own gets, from
  the aggregate, its mean over prompts (`metrics[0]`) and its win rate against the reference
  (`win_rate_vs_reference`), each with per-prompt unit values for paired comparisons;
- a *policy* scorer reads the policy itself (`run(policy_dir, ctx, out_dir)`) and writes its
  own file (drift.json, lm_eval.json);
- a *pairwise* scorer compares each policy's stored samples with the reference's once every
  evaluation is done (`pairwise(ctx, store, reference_eval, policy_evals, ...)`, in the command's
  own process: the LLM judge, bench.evaluation.scoring.judge), in a stage of its own.

The builtin scorers are switched by their own suite settings (`enabled(ctx)`: scoring.gold,
scoring.drift...); any other registered scorer runs when the suite lists it in
`scoring.scorers`. `get_scorer` imports every module of this package the first time a name
is asked for, so a new scorer is one new file. Validation (`bench.suite.validate`) asks the
flags: an unknown name, or a scorer whose needs the suite does not meet, is one line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from bench.errors import BenchError
from trainers.registry import Registry


@dataclass(frozen=True)
class Scorer:
    """A registered scorer and its capability flags."""

    name: str                              # the results table's `scorer` column
    metrics: tuple[str, ...]               # the metrics it produces
    reference: str                         # its paper or library
    score: Callable | None = None          # sample scorers: (ctx, generations, pairs) -> one float per generation
    run: Callable | None = None            # policy scorers: (policy_dir, ctx, out_dir) -> None
    pairwise: Callable | None = None       # pairwise scorers: (ctx, store, reference_eval, policy_evals) -> outcome
    column: str | None = None              # sample scorers: the judgments column
    enabled: Callable | None = None        # builtin: (EvalContext) -> bool from its own setting; None: scoring.scorers
    needs_reward_model: bool = False       # reads the suite's reward model (ctx.reward_model_dir)
    needs_generations: bool = True         # reads the policy's samples (False: the policy's weights)
    needs_drift_pairs: bool = False        # reads the held-out drift pairs (ctx.drift_data)
    unit_values: bool = True               # has per-prompt / per-pair / per-document values (paired tests)
    on_reference: bool = True              # also scores the reference policy (its rows and comparisons)
    order: int = 100                       # evaluation order (builtin: 10-40, so theirs is what it was)

    @property
    def sample(self) -> bool:
        return self.score is not None

    def active(self, ctx) -> bool:
        """Runs in this evaluation: its own setting, else being listed in scoring.scorers."""
        return self.enabled(ctx) if self.enabled is not None else self.name in ctx.scorers


# The heavy libraries (lm_eval) are imported inside the scorers' functions, so discovery is cheap.
SCORERS: Registry[Scorer] = Registry("scorer", __package__)


def register_scorer(name: str, *, metrics: tuple[str, ...], reference: str, kind: str = "sample",
                    column: str | None = None, enabled: Callable | None = None, needs_reward_model: bool = False,
                    needs_drift_pairs: bool = False, unit_values: bool = True, on_reference: bool = True, order: int = 100) -> Callable:
    """Decorator registering a scorer function as scorer `name`; returns the function unchanged.

    kind "sample": the function is `score(ctx, generations, pairs) -> list[float]` (column: `name`
    unless given); kind "policy": the function is `run(policy_dir, ctx, out_dir)`."""
    if kind not in ("sample", "policy", "pairwise"):
        raise ValueError(f"scorer {name!r}: kind must be 'sample', 'policy' or 'pairwise', not {kind!r}")

    def wrap(fn: Callable) -> Callable:
        sample = kind == "sample"
        SCORERS.add(name, Scorer(name, tuple(metrics), reference, score=fn if sample else None,
                                 run=fn if kind == "policy" else None, pairwise=fn if kind == "pairwise" else None,
                                 column=(column or name) if sample else None,
                                 enabled=enabled, needs_reward_model=needs_reward_model, needs_generations=sample,
                                 needs_drift_pairs=needs_drift_pairs, unit_values=unit_values,
                                 on_reference=on_reference, order=order))
        return fn
    return wrap


def list_scorers() -> list[str]:
    """Names of every registered scorer, in registration order (the order an evaluation runs them)."""
    return list(SCORERS.discover())


def get_scorer(name: str) -> Scorer:
    """The scorer registered as `name`; an unknown name is one line naming the nearest."""
    scorer = SCORERS.find(name)
    if scorer is None:
        raise BenchError(f"unknown scorer {name!r}{SCORERS.did_you_mean(name)}; "
                         f"registered: {', '.join(sorted(SCORERS.parts))}")
    return scorer


def active_scorers(ctx, *, is_reference: bool) -> list[Scorer]:
    """The scorers one policy's evaluation runs (sample and policy kinds), by `order`, then in
    registration order."""
    scorers = sorted(SCORERS.discover().values(), key=lambda s: s.order)
    return [s for s in scorers if s.pairwise is None and s.active(ctx) and (s.on_reference or not is_reference)]


def active_pairwise(ctx) -> list[Scorer]:
    """The pairwise scorers the suite switches on (they run after every evaluation)."""
    return [s for s in sorted(SCORERS.discover().values(), key=lambda s: s.order)
            if s.pairwise is not None and s.active(ctx)]


def listed_sample_metrics(names) -> tuple[tuple[str, str, str], ...]:
    """(scorer, judgments column, mean metric) of the listed sample scorers, for the
    aggregate's generic rows (the builtin scorers' rows are the aggregate's own)."""
    out = []
    for name in names:
        scorer = get_scorer(name)
        if scorer.sample and scorer.enabled is None:
            out.append((scorer.name, scorer.column, scorer.metrics[0]))
    return tuple(out)
