"""A leaderboard as text: markdown, LaTeX, HTML or CSV.

Cells are written ``mean [low, high]`` (the intervals are not always symmetric, so a ``±``
form would misstate bootstrap intervals). The best mean of each column with a direction is bold.
"""
from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.tables.results import metric_info
from bench.tables.comparisons import ALPHA
from bench.tables.leaderboard import best_labels, metric_keys

UP, DOWN = "\u2191", "\u2193"   # ↑ ↓: significantly above / below the baseline


FORMATS = ("md", "latex", "html", "csv")


def _fmt(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    digits = 1 if abs(value) >= 100 else 2 if abs(value) >= 10 else 3   # about 3-4 significant figures
    return f"{value:.{digits}f}"


def _cell(row: pd.Series, key: str) -> str:
    mean, low, high = row[key], row[f"{key}:ci_low"], row[f"{key}:ci_high"]
    if not np.isfinite(mean):
        return "–"
    if np.isfinite(low) and np.isfinite(high):
        return f"{_fmt(mean)} [{_fmt(low)}, {_fmt(high)}]"
    return _fmt(mean)


def _display(key: str) -> str:
    scorer, metric = key.split("/", 1)
    return metric_info(scorer, metric).display


def _mark(row: pd.Series, key: str) -> str:
    """↑ or ↓ when the Holm-adjusted paired comparison with the baseline is significant."""
    p, delta = row.get(f"{key}:p_holm", math.nan), row.get(f"{key}:delta", math.nan)
    if not (np.isfinite(p) and p < ALPHA and np.isfinite(delta)):
        return ""
    return UP if delta > 0 else DOWN


def _table(board: pd.DataFrame, bold) -> tuple[list[str], list[list[str]]]:
    """Header and body cells, with ``bold(text)`` applied to each column's best and ↑/↓ after
    the cells that differ significantly from the baseline."""
    keys = metric_keys(board)
    best = {key: best_labels(board, key) for key in keys}
    header = ["objective", "seeds", "failed"] + [_display(k) for k in keys]
    body = []
    for _, row in board.iterrows():
        cells = [str(row["label"]), str(row["seeds"]), str(row["failed"])]
        cells += [(bold(_cell(row, k)) if row["label"] in best[k] else _cell(row, k)) + _mark(row, k) for k in keys]
        body.append(cells)
    return header, body


def _notes(board: pd.DataFrame) -> list[str]:
    """The sentences under a rendered leaderboard: what a cell is, what ↑/↓ mean."""
    notes = ["Cells: mean across seeds [95% interval: bootstrap over seeds and prompts (drift: held-out pairs), "
             "crossed, percentile; one seed: over prompts only]; best in bold."]
    baseline = board.attrs.get("baseline")
    if baseline is not None:
        notes.append(f"{UP}/{DOWN}: above/below the baseline {baseline} (paired by seed and prompt, 95% "
                     f"bootstrap, Holm-adjusted p < {ALPHA:g} within each column); see comparisons.csv.")
        comp, n_boot = board.attrs.get("comparisons"), board.attrs.get("n_boot")
        if comp is not None and len(comp) and n_boot:
            m = int(comp.groupby(["scorer", "metric"]).size().max())
            floor = 2 * m / (n_boot + 1)   # the smallest Holm-adjusted bootstrap p-value of a column
            if floor >= ALPHA:
                notes.append(f"With scoring.bootstrap_samples = {n_boot} and {m} comparisons per column the "
                             f"smallest Holm-adjusted p is {floor:.3g}: no difference can be marked; "
                             f"use bootstrap_samples >= {40 * m}.")
    elif board.attrs.get("baseline_note"):
        notes.append(board.attrs["baseline_note"] + ".")
    return notes


def _delta_cell(row: pd.Series, key: str, hits: dict) -> str:
    r = hits.get((row["label"], key))
    if r is None or not np.isfinite(r["delta"]):
        return "–"
    text = f"{r['delta']:+.3g}"
    if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]):
        text += f" [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]"
    return text + _mark(row, key)


