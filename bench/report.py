"""The leaderboard: one row per objective configuration, mean and 95% interval across seeds.

Aggregation (:func:`aggregate`): each run contributes one value per (scorer, metric); failed
runs (``runs.parquet`` status other than ``ok``) are left out and counted in ``failed``.
With two or more seeds the interval is Student's t-interval across seeds
(:func:`bench.metrics.seed_aggregate`); with a single seed the run's own interval (the
bootstrap over prompts the scorer reported) is shown instead, since a t-interval of one
value is undefined.

Cells are written ``mean [low, high]`` (the intervals are not always symmetric, so a
``±`` form would misstate bootstrap intervals). The best mean of each column is bold for
the metrics with a direction (:data:`bench.results.METRICS`): win rates, LC win rate,
gold accuracy, reward-model score, implicit accuracy, lm-eval scores (higher better) and
the share of pairs with the chosen log-prob down (lower better). Length, KL, log-ratio
drift and training loss are trade-off axes, not goals, and get no bold.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.results import LM_EVAL_PREFIX, REFERENCE, metric_info, read_results, read_runs

# Leaderboard columns in display order; lm-eval tasks follow, one column per task.
LEADERBOARD_METRICS = [
    ("reward_model", "win_rate_vs_reference"),
    ("reward_model", "lc_win_rate_vs_reference"),
    ("reward_model", "win_rate_vs_chosen"),
    ("gold", "accuracy"),
    ("gold", "win_rate_vs_reference"),
    ("reward_model", "mean_reward"),
    ("length", "mean_tokens"),
    ("drift", "logratio_chosen"),
    ("drift", "chosen_logp_down"),
    ("kl", "kl_to_reference"),
]
# lm-eval's headline metric of a task: the first of these it reports, else its first metric.
_LM_EVAL_MAIN = ("exact_match", "acc_norm", "acc", "f1", "mc2", "bleu")
ID_COLUMNS = ["label", "objective", "seeds", "failed"]
FORMATS = ("md", "latex", "html", "csv")


def seed_aggregate(values):
    """Mean and 95% t-interval across seeds; :mod:`bench.metrics`' version when available."""
    try:
        from bench.metrics import seed_aggregate as shared
    except ImportError:
        shared = None
    values = list(values)
    if shared is not None and len(values) >= 2:   # n < 2 handled here: no interval to compute
        est = shared(values)
        return float(est.value), float(est.ci_low), float(est.ci_high), int(est.n)
    return t_interval(values)


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n): Student's t-interval mean ± t_{n-1} · s/√n (NaN bounds for n < 2)."""
    from scipy import stats   # scipy comes with lm-eval (via scikit-learn)

    arr = np.asarray(list(values), dtype=float)
    n = int(arr.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(arr.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * arr.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


# --------------------------------------------------------------------------- aggregation

def failed_run_ids(runs_df: pd.DataFrame | None) -> set[str]:
    """Run ids whose status is not ``ok``."""
    if runs_df is None or "status" not in runs_df:
        return set()
    return set(runs_df.loc[runs_df["status"].fillna("failed") != "ok", "run_id"].astype(str))


def aggregate(results_df: pd.DataFrame, runs_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long table: one row per (label, scorer, metric) with the mean and interval across seeds."""
    failed = failed_run_ids(runs_df)
    ok = results_df[~results_df["run_id"].astype(str).isin(failed) & results_df["value"].notna()]
    records = []
    for (label, scorer, metric), group in ok.groupby(["label", "scorer", "metric"], sort=True):
        mean, low, high, n = seed_aggregate(group["value"].to_numpy(float))
        if n == 1:   # one seed: the scorer's own interval over prompts (see module doc)
            low, high = float(group["ci_low"].iloc[0]), float(group["ci_high"].iloc[0])
        records.append({"label": label, "objective": str(group["objective"].iloc[0]), "scorer": scorer,
                        "metric": metric, "value": mean, "ci_low": low, "ci_high": high, "n_seeds": n})
    return pd.DataFrame(records, columns=["label", "objective", "scorer", "metric", "value",
                                          "ci_low", "ci_high", "n_seeds"])


def metric_key(scorer: str, metric: str) -> str:
    return f"{scorer}/{metric}"


def _columns(long: pd.DataFrame) -> list[tuple[str, str]]:
    present = set(zip(long["scorer"], long["metric"]))
    cols = [key for key in LEADERBOARD_METRICS if key in present]
    for task in sorted({s for s, _ in present if s.startswith(LM_EVAL_PREFIX)}):
        metrics = sorted(m for s, m in present if s == task and not m.endswith("_stderr"))
        main = next((m for m in _LM_EVAL_MAIN if m in metrics), metrics[0] if metrics else None)
        if main is not None:
            cols.append((task, main))
    return cols


def leaderboard(results_df: pd.DataFrame, runs_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per objective configuration (the reference first), with columns
    ``label, objective, seeds, failed`` and, per metric, ``scorer/metric``,
    ``scorer/metric:ci_low``, ``scorer/metric:ci_high``."""
    long = aggregate(results_df, runs_df)
    failed = _failed_counts(runs_df)
    labels = sorted(set(results_df["label"].astype(str)) | set(failed))
    objective_of = dict(zip(results_df["label"].astype(str), results_df["objective"].astype(str)))
    if runs_df is not None and "label" in runs_df:
        objective_of.update({k: v for k, v in zip(runs_df["label"].astype(str), runs_df["objective"].astype(str))
                             if k not in objective_of})
    failed_ids = failed_run_ids(runs_df)
    ok_rows = results_df[~results_df["run_id"].astype(str).isin(failed_ids)]
    seeds = ok_rows.groupby("label")["run_id"].nunique()
    rows = []
    for label in sorted(labels, key=lambda lab: (objective_of.get(lab) != REFERENCE, lab)):
        row = {"label": label, "objective": objective_of.get(label, ""),
               "seeds": int(seeds.get(label, 0)), "failed": int(failed.get(label, 0))}
        sub = long[long["label"] == label]
        for scorer, metric in _columns(long):
            hit = sub[(sub["scorer"] == scorer) & (sub["metric"] == metric)]
            key = metric_key(scorer, metric)
            vals = hit.iloc[0] if len(hit) else None
            row[key] = float(vals["value"]) if vals is not None else math.nan
            row[f"{key}:ci_low"] = float(vals["ci_low"]) if vals is not None else math.nan
            row[f"{key}:ci_high"] = float(vals["ci_high"]) if vals is not None else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _failed_counts(runs_df: pd.DataFrame | None) -> dict[str, int]:
    if runs_df is None or "status" not in runs_df or "label" not in runs_df:
        return {}
    bad = runs_df[runs_df["status"].fillna("failed") != "ok"]
    return {str(k): int(v) for k, v in bad.groupby("label")["run_id"].nunique().items()}


def metric_keys(board: pd.DataFrame) -> list[str]:
    """The metric columns (``scorer/metric``) of a leaderboard, in order."""
    return [c for c in board.columns if c not in ID_COLUMNS and not c.endswith((":ci_low", ":ci_high"))]


def best_labels(board: pd.DataFrame, key: str) -> set[str]:
    """Labels holding the best mean of a column (ties all count); empty when it has no direction."""
    scorer, metric = key.split("/", 1)
    direction = metric_info(scorer, metric).higher_is_better
    values = board[key].astype(float)
    if direction is None or values.notna().sum() == 0:
        return set()
    best = values.max() if direction else values.min()
    return set(board.loc[np.isclose(values, best, rtol=0, atol=1e-12), "label"])


# --------------------------------------------------------------------------- rendering

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


def _table(board: pd.DataFrame, bold) -> tuple[list[str], list[list[str]]]:
    """Header and body cells, with ``bold(text)`` applied to each column's best."""
    keys = metric_keys(board)
    best = {key: best_labels(board, key) for key in keys}
    header = ["objective", "seeds", "failed"] + [_display(k) for k in keys]
    body = []
    for _, row in board.iterrows():
        cells = [str(row["label"]), str(row["seeds"]), str(row["failed"])]
        cells += [bold(_cell(row, k)) if row["label"] in best[k] else _cell(row, k) for k in keys]
        body.append(cells)
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


def _render_md(board: pd.DataFrame) -> str:
    header, body = _table(board, lambda s: f"**{s}**")
    esc = [[c.replace("|", "\\|") for c in row] for row in [header] + body]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
    note = "Cells: mean [95% interval] across seeds (one seed: the scorer's interval over prompts); best in bold."
    return "\n".join(lines) + "\n\n" + note + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text).replace("–", "--")


def _render_latex(board: pd.DataFrame) -> str:
    header, body = _table(board, lambda s: "\x00" + s + "\x01")   # markers survive escaping

    def tex(cell: str) -> str:
        return _latex_escape(cell).replace("\x00", r"\textbf{").replace("\x01", "}")

    lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(tex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(tex(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _render_html(board: pd.DataFrame) -> str:
    header, body = _table(board, lambda s: "\x00" + s + "\x01")

    def cell(text: str) -> str:
        return html.escape(text).replace("\x00", "<b>").replace("\x01", "</b>")

    head = "".join(f"<th>{cell(h)}</th>" for h in header)
    rows = "\n".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in body)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>prefbench leaderboard</title>\n"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
            "td:first-child,th:first-child{text-align:left}</style></head>\n<body>\n"
            f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n"
            "<p>Cells: mean [95% interval] across seeds; best in bold.</p>\n</body></html>\n")


# --------------------------------------------------------------------------- files

_SUFFIX = {"md": "md", "latex": "tex", "html": "html", "csv": "csv"}


def write_report(results_dir: str | Path, *, plots: bool = True) -> str:
    """Write ``leaderboard.{md,tex,html,csv}`` (and the plots under ``plots/``) into a results
    folder; return the markdown leaderboard."""
    board, _ = write_report_files(results_dir, plots=plots)
    return render(board, "md")


def write_report_files(results_dir: str | Path, *, plots: bool = True) -> tuple[pd.DataFrame, dict[str, Path]]:
    """As :func:`write_report`; returns the leaderboard frame and ``{format or plot:name: path}``."""
    from bench.plots import make_plots
    from bench.results import atomic_write

    folder = Path(results_dir)
    results_df, runs_df = read_results(folder), read_runs(folder)
    board = leaderboard(results_df, runs_df)
    written = {}
    for fmt, suffix in _SUFFIX.items():
        path = folder / f"leaderboard.{suffix}"
        text = render(board, fmt)
        atomic_write(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        written[fmt] = path
    if plots:
        for name, path in make_plots(folder, results_df, runs_df).items():
            written[f"plot:{name}"] = path
    return board, written


def report_text(results_dir: str | Path, fmt: str = "md") -> str:
    """Refresh a folder's report files and plots; return the leaderboard in ``fmt``."""
    if fmt not in FORMATS:
        raise BenchError(f"report format {fmt!r} is not one of {', '.join(FORMATS)}")
    board, _ = write_report_files(results_dir)
    return render(board, fmt)
