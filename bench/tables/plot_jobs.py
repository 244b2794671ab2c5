"""The plots of a results folder as jobs, (name, function, arguments), built without matplotlib.

Each job's function is :func:`draw`, which imports matplotlib (bench.tables.plots) in the
process that draws: the local executor's parent hands every plot to its pool and never pays
that import (~0.8 s of CPU, on a machine whose cores are busy with the runs). The jobs are
grouped by what they need, so that a pool can start on a group as soon as it exists
(bench.tables.report): the runs' logs, then the leaderboard's cells, then its comparisons.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def draw(plot: str, labels: list[str] | None, *args):
    """Draw ``bench.tables.plots.<plot>(*args)``; with ``labels``, in the colours and markers
    that every plot of the folder gives those labels."""
    from bench.tables import plots

    function = getattr(plots, plot)
    return function(*args) if labels is None else function(*args, styles=plots.label_styles(labels))


def folder_labels(results_df: pd.DataFrame, runs_df: pd.DataFrame | None) -> list[str]:
    """Every label of a folder (its results and its runs): one colour each across its plots."""
    labels = set(results_df["label"].astype(str))
    if runs_df is not None and "label" in runs_df:
        labels |= set(runs_df["label"].astype(str))
    return sorted(labels)


def run_jobs(results_dir: str | Path, runs_df: pd.DataFrame | None, labels: list[str]) -> list[tuple]:
    """The plots drawn from the runs' logs alone."""
    folder = Path(results_dir)
    return [("drift_curves", draw, ("plot_drift_curves", labels, runs_df, folder / "plots" / "drift_curves.png",
                                    folder))]


def cell_jobs(results_dir: str | Path, results_df: pd.DataFrame, long: pd.DataFrame, labels: list[str]) -> list[tuple]:
    """The plots drawn from the leaderboard's cells (``long``: bench.tables.leaderboard.leaderboard_cells)."""
    folder = Path(results_dir) / "plots"
    return [
        ("winrate_vs_kl", draw, ("plot_winrate_vs_kl", labels, long, folder / "winrate_vs_kl.png")),
        ("winrate_vs_length", draw, ("plot_winrate_vs_length", labels, long, folder / "winrate_vs_length.png")),
    ]


def board_jobs(results_dir: str | Path, board: pd.DataFrame, labels: list[str],
               results_df: pd.DataFrame | None = None) -> list[tuple]:
    """The plots drawn from the finished leaderboard (its comparisons against the baseline)."""
    folder = Path(results_dir) / "plots"
    jobs = [("deltas_vs_baseline", draw, ("plot_deltas", labels, board, folder / "deltas_vs_baseline.png"))]
    if results_df is not None:   # the granularity sweep's Δ are paired comparisons too
        jobs.append(("granularity_sweep", draw, ("plot_granularity_sweep", labels, board, results_df,
                                                 folder / "granularity_sweep.png")))
    return jobs
