"""The shared stages that do not depend on each other, side by side on the executor.

    data -> base (init, SFT reference) -> { reward model | reference log-probs }

The reward model and the reference log-probs (of the training pairs and of the drift pairs)
both start from the SFT reference and need nothing from each other, so under the local, Ray
and Slurm executors each is one task on the executor's own workers, run at the same time.
Data and the SFT reference stay in the parent, one after the other: the SFT trains on the
data's pairs (`sft.data: chosen`), and the batch-size check runs between them. `inprocess`
never comes here and computes them one after the other, as before.

A task writes what it computes where the parent would (the reward model's stage folder, the
reference log-probs' cache), so the parent then reads them back as reused and the results do
not depend on where they were computed. Only stages still to compute become tasks: with one
left, the parent computes it itself (no concurrency to gain from a task). Each task's start
and end times go to `logs/shared_stages.jsonl`, the record that they overlapped.
"""
from __future__ import annotations

import json
import os
import pickle
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError

TIMES_FILE = "shared_stages.jsonl"     # under <out>/logs


@dataclass(frozen=True)
class StageTask:
    name: str                # "reward" or "ref_logps"
    run = None               # not a run (the executors' progress counts runs only)


@dataclass
class StageResult:
    name: str
    started: float
    ended: float
    pid: int
    computed: list = field(default_factory=list)
    reused: list = field(default_factory=list)
    repaired: list = field(default_factory=list)
    error: str | None = None     # why the stage failed, one line


def run_shared_stage(task: StageTask, inputs: dict, out: str) -> StageResult:
    """One shared stage, on whichever worker: computes it into the results folder. A failure
    comes back in the result (`error`, one line), not as an exception, which each executor
    would word its own way (a Ray task's is its whole traceback)."""
    from bench.run import prepare
    from bench.run.store import StageStore

    started = time.time()
    store = StageStore(Path(out))
    error = None
    try:
        if task.name == "reward":
            prepare.reward_stage(inputs["suite"], store, inputs["data_key"], inputs["base_key"],
                                 inputs["reference_dir"], inputs["train_pairs"], progress=False)
        else:
            prepare.reference_stage(inputs["suite"], inputs["reference_dir"], inputs["train_data"],
                                    inputs["drift_data"], store.root / "ref_logps", progress=False)
    except BenchError as err:
        error = str(err)
    except Exception as err:  # noqa: BLE001 - one line to the parent, the traceback in a log beside the runs'
        from bench.run.one_run import write_log

        where = write_log(Path(out) / "logs" / f"shared-{task.name}.log", traceback.format_exc())
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        error = f"{type(err).__name__}: {first} ({where})"
    return StageResult(name=task.name, started=started, ended=time.time(), pid=os.getpid(),
                       computed=store.computed, reused=store.reused, repaired=store.repaired, error=error)


class SharedStages:
    """A batch of shared-stage tasks for an executor session (the interface of `Fanout`)."""

    key = "shared"

    def __init__(self, names, inputs: dict, out: Path, bar):
        self.tasks = [StageTask(name) for name in names]
        self.inputs, self.out, self.bar = inputs, Path(out), bar
        self.function = run_shared_stage
        self.results: dict[str, StageResult] = {}
        self.failures: dict[str, str] = {}

    def payload(self) -> bytes:
        return pickle.dumps(self.inputs)

    def started(self, task) -> None:
        pass

    def finished(self, task, result: StageResult) -> None:
        if result.error is not None:
            self.failures[task.name] = result.error
        else:
            self.results[task.name] = result

    def failed(self, task, reason: str) -> None:
        """The task's worker died or could not report (the stage function itself never raises)."""
        self.failures[task.name] = reason


def to_compute(suite, store, *, data_key, base_key, reference_dir, train_data, drift_data) -> list[str]:
    """The independent shared stages this suite needs and that are not finished yet."""
    from trainers.reference import CACHE_PREFIX, cache_key

    from bench.run.prepare import reward_key

    names = []
    key = reward_key(suite, data_key, base_key)
    if key is not None and not store.is_done("reward", key):
        names.append("reward")
    cache = store.root / "ref_logps"
    if any(data is not None and not (cache / f"{CACHE_PREFIX}{cache_key(str(reference_dir), data)}.safetensors").exists()
           for data in (train_data, drift_data)):
        names.append("ref_logps")
    return names


def run_side_by_side(session, names, inputs: dict, store, bar) -> None:
    """The stages `names` as tasks of one batch on the executor session; their stage counts
    join the parent's store, their times go to logs/shared_stages.jsonl."""
    batch = SharedStages(names, inputs, store.out, bar)
    bar.stage(" + ".join(names) + " (side by side)")
    session.run(batch)
    if batch.failures:
        raise BenchError("; ".join(f"the {name} stage failed: {batch.failures[name]}" for name in names
                                   if name in batch.failures) + "; finished stages are kept")
    log = store.out / "logs" / TIMES_FILE
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        for name in names:
            result = batch.results[name]
            store.computed += result.computed
            store.reused += result.reused
            store.repaired += result.repaired
            fh.write(json.dumps(dict(stage=name, started=result.started, ended=result.ended, pid=result.pid)) + "\n")
