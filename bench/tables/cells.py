"""Leaderboard cells: per (label, scorer, metric) the mean across seeds and its interval.

The interval is the crossed seeds x prompts bootstrap of :mod:`bench.tables.stats` where the
folder stores unit values, else Student's t across seeds (:func:`bench.tables.metrics.seed_aggregate`),
or with one seed the run's own interval; every interval is intersected with the metric's range.
"""
from __future__ import annotations


import numpy as np
import pandas as pd

from bench.tables import stats
from bench.tables.aggregate import LC_METRIC
from bench.tables.metrics import LC_TERMS, lc_one_step, seed_aggregate
from bench.tables.results import metric_info


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
    counts = counts or SharedCounts(n_boot, seed)
    records = []
    for (label, scorer, metric), group in ok.groupby(["label", "scorer", "metric"], sort=True):
        est = seed_aggregate(group["value"].to_numpy(float))
        mean, low, high, n = est.value, est.ci_low, est.ci_high, est.n
        table = tables.get((label, scorer, metric))
        fitted = fitted_terms(tables, label, scorer, metric)
        if fitted is not None:   # a fitted metric (LC win rate): one-step refits per seed
            values = group.groupby("seed")["value"].mean()
            seeds = [sd for sd in fitted.index if sd in values.index]
            terms = terms_array(fitted, seeds)
            keep = np.isfinite(terms).all(axis=(0, 2))
            per_seed = one_step(terms, values.reindex(seeds).to_numpy(float), keep,
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


def fitted_terms(tables, label: str, scorer: str, metric: str) -> pd.DataFrame | None:
    """The per-prompt fit terms of a fitted metric (``metric:<term>`` unit tables, stacked as
    columns (term, unit)), or None when the metric is not fitted or lacks them."""
    if metric != LC_METRIC:
        return None
    parts = [tables.get((label, scorer, f"{metric}:{term}")) for term in LC_TERMS]
    if any(part is None for part in parts):
        return None
    return pd.concat(parts, axis=1, keys=LC_TERMS)


def terms_array(fitted: pd.DataFrame, seeds) -> np.ndarray:
    """`[seeds, units, terms]` from :func:`fitted_terms`' frame."""
    return np.stack([fitted[term].reindex(index=seeds).to_numpy(float) for term in LC_TERMS], axis=-1)


def one_step(terms: np.ndarray, values: np.ndarray, keep: np.ndarray, unit_counts: np.ndarray) -> np.ndarray:
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


class SharedCounts:
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
