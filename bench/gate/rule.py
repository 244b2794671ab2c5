"""The regression gate's band: the prediction interval for the mean of new seeds, with a floor
per metric kind (see :mod:`bench.gate.check`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from bench.gate.observed import CI_WIDTH, TRAIN_LOG


DIRECTIONS = ("higher_is_better", "lower_is_better", "either")


# Metrics that are shares of items in [0, 1] (the results table's `n` counts the items).
_RATE_METRICS = {"accuracy", "win_rate_vs_reference", "lc_win_rate_vs_reference", "win_rate_vs_chosen",
                 "chosen_logp_down", "implicit_accuracy", "acc", "acc_norm", "exact_match"}


_COUNT_METRICS = {("train", "steps")}


def metric_kind(scorer: str, metric: str) -> str:
    """``rate`` (a share of items in [0, 1]), ``count`` (an integer that float order cannot move),
    ``training value`` (a train-log loss, margin...) or ``continuous``."""
    base = metric.split("@")[0]
    if metric.endswith(CI_WIDTH):
        return "interval width"
    if (scorer, metric) in _COUNT_METRICS:
        return "count"
    if base in _RATE_METRICS or (scorer == TRAIN_LOG and base == "accuracy"):
        return "rate"
    if scorer == TRAIN_LOG or (scorer, metric) == ("train", "final_loss"):
        return "training value"
    return "continuous"


def floor_for(kind: str, mean: float, items: int | None) -> float:
    """The smallest half-width a band may have, per metric kind.

    - rate: two items per seed. Greedy decoding is discontinuous: float noise can flip the
      answer to a prompt whose top two tokens are nearly tied, and a flip moves a share by
      1/n; two flips per seed is noise, not a regression. Without n: 0.02.
    - count: 0.5 (steps are integers; any change is real).
    - interval width (the reference's ci_high − ci_low): a quarter of it. One flipped greedy
      answer moves a percentile-bootstrap width by a few percent; an interval at the wrong
      level moves it by half or more (a 50% interval is a third as wide as a 95% one).
    - training value and continuous: 1e-3·|mean| + 1e-3. Float order moves a short tiny-model run by
      far less (measured: 1e-5 relative, tests/test_gate.py); the floor only matters when the
      seeds agree exactly (a constant metric, the reference's single value, an identity).
    """
    if kind == "rate":
        return 2.0 / items if items else 0.02
    if kind == "count":
        return 0.5
    if kind == "interval width":
        return 0.25 * abs(mean) + 1e-3
    return 1e-3 * abs(mean) + 1e-3


def t_quantile(df: int, confidence: float) -> float:
    from scipy.stats import t

    return float(t.ppf(1.0 - (1.0 - confidence) / 2.0, df))


@dataclass(frozen=True)
class Band:
    center: float
    low: float
    high: float
    how: str

    def contains(self, value: float, direction: str) -> bool:
        if not math.isfinite(value):
            return False
        if direction == "higher_is_better":
            return value >= self.low
        if direction == "lower_is_better":
            return value <= self.high
        return self.low <= value <= self.high

    def text(self, direction: str) -> str:
        low = "-inf" if direction == "lower_is_better" else f"{self.low:.4g}"
        high = "+inf" if direction == "higher_is_better" else f"{self.high:.4g}"
        return f"[{low}, {high}]"


def band(seed_values: list[float], m: int, *, kind: str, items: int | None, confidence: float,
         pooled: tuple[float, int] | None = None, floor: float | None = None) -> Band:
    """The allowed band for the mean of ``m`` new seeds given the baseline's seed values."""
    v = np.asarray(seed_values, float)
    n, center = len(v), float(v.mean())
    if n >= 2:
        s, df = float(v.std(ddof=1)), n - 1
    elif pooled is not None and pooled[1] >= 1:
        s, df = pooled
    else:
        s, df = 0.0, 0
    half = t_quantile(df, confidence) * s * math.sqrt(1.0 / n + 1.0 / max(m, 1)) if df else 0.0
    minimum = floor if floor is not None else floor_for(kind, center, items)
    how = (f"t-interval over {n} seed{'s' if n > 1 else ''}" + ("" if n >= 2 else " (pooled spread)" if df else "")
           + f", {confidence:.0%}")
    if half < minimum:
        half, how = minimum, f"floor for a {kind}"
    return Band(center, center - half, center + half, how)


def pooled_spread(entries: Iterable[tuple[tuple[str, str], list[float]]]) -> dict[tuple[str, str], tuple[float, int]]:
    """(scorer, metric) -> (pooled within-label standard deviation, its degrees of freedom)."""
    sums: dict[tuple[str, str], list[float]] = {}
    for key, values in entries:
        if len(values) >= 2:
            v = np.asarray(values, float)
            acc = sums.setdefault(key, [0.0, 0])
            acc[0] += float(((v - v.mean()) ** 2).sum())
            acc[1] += len(v) - 1
    return {key: (math.sqrt(ss / df), int(df)) for key, (ss, df) in sums.items() if df}
