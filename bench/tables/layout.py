"""A leaderboard's cells as text parts (mean, interval ends, mark, best), its Δ table and its
notes: what every rendering (markdown, :mod:`bench.tables.render_latex`,
:mod:`bench.tables.render_html`) lays out its own way.

Cells are written ``mean [low, high]`` (the intervals are not always symmetric, so a ``±``
form would misstate bootstrap intervals). What a column's direction is, which cell is "best"
and how numbers are rounded is decided once, in :mod:`bench.tables.columns`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.tables import columns
from bench.tables.columns import ABOVE, BELOW, NUMBER_NOTE, decimals
from bench.tables.comparisons import ALPHA
from bench.tables.leaderboard import metric_keys
from bench.tables.results import metric_info


@dataclass(frozen=True)
class Cell:
    """One table cell in parts, so every format can lay them out its own way."""

    mean: str                  # "0.562", "–" when absent
    low: str = ""              # interval ends ("" when there is none)
    high: str = ""
    mark: str = ""             # ▲ / ▼: significantly above / below the baseline
    best: bool = False
    value: float = math.nan    # for sorting (HTML)

    def text(self) -> str:
        body = f"{self.mean} [{self.low}, {self.high}]" if self.low else self.mean
        return body + self.mark


def display(key: str) -> str:
    scorer, metric = key.split("/", 1)
    return metric_info(scorer, metric).display


def header(key: str) -> str:
    """The column's name and the direction that is better (↑ / ↓; none when neither is a goal)."""
    return columns.title(key)


def mark(row: pd.Series, key: str) -> str:
    """▲ or ▼ when the Holm-adjusted paired comparison with the baseline is significant."""
    p, delta = row.get(f"{key}:p_holm", math.nan), row.get(f"{key}:delta", math.nan)
    if not (np.isfinite(p) and p < ALPHA and np.isfinite(delta)):
        return ""
    return ABOVE if delta > 0 else BELOW


def level_cell(row: pd.Series, key: str, places: int, best: bool, minus: str = "-") -> Cell:
    mean, low, high = row[key], row[f"{key}:ci_low"], row[f"{key}:ci_high"]
    if not np.isfinite(mean):
        return Cell("–")
    fmt = lambda v: columns.number(v, places, minus=minus)   # noqa: E731
    ends = (fmt(low), fmt(high)) if np.isfinite(low) and np.isfinite(high) else ("", "")
    return Cell(fmt(mean), *ends, mark=mark(row, key), best=best, value=float(mean))


@dataclass(frozen=True)
class Table:
    keys: list[str]            # metric columns
    labels: list[str]          # rows
    cells: list[list[Cell]]    # [row][column]
    extra: list[list[str]]     # seeds, failed (main table only)


def main_table(board: pd.DataFrame, keys: list[str] | None = None, minus: str = "-") -> Table:
    keys = metric_keys(board) if keys is None else keys
    best = {key: columns.best_labels(board, key) for key in keys}
    places = {key: decimals(board, key) for key in keys}
    cells, labels, extra = [], [], []
    for _, row in board.iterrows():
        labels.append(str(row["label"]))
        extra.append([str(row["seeds"]), str(row["failed"])])
        cells.append([level_cell(row, k, places[k], row["label"] in best[k], minus) for k in keys])
    return Table(keys, labels, cells, extra)


def delta_rows(board: pd.DataFrame, keys: list[str] | None = None, minus: str = "-") -> Table:
    """Δ vs the baseline, one row per compared label, with its column's decimals and ▲/▼."""
    comp, baseline = board.attrs.get("comparisons"), board.attrs.get("baseline")
    if baseline is None or comp is None or comp.empty:
        return Table([], [], [], [])
    # Each (label, metric)'s first comparison, looked up once per cell (filtering the whole
    # table per cell took ~0.3 s per format on the CI suite's 13 x 9 cells).
    hits: dict = {}
    for r in comp.assign(key=comp["scorer"] + "/" + comp["metric"]).to_dict("records"):
        hits.setdefault((r["label"], r["key"]), r)
    present = {key for _, key in hits}
    keys = [k for k in (metric_keys(board) if keys is None else keys) if k in present]
    places = {key: decimals(board, key) for key in keys}
    compared = {label for label, _ in hits}
    labels, cells = [], []
    for _, row in board.iterrows():
        if row["label"] == baseline or row["label"] not in compared:
            continue
        labels.append(str(row["label"]))
        line = []
        for k in keys:
            r = hits.get((row["label"], k))
            if r is None or not np.isfinite(r["delta"]):
                line.append(Cell("–"))
                continue
            fmt = lambda v: columns.number(v, places[k], sign=True, minus=minus)   # noqa: E731
            ends = ((fmt(r["ci_low"]), fmt(r["ci_high"])) if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"])
                    else ("", ""))
            line.append(Cell(fmt(r["delta"]), *ends, mark=mark(row, k), best=bool(mark(row, k)),
                             value=float(r["delta"])))
        cells.append(line)
    return Table(keys, labels, cells, [])


def delta_table(board: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The Δ table as header and text cells (markdown)."""
    table = delta_rows(board)
    if not table.labels:
        return [], []
    head = [f"Δ vs {board.attrs['baseline']}"] + [header(k) for k in table.keys]
    return head, [[label] + [c.text() for c in line] for label, line in zip(table.labels, table.cells)]


def notes(board: pd.DataFrame) -> list[str]:
    """The sentences under a rendered leaderboard: what a cell is, what the marks mean."""
    out = ["Cells: mean across seeds [95% interval: bootstrap over seeds and prompts (drift: held-out pairs), "
           "crossed, percentile; one seed: over prompts only].",
           f"{columns.UP} / {columns.DOWN} in a header: higher / lower is better; no arrow: a trade-off axis, "
           "not a goal. Bold: a column's best trained objective, only when its interval does not overlap "
           "the runner-up's; never the reference, a control (" + ", ".join(sorted(columns.CONTROL_OBJECTIVES))
           + ", labels naming a control) or the raw reward-model columns (the reward model may reward length; "
           "see Scorer validity).",
           NUMBER_NOTE]
    baseline = board.attrs.get("baseline")
    if baseline is not None:
        out.append(f"{ABOVE}/{BELOW}: above/below the baseline {baseline} (paired by seed and prompt, 95% "
                   f"bootstrap, Holm-adjusted p < {ALPHA:g} within each column); see comparisons.csv.")
        comp, n_boot = board.attrs.get("comparisons"), board.attrs.get("n_boot")
        if comp is not None and len(comp) and n_boot:
            m = int(comp.groupby(["scorer", "metric"]).size().max())
            floor = 2 * m / (n_boot + 1)   # the smallest Holm-adjusted bootstrap p-value of a column
            if floor >= ALPHA:
                out.append(f"With scoring.bootstrap_samples = {n_boot} and {m} comparisons per column the "
                           f"smallest Holm-adjusted p is {floor:.3g}: no difference can be marked; "
                           f"use bootstrap_samples >= {40 * m}.")
    elif board.attrs.get("baseline_note"):
        out.append(board.attrs["baseline_note"] + ".")
    return out


DELTA_NOTE = ("Δ: objective minus baseline, paired by seed (same data order) and prompt; the reference "
              "is paired by prompt only.")


