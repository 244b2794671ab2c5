"""A leaderboard as text: markdown, LaTeX (:mod:`bench.tables.render_latex`), HTML
(:mod:`bench.tables.render_html`) or CSV, from the cells of :mod:`bench.tables.layout`."""
from __future__ import annotations

import pandas as pd

from bench.errors import BenchError
from bench.tables.layout import DELTA_NOTE, delta_table, header, main_table, notes
from bench.tables.render_html import render_html
from bench.tables.render_latex import render_latex

FORMATS = ("md", "latex", "html", "csv")


def render(board: pd.DataFrame, fmt: str = "md") -> str:
    """The leaderboard as ``md``, ``latex`` (booktabs floats), ``html`` (standalone page) or ``csv``."""
    if fmt == "md":
        return _render_md(board)
    if fmt == "latex":
        return render_latex(board)
    if fmt == "html":
        return render_html(board)
    if fmt == "csv":
        return board.to_csv(index=False, lineterminator="\n")
    raise BenchError(f"report format {fmt!r} is not one of {', '.join(FORMATS)}")


def _md_table(head: list[str], body: list[list[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in row] for row in [head] + body]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in esc[1:]]


def _render_md(board: pd.DataFrame) -> str:
    table = main_table(board)
    head = ["objective", "seeds", "failed"] + [header(k) for k in table.keys]
    body = [[label, *extra] + [f"**{c.text()}**" if c.best else c.text() for c in line]
            for label, extra, line in zip(table.labels, table.extra, table.cells)]
    lines = _md_table(head, body) + ["", *notes(board)]
    d_head, d_body = delta_table(board)
    if d_body:
        lines += ["", *_md_table(d_head, d_body), "", DELTA_NOTE]
    return "\n".join(lines) + "\n"
