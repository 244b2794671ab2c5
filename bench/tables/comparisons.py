"""Paired comparisons against the suite's baseline (``scoring.compare_to``): Δ by seed and
prompt, bootstrap intervals, Holm-adjusted p-values.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from bench.tables import stats
from bench.tables.results import REFERENCE, metric_info
from bench.tables.cells import SharedCounts, failed_run_ids, fitted_terms, one_step, terms_array, unit_tables


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
    counts = counts or SharedCounts(n_boot, seed)
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
    fa, fb = fitted_terms(tables, label, scorer, metric), fitted_terms(tables, baseline, scorer, metric)
    if fa is not None and fb is not None:
        a_seeds = [sd for sd in a_seeds if sd in fa.index and (not paired_seeds or sd in fb.index)]
        b_seeds = a_seeds if paired_seeds else [sd for sd in b_seeds if sd in fb.index]
    if fa is not None and fb is not None and a_seeds and b_seeds:
        ta_, tb_ = terms_array(fa, a_seeds), terms_array(fb, b_seeds)
        keep = np.isfinite(ta_).all(axis=(0, 2)) & np.isfinite(tb_).all(axis=(0, 2))
        shared = counts(scorer, metric, ta_.shape[1])
        pa = one_step(ta_, a_vals.reindex(a_seeds).to_numpy(float), keep, shared)
        pb = one_step(tb_, b_vals.reindex(b_seeds).to_numpy(float), keep, shared)
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
