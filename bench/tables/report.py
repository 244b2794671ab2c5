"""The leaderboard: one row per objective configuration, mean and 95% interval across seeds.

Aggregation (:func:`aggregate`): each run contributes one value per (scorer, metric); failed
runs (``runs.parquet`` status other than ``ok``) are left out and counted in ``failed``.
The value is the mean across seeds. Where the folder stores unit values (``units.parquet``:
per prompt, per drift pair, or the LC fit's per-prompt terms) the interval is the crossed
seeds x prompts bootstrap of :mod:`bench.tables.stats`; otherwise Student's t-interval across
seeds, or with one seed the run's own interval. Every interval is intersected with the
metric's range. :func:`comparisons` gives Δ against the suite's baseline
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
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.tables import stats
from bench.tables.aggregate import LC_METRIC
from bench.tables.metrics import LC_TERMS, lc_one_step
from bench.errors import BenchError
from bench.tables.results import LM_EVAL_PREFIX, REFERENCE, metric_info, read_results, read_runs, read_units

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
FORMATS = ("md", "latex", "html", "csv")


def seed_aggregate(values):
    """Mean and 95% t-interval across seeds; :mod:`bench.tables.metrics`' version when available."""
    try:
        from bench.tables.metrics import seed_aggregate as shared
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


def aggregate(results_df: pd.DataFrame, runs_df: pd.DataFrame | None = None, units: pd.DataFrame | None = None,
              *, n_boot: int = stats.DEFAULT_BOOT, seed: int = 0, _counts=None) -> pd.DataFrame:
    """Long table: one row per (label, scorer, metric) with the mean across seeds and its interval.

    The value is the mean of the runs' values. The interval (column ``interval`` names it):
    ``seeds x units`` where unit values are given (the crossed two-way bootstrap of
    :mod:`bench.tables.stats`; with one seed it is the bootstrap over prompts or pairs only), else
    ``t over seeds`` (Student's t across the seeds' values) or, with one seed, ``run``
    (the scorer's own interval). Every interval is intersected with the metric's range.
    """
    with stats.one_blas_thread():
        return _aggregate(results_df, runs_df, units, n_boot=n_boot, seed=seed, counts=_counts)


def _aggregate(results_df, runs_df, units, *, n_boot: int, seed: int, counts=None) -> pd.DataFrame:
    failed = failed_run_ids(runs_df)
    ok = results_df[~results_df["run_id"].astype(str).isin(failed) & results_df["value"].notna()]
    tables = unit_tables(units, failed)
    counts = counts or _SharedCounts(n_boot, seed)
    records = []
    for (label, scorer, metric), group in ok.groupby(["label", "scorer", "metric"], sort=True):
        mean, low, high, n = seed_aggregate(group["value"].to_numpy(float))
        table = tables.get((label, scorer, metric))
        fitted = _fitted_terms(tables, label, scorer, metric)
        if fitted is not None:   # a fitted metric (LC win rate): one-step refits per seed
            values = group.groupby("seed")["value"].mean()
            seeds = [sd for sd in fitted.index if sd in values.index]
            terms = _terms_array(fitted, seeds)
            keep = np.isfinite(terms).all(axis=(0, 2))
            per_seed = _one_step(terms, values.reindex(seeds).to_numpy(float), keep,
                                 counts(scorer, metric, terms.shape[1]))
            reps = stats.cross_seeds(per_seed, stats.draw_counts(len(seeds), per_seed.shape[0],
                                                                 stats.rng_for(seed, scorer, metric, label)))
            (low, high), method = stats.percentile_interval(reps), "seeds x units" if len(seeds) > 1 else "units"
        elif table is not None:
            est = stats.two_way_interval(table.to_numpy(float), rng=stats.rng_for(seed, scorer, metric, label),
                                         unit_counts=counts(scorer, metric, table.shape[1]))
            low, high, method = est.ci_low, est.ci_high, "seeds x units" if est.n_seeds > 1 else "units"
        elif n == 1:   # one seed and no unit values: the scorer's own interval over prompts
            low, high, method = float(group["ci_low"].iloc[0]), float(group["ci_high"].iloc[0]), "run"
        else:
            method = "t over seeds"
        low, high = _clip(scorer, metric, low, high)
        records.append({"label": label, "objective": str(group["objective"].iloc[0]), "scorer": scorer,
                        "metric": metric, "value": mean, "ci_low": low, "ci_high": high, "n_seeds": n,
                        "interval": method})
    return pd.DataFrame(records, columns=["label", "objective", "scorer", "metric", "value",
                                          "ci_low", "ci_high", "n_seeds", "interval"])


