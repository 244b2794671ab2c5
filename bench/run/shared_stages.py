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
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError
from bench.hashing import content_hash
from bench.run.store import StageStore

TIMES_FILE = "shared_stages.jsonl"     # under <out>/logs


# ---------------------------------------------------------------- the two stages (prepare calls them too)
def reward_stage(suite, store: StageStore, data_key: str, base_key: str, reference_dir: Path, train_pairs, *,
                 progress, codes: dict | None = None) -> Path | None:
    """The judge: a loaded reward model, or one trained (Bradley–Terry) on the train pairs.

    A trained one starts from the reference policy (the SFT model), as InstructGPT's reward
    model starts from its SFT model: it then already reads the task, and the score head
    learns what separates chosen from rejected rather than the language from scratch.
    """
    cfg = suite.reward_model
    if cfg.kind == "none" or not suite.scoring.reward_model:
        return None
    if cfg.kind == "load":
        from trainers.models import resolve_model

        return Path(resolve_model(cfg.path))
    from bench.evaluation.scoring.reward_model import train_reward_model

    key = reward_key(suite, data_key, base_key, store, codes)

    def build(tmp: Path):
        # Trained by the one training loop in a work folder of its own, so a killed run resumes it.
        train_reward_model(train_pairs, str(reference_dir), tmp / "model", config=cfg.training, progress=progress,
                           pair_kind=_pair_kind_function(suite), trust_remote_code=suite.model.trust_remote_code,
                           work_dir=store.work_dir("reward_train", key))

    model = store.run("reward", key, build) / "model"
    # The stage holds the finished model: the training folder's copy and resume state go.
    shutil.rmtree(store.path("reward_train", key), ignore_errors=True)
    return model


def reward_key(suite, data_key: str, base_key: str, store: StageStore, codes: dict | None = None) -> str | None:
    """The trained reward model's stage key; None when the suite trains none. `codes`: the
    suite's stage codes when the caller has them (bench.run.prepare), else computed here."""
    from bench.run.code_keys import stage_codes

    cfg = suite.reward_model
    if cfg.kind != "train" or not suite.scoring.reward_model:
        return None
    return store.key("reward", content_hash("reward", cfg, data_key, base_key, suite.data.source,
                                            suite.model.trust_remote_code), (codes or stage_codes(suite))["reward"])


def reference_stage(suite, reference_dir: Path, train_data, drift_data, cache_dir: Path, *, progress: bool):
    """(reference log-probs of the training pairs, of the drift pairs); None for data not given.
    Cached in `cache_dir` by the model's and the data's contents: a second call reads them."""
    from trainers.reference import reference_logps

    training = suite.training
    pack_to = training.max_length if training.packing else None
    return tuple(None if data is None else
                 reference_logps(str(reference_dir), data, batch_size=training.batch_size * 2, cache_dir=cache_dir,
                                 progress=progress, pack_to=pack_to, trust_remote_code=suite.model.trust_remote_code)
                 for data in (train_data, drift_data))


def _pair_kind_function(suite):
    """The builtin task's pair classifier (which confound a pair carries), else None."""
    from bench.data.tasks import builtin_pair_kind

    return builtin_pair_kind(suite.data.source)


# ---------------------------------------------------------------- as tasks on an executor
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
    started = time.time()
    store = StageStore(Path(out), reuse_stale=inputs.get("reuse_stale", False))
    error = None
    try:
        if task.name == "reward":
            reward_stage(inputs["suite"], store, inputs["data_key"], inputs["base_key"],
                         inputs["reference_dir"], inputs["train_pairs"], progress=False, codes=inputs.get("codes"))
        else:
            reference_stage(inputs["suite"], inputs["reference_dir"], inputs["train_data"],
                            inputs["drift_data"], inputs.get("ref_cache", store.root / "ref_logps"), progress=False)
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


def to_compute(suite, store, *, data_key, base_key, reference_dir, train_data, drift_data, ref_cache,
               codes: dict | None = None) -> list[str]:
    """The independent shared stages this suite needs and that are not finished yet."""
    from trainers.reference import CACHE_PREFIX, cache_key

    names = []
    key = reward_key(suite, data_key, base_key, store, codes)
    if key is not None and not store.is_done("reward", key):
        names.append("reward")
    cache = Path(ref_cache)
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
