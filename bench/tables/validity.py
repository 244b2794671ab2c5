"""Scorer validity: what each scorer of a suite measures, stated beside its numbers.

A leaderboard is only as good as its judges. For every suite the harness records, in
``validity.json`` and as a section of ``leaderboard.md``:
- the trained reward model's held-out pair accuracy, overall and per kind of pair (a
  builtin task knows which pairs differ only in correctness and which in length; other
  data is grouped by which response is longer), so a judge that rewards an artefact
  shows it;
- the generation budget against the longest chosen eval response, and the truncation
  rate of every policy (a cut answer is scored wrong);
- the reference's score on each lm-eval task (a task at chance measures nothing);
- the LLM judge's position consistency (the share of comparisons where both orders name the
  same winner; Zheng et al. 2023 report ~65% for GPT-4) and, on suites with a gold verifier,
  its agreement with the verifier where the verifier separates the two answers.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.io import atomic_write

VALIDITY_JSON = "validity.json"
VALIDITY_MD = "validity.md"


def judge_facts(judged: dict[str, pd.DataFrame], gold: dict[str, pd.DataFrame], reference_gold: pd.DataFrame | None,
                info: dict | None = None) -> dict | None:
    """The judge's validity over every judged policy (label -> its judge.parquet frame):
    position consistency, the share of parseable calls that chose position A, and, where
    ``gold`` gives each policy's judgments (prompt_id, sample_index, gold) and the reference's,
    agreement with the verifier on the comparisons it decides (one answer right, one wrong)."""
    frames = {label: f[f["against"] == "reference"] for label, f in judged.items()}
    frames = {label: f for label, f in frames.items() if not f.empty}
    if not frames:
        return None
    every = pd.concat(frames.values(), ignore_index=True)
    prefs = pd.concat([every["pref_policy_first"], -every["pref_policy_second"]]).dropna()   # A's preference
    decided = prefs[prefs != 0]
    facts = {"comparisons": int(len(every)), "position_consistency": float(every["consistent"].mean()),
             "first_position_preferred": float((decided > 0).mean()) if len(decided) else None,
             "unparseable_calls": float(every["unparseable"].sum() / (2 * len(every))),
             "by_policy": {label: {"position_consistency": float(f["consistent"].mean()), "n": int(len(f))}
                           for label, f in sorted(frames.items())}, **(info or {})}
    if reference_gold is not None and gold:
        keys = ["prompt_id", "sample_index"]
        ref = reference_gold[keys + ["gold"]].rename(columns={"gold": "gold_other"})
        rows = [f.merge(gold[label][keys + ["gold"]], on=keys).merge(ref, on=keys)
                for label, f in frames.items() if label in gold]
        both = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
        if not both.empty:
            decisive = both[both["gold"] != both["gold_other"]]
            right = (decisive["gold"] > decisive["gold_other"]).astype(float)
            facts["gold_agreement"] = {
                "n_decisive": int(len(decisive)),
                "agreement": float((decisive["outcome"] == right).mean()) if len(decisive) else None,
                "tie_share": float((decisive["outcome"] == 0.5).mean()) if len(decisive) else None}
    return facts


def collect(*, reward_dir: Path | None, budget: int, longest_chosen: int, judgments: dict[str, pd.DataFrame],
            reference_lm_eval: list[dict], judge: dict | None = None) -> dict:
    """The validity facts of one suite (all plain JSON)."""
    reward = None
    report = reward_dir / "reward_train.json" if reward_dir is not None else None
    if report is not None and report.is_file():
        data = json.loads(report.read_text())
        reward = {k: data.get(k) for k in ("heldout_accuracy", "n_heldout", "heldout_by_kind", "train_accuracy")}
    truncation = {label: float((frame["finish_reason"] == "length").mean())
                  for label, frame in judgments.items() if "finish_reason" in frame}
    lm_eval = [{k: row.get(k) for k in ("task", "metric", "value", "stderr", "n")} for row in reference_lm_eval]
    facts = {"reward_model": reward, "generation": {"max_new_tokens": budget, "longest_chosen_tokens": longest_chosen,
                                                    "truncation_rate": truncation},
             "reference_lm_eval": lm_eval}
    if judge is not None:   # absent without a judge: the file of a suite without one is unchanged
        facts["judge"] = judge
    return facts


def render_markdown(facts: dict) -> str:
    lines = ["## Scorer validity", ""]
    reward = facts.get("reward_model")
    if reward:
        lines.append(f"Reward model, held-out pair accuracy: {_pct(reward.get('heldout_accuracy'))} "
                     f"of {reward.get('n_heldout')} pairs. By kind of pair:")
        lines.append("")
        lines += ["| pairs | accuracy | n |", "|---|---:|---:|"]
        for kind, entry in (reward.get("heldout_by_kind") or {}).items():
            lines.append(f"| {kind} | {_pct(entry.get('accuracy'))} | {entry.get('n')} |")
        lines.append("")
    gen = facts["generation"]
    worst = max(gen["truncation_rate"].items(), key=lambda kv: kv[1], default=(None, 0.0))
    lines.append(f"Generation budget: {gen['max_new_tokens']} new tokens; the longest chosen eval response "
                 f"takes {gen['longest_chosen_tokens']} with EOS. Highest truncation rate: "
                 f"{_pct(worst[1])}" + (f" ({worst[0]})." if worst[0] else "."))
    judge = facts.get("judge")
    if judge:
        lines.append(f"LLM judge {judge.get('model', '')} ({judge.get('template', '')}): position consistency "
                     f"{_pct(judge['position_consistency'])} of {judge['comparisons']} comparisons (both orders "
                     f"name the same winner); position A chosen in {_pct(judge.get('first_position_preferred'))} "
                     f"of decided calls; unparseable {_pct(judge.get('unparseable_calls'))} of calls.")
        agree = judge.get("gold_agreement")
        if agree and agree.get("n_decisive"):
            lines.append(f"LLM judge vs the gold verifier, on the {agree['n_decisive']} comparisons it decides: "
                         f"agrees {_pct(agree['agreement'])}, ties {_pct(agree['tie_share'])}.")
    for row in facts.get("reference_lm_eval") or []:
        lines.append(f"lm-eval {row['task']} {row['metric']} of the reference: {row['value']:.3f}"
                     + (f" ± {1.96 * row['stderr']:.3f}" if isinstance(row.get("stderr"), (int, float)) else "")
                     + f" (n={row.get('n')}).")
    return "\n".join(lines) + "\n"


def _pct(value) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def write(out: Path, facts: dict) -> None:

    text = json.dumps(facts, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(out / VALIDITY_JSON, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    md = render_markdown(facts)
    atomic_write(out / VALIDITY_MD, lambda tmp: tmp.write_text(md, encoding="utf-8"))


def section(results_dir: Path) -> str:
    """The validity section of a results folder ('' when it has none)."""
    path = Path(results_dir) / VALIDITY_MD
    return "\n" + path.read_text(encoding="utf-8") if path.is_file() else ""
