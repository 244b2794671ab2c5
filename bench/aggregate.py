"""Turn stored judgments into tidy result rows (the cheap half of the run/summarise split).

Judgments (one row per generated sample: reward, gold score, length, log-probs under the
policy and the reference) are stored by the evaluate stage; every metric here is computed
from them, so a new metric never needs a new generation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench import metrics

JUDGMENTS = "judgments.parquet"
# bench.scoring.drift's keys -> the results table's metric names (bench.results.METRICS).
DRIFT_METRICS = {"r_w": "logratio_chosen", "r_l": "logratio_rejected", "r_w_per_token": "logratio_chosen_per_token",
                 "r_l_per_token": "logratio_rejected_per_token", "chosen_logp_down": "chosen_logp_down",
                 "reward_accuracy": "implicit_accuracy", "margin": "margin"}


@dataclass
class PolicyRecord:
    """Identity of a policy in the results table and where its evaluation lives."""

    run_id: str
    label: str
    objective: str
    params: str          # canonical JSON
    seed: int
    eval_dir: Path | None = None
    train_summary: dict = field(default_factory=dict)
    status: str = "ok"
    reason: str | None = None


def per_prompt(judgments: pd.DataFrame, column: str) -> pd.DataFrame:
    """[prompts × samples] matrix of a judgment column, rows sorted by prompt id."""
    return judgments.pivot(index="prompt_id", columns="sample_index", values=column).sort_index()


def _aligned(policy: pd.DataFrame, other: pd.DataFrame, column: str, other_column: str | None = None):
    a = per_prompt(policy, column)
    b = per_prompt(other, other_column or column)
    common = a.index.intersection(b.index)
    return a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)


def judgment_rows(policy: pd.DataFrame, reference: pd.DataFrame, chosen: pd.DataFrame | None,
                  *, n_boot: int, seed: int) -> list[tuple[str, str, metrics.Estimate]]:
    """(scorer, metric, estimate) for one policy's judgments against the reference's."""
    out: list[tuple[str, str, metrics.Estimate]] = []
    boot = dict(n_boot=n_boot, seed=seed)
    if "reward" in policy and policy["reward"].notna().all():
        pol, ref = _aligned(policy, reference, "reward")
        pol_len, ref_len = _aligned(policy, reference, "num_tokens")
        out.append(("reward_model", "mean_reward", metrics.mean_ci(pol.mean(axis=1), **boot)))
        out.append(("reward_model", "win_rate_vs_reference", metrics.win_rate(pol, ref, **boot)))
        out.append(("reward_model", "lc_win_rate_vs_reference",
                    metrics.length_controlled_win_rate(pol, ref, pol_len, ref_len, **boot)))
        if chosen is not None:
            pol_c, cho = _aligned(policy, chosen, "reward")
            out.append(("reward_model", "win_rate_vs_chosen", metrics.win_rate(pol_c, cho, **boot)))
    if "gold" in policy and policy["gold"].notna().all():
        pol, ref = _aligned(policy, reference, "gold")
        out.append(("gold", "accuracy", metrics.mean_ci(pol.mean(axis=1), **boot)))
        out.append(("gold", "win_rate_vs_reference", metrics.win_rate(pol, ref, **boot)))
    tokens = per_prompt(policy, "num_tokens").to_numpy(float)
    chars = per_prompt(policy, "num_chars").to_numpy(float)
    ref_tokens = per_prompt(reference, "num_tokens").to_numpy(float)
    for name, value in metrics.length_stats(tokens.ravel(), chars.ravel(), ref_tokens.ravel()).items():
        out.append(("length", name, _point(value, tokens.size)))
    if "logp_policy" in policy and policy["logp_policy"].notna().all():
        out.append(("kl", "kl_to_reference",
                    metrics.kl_estimate(policy["logp_policy"].to_numpy(float), policy["logp_ref"].to_numpy(float))))
    return out


def _point(value: float, n: int) -> metrics.Estimate:
    return metrics.Estimate(float(value), float("nan"), float("nan"), int(n))


def policy_rows(record: PolicyRecord, *, suite: str, reference_judgments: pd.DataFrame,
                chosen_judgments: pd.DataFrame | None, n_boot: int, seed: int) -> list[dict]:
    """Every result row of one evaluated policy."""
    rows: list[dict] = []

    def add(scorer, metric, est: metrics.Estimate, extra: dict | None = None):
        rows.append(dict(suite=suite, run_id=record.run_id, label=record.label, objective=record.objective,
                         params=record.params, seed=record.seed, scorer=scorer, metric=metric,
                         value=float(est.value), ci_low=float(est.ci_low), ci_high=float(est.ci_high),
                         n=int(est.n), extra=json.dumps(extra or {}, sort_keys=True)))

    for key in ("final_loss", "steps"):
        if key in record.train_summary:
            add("train", key, _point(record.train_summary[key], 1))
    if record.eval_dir is None:
        return rows
    judgments = pd.read_parquet(record.eval_dir / JUDGMENTS)
    for scorer, metric, est in judgment_rows(judgments, reference_judgments, chosen_judgments,
                                             n_boot=n_boot, seed=seed):
        add(scorer, metric, est)
    drift_file = record.eval_dir / "drift.json"
    if drift_file.exists():
        drift = json.loads(drift_file.read_text())
        n = int(drift.get("n", 0))
        for key, metric in DRIFT_METRICS.items():
            if isinstance(drift.get(key), (int, float)):
                add("drift", metric, _point(drift[key], n))
    lm_eval_file = record.eval_dir / "lm_eval.json"
    if lm_eval_file.exists():
        for row in json.loads(lm_eval_file.read_text()):
            stderr = row.get("stderr")
            half = 1.96 * stderr if isinstance(stderr, (int, float)) and np.isfinite(stderr) else float("nan")
            est = metrics.Estimate(row["value"], row["value"] - half, row["value"] + half, int(row.get("n") or 0))
            extra = {k: row[k] for k in ("filter", "stderr", "n_shot", "task_version", "lm_eval_version") if k in row}
            add(f"lm_eval:{row['task']}", row["metric"], est, extra)
    return rows
