"""Split pairs into train / eval (prompts for generation) / drift (held-out pairs), by prompt."""
from __future__ import annotations

import random
from dataclasses import dataclass

from bench.data.records import PreferencePair
from bench.errors import DataError


@dataclass
class Splits:
    train: list[PreferencePair]
    eval: list[PreferencePair]    # one whole pair per eval prompt: generation needs the prompt, win-vs-chosen the chosen
    drift: list[PreferencePair]   # held-out pairs for likelihood drift


def split_pairs(pairs: list[PreferencePair], *, eval_prompts: int, drift_pairs: int, seed: int) -> Splits:
    """Deterministic, disjoint split by unique prompt, so no prompt reaches both train and a held-out set.

    Unique prompts are shuffled with `seed`; the first `eval_prompts` prompts give one pair
    each to `eval` (their other pairs are dropped rather than trained on); the following
    prompts give their pairs to `drift` until it holds `drift_pairs` (the rest of a prompt
    cut short is dropped too); every remaining prompt's pairs go to `train`. Each part keeps
    the input order. Too few prompts to leave any training pair is a DataError.
    """
    groups: dict[str, list[int]] = {}   # prompt -> indices of its pairs, in input order
    for i, pair in enumerate(pairs):
        groups.setdefault(pair.prompt, []).append(i)
    prompts = list(groups)
    random.Random(seed).shuffle(prompts)
    held_out = set(prompts[:eval_prompts])
    eval_idx = {groups[p][0] for p in prompts[:eval_prompts]}
    drift_idx: set[int] = set()
    for prompt in prompts[eval_prompts:]:
        if len(drift_idx) >= drift_pairs:
            break
        held_out.add(prompt)
        drift_idx.update(groups[prompt][: drift_pairs - len(drift_idx)])
    train = [p for p in pairs if p.prompt not in held_out]
    if not train or len(eval_idx) < eval_prompts or len(drift_idx) < drift_pairs:
        raise DataError(
            f"data: {len(pairs)} pairs with {len(groups)} unique prompts are too few for "
            f"eval_prompts={eval_prompts} and drift_pairs={drift_pairs} with training pairs left; "
            "lower data.eval_prompts / data.drift_pairs or add data"
        )
    return Splits(
        train=train,
        eval=[p for i, p in enumerate(pairs) if i in eval_idx],
        drift=[p for i, p in enumerate(pairs) if i in drift_idx],
    )
