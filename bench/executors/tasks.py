"""What every executor shares: a task (one run's train and evaluate, or the reference's
evaluation), its result, the batch of a suite's runs (Fanout), and what a worker does before
its first task (pin_threads). The executors themselves: this package's other modules
(bench.executors, the registry).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError

REFERENCE_TASK = "reference"


@dataclass(frozen=True)
class Task:
    index: int                # position in the suite's run order (the results' row order); -1: reference
    run: object = None        # RunSpec; None for the reference's evaluation

    @property
    def name(self) -> str:
        return REFERENCE_TASK if self.run is None else f"{self.run.label} seed={self.run.seed}"


@dataclass
class TaskResult:
    index: int
    record: object = None             # PolicyRecord of a run
    reference_eval: Path | None = None
    computed: list = field(default_factory=list)
    reused: list = field(default_factory=list)
    repaired: list = field(default_factory=list)


def run_task(task: Task, ctx, out) -> TaskResult:
    """One task, on whichever machine: a run's train and evaluate, or the reference's evaluation."""
    from bench.run import pipeline
    from bench.run.one_run import train_and_evaluate
    from bench.run.progress import StageProgress
    from bench.run.store import StageStore

    store = StageStore(Path(out), reuse_stale=ctx.reuse_stale)
    quiet = StageProgress(total_runs=1, enabled=False)   # the parent draws the one progress view
    result = TaskResult(index=task.index)
    if task.run is None:
        result.reference_eval = pipeline.evaluate_reference(ctx, store, quiet)
    else:
        result.record = train_and_evaluate(task.run, ctx, store, Path(out), quiet)
    result.computed, result.reused, result.repaired = store.computed, store.reused, store.repaired
    return result


def quiet_context(ctx):
    """The context a worker gets: no inner progress bars (several workers would tear them apart)."""
    return dataclasses.replace(ctx, progress=False, eval_ctx=dataclasses.replace(ctx.eval_ctx, progress=False))


def pin_threads(threads: int, devices: list[str] | None = None) -> None:
    """Limit this process to `threads` CPU threads and, when given, to these GPUs. Called in a
    worker before its first model: CUDA reads CUDA_VISIBLE_DEVICES once, at its first use."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    # RAYON_NUM_THREADS: the Rust tokenizers' pool (one thread per core by default), read when
    # tokenizers is first used, which is after this.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


def failed_record(task: Task, reason: str, out: Path):
    """The record of a run whose worker died or could not report: failed, with its reason logged."""
    from bench.run import pipeline
    from bench.run.one_run import fail
    from bench.tables.aggregate import PolicyRecord

    run = task.run
    record = PolicyRecord(run_id=run.run_id, label=run.label, objective=pipeline.objective_name(run),
                          params=json.dumps(run.params, sort_keys=True), seed=run.seed)
    fail(record, reason, Path(out))
    return record


def describe_death(exitcode: int | None, pid: int | None) -> str:
    """Words for a worker that ended without reporting: which signal, or which exit code."""
    who = f"its worker (pid {pid})" if pid else "its worker"
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        how = f"was killed by {name}"
    else:
        how = f"exited with code {exitcode}"
    return f"{who} {how}; finished stages are kept, run the same command again to resume it"


class Fanout:
    """What every executor shares: the tasks, their results in suite order, the progress view.
    (The other batch an executor runs: bench.run.shared_stages.SharedStages.)"""

    key = "runs"      # the batch's name: a local worker keeps one batch's context at a time

    def __init__(self, ctx, runs, out: Path, progress, *, with_reference: bool = True, function=None):
        self.out = Path(out)
        self.ctx = ctx
        self.function = function or run_task     # a module-level function: it travels by pickle
        self._payload = None
        self.reference_failure: str | None = None
        self.tasks = ([Task(-1)] if with_reference else []) + [Task(i, run) for i, run in enumerate(runs)]
        self.results: dict[int, TaskResult] = {}
        self.progress = progress

    def payload(self) -> bytes:
        """The context, pickled once for every worker; each unpickles it after pinning its GPUs."""
        if self._payload is None:
            self._payload = pickle.dumps(self.ctx)
        return self._payload

    def started(self, task: Task) -> None:
        if task.run is not None:
            self.progress.started(task.name)

    def finished(self, task: Task, result: TaskResult) -> None:
        self.results[task.index] = result
        if task.run is not None:
            self.progress.finished(task.name, ok=result.record.status == "ok", reason=result.record.reason)

    def failed(self, task: Task, reason: str) -> None:
        """A task whose worker ended without a result: its run is recorded as failed. Without
        the reference's evaluation there is no table: the suite fails, once the runs under way
        have finished (their stages are kept for the rerun)."""
        if task.run is None:
            self.reference_failure = reason
            return
        self.finished(task, TaskResult(index=task.index, record=failed_record(task, reason, self.out)))

    def read_stored(self, store) -> None:
        """Tasks whose stages are all stored are read here, in the parent, and leave the batch:
        a rerun of a finished suite sends no task to a worker (whose start, imports included,
        costs more than reading the run)."""
        from bench.run import pipeline

        left, runs_read = [], 0
        for task in self.tasks:
            if (pipeline.reference_is_stored(self.ctx, store) if task.run is None
                    else pipeline.run_is_stored(task.run, self.ctx, store)):
                self.results[task.index] = run_task(task, self.ctx, self.out)
                runs_read += task.run is not None
            else:
                left.append(task)
        self.progress.found_stored(runs_read)
        self.tasks = left

    def outcome(self, store):
        """(reference evaluation folder, run records in suite order); the workers' stage counts
        are added to the parent's store."""
        if self.reference_failure:
            raise BenchError(f"the reference's evaluation failed: {self.reference_failure}")
        for index in sorted(self.results):
            result = self.results[index]
            store.computed += result.computed
            store.reused += result.reused
            store.repaired += result.repaired
        reference = self.results.get(-1)
        records = [self.results[index].record for index in sorted(self.results) if index >= 0]
        return (reference.reference_eval if reference else None), records


def wait_or_kill(procs, seconds: float) -> None:
    """Wait up to `seconds` for every process to end; kill those still alive."""
    deadline = time.monotonic() + seconds
    procs = [proc for proc in procs if proc.pid is not None]     # never started: nothing to wait for
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10)
