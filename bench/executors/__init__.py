"""Executors: where a suite's runs train and evaluate, once the shared stages are done.
What a run is (its stages, their keys, the stage store) is bench.run; this package only
decides where each task runs, and can be read without it.

- `inprocess`: one after another in this process (bench.run.runner runs them itself).
- `local`: N worker processes on this machine, each pinned to its own GPUs
  (CUDA_VISIBLE_DEVICES) or to its own CPU threads, so two workers on two cores do not
  oversubscribe them (local_workers; CPU workers are forked from a forkserver warmed by
  worker_warmup).
- `ray`: each run a Ray task asking for `gpus_per_run` GPUs, on a cluster
  (`executor.ray.address`) or on a local Ray this command starts (ray_tasks).
- `slurm`: each run a Slurm job through submitit (optional extra `prefbench[slurm]`; slurm_jobs).

The parent computes the shared stages (data, reference SFT, reward model, reference
log-probs) before the fan-out and keeps the results folder's lock; the two that need only the
SFT reference, not each other, run side by side as tasks on the executor
(bench.run.shared_stages). The executor is opened once per command (a pool of local workers,
a Ray, a Slurm session), before the shared stages, and given both batches. Every executor then runs
the same `run_task` (tasks) on the same SuiteContext: a task writes its stages into the shared
results folder through the stage store (a lock per stage key, atomic renames) and returns
its record, so the results do not depend on the executor. The reference's evaluation is one
more task, run beside the first runs.

A session (what `open_session` returns) is a context manager with `run(batch)`, `drain()` and
`aggregate_processes()`; a batch is a Fanout (tasks) or bench.run.shared_stages.SharedStages.
"""
from __future__ import annotations

import importlib

# The registry: executor.kind -> the module that opens it, each with a module-level
# `session(config, out, note, *, tasks)`. Named, not discovered by importing every module of
# the package (trainers.registry's way): importing worker_warmup warms up a forkserver, which
# only the forkserver may do. `inprocess` has no session: the parent runs each run itself.
EXECUTORS = {"local": "local_workers", "ray": "ray_tasks", "slurm": "slurm_jobs"}


def open_session(config, out, note, *, tasks: int):
    """The executor for one command (`config`: the suite's executor section): its local workers,
    a Ray, or Slurm; `tasks` caps how many local workers start (no more workers than tasks)."""
    module = importlib.import_module(f"{__name__}.{EXECUTORS[config.kind]}")
    return module.session(config, out, note, tasks=tasks)
