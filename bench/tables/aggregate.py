"""Turn stored judgments into tidy result rows (the cheap half of the run/summarise split).

Judgments (one row per generated sample: reward, gold score, length, log-probs under the
policy and the reference) are stored by the evaluate stage; every metric here is computed
from them, so a new metric never needs a new generation.

Besides the results rows, :func:`policy_units` gives the *unit values* of every metric that
is a mean over units: one value per eval prompt (its samples averaged) or per held-out drift
pair. The results folder keeps them in ``units.parquet`` so the leaderboard's intervals
across seeds and prompts and the paired comparisons (:mod:`bench.tables.stats`) are recomputed
from stored data, never by regenerating.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.tables import metrics
from bench.tables.results import UNIT_COLUMNS, metric_info

JUDGMENTS = "judgments.parquet"
LM_EVAL_UNITS = "lm_eval_units.json"   # {task: {metric: {doc_id: value}}}, beside lm_eval.json
# bench.evaluation.scoring.drift's keys -> the results table's metric names (bench.tables.results.METRICS).
LC_METRIC = "lc_win_rate_vs_reference"
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
    checkpoint: str | None = None       # the trained weights (the reference's directory for it)
    checkpoint_kept: bool = True
    judge_dir: Path | None = None       # its LLM-judge stage (bench.evaluation.scoring.judge), when judged
    stale_code: list = field(default_factory=list)   # --reuse-stale: its stages made by other code


def per_prompt(judgments: pd.DataFrame, column: str) -> pd.DataFrame:
    """[prompts × samples] matrix of a judgment column, rows sorted by prompt id."""
    return judgments.pivot(index="prompt_id", columns="sample_index", values=column).sort_index()


def _aligned(policy: pd.DataFrame, other: pd.DataFrame, column: str, other_column: str | None = None):
    a = per_prompt(policy, column)
    b = per_prompt(other, other_column or column)
    common = a.index.intersection(b.index)
    return a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)


def judgment_units(policy: pd.DataFrame, reference: pd.DataFrame, chosen: pd.DataFrame | None,
                   extra_scorers: tuple = ()) -> dict[tuple[str, str], pd.Series]:
    """Per-prompt values (index: prompt id) of the judgment metrics that are means over prompts.

    Each one's mean is exactly the run's value in the results table (``judgment_rows``).
    The length-controlled win rate is a fitted model, not a mean: its per-prompt terms are
    stored as ``lc_win_rate_vs_reference:<term>`` (no results row has those names).
    """
    out: dict[tuple[str, str], pd.Series] = {}

    def wins(column: str, other: pd.DataFrame) -> pd.Series:
        a, b = per_prompt(policy, column), per_prompt(other, column)
        common = a.index.intersection(b.index)
        return pd.Series(metrics.prompt_wins(a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)),
                         index=common)

    if "reward" in policy and policy["reward"].notna().all():
        out[("reward_model", "mean_reward")] = per_prompt(policy, "reward").mean(axis=1)
        out[("reward_model", "win_rate_vs_reference")] = wins("reward", reference)
        # The LC win rate is a fitted model: its units are each prompt's score and Hessian
        # terms at the fit (metrics.lc_influence), resampled by a one-step refit.
        a, b = per_prompt(policy, "reward"), per_prompt(reference, "reward")
        common = a.index.intersection(b.index)
        la, lb = per_prompt(policy, "num_tokens").loc[common], per_prompt(reference, "num_tokens").loc[common]
        _, terms = metrics.lc_influence(a.loc[common].to_numpy(float), b.loc[common].to_numpy(float),
                                        la.to_numpy(float), lb.to_numpy(float))
        for i, term in enumerate(metrics.LC_TERMS):
            out[("reward_model", f"{LC_METRIC}:{term}")] = pd.Series(terms[:, i], index=common)
        if chosen is not None:
            out[("reward_model", "win_rate_vs_chosen")] = wins("reward", chosen)
    if "gold" in policy and policy["gold"].notna().all():
        out[("gold", "accuracy")] = per_prompt(policy, "gold").mean(axis=1)
        out[("gold", "win_rate_vs_reference")] = wins("gold", reference)
    for scorer, column, metric in extra_scorers:   # registered sample scorers (scoring.scorers)
        if column in policy and policy[column].notna().all():
            out[(scorer, metric)] = per_prompt(policy, column).mean(axis=1)
            out[(scorer, "win_rate_vs_reference")] = wins(column, reference)
    out[("length", "mean_tokens")] = per_prompt(policy, "num_tokens").mean(axis=1)
    out[("length", "mean_chars")] = per_prompt(policy, "num_chars").mean(axis=1)
    if "logp_policy" in policy and policy["logp_policy"].notna().all():
        gap = policy.assign(kl_term=policy["logp_policy"] - policy["logp_ref"])
        out[("kl", "kl_to_reference")] = per_prompt(gap, "kl_term").mean(axis=1)
    return out


JUDGE_FILE = "judge.parquet"   # in a judge stage (bench.evaluation.scoring.judge): one row per comparison
JUDGE_INFO = "judge_info.json"  # beside it: judge model, template name and sha256, decoding settings


def _judge_matrices(frame: pd.DataFrame, against: str) -> dict[str, pd.DataFrame] | None:
    """[prompts x samples] matrices of one side's judge comparisons (None when there are none):
    outcome (1 win, ½ tie, 0 loss), tie, unparseable share of the two calls, and both lengths."""
    part = frame[frame["against"] == against].assign(unparseable_share=lambda f: f["unparseable"] / 2.0,
                                                     tie=lambda f: f["tie"].astype(float))
    if part.empty:
        return None
    if "soft_outcome" not in part:   # judged before the soft label was stored
        part = part.assign(soft_outcome=part["outcome"])
    return {col: per_prompt(part, col)
            for col in ("outcome", "soft_outcome", "tie", "unparseable_share", "policy_tokens", "other_tokens")}


def judge_rows(frame: pd.DataFrame, *, n_boot: int, seed: int) -> list[tuple[str, str, metrics.Estimate]]:
    """(scorer, metric, estimate) of one policy's judge comparisons (bench.evaluation.scoring.judge):
    win rate with ties ½, its length-controlled form (the AlpacaEval GLM with the outcomes as
    soft labels), the share of ties and of unparseable verdicts; win rate vs chosen when judged."""
    out, boot = [], dict(n_boot=n_boot, seed=seed)
    ref = _judge_matrices(frame, "reference")
    if ref is not None:
        m = {k: v.to_numpy(float) for k, v in ref.items()}
        out.append(("judge", "win_rate_vs_reference", metrics.mean_ci(m["outcome"], **boot)))
        out.append(("judge", LC_METRIC, metrics.length_controlled_from_labels(
            m["soft_outcome"], m["policy_tokens"], m["other_tokens"], **boot)))
        out.append(("judge", "tie_rate", metrics.mean_ci(m["tie"], **boot)))
        out.append(("judge", "unparseable_rate", metrics.mean_ci(m["unparseable_share"], **boot)))
    chosen = _judge_matrices(frame, "chosen")
    if chosen is not None:
        out.append(("judge", "win_rate_vs_chosen", metrics.mean_ci(chosen["outcome"].to_numpy(float), **boot)))
    return out


def judge_units(frame: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    """Per-prompt values of :func:`judge_rows`' metrics; the LC fit as its per-prompt terms
    (``lc_win_rate_vs_reference:<term>``), resampled like the reward model's (bench.tables.cells)."""
    out: dict[tuple[str, str], pd.Series] = {}
    ref = _judge_matrices(frame, "reference")
    if ref is not None:
        out[("judge", "win_rate_vs_reference")] = ref["outcome"].mean(axis=1)
        out[("judge", "tie_rate")] = ref["tie"].mean(axis=1)
        out[("judge", "unparseable_rate")] = ref["unparseable_share"].mean(axis=1)
        _, terms = metrics.lc_influence_from_labels(ref["soft_outcome"].to_numpy(float),
                                                    ref["policy_tokens"].to_numpy(float), ref["other_tokens"].to_numpy(float))
        for i, term in enumerate(metrics.LC_TERMS):
            out[("judge", f"{LC_METRIC}:{term}")] = pd.Series(terms[:, i], index=ref["outcome"].index)
    chosen = _judge_matrices(frame, "chosen")
    if chosen is not None:
        out[("judge", "win_rate_vs_chosen")] = chosen["outcome"].mean(axis=1)
    return out


