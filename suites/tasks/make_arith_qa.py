"""Regenerate arith_qa.jsonl, the data of the local lm-eval task `arith_qa` (deterministic).

Each item is a builtin `arith` problem ("Compute 37+8*6-5.\\n") with four complete worked
solutions as the choices: the correct one and three that slip at one step (different
steps or slips), written exactly as the task's responses are, without filler. lm-eval
scores each choice by its log-likelihood after the prompt, so the task asks what the
policies were trained to do (prefer a correct derivation to a flawed one) instead of
asking for a bare answer the models never produce. Difficulty matches the embedded
default's task options (suites/smoke.yaml). Items are drawn with their own seed; they
can share a problem with a suite's pairs (the problem space is small), never its texts'
random slips. Run from the repository root:
``PYTHONPATH=. python suites/tasks/make_arith_qa.py``.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from bench.data.arith import ArithOptions, _flawed, render, solve, _prompts

N_ITEMS, SEED, N_CHOICES = 300, 9001, 4
# The embedded default's difficulty (suites/smoke.yaml data.task_options).
OPTIONS = ArithOptions(max_operands=3, max_operand=12, max_factor=5)
OUT = Path(__file__).with_name("arith_qa.jsonl")


def _item(rng: random.Random, prompt: str, nums, ops) -> dict:
    steps, answer = solve(nums, ops)
    correct = render(steps, answer)
    choices = {correct}
    for _ in range(200):
        if len(choices) == N_CHOICES:
            break
        bad_steps, wrong, _ = _flawed(rng, nums, ops, OPTIONS)
        choices.add(render(bad_steps, wrong))
    ordered = sorted(choices)
    rng.shuffle(ordered)
    return {"question": prompt, "choices": ordered, "gold": ordered.index(correct), "answer": answer}


def main() -> None:
    rng = random.Random(SEED)
    rows = []
    for i, (prompt, nums, ops) in enumerate(_prompts(rng, N_ITEMS, OPTIONS, half=0)):
        item = _item(rng, prompt, nums, ops)
        if len(item["choices"]) == N_CHOICES:
            rows.append({"id": f"arith_qa:{SEED}:{i}", **item})
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} items to {OUT}")


if __name__ == "__main__":
    main()
