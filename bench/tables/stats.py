"""Statistics across seeds and prompts: two-way bootstrap intervals, paired comparisons, Holm.

The unit data: one value per (seed, unit) for a metric of one objective configuration,
where a unit is an eval prompt (a prompt's samples already reduced to one value) or a
held-out drift pair. The metric of a run is the mean of its unit values, and the metric of
a configuration is the mean over its seeds.

Why a *crossed* two-way bootstrap (Owen 2007, "The pigeonhole bootstrap", Ann. Appl.
Stat.) rather than a nested one: every seed of a suite is evaluated on the *same* eval
prompts, so seeds and prompts are crossed factors, not prompts nested in seeds. Each
replicate draws the seeds with replacement and, independently, one resample of the
prompts that every drawn seed shares. Resampling prompts independently within each seed
would treat the seeds' prompt sets as independent draws and divide the prompt-difficulty
variance by the number of seeds: too narrow. The crossed scheme is slightly conservative
on the seed × prompt interaction (Owen's analysis), never narrow on a main effect.
With one seed only the prompts are resampled (the interval is then conditional on that
seed, and says nothing about seed-to-seed variation).

Intervals are percentile intervals. With few seeds a plain bootstrap of the seeds is too
narrow: it has few distinct draws (10 for 3 seeds), its variance is (S−1)/S of the sample
variance, and it uses normal rather than Student quantiles. The seed stage is therefore
*expanded* (Hesterberg 2015, "What teachers should know about the bootstrap", The American
Statistician 69(4), the expanded percentile interval): each replicate's deviation from the
all-seeds mean on the same prompt resample is multiplied by
``t_{0.975, S−1} / z_{0.975} · sqrt(S / (S−1))`` (9.17 for 2 seeds, 2.69 for 3, 1.58 for 5,
1.22 for 10), which makes the seed part as wide as Student's t-interval. Prompts are
hundreds, so their stage is left as is. The callers intersect an interval with the
metric's range (a share's true value lies in [0, 1], so the intersection keeps the
coverage): every interval of a proportion stays in [0, 1].

Paired comparisons (:func:`paired_delta`): Δ = mean(A) − mean(B) on the seeds and units A
and B share, resampled together, so a seed's data order and a prompt's difficulty cancel.
The p-value inverts the same percentile interval, ``2·min(P*(Δ* ≤ 0), P*(Δ* ≥ 0))`` with the
usual +1 of Monte Carlo p-values (never 0; Davison & Hinkley 1997), so a comparison is significant at 5% before
correction exactly when its 95% interval excludes 0. :func:`holm` corrects a family.
"""
from __future__ import annotations

import contextlib
import math
import zlib
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
DEFAULT_BOOT = 2000
_CHUNK = 250               # replicates drawn at once: bounds memory on big eval sets


@dataclass(frozen=True)
class Interval:
    """A point estimate, its 95% percentile interval, and how many seeds and units it rests on."""

    value: float
    ci_low: float
    ci_high: float
    n_seeds: int
    n_units: int


