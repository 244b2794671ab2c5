"""Run a suite: the stages of docs/DESIGN.md section 3, each cached by the hash of its inputs.

    data -> base (model + optional SFT reference) -> reward -> ref_logps -> train (per run)
         -> evaluate (reference once, then every trained policy) -> aggregate

A finished stage is never redone; a killed run resumes (training resumes from its last
saved state); one failed run is recorded with its reason and the others continue.
"""
from __future__ import annotations

import gc
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench.suite.load import complete_suite, read_suite
from bench.suite.schema import Suite
from bench.errors import BenchError

@dataclass
class RunSummary:
    suite: str
    out_dir: Path
    total: int
    failed: list[tuple[str, str, Path]] = field(default_factory=list)   # (label, reason, log)
    leaderboard: str = ""
    seconds: float = 0.0
    computed: int = 0
    reused: int = 0
    repaired: int = 0      # of the computed: recomputed because their cached files were damaged
    stage_failures: list[str] = field(default_factory=list)   # a stage that failed alone (the LLM judge)
    stale: list = field(default_factory=list)       # --reuse-stale: stages taken from other code
    left_out: list = field(default_factory=list)    # runs of the suite in no table: never run by this code
    kept_apart: Path | None = None   # where the table of another suite that was in the folder went

    def text(self) -> str:
        lines = [self.leaderboard.rstrip(), ""] if self.leaderboard else []
        lines.append(f"suite {self.suite}: {self.total - len(self.failed)}/{self.total} runs ok in "
                     f"{self.seconds:.0f}s ({self.computed} stages computed, {self.reused} reused"
                     f"{f', {self.repaired} recomputed because their files were damaged' if self.repaired else ''}); "
                     f"results in {self.out_dir}")
        if self.kept_apart:
            lines.append(f"the folder held the table of another suite (or other settings): moved to {self.kept_apart}")
        if self.stale:
            lines.append(f"--reuse-stale: {len(self.stale)} stage(s) made by other code were reused "
                         f"(runs.parquet, column stale_code): {', '.join(self.stale[:4])}"
                         + (" ..." if len(self.stale) > 4 else ""))
        if self.left_out:
            lines.append(f"not in the table: {len(self.left_out)} run(s) of this suite this code has not run in this "
                         f"folder ({', '.join(self.left_out[:4])}{' ...' if len(self.left_out) > 4 else ''}); "
                         "run them (without --only) to include them")
        for label, reason, log in self.failed:
            lines.append(f"FAILED {label}: {reason} (log: {log})")
        lines += [f"FAILED stage {line}" for line in self.stage_failures]
        return "\n".join(lines)


def run_suite(suite_path, *, overrides=(), out_dir=None, only=(), progress=True, executor=None,
              workers=None, reuse_stale: bool = False) -> RunSummary:
    """Run a suite file (with `--set` overrides), or a `Suite` that `load_suite` returned;
    `executor` and `workers` override its `executor:` section (bench.executors).
    `reuse_stale`: stages made by other code stand in for missing ones (bench.run.store)."""
    started = time.time()
    chosen = {key: value for key, value in (("kind", executor), ("workers", workers)) if value}
    if isinstance(suite_path, Suite):
        if overrides:
            raise BenchError("overrides apply when a suite file is loaded; pass them to load_suite")
        suite = suite_path
        if chosen:
            section = type(suite.executor).model_validate({**suite.executor.model_dump(), **chosen})
            suite = suite.model_copy(update={"executor": section})
    else:
        suite = read_suite(suite_path, list(overrides) + [f"executor.{key}={value}" for key, value in chosen.items()])
    from bench.executors import local_workers

    # The local CPU workers' forkserver starts now, before this process imports torch and the
    # stages' libraries, so that its own imports overlap everything up to the fan-out.
    local_workers.start_early(suite.executor, suite.generation.backend)
    try:
        if not suite.expanded:
            suite = complete_suite(suite)
        if suite.executor.kind == "local":   # GPUs asked for and not here: said before any stage
            local_workers.plan(suite.executor)
        from bench.run.progress import quiet_library_noise

        quiet_library_noise()
        return _run_suite(suite, only, out_dir, progress, started, reuse_stale)
    finally:
        local_workers.stop_forkserver()


