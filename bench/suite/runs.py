"""Grid expansion: a suite's objectives x grid points x seeds as concrete runs, with run ids.

List values in an objective's `params`, a term's `params` or its `training` overrides are the
grid's axes. Each point's hyperparameters are validated once, here, by the objective's own
specs (trainers.objectives), and the run carries the objective built from them, so the
trainer does not validate them again.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field as dataclass_field
from typing import Any

from pydantic import ValidationError

from trainers.objectives import CompositeObjective, ObjectiveError, get_objective

from bench.errors import SuiteError
from bench.hashing import content_hash
from bench.suite.field_errors import dotted, suite_error
from bench.suite.schema import ObjectiveEntry, Suite, TrainConfig


@dataclass(frozen=True)
class RunSpec:
    """One training run: an objective at one grid point with one seed."""

    run_id: str
    label: str
    objective_spec: list        # the validated terms as JSON (run id, results table, accelerate launcher)
    params: dict                # resolved hyperparameters (and training overrides), for the results table
    training: TrainConfig
    seed: int
    needs_reference: bool
    # The loss, built from the terms validated above; the in-process trainer takes it as is.
    objective: CompositeObjective | None = dataclass_field(default=None, compare=False, repr=False)


# A suite of more runs than this is a mistake (a grid typed with one list too many): each run
# trains a policy, and only expanding 200,000 grid points took minutes before any check.
MAX_RUNS = 10_000


def check_grid_size(suite: Suite) -> None:
    """Count the runs from the list lengths alone, before expanding anything."""
    sizes = []
    for entry in suite.objectives:
        points = 1
        for _, values in _grid_axes(entry):
            points *= max(len(values), 1)
        sizes.append(points)
    total = sum(sizes) * len(suite.seeds)
    if total > MAX_RUNS:
        worst = max(range(len(sizes)), key=sizes.__getitem__)
        raise SuiteError(suite.source, "objectives", f"the suite expands to {total:,} runs (objectives[{worst}] alone: "
                                                     f"{sizes[worst]:,} grid points x {len(suite.seeds)} seeds); the "
                                                     f"limit is {MAX_RUNS:,}")


def _objective(name: str, file: str, field: str):
    try:
        return get_objective(name)
    except (ObjectiveError, KeyError) as err:
        raise SuiteError(file, field, _error_text(err)) from None


def _error_text(err: Exception) -> str:
    text = str(err)
    return text[1:-1] if isinstance(err, KeyError) and text.startswith("'") else text


def _resolve_params(name: str, params: dict, file: str, field: str):
    """The objective and its hyperparameters with defaults filled: the one validation they get."""
    objective = _objective(name, file, f"{field}.name")
    try:
        resolved = objective.validate(**params)
    except (ObjectiveError, TypeError, ValueError) as err:
        raise SuiteError(file, _param_field(err, params, f"{field}.params"), _error_text(err)) from None
    return objective, dict(resolved)


def _param_field(err: Exception, params: dict, base: str) -> str:
    """The field of the offending hyperparameter: the error's own, else the key it names."""
    named = getattr(err, "param", None) or getattr(err, "parameter", None)
    if named:
        return f"{base}.{named}"
    text = str(err)
    hits = [key for key in sorted(params, key=len, reverse=True) if f"'{key}'" in text or f" {key}" in text or key in text]
    return f"{base}.{hits[0]}" if hits else base


def _grid_axes(entry: ObjectiveEntry) -> list[tuple[tuple, list]]:
    """(location, values) of every list value: entry params, term params and training overrides."""
    axes = [(("params", k), v) for k, v in entry.params.items() if isinstance(v, list)]
    for t, term in enumerate(entry.terms or []):
        axes += [(("terms", t, k), v) for k, v in term.params.items() if isinstance(v, list)]
    axes += [(("training", k), v) for k, v in entry.training.items() if isinstance(v, list)]
    return axes