def _judge_frame(record: PolicyRecord) -> pd.DataFrame | None:
    path = Path(record.judge_dir) / JUDGE_FILE if record.judge_dir is not None else None
    return pd.read_parquet(path) if path is not None and path.is_file() else None


def drift_units(drift: dict) -> dict[tuple[str, str], pd.Series]:
    """Per-pair values of the drift metrics (index: held-out pair id) from a ``drift.json``.

    The share "chosen log-prob down" is the mean of the indicator r_w < 0, implicit
    accuracy of r_w > r_l, the margin of r_w − r_l: all means over pairs, like r_w itself.
    """
    per_pair = drift.get("per_pair") or {}
    if not per_pair.get("r_w"):
        return {}
    arr = {k: np.asarray(v, dtype=float) for k, v in per_pair.items()}
    # Older drift.json files lack the ids; pairs are always scored in the same order.
    ids = [str(i) for i in drift.get("pair_ids", range(arr["r_w"].size))]
    values = {"r_w": arr["r_w"], "r_l": arr["r_l"], "r_w_per_token": arr["r_w_per_token"],
              "r_l_per_token": arr["r_l_per_token"], "chosen_logp_down": (arr["r_w"] < 0).astype(float),
              "reward_accuracy": (arr["r_w"] > arr["r_l"]).astype(float), "margin": arr["r_w"] - arr["r_l"]}
    return {("drift", DRIFT_METRICS[k]): pd.Series(v, index=pd.Index(ids, name="unit")) for k, v in values.items()}