def _run_suite(suite: Suite, only, out_dir, progress: bool, started: float, reuse_stale: bool = False) -> RunSummary:
    from bench.run import store as stage_lib
    from bench.run.context import write_resolved_suite
    from bench.run.one_run import write_log
    from bench.run.phases import PhaseClock
    from bench.run.progress import StageProgress
    # What `validate` checks cheaply and a later stage would only find after the data, SFT,
    # reward-model and reference stages: checked now, before any stage runs.
    from bench.suite.validate import (check_accelerate_config, check_backend, check_judge, check_lm_eval_tasks,
                                      check_scorers)

    check_backend(suite)
    check_scorers(suite)
    check_judge(suite)        # one tiny request to the judge server, before any stage
    check_lm_eval_tasks(suite)
    if suite.launcher == "accelerate":
        check_accelerate_config(suite)
    runs = select_runs(suite.runs, only)
    out = Path(out_dir) if out_dir else Path("results") / suite.name
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise BenchError(f"--out: cannot write results to {out}: {err.strerror or err}") from None
    # One run per results folder at a time; a second one stops here in one line naming the holder.
    with stage_lib.FolderLock(out):
        store = stage_lib.StageStore(out, reuse_stale=reuse_stale)
        removed = store.clean_leftovers()
        if removed:
            stage_lib.say(f"removed {len(removed)} temporary leftover(s) of killed stages under {store.root}")
        apart = keep_apart(suite, out)
        write_resolved_suite(suite, out)
        bar = StageProgress(total_runs=len(runs), enabled=progress)
        clock = PhaseClock(suite.executor.kind, started)
        try:
            records, leaderboard, stage_failures, left_out = _run_stages(suite, Path(suite.source), runs, store,
                                                                         out, bar, progress, clock)
        except BenchError:
            raise
        except Exception as err:  # a suite-level stage broke: one line here, the traceback in a log
            where = write_log(out / "logs" / "suite.log", traceback.format_exc())
            raise BenchError(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
                             f"({where}; finished stages are kept)") from None
    clock.write(out)
    failures = [(f"{r.label} seed={r.seed}", r.reason, out / "logs" / f"{r.run_id}.log")
                for r in records if r.status != "ok"]
    return RunSummary(suite=suite.name, out_dir=out, total=len(runs), failed=failures, leaderboard=leaderboard,
                      seconds=time.time() - started, computed=len(store.computed), reused=len(store.reused),
                      repaired=len(store.repaired), stage_failures=stage_failures, stale=sorted(set(store.stale)),
                      left_out=left_out, kept_apart=apart)


def _run_stages(suite, suite_path: Path, runs, store, out: Path, bar, progress: bool, clock):
    from bench.run import pipeline
    from bench.run.one_run import train_and_evaluate
    from bench.run.prepare import prepare, read_pairs
    from bench.run.progress import GridProgress
    from trainers.devices import settle_memory

    def aggregate(ctx, reference_eval, records, pool=None):
        # The folder's table holds every run of the suite finished here by this code, not only
        # those this command computed (--only): the others are read back from their stages.
        table, left_out = folder_records(suite, ctx, store, runs, records, out)
        # The pairwise scorers (the LLM judge) read every stored evaluation of the table; one that
        # fails fails alone: the runs keep every other column, the judge's stored answers are kept.
        failures = pipeline.judge_runs(ctx, store, out, reference_eval, table, bar)
        bar.stage("aggregate")
        if suite.executor.kind == "inprocess":
            settle_memory()     # the runs' models and tensors freed, what is left frozen (trainers.devices)
        else:
            # An executor's parent trained nothing: there is nothing to collect, and a full
            # collection over its imports took ~0.4 s here. What is alive is only frozen, so the
            # aggregate's own collections do not scan it.
            gc.freeze()
        from bench.gate.integrity import record as record_invariants

        # invariants.json: what the gate checks exactly, from the pairs as the stages read them;
        # written with the tables, so not again when the aggregate is reused
        leaderboard = pipeline.aggregate(
            suite, ctx, out, reference_eval, table, suite.runs, store, pool=pool,
            write_invariants=lambda: record_invariants(out, ctx, store, table, suite.runs, read_pairs))
        clock.mark("aggregated")
        bar.close()
        return records, leaderboard, failures, left_out

    try:
        if suite.executor.kind == "inprocess":
            ctx = prepare(suite, suite_path, store, runs, bar, progress=progress)
            clock.mark("prepared")
            reference_eval = pipeline.evaluate_reference(ctx, store, bar)
            records = []
            for run in runs:
                settle_memory()
                records.append(train_and_evaluate(run, ctx, store, out, bar))
            clock.mark("runs_done")
            return aggregate(ctx, reference_eval, records)
        from bench.executors import open_session

        grid = GridProgress(total_runs=len(runs), enabled=progress)
        # Opened before the shared stages: a Ray or Slurm GPU over-ask is refused before any of
        # them, and the local workers start (import torch...) while the parent computes them.
        with open_session(suite.executor, out, grid.note, tasks=len(runs) + 1) as session:
            ctx = prepare(suite, suite_path, store, runs, bar, progress=progress, session=session)
            clock.mark("prepared")
            grid.begin()
            # The aggregate's libraries are imported while the runs are under way elsewhere (the
            # parent only waits for them): ~3 s of the aggregate here, off its path.
            importing = threading.Thread(target=pipeline.import_aggregate_modules, name="aggregate-imports",
                                         daemon=True)
            importing.start()
            # the shared stages are done: each run (and the reference's evaluation) is one task
            reference_eval, records = fan_out(session, ctx, runs, out, store, grid)
            importing.join()
            clock.mark("runs_done")
            session.drain()      # the workers end while the parent aggregates
            with session.aggregate_processes() as pool:
                return aggregate(ctx, reference_eval, records, pool)
    finally:
        gc.unfreeze()   # what settle_memory froze is the suite's: collectable again after it


