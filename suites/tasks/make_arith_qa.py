"""Regenerate arith_qa.jsonl, the data of the local lm-eval task `arith_qa` (deterministic).

Questions are the builtin `arith` task's prompts ("Compute 37+8*6-5.\\n"); the choices are
the true answer, the wrong final answer of that problem's flawed solution (the error a
student makes), and two nearby integers; the gold index is shuffled by a fixed seed.
Run from the repository root: ``PYTHONPATH=. python suites/tasks/make_arith_qa.py``.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

from bench.data.arith import make_pairs

N_ITEMS, SEED = 150, 9001
OUT = Path(__file__).with_name("arith_qa.jsonl")


def _choices(rng: random.Random, answer: int, wrong: int) -> list[int]:
    options = {answer, wrong}
    while len(options) < 4:  # near misses: the plausible slips of mental arithmetic
        options.add(answer + rng.choice([-1, 1]) * rng.randint(1, 10))
    ordered = sorted(options - {answer, wrong})
    choices = [answer, wrong, *ordered]
    rng.shuffle(choices)
    return choices


def main() -> None:
    rng = random.Random(SEED)
    rows = []
    for pair in make_pairs(N_ITEMS, seed=SEED, length_confound=0.0, rejected_filler=0.0):
        answer = int(pair.metadata["answer"])
        wrong = int(re.findall(r"Answer:\s*(-?\d+)", pair.rejected)[-1])
        choices = _choices(rng, answer, wrong)
        rows.append({"id": pair.id, "question": pair.prompt, "choices": [str(c) for c in choices],
                     "gold": choices.index(answer), "answer": answer})
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} items to {OUT}")


if __name__ == "__main__":
    main()
