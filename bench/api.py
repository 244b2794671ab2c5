"""The Python API: run a suite and read its results table from a script or a notebook.

    from bench import run_suite, load_results
    table = run_suite("suites/ci_smoke.yaml", out="results/ci_smoke", overrides=["seeds=[0]"])
    again = load_results("results/ci_smoke")          # the same table, read back later

Both are the command line's own code (`bench.py run`, the results table of `bench.py report`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.run.runner import run_suite as _run_suite
from bench.tables.results import read_results


def run_suite(suite, *, out=None, overrides=(), only=(), progress: bool = False) -> pd.DataFrame:
    """Run `suite` (a suite file, or a `Suite` from `bench.suite.load.load_suite`) as
    `bench.py run` does and return its results table (`load_results(out)`).

    `out` is the results folder (default: results/<suite name>); `overrides` are `--set`
    strings such as "training.max_steps=5"; `only` selects runs by label, objective or run id.
    Stages already in `out` are reused. A failed run is not raised, as the command does not
    stop for one: it has no rows in the table, and its status and reason are in the runs table
    (`bench.tables.results.read_runs(out)`). `table.attrs["summary"]` is the summary line the
    command prints, `table.attrs["out"]` the results folder.
    """
    summary = _run_suite(suite, overrides=tuple(overrides), out_dir=out, only=tuple(only), progress=progress)
    table = load_results(summary.out_dir)
    table.attrs["summary"] = summary.text().splitlines()[-1 - len(summary.failed)]
    table.attrs["out"] = str(summary.out_dir)
    return table


def load_results(results_dir) -> pd.DataFrame:
    """The results table of a results folder (one row per run x metric), typed and sorted."""
    return read_results(Path(results_dir))