@dataclass(frozen=True)
class Delta:
    """A paired difference A − B with its 95% interval and bootstrap p-value (two-sided)."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n_seeds: int
    n_units: int
    paired_seeds: bool


def one_blas_thread():
    """A context that keeps BLAS on one thread: the bootstrap's products are small
    (`[B, units] @ [units, seeds]`), and on a busy machine OpenBLAS's threads cost five times
    what they gain (measured: 19 ms vs 3.7 ms for 2000 × 500 × 5). threadpoolctl ships with
    scikit-learn (an lm-eval dependency); without it nothing changes."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def rng_for(seed: int, *key: str) -> np.random.Generator:
    """A generator fixed by the base seed and a key (metric, label...): results do not depend
    on the order in which the leaderboard's cells are computed."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32("\x1f".join(key).encode())])


def draw_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """`[n_boot, n]` multinomial counts: how often each of n items is drawn in a resample of size n."""
    if n == 1:
        return np.ones((n_boot, 1))
    out = np.empty((n_boot, n))
    for start in range(0, n_boot, _CHUNK):
        size = min(_CHUNK, n_boot - start)
        idx = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        out[start:start + size] = np.bincount(idx.ravel(), minlength=size * n).reshape(size, n)
    return out


def expansion(n_seeds: int) -> float:
    """Hesterberg's (2015) factor that widens a bootstrap of n values to Student's t width:
    ``t_{0.975, n−1} / z_{0.975} · sqrt(n / (n−1))``; 1 for a single seed (nothing to widen)."""
    if n_seeds < 2:
        return 1.0
    from scipy import stats as sps   # scipy ships with lm-eval (through scikit-learn); ~1 s to import

    tail = 0.5 + CONFIDENCE / 2
    return float(sps.t.ppf(tail, n_seeds - 1) / sps.norm.ppf(tail) * math.sqrt(n_seeds / (n_seeds - 1)))


def replicates(x: np.ndarray, unit_counts: np.ndarray, seed_counts: np.ndarray, *, expand: bool = True) -> np.ndarray:
    """Bootstrap replicates of the mean over seeds of the per-seed mean over units.

    ``x``: `[seeds, units]`; ``unit_counts``: `[B, units]` (one prompt resample shared by every
    seed: the crossed design); ``seed_counts``: `[B, seeds]`. With ``expand`` the seed
    resample's deviation from the all-seeds mean (same prompt resample) is widened by
    :func:`expansion`.
    """
    # [B, seeds]: each seed's mean on the resampled units (a count-weighted mean: the counts
    # may be a shared resample of a larger unit set, restricted to the units present here).
    per_seed = unit_counts @ x.T / np.maximum(unit_counts.sum(axis=1, keepdims=True), 1.0)
    return cross_seeds(per_seed, seed_counts, expand=expand)


def cross_seeds(per_seed: np.ndarray, seed_counts: np.ndarray, *, expand: bool = True) -> np.ndarray:
    """Replicates `[B]` of the mean over seeds from each seed's statistic `[B, seeds]` on the
    replicate's shared unit resample, the seeds drawn by ``seed_counts`` `[B, seeds]`: the
    all-seeds mean plus the drawn seeds' deviation from it (widened by :func:`expansion`).
    Any statistic works here, not only means (the LC win rate's refit, for one)."""
    n_seeds = per_seed.shape[1]
    all_seeds = per_seed.mean(axis=1)
    drawn = (seed_counts * per_seed).sum(axis=1) / n_seeds
    return all_seeds + (expansion(n_seeds) if expand else 1.0) * (drawn - all_seeds)


def percentile_interval(reps: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(reps, [tail, 100 - tail])
    return float(low), float(high)


def _columns(counts: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return counts if keep.all() else counts[:, keep]   # no copy of the big matrix when nothing is dropped


def _as_table(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return x[None, :] if x.ndim == 1 else x


def two_way_interval(x, *, n_boot: int = DEFAULT_BOOT, rng: np.random.Generator | None = None,
                     expand: bool = True, unit_counts: np.ndarray | None = None) -> Interval:
    """Mean of a `[seeds, units]` table with a crossed seeds × units percentile-bootstrap interval.

    Units observed on some seeds only are left out (they cannot be crossed with every
    seed). ``unit_counts`` (`[B, units]`): a prompt resample shared with other tables (the
    leaderboard draws one per metric); else units are drawn before seeds from ``rng``, so
    tables that differ only in their number of identical seeds get the same unit
    resamples (tested).
    """
    x = _as_table(x)
    keep = ~np.isnan(x).any(axis=0)
    x = x[:, keep]
    n_seeds, n_units = x.shape
    if n_seeds == 0 or n_units == 0:
        return Interval(math.nan, math.nan, math.nan, n_seeds, 0)
    rng = rng if rng is not None else np.random.default_rng(0)
    unit_counts = draw_counts(n_units, n_boot, rng) if unit_counts is None else _columns(unit_counts, keep)
    n_boot = unit_counts.shape[0]
    seed_counts = draw_counts(n_seeds, n_boot, rng)
    reps = replicates(x, unit_counts, seed_counts, expand=expand)
    low, high = percentile_interval(reps)
    return Interval(float(x.mean()), low, high, n_seeds, n_units)


def bootstrap_p_value(reps: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p-value of "the statistic is 0": the smallest α whose
    (1−α) percentile interval excludes 0, with +1 so it is never 0 (smallest 2/(B+1))."""
    b = reps.size
    below = int((reps <= 0).sum())
    above = int((reps >= 0).sum())
    return float(min(1.0, 2 * (min(below, above) + 1) / (b + 1)))


def paired_delta(a, b, *, paired_seeds: bool = True, n_boot: int = DEFAULT_BOOT,
                 rng: np.random.Generator | None = None, unit_counts: np.ndarray | None = None) -> Delta:
    """Δ = mean(A) − mean(B) with a 95% interval and p-value, paired by unit (and by seed).

    ``a``, ``b``: `[seeds, units]` tables over the same units (columns) and, when
    ``paired_seeds``, the same seeds (rows: same seed = same data order). The per-(seed,
    unit) differences are resampled as one crossed table. Without seed pairing (e.g. the
    reference, a single policy, against a trained objective) each side's seeds are drawn
    independently while the units stay paired.
    """
    a, b = _as_table(a), _as_table(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired_delta needs the same units on both sides: {a.shape[1]} vs {b.shape[1]}")
    if paired_seeds and a.shape[0] != b.shape[0]:
        raise ValueError(f"seed-paired comparison needs the same seeds: {a.shape[0]} vs {b.shape[0]}")
    keep = ~(np.isnan(a).any(axis=0) | np.isnan(b).any(axis=0))
    a, b = a[:, keep], b[:, keep]
    n_units = a.shape[1]
    if n_units == 0 or a.shape[0] == 0 or b.shape[0] == 0:
        return Delta(math.nan, math.nan, math.nan, math.nan, 0, 0, paired_seeds)
    rng = rng if rng is not None else np.random.default_rng(0)
    unit_counts = draw_counts(n_units, n_boot, rng) if unit_counts is None else _columns(unit_counts, keep)
    n_boot = unit_counts.shape[0]
    if paired_seeds:
        diff = a - b
        reps = replicates(diff, unit_counts, draw_counts(diff.shape[0], n_boot, rng))
        value, n_seeds = float(diff.mean()), diff.shape[0]
    else:
        reps = (replicates(a, unit_counts, draw_counts(a.shape[0], n_boot, rng))
                - replicates(b, unit_counts, draw_counts(b.shape[0], n_boot, rng)))
        value, n_seeds = float(a.mean() - b.mean()), min(a.shape[0], b.shape[0])
    low, high = percentile_interval(reps)
    return Delta(value, low, high, bootstrap_p_value(reps), int(n_seeds), int(n_units), paired_seeds)


def sign_flip_p_value(diffs, *, max_exact: int = 16, n_random: int = 20000,
                      rng: np.random.Generator | None = None) -> float:
    """Two-sided sign-flip permutation p-value of "the paired differences are symmetric about 0".

    Exact over all 2^n sign vectors for n ≤ ``max_exact`` (Fisher's randomisation test),
    else Monte Carlo with the +1. Used for comparisons across seeds without unit values:
    with n seeds its smallest value is 2/2^n (0.25 for 3 seeds), which is the honest
    answer to what n seeds can show; a bootstrap of n values would report ~0 whenever
    every seed moves the same way.
    """
    d = np.asarray(diffs, dtype=float).ravel()
    n = d.size
    if n == 0:
        return math.nan
    observed = abs(d.mean())
    if n <= max_exact:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        stats_ = np.abs(signs @ d) / n
        return float(np.mean(stats_ >= observed - 1e-12))
    rng = rng if rng is not None else np.random.default_rng(0)
    signs = rng.choice([-1.0, 1.0], size=(n_random, n))
    return float((1 + np.sum(np.abs(signs @ d) / n >= observed - 1e-12)) / (n_random + 1))


def holm(p_values) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (Holm 1979): sorted ascending, the i-th (from 0) is
    multiplied by m − i, made non-decreasing, capped at 1. NaN entries are not tested and
    do not count in m."""
    p = np.asarray(list(p_values), dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


__all__ = ["Interval", "Delta", "rng_for", "draw_counts", "replicates", "cross_seeds", "two_way_interval",
           "paired_delta", "bootstrap_p_value", "sign_flip_p_value", "holm", "expansion", "percentile_interval",
           "one_blas_thread",
           "DEFAULT_BOOT"]
