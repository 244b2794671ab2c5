"""The leaderboard table: one row per objective configuration, its cells and its Δ columns,
and the statistics settings a folder was aggregated with (``statistics.json``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.tables import stats
from bench.io import atomic_write
from bench.tables.results import LM_EVAL_PREFIX
from bench.tables.columns import row_order
from bench.tables.cells import SharedCounts, aggregate, failed_run_ids
from bench.tables.comparisons import COMPARISON_COLUMNS, comparisons, resolve_baseline


# Leaderboard columns in display order; lm-eval tasks follow, one column per task.
# Verified correctness leads: a learned reward model can reward an artefact (the embedded
# default's rewards filler; see its validity section), a verifier cannot.
LEADERBOARD_METRICS = [
    ("gold", "accuracy"),
    ("gold", "win_rate_vs_reference"),
    ("reward_model", "win_rate_vs_reference"),
    ("reward_model", "lc_win_rate_vs_reference"),
    ("reward_model", "win_rate_vs_chosen"),
    ("reward_model", "mean_reward"),
    # The LLM judge, where the suite has one (scoring.judge): its win rates, then how often it
    # could not decide (ties) or could not be read, so a column of ties is seen as such.
    ("judge", "win_rate_vs_reference"),
    ("judge", "lc_win_rate_vs_reference"),
    ("judge", "win_rate_vs_chosen"),
    ("judge", "tie_rate"),
    ("judge", "unparseable_rate"),
    ("length", "mean_tokens"),
    ("generation", "truncation_rate"),
    ("drift", "logratio_chosen"),
    ("drift", "logratio_chosen_per_token"),
    ("drift", "chosen_logp_down"),
    ("kl", "kl_to_reference"),
]


# lm-eval's headline metric of a task: the first of these it reports, else its first metric.
_LM_EVAL_MAIN = ("exact_match", "acc_norm", "acc", "f1", "mc2", "bleu")


ID_COLUMNS = ["label", "objective", "seeds", "failed"]


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


@dataclass(frozen=True)
class StatsSettings:
    """How a folder's statistics are computed: the suite's ``scoring.compare_to`` and
    ``scoring.bootstrap_samples``, and the bootstrap's base seed (``statistics.json``)."""

    compare_to: str | None = "dpo"
    n_boot: int = stats.DEFAULT_BOOT
    seed: int = 0


STATS_FILE = "statistics.json"


def read_settings(results_dir: str | Path) -> StatsSettings:
    """The folder's ``statistics.json`` (written by ``run``), else the defaults."""
    path = Path(results_dir) / STATS_FILE
    if not path.exists():
        return StatsSettings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return StatsSettings(compare_to=data.get("compare_to"), n_boot=int(data["bootstrap_samples"]),
                             seed=int(data["seed"]))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise BenchError(f"{path}: unreadable statistics settings ({type(err).__name__}: {err})") from None


