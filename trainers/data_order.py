"""Which pairs each optimiser step sees: a function of the seed and the step only.

The index stream is the concatenation of per-epoch permutations drawn from a
`torch.Generator` seeded with (seed, epoch); optimiser step k takes the next `global_batch`
indices. Every objective at the same seed therefore sees the same pairs in the same order,
a resumed run needs only the step number, and no step is ever a partial batch.
"""
from __future__ import annotations

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
