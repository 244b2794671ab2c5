"""Stand-in tasks for the executor tests: each does what the test's context says, in seconds.

They run in the executors' workers (spawned processes, Ray tasks, submitit jobs), so they are
module-level functions importable as `tests.helpers_executors`.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

from bench.executors.tasks import TaskResult
from bench.tables.aggregate import PolicyRecord


def fake_runs(labels) -> list:
    return [SimpleNamespace(run_id=f"{label}-0", label=label, seed=0, params={}, objective_spec=[{"name": label}])
            for label in labels]


def fake_task(task, ctx: dict, out: str) -> TaskResult:
    """`ctx[label]` says what the run does: "ok", "raise", "together" (waits for the other
    "together" runs to start), or "wait" (until out/release exists, noting a KeyboardInterrupt
    in out/<label>.stopped). Every run notes its pid in out/<label>.pid."""
    label = "reference" if task.run is None else task.run.label
    what = ctx.get(label, "ok")
    Path(out, f"{label}.pid").write_text(str(os.getpid()))
    if what == "together":        # wait until every "together" run has started: they run side by side
        others = [name for name, how in ctx.items() if how == "together"]
        deadline = time.time() + 60
        while not all(Path(out, f"{name}.pid").exists() for name in others) and time.time() < deadline:
            time.sleep(0.05)
    if what == "raise":
        raise RuntimeError("boom in " + label)
    if what == "wait":
        try:
            deadline = time.time() + 120
            while not Path(out, "release").exists() and time.time() < deadline:
                time.sleep(0.05)
        except KeyboardInterrupt:
            Path(out, f"{label}.stopped").write_text("SIGINT")
            raise
    import torch

    seen = dict(threads=torch.get_num_threads(), cuda=os.environ.get("CUDA_VISIBLE_DEVICES"), pid=os.getpid(),
                omp=os.environ.get("OMP_NUM_THREADS"), rayon=os.environ.get("RAYON_NUM_THREADS"))
    if task.run is None:
        return TaskResult(index=task.index, reference_eval=Path(out))
    record = PolicyRecord(run_id=task.run.run_id, label=label, objective=label, params="{}", seed=0,
                          train_summary=seen)
    Path(out, f"{label}.done").write_text(json.dumps(seen))
    return TaskResult(index=task.index, record=record, computed=[f"train/{label}"])


WARM_MODULES = ("lm_eval.evaluator", "transformers.modeling_utils", "bench.evaluation.evaluate", "trainers.trainer")


def warm_state(task, ctx: dict, out: str) -> TaskResult:
    """What a worker holds when its task begins: the warm-up's modules and lm-eval's
    environment record (bench.executors.worker_warmup), those of the context's `backend_modules`
    it has imported, and the PREFBENCH_TEST_PROBE it sees."""
    import sys

    recorded = False
    if "bench.evaluation.scoring.lm_eval_scorer" in sys.modules:
        recorded = sys.modules["bench.evaluation.scoring.lm_eval_scorer"]._environment_info.cache_info().currsize == 1
    seen = dict(modules=[m for m in WARM_MODULES if m in sys.modules], recorded=recorded,
                probe=os.environ.get("PREFBENCH_TEST_PROBE"), pid=os.getpid(),
                backend_modules=[m for m in ctx.get("backend_modules", ()) if m in sys.modules])
    record = PolicyRecord(run_id=task.run.run_id, label=task.run.label, objective="x", params="{}", seed=0,
                          train_summary=seen)
    return TaskResult(index=task.index, record=record)


class Progress:
    """Records what the executor reports."""

    def __init__(self):
        self.events = []

    def note(self, text):
        self.events.append(("note", text))

    def started(self, name):
        self.events.append(("started", name))

    def finished(self, name, ok, reason=None):
        self.events.append(("finished", name, ok))

    def close(self):
        self.events.append(("close",))


def fanout(ctx: dict, labels, out: Path, function=fake_task, with_reference: bool = True):
    from bench.executors.tasks import Fanout

    return Fanout(ctx, fake_runs(labels), out, Progress(), function=function, with_reference=with_reference)


def config(kind="local", **fields):
    from bench.suite.executor import ExecutorSection

    return ExecutorSection(kind=kind, **fields)


def outcome(fan):
    store = SimpleNamespace(computed=[], reused=[], repaired=[])
    reference, records = fan.outcome(store)
    return {r.label: r for r in records}, store