def _grid_points(entry: ObjectiveEntry, file: str, field: str) -> list[dict]:
    axes = _grid_axes(entry)
    for loc, values in axes:
        if not values:
            raise SuiteError(file, dotted((field,) + loc), "an empty list gives an empty grid")
    return [dict(zip([loc for loc, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]


def _at_point(values: dict, point: dict, prefix: tuple) -> dict:
    return {k: point.get(prefix + (k,), v) for k, v in values.items()}


def _terms_at(entry: ObjectiveEntry, point: dict) -> list[tuple[str, float, dict]]:
    if entry.terms is None:
        return [(entry.name, 1.0, _at_point(entry.params, point, ("params",)))]
    return [(t.name, t.weight, _at_point(t.params, point, ("terms", i))) for i, t in enumerate(entry.terms)]


def _label(entry: ObjectiveEntry, point: dict, training: dict) -> str:
    """Given label (plus the grid values when it varies), else name plus the given settings."""
    varying = {_short(loc): value for loc, value in point.items()}
    if entry.label:
        shown = varying
        base = entry.label
    elif entry.terms is not None:
        base = "+".join(t.name if t.weight == 1 else f"{t.weight:g}*{t.name}" for t in entry.terms)
        shown = varying
    else:
        base = entry.name
        shown = {**_at_point(entry.params, point, ("params",)), **training}
    return base + ("[" + ",".join(f"{k}={_fmt(v)}" for k, v in shown.items()) + "]" if shown else "")


def _short(loc: tuple) -> str:
    return str(loc[-1]) if loc[0] != "terms" else f"t{loc[1]}.{loc[2]}"


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# Keys that decide how the training data is tokenised: it is tokenised once per suite (and the
# reference log-probs computed once on it), so an objective cannot set its own.
TOKENISATION_KEYS = ("max_length", "max_prompt_length")


def _run_training(suite: Suite, overrides: dict, seed: int, field: str, objective: str) -> TrainConfig:
    if "seed" in overrides:
        raise SuiteError(suite.source, f"{field}.seed", "set the top-level `seeds:` list instead (one run per seed)")
    for key in TOKENISATION_KEYS:
        if key in overrides:
            raise SuiteError(suite.source, f"{field}.{key}",
                             f"{objective} sets its own {key}, but the training data is tokenised once for every "
                             f"objective; set training.{key} for the whole suite instead")
    merged = {**suite.training.model_dump(), **overrides, "seed": seed}
    try:
        return TrainConfig(**merged)
    except ValidationError as err:
        raise suite_error(err, TrainConfig, suite.source, prefix=(field,)) from None


def _entry_runs(suite: Suite, i: int, entry: ObjectiveEntry) -> list[RunSpec]:
    file, field = suite.source, f"objectives[{i}]"
    runs = []
    for point in _grid_points(entry, file, field):
        spec, params, terms = [], {}, []
        for t, (name, weight, values) in enumerate(_terms_at(entry, point)):
            where = field if entry.terms is None else f"{field}.terms[{t}]"
            objective, resolved = _resolve_params(name, values, file, where)
            terms.append((objective, float(weight), resolved))
            spec.append({"name": name, "weight": float(weight), **resolved})
            prefix = "" if entry.terms is None else f"{name}."
            params.update({f"{prefix}{k}": v for k, v in resolved.items()})
            if entry.terms is not None:
                params[f"{name}.weight"] = float(weight)
        overrides = _at_point(entry.training, point, ("training",))
        params.update(overrides)
        label = _label(entry, point, overrides)
        objective = CompositeObjective(terms)
        for seed in suite.seeds:
            training = _run_training(suite, overrides, seed, f"{field}.training",
                                     entry.label or entry.name or "+".join(t.name for t in entry.terms))
            runs.append(RunSpec(run_id=_run_id(suite, spec, training, seed), label=label, objective_spec=spec,
                                params=params, training=training, seed=seed,
                                needs_reference=objective.needs_reference, objective=objective))
    return runs


def _run_id(suite: Suite, spec: list, training: TrainConfig, seed: int) -> str:
    """Hash of everything that determines the trained policy (not the display label)."""
    return content_hash({"objective": spec, "training": training, "seed": seed,
                       "data": suite.data, "model": suite.model, "sft": suite.sft})


def expand_runs(suite: Suite) -> list[RunSpec]:
    """Every run of the suite, in order: objectives × grid points × seeds."""
    runs: list[RunSpec] = []
    owner_of_id: dict[str, int] = {}
    owner_of_label: dict[tuple[str, int], int] = {}
    for i, entry in enumerate(suite.objectives):
        for run in _entry_runs(suite, i, entry):
            if run.run_id in owner_of_id:
                raise SuiteError(suite.source, f"objectives[{i}]",
                                 f"duplicate run: {run.label} (seed {run.seed}) is the same run as in "
                                 f"objectives[{owner_of_id[run.run_id]}]")
            if (run.label, run.seed) in owner_of_label and owner_of_label[(run.label, run.seed)] != i:
                raise SuiteError(suite.source, f"objectives[{i}].label",
                                 f"label {run.label!r} is already used by objectives[{owner_of_label[(run.label, run.seed)]}]")
            owner_of_id[run.run_id] = i
            owner_of_label[(run.label, run.seed)] = i
            runs.append(run)
    return runs