def judgment_rows(policy: pd.DataFrame, reference: pd.DataFrame, chosen: pd.DataFrame | None,
                  *, n_boot: int, seed: int, extra_scorers: tuple = ()) -> list[tuple[str, str, metrics.Estimate]]:
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
    # A registered sample scorer (bench.evaluation.scoring.registry, listed in scoring.scorers),
    # given as (scorer, judgments column, mean metric): the mean over prompts and
    # the win rate against the reference, as for gold.
    for scorer, column, metric in extra_scorers:
        if column in policy and policy[column].notna().all():
            pol, ref = _aligned(policy, reference, column)
            out.append((scorer, metric, metrics.mean_ci(pol.mean(axis=1), **boot)))
            out.append((scorer, "win_rate_vs_reference", metrics.win_rate(pol, ref, **boot)))
    if "finish_reason" in policy:
        # Samples stopped by the token budget, not by EOS: a verifier scores them as cut.
        truncated = (policy["finish_reason"] == "length").to_numpy(float)
        out.append(("generation", "truncation_rate", _point(truncated.mean(), truncated.size)))
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
                chosen_judgments: pd.DataFrame | None, n_boot: int, seed: int,
                extra_scorers: tuple = ()) -> list[dict]:
    """Every result row of one evaluated policy."""
    rows: list[dict] = []
    boot = dict(n_boot=n_boot, seed=seed)

    def add(scorer, metric, est: metrics.Estimate, extra: dict | None = None):
        rows.append(dict(suite=suite, run_id=record.run_id, label=record.label, objective=record.objective,
                         params=record.params, seed=record.seed, scorer=scorer, metric=metric,
                         value=float(est.value), ci_low=float(est.ci_low), ci_high=float(est.ci_high),
                         n=int(est.n), extra=json.dumps(extra or {}, sort_keys=True)))

    for key in ("final_loss", "steps"):
        if key in record.train_summary:
            add("train", key, _point(record.train_summary[key], 1))
    audit = record.train_summary.get("train_data")
    if audit:
        for key in ("chosen_verified", "rejected_verified"):
            add("train_data", key, _point(audit[key], audit["n"]))
    if record.eval_dir is None:
        return rows
    judgments = _judgments(record.eval_dir)
    for scorer, metric, est in judgment_rows(judgments, reference_judgments, chosen_judgments,
                                             n_boot=n_boot, seed=seed, extra_scorers=extra_scorers):
        add(scorer, metric, est)
    judged = _judge_frame(record)
    if judged is not None:
        # Which judge: its model and the template's name and sha256, on every judge row.
        info_file = Path(record.judge_dir) / JUDGE_INFO
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}
        extra = {k: info[k] for k in ("model", "template", "template_sha256") if k in info}
        for scorer, metric, est in judge_rows(judged, **boot):
            add(scorer, metric, est, extra)
    drift = _drift(record.eval_dir)
    if drift is not None:
        n = int(drift.get("n", 0))
        per_pair = drift_units(drift)   # with per-pair values, each drift mean gets its interval over pairs
        for key, metric in DRIFT_METRICS.items():
            if ("drift", metric) in per_pair:
                add("drift", metric, metrics.mean_ci(per_pair[("drift", metric)].to_numpy(float), **boot))
            elif isinstance(drift.get(key), (int, float)):
                add("drift", metric, _point(drift[key], n))
    lm_eval_file = record.eval_dir / "lm_eval.json"
    if lm_eval_file.exists():
        for row in json.loads(lm_eval_file.read_text()):
            stderr = row.get("stderr")
            half = 1.96 * stderr if isinstance(stderr, (int, float)) and np.isfinite(stderr) else float("nan")
            low, high = _within(f"lm_eval:{row['task']}", row["metric"], row["value"] - half, row["value"] + half)
            est = metrics.Estimate(row["value"], low, high, int(row.get("n") or 0))
            extra = {k: row[k] for k in ("filter", "stderr", "n_shot", "task_version", "lm_eval_version") if k in row}
            add(f"lm_eval:{row['task']}", row["metric"], est, extra)
    return rows


