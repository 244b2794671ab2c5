"""The leaderboard: one row per objective configuration, mean and 95% interval across seeds.

Aggregation (:func:`bench.tables.cells.aggregate`): each run contributes one value per (scorer, metric); failed
runs (``runs.parquet`` status other than ``ok``) are left out and counted in ``failed``.
The value is the mean across seeds. Where the folder stores unit values (``units.parquet``:
per prompt, per drift pair, or the LC fit's per-prompt terms) the interval is the crossed
seeds x prompts bootstrap of :mod:`bench.tables.stats`; otherwise Student's t-interval across
seeds, or with one seed the run's own interval. Every interval is intersected with the
metric's range. :func:`bench.tables.comparisons.comparisons` gives Δ against the suite's baseline
(``scoring.compare_to``), paired by seed and prompt, with Holm-adjusted p-values.

Cells are written ``mean [low, high]`` (the intervals are not always symmetric, so a
``±`` form would misstate bootstrap intervals). The best mean of each column is bold for
the metrics with a direction (:data:`bench.tables.results.METRICS`): win rates, LC win rate,
gold accuracy, reward-model score, implicit accuracy, lm-eval scores (higher better) and
the share of pairs with the chosen log-prob down (lower better). Length, KL, log-ratio
drift and training loss are trade-off axes, not goals, and get no bold.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.tables import plot_jobs
from bench.tables.leaderboard import leaderboard, leaderboard_cells, read_settings
from bench.tables.render import FORMATS, render
from bench.io import atomic_write
from bench.tables.results import read_results, read_runs, read_units
from bench.tables.validity import section


# --------------------------------------------------------------------------- files

COMPARISONS_FILE = "comparisons.csv"
_SUFFIX = {"md": "md", "latex": "tex", "html": "html", "csv": "csv"}


def write_report(results_dir: str | Path, *, plots: bool = True, plot_pool=None) -> str:
    """Write ``leaderboard.{md,tex,html,csv}`` (and the plots under ``plots/``) into a results
    folder; return the markdown leaderboard. ``plot_pool`` (a concurrent.futures executor of
    processes) draws the plots side by side while this process writes the tables."""
    _, written = write_report_files(results_dir, plots=plots, plot_pool=plot_pool)
    return written["md"].read_text(encoding="utf-8")   # what was just rendered: not rendered twice


def write_report_files(results_dir: str | Path, *, plots: bool = True, compare_to: str | None = None,
                       plot_pool=None) -> tuple[pd.DataFrame, dict[str, Path]]:
    """As :func:`write_report`; returns the leaderboard frame and ``{format or plot:name: path}``.
    ``compare_to`` replaces the folder's baseline for these files; one it cannot resolve is an error.

    With a ``plot_pool`` each group of plots is handed over as soon as what it needs exists (the
    runs' logs, then the cells, then the comparisons), so the pool draws while this process
    computes the rest of the leaderboard and writes the tables."""
    folder = Path(results_dir)
    results_df, runs_df, units = read_results(folder), read_runs(folder), read_units(folder)
    settings = read_settings(folder)
    if compare_to is not None:
        settings = dataclasses.replace(settings, compare_to=compare_to)
    drawing = _PlotQueue(plot_pool)
    if plots:
        labels = plot_jobs.folder_labels(results_df, runs_df)
        drawing.add(plot_jobs.run_jobs(folder, runs_df, labels))
        drawing.warm("bench.tables.plots")   # a second process imports matplotlib meanwhile
    cells = leaderboard_cells(results_df, runs_df, units, settings)
    if plots:
        drawing.add(plot_jobs.cell_jobs(folder, results_df, cells.long, labels))
    board = leaderboard(results_df, runs_df, units, settings, cells=cells)
    if compare_to is not None and board.attrs["baseline"] is None:
        raise BenchError(f"--compare-to: {board.attrs['baseline_note'].removeprefix('No comparisons: ')}")
    if plots:
        drawing.add(plot_jobs.board_jobs(folder, board))
    written = {}
    comp = board.attrs["comparisons"]
    path = folder / COMPARISONS_FILE
    atomic_write(path, lambda tmp: comp.to_csv(tmp, index=False, lineterminator="\n"))
    written["comparisons"] = path
    for fmt, suffix in _SUFFIX.items():
        path = folder / f"leaderboard.{suffix}"
        text = render(board, fmt)
        if fmt == "md":
            text += section(folder)
        atomic_write(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        written[fmt] = path
    for name, path in drawing.results():
        if path is not None:
            written[f"plot:{name}"] = path
    return board, written


class _PlotQueue:
    """Plot jobs drawn by a pool of processes as they are added, or here, in order, at the end."""

    def __init__(self, pool=None):
        self.pool, self.jobs = pool, []

    def add(self, jobs) -> None:
        for name, function, args in jobs:
            self.jobs.append((name, self.pool.submit(function, *args) if self.pool is not None else (function, args)))

    def warm(self, module: str) -> None:
        if self.pool is not None:
            self.pool.submit(importlib.import_module, module)

    def results(self):
        for name, job in self.jobs:
            yield name, job.result() if self.pool is not None else job[0](*job[1])


def report_text(results_dir: str | Path, fmt: str = "md", compare_to: str | None = None) -> str:
    """Refresh a folder's report files and plots; return the leaderboard in ``fmt``."""
    if fmt not in FORMATS:
        raise BenchError(f"report format {fmt!r} is not one of {', '.join(FORMATS)}")
    board, _ = write_report_files(results_dir, compare_to=compare_to)
    return render(board, fmt)
