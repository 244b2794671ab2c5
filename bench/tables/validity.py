"""Scorer validity: what each scorer of a suite measures, stated beside its numbers.

A leaderboard is only as good as its judges. For every suite the harness records, in
``validity.json`` and as a section of ``leaderboard.md``:
- the trained reward model's held-out pair accuracy, overall and per kind of pair (a
  builtin task knows which pairs differ only in correctness and which in length; other
  data is grouped by which response is longer), so a judge that rewards an artefact
  shows it;
- the generation budget against the longest chosen eval response, and the truncation
  rate of every policy (a cut answer is scored wrong);
- the reference's score on each lm-eval task (a task at chance measures nothing).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.io import atomic_write

VALIDITY_JSON = "validity.json"
VALIDITY_MD = "validity.md"


def collect(*, reward_dir: Path | None, budget: int, longest_chosen: int, judgments: dict[str, pd.DataFrame],
            reference_lm_eval: list[dict]) -> dict:
    """The validity facts of one suite (all plain JSON)."""
    reward = None
    report = reward_dir / "reward_train.json" if reward_dir is not None else None
    if report is not None and report.is_file():
        data = json.loads(report.read_text())
        reward = {k: data.get(k) for k in ("heldout_accuracy", "n_heldout", "heldout_by_kind", "train_accuracy")}
    truncation = {label: float((frame["finish_reason"] == "length").mean())
                  for label, frame in judgments.items() if "finish_reason" in frame}
    lm_eval = [{k: row.get(k) for k in ("task", "metric", "value", "stderr", "n")} for row in reference_lm_eval]
    return {"reward_model": reward, "generation": {"max_new_tokens": budget, "longest_chosen_tokens": longest_chosen,
                                                   "truncation_rate": truncation},
            "reference_lm_eval": lm_eval}


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