def _fitted_terms(tables, label: str, scorer: str, metric: str) -> pd.DataFrame | None:
    """The per-prompt fit terms of a fitted metric (``metric:<term>`` unit tables, stacked as
    columns (term, unit)), or None when the metric is not fitted or lacks them."""
    if metric != LC_METRIC:
        return None
    parts = [tables.get((label, scorer, f"{metric}:{term}")) for term in LC_TERMS]
    if any(part is None for part in parts):
        return None
    return pd.concat(parts, axis=1, keys=LC_TERMS)


def _terms_array(fitted: pd.DataFrame, seeds) -> np.ndarray:
    """`[seeds, units, terms]` from :func:`_fitted_terms`' frame."""
    return np.stack([fitted[term].reindex(index=seeds).to_numpy(float) for term in LC_TERMS], axis=-1)


def _one_step(terms: np.ndarray, values: np.ndarray, keep: np.ndarray, unit_counts: np.ndarray) -> np.ndarray:
    """`[B, seeds]`: each seed's LC win rate refitted by one Newton step on each resample
    (:func:`bench.tables.metrics.lc_one_step`), from its full-data value σ(θ_m)."""
    theta = np.log(np.clip(values, 1e-12, 1 - 1e-12) / np.clip(1 - values, 1e-12, 1))
    sub = unit_counts if keep.all() else unit_counts[:, keep]
    return np.stack([lc_one_step(float(t), terms[i][keep], sub) for i, t in enumerate(theta)], axis=1)


def _clip(scorer: str, metric: str, low: float, high: float) -> tuple[float, float]:
    """An interval intersected with the metric's range (a share's true value is in [0, 1], so
    the intersection keeps the coverage; t-intervals of proportions otherwise leave it)."""
    bounds = metric_info(scorer, metric).bounds
    if bounds is None:
        return low, high
    return float(np.clip(low, *bounds)), float(np.clip(high, *bounds))


def unit_tables(units: pd.DataFrame | None, failed: set[str] = frozenset()) -> dict[tuple[str, str, str], pd.DataFrame]:
    """(label, scorer, metric) -> `[seeds, units]` table of unit values (ok runs only).

    Every label's table of a metric has the same columns (the metric's units, sorted; NaN
    where a run lacks one), so one unit resample per metric serves every cell and pairs
    every comparison."""
    if units is None or units.empty:
        return {}
    ok = units[~units["run_id"].astype(str).isin(failed)]
    out = {}
    for (scorer, metric), group in ok.groupby(["scorer", "metric"], sort=True):
        universe = np.sort(group["unit"].astype(str).unique())
        cols = np.searchsorted(universe, group["unit"].astype(str).to_numpy())
        values = group["value"].to_numpy(float)
        for label, idx in group.groupby("label", sort=True).indices.items():
            seeds_of_rows = group["seed"].to_numpy()[idx].astype(int)
            seeds = np.unique(seeds_of_rows)
            table = np.full((seeds.size, universe.size), np.nan)
            table[np.searchsorted(seeds, seeds_of_rows), cols[idx]] = values[idx]
            out[(str(label), str(scorer), str(metric))] = pd.DataFrame(table, index=seeds, columns=universe)
    return out


class _SharedCounts:
    """One resample of the units per metric (drawn on first use, from a generator fixed by
    the base seed and the metric), shared by every cell and comparison of that metric."""

    def __init__(self, n_boot: int, seed: int):
        self.n_boot, self.seed, self._cache = n_boot, seed, {}

    def __call__(self, scorer: str, metric: str, n_units: int) -> np.ndarray:
        key = (scorer, metric, n_units)
        if key not in self._cache:
            rng = stats.rng_for(self.seed, "units", scorer, metric)
            self._cache[key] = stats.draw_counts(n_units, self.n_boot, rng)
        return self._cache[key]


# --------------------------------------------------------------------------- comparisons

COMPARISON_COLUMNS = ["label", "objective", "baseline", "scorer", "metric", "value", "baseline_value", "delta",
                      "ci_low", "ci_high", "p_value", "p_holm", "significant", "n_seeds", "n_units", "paired_by"]
ALPHA = 0.05


