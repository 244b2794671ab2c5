"""What a leaderboard column and row *are*, for every rendering: the direction that is better,
whether a "best" may be marked, how many decimals its numbers get, and which rows are controls.

One rule per column kind, so that a column's levels and its Δ against the baseline are printed
alike (a share to 3 decimals; any other column to 3 significant figures of its largest mean),
and a value that rounds to zero is printed as 0 (``-3.73e-09`` of float noise is not a result).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.tables.results import REFERENCE, UNIT, metric_info

UP, DOWN = "\u2191", "\u2193"            # ↑ ↓ in a header: the direction that is better
ABOVE, BELOW = "\u25b2", "\u25bc"        # ▲ ▼ after a cell: significantly above / below the baseline
MINUS = "\u2212"                         # a true minus sign (html); the LaTeX writer uses $-$

# Columns that get a direction in the header but never a "best": the raw reward-model scores
# reward whatever the reward model likes, length included (the validity section shows how
# much); the length-controlled win rate is the reward model's column that may be bolded.
NO_BEST = {"reward_model/win_rate_vs_reference", "reward_model/win_rate_vs_chosen", "reward_model/mean_reward"}

# Objectives that are controls, not contenders: nll is the likelihood of the chosen responses
# (a positive control without a preference signal). A label naming itself a control (the
# default suite's "control-lr0") is one too.
CONTROL_OBJECTIVES = {"nll"}


def direction(key: str) -> bool | None:
    """True when higher is better, False when lower is, None when neither is a goal."""
    scorer, metric = key.split("/", 1)
    return metric_info(scorer, metric).higher_is_better


def arrow(key: str) -> str:
    better = direction(key)
    return "" if better is None else UP if better else DOWN


def is_control(label: str, objective: str) -> bool:
    return objective in CONTROL_OBJECTIVES or "control" in label.lower()


def row_order(labels, objective_of: dict[str, str], baseline: str | None) -> list[str]:
    """Reference first, then the baseline, the other objectives (by label), the controls last."""
    def rank(label: str) -> tuple:
        objective = objective_of.get(label, "")
        kind = (0 if objective == REFERENCE else 1 if label == baseline
                else 3 if is_control(label, objective) else 2)
        return kind, label
    return sorted(labels, key=rank)


def decimals(board: pd.DataFrame, key: str) -> int:
    """Decimals of every number of a column (levels, interval ends and Δ alike)."""
    scorer, metric = key.split("/", 1)
    if metric_info(scorer, metric).bounds == UNIT:
        return 3
    values = board[key].astype(float).abs() if key in board else pd.Series(dtype=float)
    largest = values[np.isfinite(values)].max() if len(values) else math.nan
    if not np.isfinite(largest) or largest == 0:
        return 3
    return int(min(6, max(0, 2 - math.floor(math.log10(largest)))))   # 3 significant figures


def number(value: float, places: int, *, sign: bool = False, minus: str = "-") -> str:
    """``value`` to ``places`` decimals; one that rounds to zero is ``0`` (no sign, no -0.000)."""
    if value is None or not np.isfinite(value):
        return "–"
    text = f"{abs(value):.{places}f}"
    if float(text) == 0:
        return text
    if value < 0:
        return minus + text
    return ("+" + text) if sign else text


# The number format, stated in every rendering's legend.
NUMBER_NOTE = ("Numbers: shares to 3 decimals, every other column to 3 significant figures of its largest "
               "mean; Δ with its column's decimals; a value that rounds to zero is printed as 0.")


def best_labels(board: pd.DataFrame, key: str) -> set[str]:
    """The label to mark "best" in a column, or none: only a column with a direction and not in
    :data:`NO_BEST`, only among the trained objectives (not the reference, not the controls),
    and only when the best mean's 95% interval does not overlap the runner-up's (a best inside
    overlapping intervals is not a finding). A tie for best marks nothing."""
    better = direction(key)
    if better is None or key in NO_BEST or key not in board:
        return set()
    rows = board[[not is_control(str(lab), str(obj)) and obj != REFERENCE
                  for lab, obj in zip(board["label"], board["objective"])]]
    rows = rows[np.isfinite(rows[key].astype(float))]
    if len(rows) < 2:
        return set()
    ranked = rows.sort_values(key, ascending=not better, kind="stable")
    first, second = ranked.iloc[0], ranked.iloc[1]
    low, high = f"{key}:ci_low", f"{key}:ci_high"
    if not all(np.isfinite(float(r[c])) for r in (first, second) for c in (low, high)):
        return set()
    separated = first[low] > second[high] if better else first[high] < second[low]
    return {str(first["label"])} if separated else set()


# What each column measures and in which unit, for the legends of the HTML page and the docs
# (definitions: docs/DESIGN.md section 4).
MEANINGS = {
    "gold/accuracy": ("share of eval prompts whose answer the task's verifier accepts", "share, 0-1"),
    "gold/win_rate_vs_reference": ("per prompt: verifier-correct beats wrong, tie = 1/2; against the reference's "
                                   "answer", "share, 0-1"),
    "reward_model/win_rate_vs_reference": ("the reward model prefers the answer to the reference's (tie = 1/2); "
                                           "rewards length where the reward model does", "share, 0-1"),
    "reward_model/lc_win_rate_vs_reference": ("the RM win rate with the length difference regressed out "
                                              "(AlpacaEval's length control)", "share, 0-1"),
    "reward_model/win_rate_vs_chosen": ("the reward model prefers the answer to the dataset's chosen response",
                                        "share, 0-1"),
    "reward_model/mean_reward": ("mean reward-model score of the answers", "reward units"),
    "length/mean_tokens": ("mean answer length", "tokens"),
    "generation/truncation_rate": ("share of answers cut by the generation budget", "share, 0-1"),
    "drift/logratio_chosen": ("r_w: log-prob of the held-out chosen response, policy minus reference",
                              "nats per response"),
    "drift/logratio_chosen_per_token": ("r_w divided by the chosen response's tokens", "nats per token"),
    "drift/chosen_logp_down": ("share of held-out pairs whose chosen log-prob fell below the reference's",
                               "share, 0-1"),
    "kl/kl_to_reference": ("Monte-Carlo KL(policy || reference) on the policy's own answers", "nats per answer"),
}


def meaning(key: str) -> tuple[str, str]:
    """(what the column measures, its unit); lm-eval tasks as lm-eval reports them."""
    if key in MEANINGS:
        return MEANINGS[key]
    scorer, metric = key.split("/", 1)
    if scorer.startswith("lm_eval:"):
        return f"lm-eval task {scorer.split(':', 1)[1]}, its {metric}", "as lm-eval reports it"
    return f"{scorer} {metric}", ""


_SHORT_UNITS = {"share, 0-1": "share", "nats per response": "nats", "nats per token": "nats/token",
                "nats per answer": "nats", "reward units": "RM reward", "tokens": "tokens"}


def short_unit(key: str) -> str:
    """The unit of a column in a word or two, for axis labels ('' when it has none)."""
    return _SHORT_UNITS.get(meaning(key)[1], "")


def title(key: str) -> str:
    """The column's display name and the direction that is better (↑ / ↓; none for a trade-off axis)."""
    scorer, metric = key.split("/", 1)
    return (metric_info(scorer, metric).display + " " + arrow(key)).rstrip()
