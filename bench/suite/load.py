"""`load_suite`: a suite file (plus `--set` overrides) as a validated `Suite` with its runs.

A suite is data only. Every problem with it becomes one `SuiteError` line naming the file and
the dotted field (`objectives[2].params.beta`). The steps are modules of this package: the
file is read (`yaml_file`), its relative paths resolved (`paths`), `--set` applied
(`overrides`), the schema validated (`schema`, errors through `field_errors`), and the grid
expanded once (`runs`): `suite.runs` is that expansion.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from bench.errors import SuiteError
from bench.suite.field_errors import suite_errors
from bench.suite.overrides import apply_override
from bench.suite.paths import resolve_override_path, resolve_paths
from bench.suite.schema import Suite
from bench.suite.yaml_file import read_yaml


def load_suite(path, overrides=()) -> Suite:
    """Read, override, validate and expand a suite; any problem raises one SuiteError line."""
    return complete_suite(read_suite(path, overrides))


def read_suite(path, overrides=()) -> Suite:
    """The file read, overridden and checked against the schema, its runs not yet expanded
    (`complete_suite`): what a command needs to know before it imports torch (bench.run.runner)."""
    path = Path(path)
    file = str(path)
    data = read_yaml(path)
    # Paths written in the file are relative to the file; paths given with --set on the command
    # line are relative to the shell's directory, as every other command-line path is.
    resolve_paths(data, path.resolve().parent)
    for override in overrides:
        apply_override(data, override, file)
        resolve_override_path(data, override)
    try:
        suite = Suite(**data)
    except ValidationError as err:
        raise suite_errors(err, Suite, file) from None
    suite._source = file
    return suite


def complete_suite(suite: Suite) -> Suite:
    """The checks that need the objectives' registry (and so torch), and the runs' expansion."""
    from bench.suite.runs import check_grid_size, expand_runs

    _check_suite(suite)
    check_grid_size(suite)
    runs = expand_runs(suite)  # objectives, hyperparameters, grids and duplicate runs
    _check_compare_to(suite, runs)
    suite._runs = tuple(runs)   # the one expansion; validate and the runner read suite.runs
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
