"""Suite files: safe YAML, `--set` overrides, strict validation, grid expansion, run ids.

A suite is data only. `load_suite` turns a YAML file into a validated `Suite`, and every
problem with it becomes one `SuiteError` line naming the file and the dotted field
(`objectives[2].params.beta`), with the nearest valid name for a misspelt key.
`expand_runs` turns a suite into concrete runs: objectives × grid points × seeds.

Relative paths: `data.path`, `reward_model.path`, `model.policy` and
`scoring.lm_eval.include_path` are resolved against
the directory of the suite file when they start with `./` or `../` (so a suite and its
data can move together), and against the current directory when given with `--set` on the
command line; `~` is expanded; any other value is kept as written (absolute paths, hub ids
such as `Qwen/Qwen2.5-0.5B`, and paths relative to the working directory).
"""
from __future__ import annotations

from bench.hashing import canonical_json, content_hash

import difflib
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, PrivateAttr, ValidationError, model_validator

from bench.errors import SuiteError, SuiteErrors
from bench.suite.schema import (
    DataConfig,
    Seed,
    GenerationConfigSection,
    ModelConfig,
    RewardModelConfig,
    ScoringConfig,
    SFTConfig,
    TrainConfig,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TermEntry(_Strict):
    """One weighted term of a composite objective, e.g. `{name: nll, weight: 0.2}`."""

    name: str
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)


class ObjectiveEntry(_Strict):
    """One objective of a suite; list values in `params` or `training` expand into a grid."""

    name: str | None = None
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    terms: list[TermEntry] | None = None
    training: dict[str, Any] = Field(default_factory=dict)   # overrides of the suite's TrainConfig

    @model_validator(mode="after")
    def _name_or_terms(self):
        if (self.name is None) == (self.terms is None):
            raise ValueError("give exactly one of 'name' (one objective) or 'terms' (a weighted list)")
        if self.terms is not None and not self.terms:
            raise ValueError("terms must not be empty")
        if self.terms is not None and self.params:
            raise ValueError("params belong inside each term when 'terms' is given")
        return self


class AccelerateSection(_Strict):
    num_processes: PositiveInt = 1
    config_file: str | None = None


