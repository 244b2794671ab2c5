"""Which pairs each optimiser step sees: a function of the seed and the step only.

The index stream is the concatenation of per-epoch permutations drawn from a
`torch.Generator` seeded with (seed, epoch); optimiser step k takes the next `global_batch`
indices. Every objective at the same seed therefore sees the same pairs in the same order,
a resumed run needs only the step number, and no step is ever a partial batch.
"""
from __future__ import annotations

import math

import torch


class DataOrder:
    def __init__(self, n: int, global_batch: int, seed: int):
        if n <= 0:
            raise ValueError("no training pairs")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self._epochs: dict[int, list[int]] = {}

    def _epoch(self, e: int) -> list[int]:
        if e not in self._epochs:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
            self._epochs[e] = torch.randperm(self.n, generator=g).tolist()
        return self._epochs[e]

    def step_indices(self, step: int) -> list[int]:
        start = step * self.global_batch
        return [self._epoch(i // self.n)[i % self.n] for i in range(start, start + self.global_batch)]

    def micro_batches(self, step: int, *, lengths: list[int], batch_size: int, rank: int = 0,
                      procs: int = 1) -> list[list[int]]:
        """Process `rank`'s share of step `step`, sorted by (length, index) so micro-batches pad
        little, cut into micro-batches of `batch_size` pairs."""
        share = self.global_batch // procs
        mine = sorted(self.step_indices(step)[rank * share : (rank + 1) * share], key=lambda i: (lengths[i], i))
        return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]

    def total_steps(self, epochs: float) -> int:
        return max(1, -(-int(round(epochs * self.n)) // self.global_batch))


class RewardModelOrder:
    """The reward model's batches as its own loop drew them before it was trained here: per
    epoch a `random.Random("reward-order-<seed>")` shuffle cut into `batch_size` chunks (the
    epoch's last chunk may be short), `grad_accum` chunks per step, in drawn order. Kept so
    that moving the reward model into this loop changes no number; one process only."""

    def __init__(self, n: int, batch_size: int, grad_accum: int, seed: int):
        import random

        if n <= 0:
            raise ValueError("no training pairs")
        self.n, self.batch_size, self.grad_accum = n, batch_size, grad_accum
        self._rng = random.Random(f"reward-order-{seed}")
        self._chunks: list[list[int]] = []

    def _chunk(self, k: int) -> list[int]:
        while len(self._chunks) <= k:     # epochs drawn in turn: chunk k depends on the seed only
            idx = list(range(self.n))
            self._rng.shuffle(idx)
            self._chunks += [idx[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        return self._chunks[k]

    def micro_batches(self, step: int, *, lengths, batch_size: int, rank: int = 0, procs: int = 1) -> list[list[int]]:
        if procs != 1:
            raise ValueError("the reward model trains in one process")
        return [self._chunk(step * self.grad_accum + j) for j in range(self.grad_accum)]

    def total_steps(self, epochs: float) -> int:
        return max(1, math.ceil(epochs * math.ceil(self.n / self.batch_size) / self.grad_accum))
