"""The trainer: one training loop for every objective (and the reward model's head).

Before any torch computation: MKL's strict conditional numerical reproducibility, so that a
matrix product sums in the same order whatever the number of CPU threads. Without it, the
same run on 1 thread (a worker of `executor: local` sharing the cores) and on 2 (in-process)
drifts by ~1e-8 within five steps and no longer gives byte-identical results. Set
MKL_CBWR yourself to choose otherwise; it has no effect on GPUs.
"""
import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