class Suite(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    description: str = ""
    seeds: list[Seed] = Field(min_length=1)
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    sft: SFTConfig = SFTConfig()
    reward_model: RewardModelConfig = RewardModelConfig()
    training: TrainConfig = TrainConfig()
    objectives: list[ObjectiveEntry] = Field(min_length=1)
    generation: GenerationConfigSection = GenerationConfigSection()
    scoring: ScoringConfig = ScoringConfig()
    launcher: Literal["inprocess", "accelerate"] = "inprocess"
    accelerate: AccelerateSection = AccelerateSection()
    # false: a run's trained weights are deleted once its evaluation is stored (a 0.5B suite
    # writes 21 x ~1 GB); a rerun then reuses the evaluation instead of retraining.
    keep_checkpoints: bool = True

    _source: str = PrivateAttr(default="<suite>")

    @property
    def source(self) -> str:
        """The suite file this suite was loaded from (for error messages)."""
        return self._source

    @property
    def suite_dir(self) -> Path:
        return Path(self._source).resolve().parent


@dataclass(frozen=True)
class RunSpec:
    """One training run: an objective at one grid point with one seed."""

    run_id: str
    label: str
    objective_spec: list        # input of trainers.objectives.build_objective
    params: dict                # resolved hyperparameters (and training overrides), for the results table
    training: TrainConfig
    seed: int
    needs_reference: bool


# ---------------------------------------------------------------- hashing
stage_hash = content_hash  # the name the suite tests and older callers use


# ---------------------------------------------------------------- YAML
class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe loader that rejects a key given twice (PyYAML silently keeps the last one)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' appears twice", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.1 (PyYAML) reads `1e-4` as a string; suites mean the number, as YAML 1.2 does.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _parse_yaml(text: str):
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


# A suite is settings only; the shipped ones are under 4 KB. Far larger files are mistakes
# (a data file passed as the suite), and YAML parsing them would take minutes.
MAX_SUITE_BYTES = 1_000_000


def _read_yaml(path: Path) -> dict:
    file = str(path)
    if not path.exists():
        raise SuiteError(file, None, "suite file not found")
    if path.is_dir():
        raise SuiteError(file, None, "is a directory, not a suite file")
    size = path.stat().st_size
    if size > MAX_SUITE_BYTES:
        raise SuiteError(file, None, f"suite file is {size:,} bytes; the limit is {MAX_SUITE_BYTES:,} "
                                     "(a suite is settings only: put data in data.path)")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise SuiteError(file, None, f"not UTF-8 text: byte 0x{err.object[err.start]:02x} at line {line}") from None
    if not text.strip():
        raise SuiteError(file, None, "suite file is empty")
    try:
        data = _parse_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SuiteError(file, None, f"not valid YAML{where}: {problem}") from None
    if data is None:
        raise SuiteError(file, None, "suite file has no content (only comments)")
    if not isinstance(data, dict):
        raise SuiteError(file, None, f"a suite must be a mapping of sections, got a {type(data).__name__}")
    return data


# ---------------------------------------------------------------- --set overrides
def apply_override(data: dict, override: str, file: str) -> None:
    """Apply one `a.b.c=value` (value parsed as YAML) to the raw suite mapping in place."""
    key, sep, raw = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not key.strip() or any(not p for p in parts):
        raise SuiteError(file, None, f"--set {override!r}: expected KEY=VALUE with a dotted key, e.g. training.max_steps=10")
    try:
        value = _parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # an unparsable value is taken as a plain string; the schema judges it
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        node = _descend(node, part, parts[: depth + 1], override, file)
    _assign(node, parts[-1], value, parts, override, file)


def _descend(node: Any, part: str, path: list[str], override: str, file: str):
    if isinstance(node, list):
        index = _list_index(node, part, path, override, file)
        return node[index]
    if not isinstance(node, dict):
        raise SuiteError(file, _dotted(path[:-1]), f"--set {override!r}: not a mapping, cannot set a key inside it")
    # A section missing from the file is created; the schema then rejects unknown names.
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def _assign(node: Any, part: str, value: Any, path: list[str], override: str, file: str) -> None:
    if isinstance(node, list):
        node[_list_index(node, part, path, override, file)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise SuiteError(file, _dotted(path[:-1]), f"--set {override!r}: not a mapping, cannot set a key inside it")


def _list_index(node: list, part: str, path: list[str], override: str, file: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise SuiteError(file, _dotted(path), f"--set {override!r}: no list entry {part!r} (the list has {len(node)})")
    return int(part)


def _dotted(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) or str(part).isdigit() else (f".{part}" if text else str(part))
    return text


# ---------------------------------------------------------------- pydantic errors -> one line
def _model_class(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_class(arg)
        if found is not None:
            return found
    return None


def _fields_at(root: type[BaseModel], loc: tuple) -> list[str]:
    """Valid field names of the model reached by following `loc` from `root`."""
    cls: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int) or cls is None:
            continue
        field = cls.model_fields.get(part)
        cls = _model_class(field.annotation) if field is not None else None
    return list(cls.model_fields) if cls is not None else []


def _suite_errors(err: ValidationError, root: type[BaseModel], file: str, prefix: tuple = ()) -> SuiteError:
    """Every pydantic error, each a SuiteError line naming its dotted field (one error: itself)."""
    errors = [_one_error(e, root, file, prefix) for e in err.errors()]
    return errors[0] if len(errors) == 1 else SuiteErrors(errors)


def _suite_error(err: ValidationError, root: type[BaseModel], file: str, prefix: tuple = ()) -> SuiteError:
    """The first pydantic error as a SuiteError naming the dotted field."""
    return _one_error(err.errors()[0], root, file, prefix)


def _one_error(first: dict, root: type[BaseModel], file: str, prefix: tuple = ()) -> SuiteError:
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and ("[" in p or "function-after" in p)))
    if first["type"] == "extra_forbidden":
        valid = _fields_at(root, loc[:-1])
        near = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else f"; valid keys: {', '.join(valid)}"
        return SuiteError(file, _dotted(prefix + loc), f"unknown key{hint}")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error":
        head = message.split()[0] if message.split() else ""
        if head in _fields_at(root, loc):
            loc = loc + (head,)
        return SuiteError(file, _dotted(prefix + loc) or None, message)
    if first["type"] == "missing":
        return SuiteError(file, _dotted(prefix + loc), "required field is missing")
    got = first.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) or len(repr(got)) < 60 else type(got).__name__
    return SuiteError(file, _dotted(prefix + loc) or None, f"{message} (got {shown})")


