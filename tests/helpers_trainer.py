"""Shared helpers for the trainer tests: random arithmetic-looking pairs."""
from __future__ import annotations

import random

from bench.data.records import PreferencePair


def arith_pairs(n: int, seed: int = 0) -> list[PreferencePair]:
    """Pairs like '12+7=' -> chosen '19', rejected a wrong sum, with varied lengths."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 999)
        wrong = a + b + rng.choice([-11, -1, 1, 10, 100])
        pairs.append(PreferencePair(id=f"arith-{i}", prompt=f"{a}+{b}=", chosen=str(a + b), rejected=str(wrong)))
    return pairs