def delta_table(board: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Δ vs the baseline, one row per compared label: ``Δ [95% interval]`` and ↑/↓."""
    comp, baseline = board.attrs.get("comparisons"), board.attrs.get("baseline")
    if baseline is None or comp is None or comp.empty:
        return [], []
    # Each (label, metric)'s first comparison, looked up once per cell (filtering the whole
    # table per cell took ~0.3 s per format on the CI suite's 13 x 9 cells).
    hits: dict = {}
    for r in comp.assign(key=comp["scorer"] + "/" + comp["metric"]).to_dict("records"):
        hits.setdefault((r["label"], r["key"]), r)
    present = {key for _, key in hits}
    keys = [k for k in metric_keys(board) if k in present]
    header = [f"Δ vs {baseline}"] + [_display(k) for k in keys]
    compared = {label for label, _ in hits}
    body = [[str(row["label"])] + [_delta_cell(row, k, hits) for k in keys]
            for _, row in board.iterrows() if row["label"] != baseline and row["label"] in compared]
    return header, body


def render(board: pd.DataFrame, fmt: str = "md") -> str:
    """The leaderboard as ``md``, ``latex`` (booktabs), ``html`` (standalone page) or ``csv``."""
    if fmt == "md":
        return _render_md(board)
    if fmt == "latex":
        return _render_latex(board)
    if fmt == "html":
        return _render_html(board)
    if fmt == "csv":
        return board.to_csv(index=False, lineterminator="\n")
    raise BenchError(f"report format {fmt!r} is not one of {', '.join(FORMATS)}")


def _md_table(header: list[str], body: list[list[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in row] for row in [header] + body]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in esc[1:]]


def _render_md(board: pd.DataFrame) -> str:
    lines = _md_table(*_table(board, lambda s: f"**{s}**"))
    lines += ["", *_notes(board)]
    header, body = delta_table(board)
    if body:
        lines += ["", *_md_table(header, body), "",
                  "Δ: objective minus baseline, paired by seed (same data order) and prompt; the reference "
                  "is paired by prompt only."]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text).replace("–", "--")


def _render_latex(board: pd.DataFrame) -> str:
    header, body = _table(board, lambda s: "\x00" + s + "\x01")   # markers survive escaping

    def tex(cell: str) -> str:
        return (_latex_escape(cell).replace("\x00", r"\textbf{").replace("\x01", "}")
                .replace(UP, r"$^\uparrow$").replace(DOWN, r"$^\downarrow$").replace("Δ", r"$\Delta$"))

    def tabular(header, body) -> list[str]:
        lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
                 " & ".join(tex(h) for h in header) + r" \\", r"\midrule"]
        lines += [" & ".join(tex(c) for c in row) + r" \\" for row in body]
        return lines + [r"\bottomrule", r"\end{tabular}"]

    lines = tabular(header, body) + ["", *("% " + tex(n) for n in _notes(board))]
    d_header, d_body = delta_table(board)
    if d_body:
        lines += ["", *tabular(d_header, d_body)]
    return "\n".join(lines) + "\n"


def _render_html(board: pd.DataFrame) -> str:
    header, body = _table(board, lambda s: "\x00" + s + "\x01")

    def cell(text: str) -> str:
        return html.escape(text).replace("\x00", "<b>").replace("\x01", "</b>")

    def table(header, body) -> str:
        head = "".join(f"<th>{cell(h)}</th>" for h in header)
        rows = "\n".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in body)
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n"

    d_header, d_body = delta_table(board)
    notes = "".join(f"<p>{cell(n)}</p>\n" for n in _notes(board))
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>prefbench leaderboard</title>\n"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
            "td:first-child,th:first-child{text-align:left}</style></head>\n<body>\n"
            + table(header, body) + notes + (table(d_header, d_body) if d_body else "") + "</body></html>\n")