def resolve_baseline(compare_to: str | None, labels_objectives: dict[str, str]) -> tuple[str | None, str]:
    """The label ``compare_to`` names: a label itself, or an objective with exactly one label.

    Returns (label or None, a sentence saying why there is none)."""
    if not compare_to:
        return None, "No comparisons: no baseline (scoring.compare_to is empty)"
    if compare_to in labels_objectives:
        return compare_to, ""
    matches = sorted(lab for lab, obj in labels_objectives.items() if obj == compare_to)
    if len(matches) == 1:
        return matches[0], ""
    if matches:
        return None, f"No comparisons: baseline {compare_to!r} names several labels ({', '.join(matches)}); name one"
    return None, (f"No comparisons: baseline {compare_to!r} names no label or objective of these results; "
                  f"labels: {', '.join(sorted(labels_objectives))}")


def comparisons(results_df: pd.DataFrame, runs_df: pd.DataFrame | None, units: pd.DataFrame | None,
                baseline: str, keys: list[tuple[str, str]] | None = None, *,
                n_boot: int = stats.DEFAULT_BOOT, seed: int = 0, _counts=None) -> pd.DataFrame:
    """Every label against ``baseline`` on each metric: Δ = label − baseline, paired 95% interval,
    bootstrap p-value, Holm-adjusted p-value and whether it is significant at 5%.

    Pairing: by unit (same prompt, same drift pair) where unit values exist, and by seed
    (same seed = same data order) between two trained objectives; the reference, one
    policy without training seed, is paired by unit only. Metrics without unit values
    (lm-eval, medians, losses) are compared by seed only (at least two shared seeds; the
    p-value is then the exact sign-flip test over seeds). Holm's family is one metric:
    every label's comparison with the baseline on it (the many-to-one comparisons of one
    column of the leaderboard).
    """
    with stats.one_blas_thread():
        return _comparisons(results_df, runs_df, units, baseline, keys, n_boot=n_boot, seed=seed, counts=_counts)


def _comparisons(results_df, runs_df, units, baseline, keys, *, n_boot: int, seed: int, counts=None) -> pd.DataFrame:
    failed = failed_run_ids(runs_df)
    ok = results_df[~results_df["run_id"].astype(str).isin(failed) & results_df["value"].notna()]
    tables = unit_tables(units, failed)
    counts = counts or _SharedCounts(n_boot, seed)
    keys = keys if keys is not None else sorted(set(zip(ok["scorer"], ok["metric"])))
    records = []
    for scorer, metric in keys:
        rows = ok[(ok["scorer"] == scorer) & (ok["metric"] == metric)]
        seed_values = {lab: grp.groupby("seed")["value"].mean() for lab, grp in rows.groupby("label")}
        objectives = dict(zip(rows["label"].astype(str), rows["objective"].astype(str)))
        if baseline not in seed_values:
            continue
        family = []
        for label in sorted(seed_values, key=lambda lab: (objectives[lab] != REFERENCE, lab)):
            if label == baseline:
                continue
            family.append(_compare(label, baseline, scorer, metric, seed_values, tables, objectives,
                                   counts=counts, n_boot=n_boot, seed=seed))
        for rec, p_holm in zip(family, stats.holm([r["p_value"] for r in family])):
            rec["p_holm"] = float(p_holm)
            rec["significant"] = bool(np.isfinite(p_holm) and p_holm < ALPHA)
            records.append(rec)
    return pd.DataFrame(records, columns=COMPARISON_COLUMNS)