# ---------------------------------------------------------------- paths
def _resolve_path(value: str | None, base: Path) -> str | None:
    if not value:
        return value
    if value.startswith(("./", "../")):
        return str((base / value).resolve())
    return os.path.expanduser(value) if value.startswith("~") else value


def _resolve_paths(data: dict, base: Path) -> None:
    for *sections, key in (("data", "path"), ("reward_model", "path"), ("model", "policy"),
                           ("scoring", "lm_eval", "include_path")):
        block = data
        for section in sections:
            block = block.get(section) if isinstance(block, dict) else None
        if isinstance(block, dict) and isinstance(block.get(key), str):
            block[key] = _resolve_path(block[key], base)


_PATH_FIELDS = {("data", "path"), ("reward_model", "path"), ("model", "policy"), ("scoring", "lm_eval", "include_path")}


def _resolve_override_path(data: dict, override: str) -> None:
    """A `--set data.path=../x` value: made absolute against the current directory."""
    key = tuple(p.strip() for p in override.partition("=")[0].split("."))
    if key in _PATH_FIELDS:
        block = data
        for section in key[:-1]:
            block = block.get(section) if isinstance(block, dict) else None
        if isinstance(block, dict) and isinstance(block.get(key[-1]), str):
            block[key[-1]] = _resolve_path(block[key[-1]], Path.cwd())


# ---------------------------------------------------------------- load
def load_suite(path, overrides=()) -> Suite:
    """Read, override, validate and expand a suite; any problem raises one SuiteError line."""
    path = Path(path)
    file = str(path)
    data = _read_yaml(path)
    # Paths written in the file are relative to the file; paths given with --set on the command
    # line are relative to the shell's directory, as every other command-line path is.
    _resolve_paths(data, path.resolve().parent)
    for override in overrides:
        apply_override(data, override, file)
        _resolve_override_path(data, override)
    try:
        suite = Suite(**data)
    except ValidationError as err:
        raise _suite_errors(err, Suite, file) from None
    suite._source = file
    _check_suite(suite)
    _check_grid_size(suite)
    runs = expand_runs(suite)  # objectives, hyperparameters, grids and duplicate runs
    _check_compare_to(suite, runs)
    return suite


def _check_compare_to(suite: Suite, runs: list) -> None:
    """A ``scoring.compare_to`` the suite sets must name one of its labels, or an objective
    with exactly one label (the default ``dpo`` may be absent: then nothing is compared)."""
    if "compare_to" not in suite.scoring.model_fields_set or not suite.scoring.compare_to:
        return
    wanted = suite.scoring.compare_to
    labels = sorted({run.label for run in runs})
    if wanted in labels:
        return
    of_objective = sorted({run.label for run in runs if "+".join(t["name"] for t in run.objective_spec) == wanted})
    if len(of_objective) == 1:
        return
    if of_objective:
        raise SuiteError(suite.source, "scoring.compare_to",
                         f"objective {wanted!r} has several labels ({', '.join(of_objective)}); name one of them")
    raise SuiteError(suite.source, "scoring.compare_to",
                     f"{wanted!r} is no label or objective of the suite; labels are: {', '.join(labels)}")