def _within(scorer: str, metric: str, low: float, high: float) -> tuple[float, float]:
    """A normal interval (lm-eval's value ± 1.96·stderr) intersected with the metric's range:
    a share's true value lies in [0, 1], so clipping keeps the coverage."""
    bounds = metric_info(scorer, metric).bounds
    if bounds is None:
        return low, high
    return float(np.clip(low, *bounds)), float(np.clip(high, *bounds))


def _judgments(eval_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(eval_dir / JUDGMENTS)


def _drift(eval_dir: Path) -> dict | None:
    path = eval_dir / "drift.json"
    return json.loads(path.read_text()) if path.exists() else None


def lm_eval_units(eval_dir: Path) -> dict[tuple[str, str], pd.Series]:
    """Per-document values of the lm-eval metrics (index: doc id); each one's mean is the run's
    lm-eval value. Evaluations written before these were stored have none (compared by seed)."""
    path = Path(eval_dir) / LM_EVAL_UNITS
    if not path.is_file():
        return {}
    out = {}
    for task, by_metric in json.loads(path.read_text()).items():
        for metric, docs in by_metric.items():
            if docs:
                out[(f"lm_eval:{task}", metric)] = pd.Series(list(docs.values()), dtype=float,
                                                             index=pd.Index(list(docs), name="unit"))
    return out


def policy_units(record: PolicyRecord, *, reference_judgments: pd.DataFrame,
                 chosen_judgments: pd.DataFrame | None, extra_scorers: tuple = ()) -> pd.DataFrame:
    """Tidy unit values of one evaluated policy: columns :data:`UNIT_COLUMNS`, one row per
    (metric, prompt or drift pair). Empty for a failed run."""
    if record.eval_dir is None or record.status != "ok":
        return pd.DataFrame(columns=UNIT_COLUMNS)
    series = judgment_units(_judgments(record.eval_dir), reference_judgments, chosen_judgments, extra_scorers)
    drift = _drift(record.eval_dir)
    if drift is not None:
        series.update(drift_units(drift))
    series.update(lm_eval_units(record.eval_dir))
    judged = _judge_frame(record)
    if judged is not None:
        series.update(judge_units(judged))
    frames = [pd.DataFrame({"scorer": scorer, "metric": metric, "unit": values.index.astype(str),
                            "value": values.to_numpy(float)})
              for (scorer, metric), values in series.items()]
    if not frames:
        return pd.DataFrame(columns=UNIT_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "run_id", record.run_id)
    out.insert(1, "label", record.label)
    out.insert(2, "objective", record.objective)
    out.insert(3, "seed", record.seed)
    return out[UNIT_COLUMNS]
