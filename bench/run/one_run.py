"""One run's train and evaluate, as the in-process runner and every executor's task do it.

A failure is recorded on the run's record with its reason and a log, never raised: one broken
run must not lose the others' results.
"""
from __future__ import annotations

import json
import traceback
from pathlib import Path
from types import SimpleNamespace

from bench.tables.aggregate import PolicyRecord
from bench.errors import BenchError


def train_and_evaluate(run, ctx, store, out: Path, bar) -> PolicyRecord:
    """Train one run and evaluate it; a failure is recorded on the record, never raised."""
    from bench.run import pipeline

    record = PolicyRecord(run_id=run.run_id, label=run.label, objective=pipeline.objective_name(run),
                          params=json.dumps(run.params, sort_keys=True), seed=run.seed)
    try:
        evaluated = pipeline.discarded_evaluation(run, ctx, store)
        if evaluated is not None:      # weights deleted after an evaluation that still holds
            work = store.work_dir("train", pipeline.train_key(run, ctx, store))
            steps = json.loads((work / pipeline.DISCARDED).read_text())["steps"]
            record.train_summary = pipeline.train_summary(SimpleNamespace(steps=steps, log_path=work / "train_log.jsonl"))
            record.checkpoint, record.checkpoint_kept, record.eval_dir = str(work / "checkpoint"), False, evaluated
            return record
        bar.stage("train", run)
        result = pipeline.train_run(run, ctx, store)
        record.train_summary = pipeline.train_summary(result)
        if result.status != "ok":
            fail(record, result.reason or "training failed", out)
            return record
        record.checkpoint = str(result.checkpoint)
        bar.stage("evaluate", run)
        record.eval_dir = pipeline.evaluate_run(run, result.checkpoint, ctx, store)
        if not ctx.suite.keep_checkpoints:
            pipeline.discard_checkpoint(result.checkpoint)
            record.checkpoint_kept = False
    except BenchError as err:
        fail(record, str(err), out)
    except Exception as err:  # isolate: one broken run must not lose the others' results
        fail(record, f"{type(err).__name__}: {err}".splitlines()[0], out, traceback.format_exc())
    finally:
        bar.run_done()
        if ctx.reuse_stale:
            record.stale_code = pipeline.stale_stages(run, ctx, store)
    return record


def fail(record: PolicyRecord, reason: str, out: Path, detail: str | None = None) -> None:
    record.status, record.reason = "failed", reason
    where = write_log(out / "logs" / f"{record.run_id}.log", (detail or reason) + "\n")
    if where.startswith("the traceback could not"):
        record.reason = f"{reason} ({where})"


def write_log(path: Path, text: str) -> str:
    """Write a log; returns the words naming it. A full or read-only disk is reported in those
    words instead of raising, so the error being logged still reaches the screen as one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as err:
        return f"the traceback could not be written to {path}: {err.strerror or err}"
    return f"traceback in {path}"