def _check_suite(suite: Suite) -> None:
    file = suite.source
    seen = set()
    for i, seed in enumerate(suite.seeds):
        if seed in seen:
            raise SuiteError(file, f"seeds[{i}]", f"seed {seed} is listed twice")
        seen.add(seed)
    if "seed" in suite.training.model_fields_set:
        raise SuiteError(file, "training.seed", "set the top-level `seeds:` list instead (one run per seed)")
    data_path = suite.data.path
    if data_path and not Path(data_path).exists():
        raise SuiteError(file, "data.path", f"data file {data_path} does not exist (a relative path in the suite "
                                            f"file is read from the suite's folder, {suite.suite_dir}; one given "
                                            f"with --set, from the current directory)")


# A suite of more runs than this is a mistake (a grid typed with one list too many): each run
# trains a policy, and only expanding 200,000 grid points took minutes before any check.
MAX_RUNS = 10_000


def _check_grid_size(suite: Suite) -> None:
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


# ---------------------------------------------------------------- objectives and grids
def _objective(name: str, file: str, field: str):
    from trainers.objectives import ObjectiveError, get_objective

    try:
        return get_objective(name)
    except (ObjectiveError, KeyError) as err:
        raise SuiteError(file, field, _error_text(err)) from None


def _error_text(err: Exception) -> str:
    text = str(err)
    return text[1:-1] if isinstance(err, KeyError) and text.startswith("'") else text


def _resolve_params(name: str, params: dict, file: str, field: str) -> tuple[dict, bool]:
    """Hyperparameters with defaults filled (via the objective's own validation), and its reference need."""
    from trainers.objectives import ObjectiveError

    objective = _objective(name, file, f"{field}.name")
    try:
        resolved = objective.validate(**params)
    except (ObjectiveError, TypeError, ValueError) as err:
        raise SuiteError(file, _param_field(err, params, f"{field}.params"), _error_text(err)) from None
    return dict(resolved), bool(objective.needs_reference)


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
            raise SuiteError(file, _dotted((field,) + loc), "an empty list gives an empty grid")
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
        raise _suite_error(err, TrainConfig, suite.source, prefix=(field,)) from None


def _entry_runs(suite: Suite, i: int, entry: ObjectiveEntry) -> list[RunSpec]:
    file, field = suite.source, f"objectives[{i}]"
    runs = []
    for point in _grid_points(entry, file, field):
        spec, params, needs_ref = [], {}, False
        for t, (name, weight, values) in enumerate(_terms_at(entry, point)):
            where = field if entry.terms is None else f"{field}.terms[{t}]"
            resolved, needs = _resolve_params(name, values, file, where)
            needs_ref = needs_ref or needs
            spec.append({"name": name, "weight": float(weight), **resolved})
            prefix = "" if entry.terms is None else f"{name}."
            params.update({f"{prefix}{k}": v for k, v in resolved.items()})
            if entry.terms is not None:
                params[f"{name}.weight"] = float(weight)
        overrides = _at_point(entry.training, point, ("training",))
        params.update(overrides)
        label = _label(entry, point, overrides)
        for seed in suite.seeds:
            training = _run_training(suite, overrides, seed, f"{field}.training",
                                     entry.label or entry.name or "+".join(t.name for t in entry.terms))
            runs.append(RunSpec(run_id=_run_id(suite, spec, training, seed), label=label, objective_spec=spec,
                                params=params, training=training, seed=seed, needs_reference=needs_ref))
    return runs


def _run_id(suite: Suite, spec: list, training: TrainConfig, seed: int) -> str:
    """Hash of everything that determines the trained policy (not the display label)."""
    return stage_hash({"objective": spec, "training": training, "seed": seed,
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


__all__ = ["Suite", "ObjectiveEntry", "TermEntry", "RunSpec", "load_suite", "expand_runs", "stage_hash",
           "canonical_json", "apply_override"]
