"""The leaderboard as one self-contained HTML page: title, suite, commit, date, the tables,
a column legend with direction and unit, and the folder's scorer validity section.

A number never wraps: every cell is ``white-space: nowrap``, the mean on the first line and
its interval on a second, smaller one; a page wider than the window scrolls sideways in the
table's own box. The header stays in view (sticky) and a click on it sorts the rows.
"""
from __future__ import annotations

import html

import pandas as pd

from bench.tables import columns
from bench.tables.columns import MINUS
from bench.tables.layout import DELTA_NOTE, Cell, delta_rows, display, header, main_table, notes

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1em;color:#222}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.15em;margin-top:1.6em}
.meta{color:#555;margin:0 0 1em}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:.92em}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:right;white-space:nowrap;vertical-align:top}
th{position:sticky;top:0;background:#f4f4f4;cursor:pointer;white-space:normal;min-width:4.8em;font-weight:600;
   font-size:.9em;vertical-align:bottom}
th.n{min-width:0}
td:first-child,th:first-child{text-align:left}
td.label{white-space:normal;max-width:12em}
td .ci{display:block;font-size:.74em;color:#666}
td.best .m{font-weight:700}
tr.control td{color:#777}
.mark{color:#a40;margin-left:2px}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:600}dd{margin:0}
"""

_SORT = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
    var down = th.dataset.dir !== 'desc'; th.dataset.dir = down ? 'desc' : 'asc';
    rows.sort(function(a, b){
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      if (!isNaN(nx) && !isNaN(ny)) return down ? ny - nx : nx - ny;
      if (isNaN(nx) !== isNaN(ny)) return isNaN(nx) ? 1 : -1;
      return down ? String(y).localeCompare(x) : String(x).localeCompare(y);
    });
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
"""


def _label(label: str) -> str:
    """A label cell that may break after its commas (a long configuration), never inside a number."""
    text = html.escape(label).replace(",", ",<wbr>").replace("[", "<wbr>[")
    return f'<td class="label" data-v="{html.escape(label)}">{text}</td>'


def _td(cell: Cell) -> str:
    cls = ' class="best"' if cell.best else ""
    value = "" if cell.value != cell.value else f"{cell.value:.10g}"   # NaN sorts last
    mark = f'<span class="mark">{cell.mark}</span>' if cell.mark else ""
    ci = f'<span class="ci">[{cell.low}, {cell.high}]</span>' if cell.low else ""
    return f'<td data-v="{value}"{cls}><span class="m">{html.escape(cell.mean)}</span>{mark}{ci}</td>'


def _table(head: list[str], rows: list[str], title: str = "") -> str:
    # The header sticks to the top of the window (no scrolling box of its own, which would hold it).
    narrow = ' class="n"'
    ths = "".join(f'<th title="{html.escape(title)}"{narrow if h in ("seeds", "failed") else ""}>'
                  f'{html.escape(h)}</th>' for h in head)
    return (f'<table class="sortable">\n<thead><tr>{ths}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody>\n</table>\n")


def _validity_html(text: str) -> str:
    """The validity section's markdown (paragraphs, one table, a heading) as HTML."""
    out, table = [], []

    def flush():
        if table:
            cells = [[c.strip() for c in line.strip("|").split("|")] for line in table if not set(line) <= set("|-:")]
            head, body = cells[0], cells[1:]
            out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr></thead>"
                       + "<tbody>" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                                             for row in body) + "</tbody></table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out) + "\n"


def render_html(board: pd.DataFrame) -> str:
    meta = board.attrs.get("meta") or {}
    suite = meta.get("suite")
    title = "prefbench leaderboard" + (f": {suite}" if suite else "")
    facts = [f"suite <b>{html.escape(str(suite))}</b>" if suite else "",
             f"commit <code>{html.escape(str(meta['commit'])[:12])}</code>" if meta.get("commit") else "",
             f"results written {html.escape(str(meta['date']))}" if meta.get("date") else "",
             f"baseline <b>{html.escape(str(board.attrs['baseline']))}</b>" if board.attrs.get("baseline") else ""]
    parts = [f"<h1>{html.escape(title)}</h1>", '<p class="meta">' + " · ".join(f for f in facts if f) + "</p>"]

    table = main_table(board, minus=MINUS)
    head = ["objective", "seeds", "failed"] + [header(k) for k in table.keys]
    rows = []
    for label, objective, extra, line in zip(table.labels, board["objective"], table.extra, table.cells):
        cls = ' class="control"' if columns.is_control(label, str(objective)) else ""
        rows.append(f'<tr{cls}>{_label(label)}'
                    + "".join(f'<td data-v="{e}">{e}</td>' for e in extra) + "".join(_td(c) for c in line) + "</tr>")
    parts.append(_table(head, rows, "click to sort"))
    parts += [f"<p>{html.escape(n)}</p>" for n in notes(board)]

    delta = delta_rows(board, minus=MINUS)
    if delta.labels:
        parts.append(f"<h2>Δ vs {html.escape(str(board.attrs['baseline']))}</h2>")
        d_rows = [f'<tr>{_label(label)}'
                  + "".join(_td(Cell(c.mean, c.low, c.high, c.mark, False, c.value)) for c in line) + "</tr>"
                  for label, line in zip(delta.labels, delta.cells)]
        parts.append(_table([f"Δ vs {board.attrs['baseline']}"] + [header(k) for k in delta.keys], d_rows))
        parts.append(f"<p>{html.escape(DELTA_NOTE)}</p>")

    parts.append("<h2>Columns</h2>\n<dl>")
    for key in table.keys:
        what, unit = columns.meaning(key)
        better = columns.direction(key)
        way = "higher is better" if better else "lower is better" if better is False else "no better direction"
        parts.append(f"<dt>{html.escape(display(key))}</dt><dd>{html.escape(what)}; "
                     f"{html.escape(unit) + '; ' if unit else ''}{way}.</dd>")
    parts.append("</dl>")
    if meta.get("validity"):
        parts.append(_validity_html(meta["validity"]))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + f"\n<script>{_SORT}</script>\n</body></html>\n")