def write_settings(results_dir: str | Path, settings: StatsSettings) -> Path:
    path = Path(results_dir) / STATS_FILE
    text = json.dumps({"compare_to": settings.compare_to, "bootstrap_samples": settings.n_boot,
                       "seed": settings.seed}, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


@dataclass(frozen=True)
class Cells:
    """The leaderboard's cells (:func:`bench.tables.cells.aggregate`'s long table) and the unit
    resamples drawn for them, which the comparisons then reuse instead of drawing again."""

    long: pd.DataFrame
    counts: SharedCounts


def leaderboard_cells(results_df: pd.DataFrame, runs_df: pd.DataFrame | None = None,
                      units: pd.DataFrame | None = None, settings: StatsSettings | None = None) -> Cells:
    """The cells alone, for a caller that wants them before the comparisons (the plots that need
    no baseline); pass them on as ``leaderboard(..., cells=)``."""
    settings = settings or StatsSettings()
    # One unit resample per metric for the cells and the comparisons alike.
    counts = SharedCounts(settings.n_boot, settings.seed)
    return Cells(aggregate(results_df, runs_df, units, n_boot=settings.n_boot, seed=settings.seed, _counts=counts),
                 counts)


def leaderboard(results_df: pd.DataFrame, runs_df: pd.DataFrame | None = None, units: pd.DataFrame | None = None,
                settings: StatsSettings | None = None, *, cells: Cells | None = None) -> pd.DataFrame:
    """One row per objective configuration (the reference, the baseline, the other objectives,
    the controls: :func:`bench.tables.columns.row_order`), with columns
    ``label, objective, seeds, failed`` and, per metric, ``scorer/metric``,
    ``scorer/metric:ci_low``, ``scorer/metric:ci_high``, and against the baseline
    ``scorer/metric:delta`` and ``scorer/metric:p_holm`` (NaN where not compared).

    ``board.attrs``: ``baseline`` (its label or None), ``baseline_note`` (why there is none),
    ``comparisons`` (the tidy table of :func:`comparisons`), ``long`` (:func:`aggregate`).
    ``cells``: what :func:`leaderboard_cells` returned for the same arguments, when the caller has it."""
    settings = settings or StatsSettings()
    if cells is None:
        cells = leaderboard_cells(results_df, runs_df, units, settings)
    long = cells.long
    boot = dict(n_boot=settings.n_boot, seed=settings.seed, _counts=cells.counts)
    failed = _failed_counts(runs_df)
    labels = sorted(set(results_df["label"].astype(str)) | set(failed))
    objective_of = dict(zip(results_df["label"].astype(str), results_df["objective"].astype(str)))
    if runs_df is not None and "label" in runs_df:
        objective_of.update({k: v for k, v in zip(runs_df["label"].astype(str), runs_df["objective"].astype(str))
                             if k not in objective_of})
    failed_ids = failed_run_ids(runs_df)
    ok_rows = results_df[~results_df["run_id"].astype(str).isin(failed_ids)]
    seeds = ok_rows.groupby("label")["run_id"].nunique()
    columns = _columns(long)
    baseline, note = resolve_baseline(settings.compare_to, {lab: objective_of.get(lab, "") for lab in seeds.index})
    comp = (comparisons(results_df, runs_df, units, baseline, columns, **boot) if baseline is not None
            else pd.DataFrame(columns=COMPARISON_COLUMNS))
    rows = []
    for label in row_order(labels, objective_of, baseline):
        row = {"label": label, "objective": objective_of.get(label, ""),
               "seeds": int(seeds.get(label, 0)), "failed": int(failed.get(label, 0))}
        sub = long[long["label"] == label]
        mine = comp[comp["label"] == label]
        for scorer, metric in columns:
            hit = sub[(sub["scorer"] == scorer) & (sub["metric"] == metric)]
            key = metric_key(scorer, metric)
            vals = hit.iloc[0] if len(hit) else None
            row[key] = float(vals["value"]) if vals is not None else math.nan
            row[f"{key}:ci_low"] = float(vals["ci_low"]) if vals is not None else math.nan
            row[f"{key}:ci_high"] = float(vals["ci_high"]) if vals is not None else math.nan
            cmp_hit = mine[(mine["scorer"] == scorer) & (mine["metric"] == metric)]
            row[f"{key}:delta"] = float(cmp_hit["delta"].iloc[0]) if len(cmp_hit) else math.nan
            row[f"{key}:p_holm"] = float(cmp_hit["p_holm"].iloc[0]) if len(cmp_hit) else math.nan
        rows.append(row)
    board = pd.DataFrame(rows)
    board.attrs.update(baseline=baseline, baseline_note=note, comparisons=comp, long=long, n_boot=settings.n_boot)
    return board


def _failed_counts(runs_df: pd.DataFrame | None) -> dict[str, int]:
    if runs_df is None or "status" not in runs_df or "label" not in runs_df:
        return {}
    bad = runs_df[runs_df["status"].fillna("failed") != "ok"]
    return {str(k): int(v) for k, v in bad.groupby("label")["run_id"].nunique().items()}


def metric_keys(board: pd.DataFrame) -> list[str]:
    """The metric columns (``scorer/metric``) of a leaderboard, in order."""
    return [c for c in board.columns if c not in ID_COLUMNS and ":" not in c.split("/", 1)[-1]]


