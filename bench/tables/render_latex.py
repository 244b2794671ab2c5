r"""The leaderboard as LaTeX floats a paper can ``\input`` (booktabs only).

A 16-column leaderboard does not fit a page, so the paper tables are groups of the columns
that decide (:data:`GROUPS`): the generations' quality, then length and drift, each as its
own ``table*`` float, and the Δ against the baseline of each group as two floats more. A cell
is ``$m^{+a}_{-b}$``, the mean and its 95% interval [m−b, m+a] (a bracketed interval is about
twice as wide); every number is in math mode, so negatives get a true minus. The legend is
the caption, not comments. Columns left out (the raw reward-model scores, per-token drift)
stay in ``leaderboard.md``, ``.html`` and ``.csv``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from bench.tables import columns
from bench.tables.columns import decimals
from bench.tables.comparisons import ALPHA
from bench.tables.leaderboard import metric_keys
from bench.tables.layout import Cell, delta_rows, display, main_table
from bench.tables.results import LM_EVAL_PREFIX

# (name, caption words, the columns it takes; another scorer's win rate and lm-eval tasks join
# the first group). The LLM judge (scoring.judge) has a float of its own: beside the quality
# columns its two win rates made the quality float 9.3 pt wider than a two-column page.
GROUPS = (
    ("quality", "quality of the generations",
     ["gold/accuracy", "gold/win_rate_vs_reference", "reward_model/lc_win_rate_vs_reference"]),
    ("judge", "win rates against the reference judged by an LLM (both orders; a split verdict is a tie)",
     ["judge/win_rate_vs_reference", "judge/lc_win_rate_vs_reference", "judge/tie_rate"]),
    ("drift", "length and drift",
     ["length/mean_tokens", "generation/truncation_rate", "drift/logratio_chosen", "drift/chosen_logp_down",
      "kl/kl_to_reference"]),
)

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
            "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def escape(text: str) -> str:
    return "".join(_SPECIAL.get(ch, ch) for ch in text).replace("–", "--")


def group_keys(board: pd.DataFrame) -> list[tuple[str, str, list[str]]]:
    """The groups with the columns this leaderboard has (groups left empty are dropped), or the
    one group of columns ``report --columns`` chose (``board.attrs["paper_columns"]``)."""
    present = metric_keys(board)
    chosen = board.attrs.get("paper_columns")
    if chosen:
        return [("selected", "selected columns", [k for k in chosen if k in present])]
    out = []
    for name, words, keys in GROUPS:
        mine = [k for k in keys if k in present]
        if name == "quality":   # another registered scorer's win rate and lm-eval tasks join it
            mine += [k for k in present if k.endswith("/win_rate_vs_reference") and k not in mine
                     and k.split("/")[0] not in ("reward_model", "gold", "judge")]
            mine += [k for k in present if k.startswith(LM_EVAL_PREFIX)]
        if mine:
            out.append((name, words, mine))
    return out


def _head(key: str) -> str:
    """A column header on two lines (the name split at its middle space), with ↑/↓."""
    words = escape(display(key)).split(" ")
    cut = max(1, (len(words) + 1) // 2)
    top, bottom = " ".join(words[:cut]), " ".join(words[cut:])
    better = columns.direction(key)
    bottom = (bottom + (r" $\uparrow$" if better else r" $\downarrow$" if better is False else "")).strip()
    return r"\begin{tabular}[b]{@{}c@{}}" + top + r"\\" + bottom + r"\end{tabular}"


def _math(cell: Cell, mean: str, low: float, high: float, places: int, bold: bool) -> str:
    if cell.mean == "–":
        return "--"
    body = r"\mathbf{" + mean + "}" if bold else mean
    if not cell.low:
        return f"${body}$"
    # low, high: the interval's ends minus the mean (low <= 0 <= high for a percentile interval)
    up, down = columns.number(high, places, sign=True), columns.number(low, places, sign=True)
    if float(up) == 0 and float(down) == 0:   # an interval of one point (a tie, a share of 0): the mean alone,
        return f"${body}^{{\\phantom{{{up}}}}}_{{\\phantom{{{down}}}}}$"   # its digits aligned with the others'.
    return f"${body}^{{{up}}}_{{{down}}}$"


def _float(title: str, label: str, head: list[str], rows: list[list[str]]) -> list[str]:
    spec = "l" + "r" * (len(head) - 1)
    return [r"\begin{table*}[t]", r"\centering", r"\footnotesize", r"\setlength{\tabcolsep}{4pt}",
            r"\renewcommand{\arraystretch}{1.3}",   # room for each interval's superscript and subscript
            rf"\caption{{{title}}}", rf"\label{{{label}}}", r"\smallskip",   # article sets no skip below a caption
            rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(head) + r" \\", r"\midrule",
            *(" & ".join(r) + r" \\" for r in rows), r"\bottomrule", r"\end{tabular}", r"\end{table*}", ""]


def _level_rows(board: pd.DataFrame, keys: list[str]) -> list[list[str]]:
    table = main_table(board, keys)
    rows = []
    frame = board.set_index("label")
    for label, line in zip(table.labels, table.cells):
        out = [escape(label)]
        for key, cell in zip(keys, line):
            mean = frame.loc[label, key]
            places = decimals(board, key)
            low, high = frame.loc[label, f"{key}:ci_low"] - mean, frame.loc[label, f"{key}:ci_high"] - mean
            out.append(_math(cell, columns.number(mean, places), low, high, places, cell.best))
        rows.append(out)
    return rows


def _delta_rows(board: pd.DataFrame, keys: list[str]) -> tuple[list[str], list[list[str]]]:
    table = delta_rows(board, keys)
    comp = board.attrs["comparisons"]
    # each (label, metric)'s first comparison, as delta_rows takes it (later duplicates overwritten first)
    hits = {(r["label"], f"{r['scorer']}/{r['metric']}"): r for r in comp.to_dict("records")[::-1]}
    rows = []
    for label, line in zip(table.labels, table.cells):
        out = [escape(label)]
        for key, cell in zip(table.keys, line):
            r = hits.get((label, key))
            if r is None or cell.mean == "–":
                out.append("--")
                continue
            places = decimals(board, key)
            low = r["ci_low"] - r["delta"] if np.isfinite(r["ci_low"]) else np.nan
            high = r["ci_high"] - r["delta"] if np.isfinite(r["ci_high"]) else np.nan
            mean = columns.number(r["delta"], places, sign=True)
            out.append(_math(cell, mean, low, high, places, bool(cell.mark)))
        rows.append(out)
    return table.keys, rows


def _seeds_words(board: pd.DataFrame) -> str:
    trained = board[board["objective"] != "reference"]
    counts = sorted(set(int(s) for s in trained["seeds"]))
    if not counts:
        return "no trained objective"
    words = (f"{counts[0]} seed{'s' if counts[0] != 1 else ''} per objective" if len(counts) == 1
             else f"{counts[0]}--{counts[-1]} seeds per objective")
    failed = [(str(r["label"]), int(r["failed"])) for _, r in board.iterrows() if int(r["failed"])]
    if failed:
        words += "; failed runs left out: " + ", ".join(f"{escape(lab)} ({n})" for lab, n in failed)
    return words


def render_latex(board: pd.DataFrame) -> str:
    meta = board.attrs.get("meta") or {}
    suite = escape(str(meta.get("suite", "")))
    slug = "".join(ch if ch.isalnum() else "-" for ch in str(meta.get("suite", "results")))
    lines = [r"% prefbench leaderboard" + (f" of suite {meta['suite']}" if meta.get("suite") else "")
             + (f", commit {meta['commit']}" if meta.get("commit") else "") + ".",
             r"% Needs \usepackage{booktabs}; \input{leaderboard.tex} in the body.", ""]
    interval = (r"Cells: mean across seeds, with its 95\% interval $[m-b,\,m+a]$ written $m^{+a}_{-b}$ "
                r"(bootstrap over seeds and prompts, crossed, percentile; one seed: over prompts; drift: over "
                r"held-out pairs). ")
    rule = (r"$\uparrow$/$\downarrow$: higher/lower is better; no arrow: a trade-off axis. Bold: the best trained "
            r"objective of a column, only where its interval does not overlap the runner-up's (never the "
            r"reference or a control: " + ", ".join(sorted(columns.CONTROL_OBJECTIVES))
            + r", or a label naming a control). Shares to 3 decimals, other columns to 3 significant "
            r"figures; a value that rounds to zero is 0.")
    who = (f" of suite {suite}" if suite else "") + f" ({_seeds_words(board)})"
    groups = group_keys(board)
    first = None
    for name, words, keys in groups:
        head = ["objective"] + [_head(k) for k in keys]
        label = f"tab:{slug}-{name}"
        # The whole legend once, in the first table's caption; the others refer to it.
        legend = interval + rule if first is None else rf"Cells, marks and rounding as in Table~\ref{{{first}}}."
        lines += _float(f"Leaderboard{who}: {words}. {legend}", label, head, _level_rows(board, keys))
        first = first or label
    baseline = board.attrs.get("baseline")
    if baseline is None or board.attrs.get("comparisons") is None or board.attrs["comparisons"].empty:
        note = board.attrs.get("baseline_note")
        if note:
            lines.append("% " + escape(note))
        return "\n".join(lines) + "\n"
    for name, words, keys in groups:
        d_keys, rows = _delta_rows(board, keys)
        if not rows:
            continue
        title = (f"Difference from the baseline {escape(baseline)}, {words}: objective minus baseline "
                 r"(paired by seed and prompt; the reference by prompt only), with the paired 95\% bootstrap "
                 r"interval as $\Delta^{+a}_{-b}$. Bold: Holm-adjusted $p < " + f"{ALPHA:g}" + r"$ within the column. "
                 + (f"Suite {suite}. " if suite else "") + r"Rounding as in Table~\ref{" + first + "}.")
        lines += _float(title, f"tab:{slug}-delta-{name}", ["objective"] + [_head(k) for k in d_keys], rows)
    return "\n".join(lines) + "\n"
