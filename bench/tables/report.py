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
``±`` form would misstate bootstrap intervals). Which direction of a column is better, which
cell is bold (a separated best among the trained objectives, never a control) and how its
numbers are rounded: :mod:`bench.tables.columns`. Length, KL, log-ratio drift and training
loss are trade-off axes, not goals, and get no bold.
"""
from __future__ import annotations

import dataclasses
import importlib
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.tables import plot_jobs
from bench.tables.leaderboard import leaderboard, leaderboard_cells, metric_keys, read_settings, write_settings
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
                       plot_pool=None, formats=None, paper_columns=None) -> tuple[pd.DataFrame, dict[str, Path]]:
    """As :func:`write_report`; returns the leaderboard frame and ``{format or plot:name: path}``.

    ``compare_to`` other than the folder's own baseline (``statistics.json``) writes a sub-report,
    ``<folder>/compare-to-<baseline>/`` (:func:`compare_folder`), with its own leaderboard files,
    ``comparisons.csv``, ``statistics.json`` and Δ plot; the run's own files stay as they were, so
    the folder never names one baseline in one file and another in the next. One it cannot resolve
    is an error. ``formats`` (a subset of :data:`FORMATS`): write only those leaderboard files
    (no comparisons.csv, no plots). ``paper_columns``: the metric columns (``scorer/metric``) of
    the LaTeX table, instead of its default groups; one the leaderboard lacks is an error.

    With a ``plot_pool`` each group of plots is handed over as soon as what it needs exists (the
    runs' logs, then the cells, then the comparisons), so the pool draws while this process
    computes the rest of the leaderboard and writes the tables."""
    folder = Path(results_dir)
    results_df, runs_df, units = read_results(folder), read_runs(folder), read_units(folder)
    settings = read_settings(folder)
    target = folder
    if compare_to is not None and compare_to != settings.compare_to:
        settings = dataclasses.replace(settings, compare_to=compare_to)
        target = None   # known once the baseline is resolved
    everything = formats is None
    plots = plots and everything
    drawing = _PlotQueue(plot_pool)
    labels = plot_jobs.folder_labels(results_df, runs_df) if plots else None
    if plots and target is not None:
        drawing.add(plot_jobs.run_jobs(folder, runs_df, labels))
        drawing.warm("bench.tables.plots")   # a second process imports matplotlib meanwhile
    cells = leaderboard_cells(results_df, runs_df, units, settings)
    if plots and target is not None:
        drawing.add(plot_jobs.cell_jobs(folder, results_df, cells.long, labels))
    board = leaderboard(results_df, runs_df, units, settings, cells=cells)
    if compare_to is not None and board.attrs["baseline"] is None:
        raise BenchError(f"--compare-to: {board.attrs['baseline_note'].removeprefix('No comparisons: ')}")
    if target is None:
        target = compare_folder(folder, board.attrs["baseline"])
        target.mkdir(parents=True, exist_ok=True)
        write_settings(target, settings)
    board.attrs["meta"] = folder_meta(folder, runs_df)
    if paper_columns:
        unknown = [k for k in paper_columns if k not in metric_keys(board)]
        if unknown:
            raise BenchError(f"--columns: {', '.join(unknown)} not among this leaderboard's columns: "
                             f"{', '.join(metric_keys(board))}")
        board.attrs["paper_columns"] = list(paper_columns)
    if plots:
        drawing.add(plot_jobs.board_jobs(target, board, labels, results_df if target == folder else None))
    written = {}
    if everything:
        comp = board.attrs["comparisons"]
        path = target / COMPARISONS_FILE
        atomic_write(path, lambda tmp: comp.to_csv(tmp, index=False, lineterminator="\n"))
        written["comparisons"] = path
    for fmt, suffix in _SUFFIX.items():
        if not everything and fmt not in formats:
            continue
        path = target / f"leaderboard.{suffix}"
        text = render(board, fmt)
        if fmt == "md":
            text += section(folder)
        atomic_write(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        written[fmt] = path
    for name, path in drawing.results():
        if path is not None:
            written[f"plot:{name}"] = path
    return board, written


def compare_folder(results_dir: str | Path, baseline: str) -> Path:
    """Where ``report --compare-to`` writes a comparison with another baseline than the run's."""
    slug = "".join(ch if ch.isalnum() or ch in "-_.=," else "_" for ch in baseline)
    return Path(results_dir) / f"compare-to-{slug}"


def folder_meta(folder: Path, runs_df: pd.DataFrame | None) -> dict:
    """Suite, commit, date and validity text of a folder, for the page and table headers. The
    date is when the results were written (results.parquet), so a re-render is byte-identical."""
    meta: dict = {}
    if runs_df is not None and len(runs_df):
        for key, column in (("suite", "suite"), ("commit", "git_revision")):
            values = sorted({str(v) for v in runs_df[column].dropna()}) if column in runs_df else []
            if values:
                meta[key] = ", ".join(values)
    stamp = folder / "results.parquet"
    if stamp.is_file():
        meta["date"] = datetime.fromtimestamp(stamp.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = section(folder).strip()
    if text:
        meta["validity"] = text
    return meta


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


def report_text(results_dir: str | Path, fmt: str | None = "md", compare_to: str | None = None,
                only: bool = False, paper_columns=None) -> tuple[str, Path]:
    """Refresh a folder's report files and plots (``only``: just the ``fmt`` file); return the
    leaderboard in ``fmt`` and the folder the files went to."""
    fmt = fmt or "md"
    if fmt not in FORMATS:
        raise BenchError(f"report format {fmt!r} is not one of {', '.join(FORMATS)}")
    board, written = write_report_files(results_dir, compare_to=compare_to, formats=[fmt] if only else None,
                                        paper_columns=paper_columns)
    return written[fmt].read_text(encoding="utf-8"), written[fmt].parent