def _compare(label, baseline, scorer, metric, seed_values, tables, objectives, *, counts, n_boot, seed) -> dict:
    a_vals, b_vals = seed_values[label], seed_values[baseline]
    trained = REFERENCE not in (objectives[label], objectives[baseline])
    common = sorted(set(a_vals.index) & set(b_vals.index))
    paired_seeds = trained and bool(common)
    a_seeds, b_seeds = (common, common) if paired_seeds else (list(a_vals.index), list(b_vals.index))
    ta, tb = tables.get((label, scorer, metric)), tables.get((baseline, scorer, metric))
    rng = stats.rng_for(seed, "compare", scorer, metric, label, baseline)
    fa, fb = _fitted_terms(tables, label, scorer, metric), _fitted_terms(tables, baseline, scorer, metric)
    if fa is not None and fb is not None:
        a_seeds = [sd for sd in a_seeds if sd in fa.index and (not paired_seeds or sd in fb.index)]
        b_seeds = a_seeds if paired_seeds else [sd for sd in b_seeds if sd in fb.index]
    if fa is not None and fb is not None and a_seeds and b_seeds:
        ta_, tb_ = _terms_array(fa, a_seeds), _terms_array(fb, b_seeds)
        keep = np.isfinite(ta_).all(axis=(0, 2)) & np.isfinite(tb_).all(axis=(0, 2))
        shared = counts(scorer, metric, ta_.shape[1])
        pa = _one_step(ta_, a_vals.reindex(a_seeds).to_numpy(float), keep, shared)
        pb = _one_step(tb_, b_vals.reindex(b_seeds).to_numpy(float), keep, shared)
        va, vb = a_vals.reindex(a_seeds).to_numpy(float), b_vals.reindex(b_seeds).to_numpy(float)
        if paired_seeds:
            reps = stats.cross_seeds(pa - pb, stats.draw_counts(len(a_seeds), shared.shape[0], rng))
            delta = float(np.mean(va - vb))
        else:
            reps = (stats.cross_seeds(pa, stats.draw_counts(len(a_seeds), shared.shape[0], rng))
                    - stats.cross_seeds(pb, stats.draw_counts(len(b_seeds), shared.shape[0], rng)))
            delta = float(va.mean() - vb.mean())
        low, high = stats.percentile_interval(reps)
        how = "seed+unit" if paired_seeds else "unit"
        est = stats.Delta(delta, low, high, stats.bootstrap_p_value(reps), min(len(a_seeds), len(b_seeds)),
                          int(keep.sum()), paired_seeds)
    elif ta is not None and tb is not None:
        a = ta.reindex(index=a_seeds).to_numpy(float)     # same unit columns (unit_tables)
        b = tb.reindex(index=b_seeds).to_numpy(float)
        how = "seed+unit" if paired_seeds else "unit"
        est = stats.paired_delta(a, b, paired_seeds=paired_seeds, rng=rng,
                                 unit_counts=counts(scorer, metric, a.shape[1]))
    else:
        a = a_vals.reindex(a_seeds).to_numpy(float)[:, None]
        b = b_vals.reindex(b_seeds).to_numpy(float)[:, None]
        how = "seed" if paired_seeds else "none"
        # Without units only the seeds vary: the interval is the expanded bootstrap over
        # seeds (about Student's t), the p-value the exact sign-flip test of the paired seed
        # differences (a bootstrap of 3 values says p ≈ 0 whenever all three move the same
        # way). The reference against trained seeds, unpaired and without units, is not tested.
        if paired_seeds and len(common) >= 2:
            est = stats.paired_delta(a, b, paired_seeds=True, n_boot=n_boot, rng=rng)
            est = dataclasses.replace(est, p_value=stats.sign_flip_p_value(a[:, 0] - b[:, 0]))
        elif not paired_seeds and max(a.shape[0], b.shape[0]) >= 2:
            est = dataclasses.replace(stats.paired_delta(a, b, paired_seeds=False, n_boot=n_boot, rng=rng),
                                      p_value=math.nan)
        else:
            est = stats.Delta(float(a.mean() - b.mean()), math.nan, math.nan, math.nan, len(common), 0, paired_seeds)
    bounds = metric_info(scorer, metric).bounds
    if bounds is not None:   # a difference of two shares lies in [-1, 1]: intersect, as for levels
        span = bounds[1] - bounds[0]
        est = dataclasses.replace(est, ci_low=float(np.clip(est.ci_low, -span, span)),
                                  ci_high=float(np.clip(est.ci_high, -span, span)))
    return {"label": label, "objective": objectives[label], "baseline": baseline, "scorer": scorer, "metric": metric,
            "value": float(np.mean(a_vals.to_numpy(float))), "baseline_value": float(np.mean(b_vals.to_numpy(float))),
            "delta": est.delta, "ci_low": est.ci_low, "ci_high": est.ci_high, "p_value": est.p_value,
            "n_seeds": est.n_seeds, "n_units": est.n_units, "paired_by": how}


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
    from bench.tables.results import atomic_write

    path = Path(results_dir) / STATS_FILE
    text = json.dumps({"compare_to": settings.compare_to, "bootstrap_samples": settings.n_boot,
                       "seed": settings.seed}, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def leaderboard(results_df: pd.DataFrame, runs_df: pd.DataFrame | None = None, units: pd.DataFrame | None = None,
                settings: StatsSettings | None = None) -> pd.DataFrame:
    """One row per objective configuration (the reference first), with columns
    ``label, objective, seeds, failed`` and, per metric, ``scorer/metric``,
    ``scorer/metric:ci_low``, ``scorer/metric:ci_high``, and against the baseline
    ``scorer/metric:delta`` and ``scorer/metric:p_holm`` (NaN where not compared).

    ``board.attrs``: ``baseline`` (its label or None), ``baseline_note`` (why there is none),
    ``comparisons`` (the tidy table of :func:`comparisons`), ``long`` (:func:`aggregate`)."""
    settings = settings or StatsSettings()
    # One unit resample per metric for the cells and the comparisons alike.
    boot = dict(n_boot=settings.n_boot, seed=settings.seed, _counts=_SharedCounts(settings.n_boot, settings.seed))
    long = aggregate(results_df, runs_df, units, **boot)
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
    for label in sorted(labels, key=lambda lab: (objective_of.get(lab) != REFERENCE, lab)):
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


UP, DOWN = "\u2191", "\u2193"   # ↑ ↓: significantly above / below the baseline


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


def _delta_cell(row: pd.Series, key: str, comp: pd.DataFrame) -> str:
    hit = comp[(comp["label"] == row["label"]) & (comp["scorer"] + "/" + comp["metric"] == key)]
    if not len(hit) or not np.isfinite(hit["delta"].iloc[0]):
        return "–"
    r = hit.iloc[0]
    text = f"{r['delta']:+.3g}"
    if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]):
        text += f" [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]"
    return text + _mark(row, key)


