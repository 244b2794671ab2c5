"""The gate's two commands, `baseline` and `check`, registered on the main CLI group by
:func:`register` (bench/cli.py calls it, passing its one-line error wrapper, so that this
module does not import the CLI back). Imports of the gate's modules stay inside the commands:
`--help` answers at once."""
from __future__ import annotations

import sys
from typing import Callable

import click


def register(group: click.Group, one_line_errors: Callable) -> None:
    """Add `baseline` and `check` to `group`."""

    @group.command()
    @click.argument("results_dir", type=click.Path(file_okay=False))
    @click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
                  help="Baseline file to write (.yaml/.yml, or JSON for any other suffix).")
    @click.option("--anchor", default=None, metavar="LABEL",
                  help="Objective the per-seed contrasts are taken against (default: the first DPO label).")
    @click.option("--confidence", default=0.99, show_default=True, type=float,
                  help="Level of the prediction interval `check` allows around each baseline mean.")
    @one_line_errors
    def baseline(results_dir, output, anchor, confidence):
        """Write a regression baseline from a trusted results folder: per-seed values, contrasts, invariants."""
        from bench.gate.baseline import make_baseline, write_baseline

        made = make_baseline(results_dir, anchor=anchor, confidence=confidence)
        path = write_baseline(output, made)
        inv = made["invariants"]
        click.echo(f"wrote {path}: {len(made['metrics'])} metrics, {len(made['contrasts'])} contrasts against "
                   f"{made['anchor']}, {len(inv['step1_loss'])} step-1 loss and {len(inv['identities'])} identity "
                   f"invariants, {len(made.get('integrity') or {})} integrity values")

    @group.command()
    @click.argument("results_dir", type=click.Path(file_okay=False))
    @click.option("--baseline", required=True, type=click.Path(dir_okay=False),
                  help="Baseline file written by `baseline` (.yaml/.yml or JSON).")
    @click.option("--only", multiple=True, metavar="LABEL",
                  help="Check only the entries of these labels (repeatable; default: all), e.g. after a partial rerun.")
    @click.option("--verbose", "-v", is_flag=True, help="Print the passing entries and their bands too.")
    @one_line_errors
    def check(results_dir, baseline, only, verbose):
        """Compare a results folder with a baseline; exit 1 naming each regressed metric and its allowed band."""
        from bench.gate.check import check as run_check

        result = run_check(results_dir, baseline, labels=list(only) or None)
        if verbose:
            for line in result.passed:
                click.echo(f"ok {line}")
        for line in result.regressions:
            # a jump in the "better" direction of a scorer- or data-level value says so itself
            click.echo(line if line.startswith("SUSPICIOUS") else f"REGRESSION {line}")
        click.echo(f"checked {result.checked} entries: {len(result.regressions)} regressed")
        sys.exit(0 if result.ok else 1)