SUPERSEDED = "superseded"


def keep_apart(suite, out: Path) -> Path | None:
    """A results folder whose table was written for another suite (another file, or other
    settings: the resolved suite's hash differs) keeps that table apart, in
    `superseded/<its hash>/`, rather than mixing its runs with this suite's or losing them.
    Its stages stay where they are, shared by key. Returns where it went (None: nothing moved)."""
    import shutil

    from bench.run import aggregate_cache
    from bench.run.context import SUITE_FILE, SUITE_HASH, write_resolved_suite

    old = out / SUITE_HASH
    if not old.is_file() or not (out / "runs.parquet").is_file():
        return None
    was = old.read_text().strip()
    probe = out / ".suite-probe"
    probe.mkdir(exist_ok=True)
    now = write_resolved_suite(suite, probe)
    shutil.rmtree(probe, ignore_errors=True)
    if was == now:
        return None
    where = out / SUPERSEDED / was[:12]
    where.mkdir(parents=True, exist_ok=True)
    for rel in sorted(aggregate_cache.outputs(out)) + [SUITE_FILE, SUITE_HASH]:
        source = out / rel
        if source.is_file():
            (where / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, where / rel)
    return where


def folder_records(suite, ctx, store, runs, records, out: Path):
    """(the records of every run of the suite stored in the folder, in suite order; the labels
    of those that are not). A run of the suite this command did not select (--only) is in the
    table when its training and evaluation by this code are stored; one made only by other code
    is left out (and named), never mixed into this code's table."""
    from bench.executors.tasks import Task, run_task
    from bench.run import pipeline

    by_id = {record.run_id: record for record in records}
    table, left_out = [], []
    for index, run in enumerate(suite.runs):
        if run.run_id in by_id:
            table.append(by_id[run.run_id])
        elif pipeline.run_is_stored(run, ctx, store):
            table.append(run_task(Task(index, run), ctx, out).record)
        else:
            left_out.append(f"{run.label} seed={run.seed}")
    return table, left_out


def select_runs(runs, only):
    if not only:
        return runs
    chosen = [r for r in runs if any(name in (r.label, r.objective_spec[0]["name"], r.run_id) for name in only)]
    if not chosen:
        labels = sorted({r.label for r in runs})
        raise BenchError(f"--only {', '.join(only)} matches no run; labels are: {', '.join(labels)}")
    return chosen


def fan_out(session, ctx, runs, out: Path, store, progress):
    """Every run (and the reference's evaluation) as a task on the executor session
    (bench.executors); returns (reference evaluation, records in suite order)."""
    from bench.executors.tasks import Fanout, quiet_context

    fanout = Fanout(quiet_context(ctx), runs, out, progress)
    fanout.read_stored(store)
    if fanout.tasks:
        session.run(fanout)
    progress.close()
    return fanout.outcome(store)