def delta_table(board: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Δ vs the baseline, one row per compared label: ``Δ [95% interval]`` and ↑/↓."""
    comp, baseline = board.attrs.get("comparisons"), board.attrs.get("baseline")
    if baseline is None or comp is None or comp.empty:
        return [], []
    keys = [k for k in metric_keys(board) if (comp["scorer"] + "/" + comp["metric"] == k).any()]
    header = [f"Δ vs {baseline}"] + [_display(k) for k in keys]
    body = [[str(row["label"])] + [_delta_cell(row, k, comp) for k in keys]
            for _, row in board.iterrows() if row["label"] != baseline and (comp["label"] == row["label"]).any()]
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


# --------------------------------------------------------------------------- files

COMPARISONS_FILE = "comparisons.csv"
_SUFFIX = {"md": "md", "latex": "tex", "html": "html", "csv": "csv"}


def write_report(results_dir: str | Path, *, plots: bool = True) -> str:
    """Write ``leaderboard.{md,tex,html,csv}`` (and the plots under ``plots/``) into a results
    folder; return the markdown leaderboard."""
    board, _ = write_report_files(results_dir, plots=plots)
    from bench.tables.validity import section

    return render(board, "md") + section(results_dir)


def write_report_files(results_dir: str | Path, *, plots: bool = True,
                       compare_to: str | None = None) -> tuple[pd.DataFrame, dict[str, Path]]:
    """As :func:`write_report`; returns the leaderboard frame and ``{format or plot:name: path}``.
    ``compare_to`` replaces the folder's baseline for these files; one it cannot resolve is an error."""
    from bench.tables.plots import make_plots
    from bench.tables.results import atomic_write

    folder = Path(results_dir)
    results_df, runs_df, units = read_results(folder), read_runs(folder), read_units(folder)
    settings = read_settings(folder)
    if compare_to is not None:
        settings = dataclasses.replace(settings, compare_to=compare_to)
    board = leaderboard(results_df, runs_df, units, settings)
    if compare_to is not None and board.attrs["baseline"] is None:
        raise BenchError(f"--compare-to: {board.attrs['baseline_note'].removeprefix('No comparisons: ')}")
    written = {}
    comp = board.attrs["comparisons"]
    path = folder / COMPARISONS_FILE
    atomic_write(path, lambda tmp: comp.to_csv(tmp, index=False, lineterminator="\n"))
    written["comparisons"] = path
    for fmt, suffix in _SUFFIX.items():
        path = folder / f"leaderboard.{suffix}"
        text = render(board, fmt)
        if fmt == "md":
            from bench.tables.validity import section

            text += section(folder)
        atomic_write(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        written[fmt] = path
    if plots:
        for name, path in make_plots(folder, results_df, runs_df, long=board.attrs["long"], board=board).items():
            written[f"plot:{name}"] = path
    return board, written


def report_text(results_dir: str | Path, fmt: str = "md", compare_to: str | None = None) -> str:
    """Refresh a folder's report files and plots; return the leaderboard in ``fmt``."""
    if fmt not in FORMATS:
        raise BenchError(f"report format {fmt!r} is not one of {', '.join(FORMATS)}")
    board, _ = write_report_files(results_dir, compare_to=compare_to)
    return render(board, fmt)
