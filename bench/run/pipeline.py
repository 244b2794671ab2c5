"""The stage functions the runner strings together (one function per stage of docs/DESIGN.md §3).

Every stage's cache key is the hash of everything its output depends on, the code that
computes it included (bench.run.code_keys), so a change to one section of a suite, or to one
objective's module, redoes exactly the stages downstream of it.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable

from bench.tables.aggregate import PolicyRecord, policy_rows, policy_units
from bench.evaluation.evaluate import chosen_judgments, evaluate_policy
from bench.evaluation.scoring.registry import listed_sample_metrics
from bench.hashing import content_hash
from bench.run.store import DISCARDED_NOTE, StageStore
from bench.run.context import REFERENCE_ID, SUITE_HASH, SuiteContext


# ---------------------------------------------------------------- data


# ---------------------------------------------------------------- base model / SFT reference


# ---------------------------------------------------------------- reward model


# ---------------------------------------------------------------- everything before training


# ---------------------------------------------------------------- train and evaluate
def train_config_key(run, ctx: SuiteContext) -> str:
    """What a run's training reads: its run id (objective, hyperparameters, training settings,
    seed), the data and the reference policy."""
    return content_hash("train", run.run_id, ctx.data_key, ctx.base_key)


def train_key(run, ctx: SuiteContext, store: StageStore) -> str:
    """The train stage's key: what it reads and the code of this run's objective and trainer
    (bench.run.code_keys); with --reuse-stale, a finished training by other code stands in."""
    return store.key("train", train_config_key(run, ctx), ctx.codes[f"train:{run.run_id}"])


def stale_stages(run, ctx: SuiteContext, store: StageStore) -> list[str]:
    """The stages of this run (and the suite-wide ones) that --reuse-stale took from other code."""
    mine = f"train/{train_key(run, ctx, store)}"
    return list(ctx.stale) + ([mine] if mine in store.stale else [])


def train_run(run, ctx: SuiteContext, store: StageStore):
    from trainers.trainer import train

    key = train_key(run, ctx, store)
    out_dir = store.work_dir("train", key)
    # One writer of a run's resume state: a worker orphaned by a killed parent and the rerun's
    # worker would otherwise train the same run at once.
    with store.lock("train", key):
        if ctx.suite.launcher == "accelerate":
            from bench.run.launch import train_with_accelerate

            result = train_with_accelerate(run, ctx, out_dir)
        else:
            result = train(model_path=str(ctx.reference_dir), objective=run.objective,
                           train_data=ctx.train_data, config=run.training, out_dir=out_dir,
                           reference=ctx.ref_logps if run.needs_reference else None, progress=ctx.progress,
                           trust_remote_code=ctx.suite.model.trust_remote_code)
    store.count("train", key, reused=getattr(result, "started_at", 0) is None)
    return result


def train_summary(result) -> dict:
    from trainers.trainer import read_log_lines

    summary = {"steps": result.steps}
    rows = read_log_lines(result.log_path) if result.log_path and Path(result.log_path).exists() else []
    if rows:   # a damaged log loses its damaged lines, never the run
        summary["final_loss"] = rows[-1][1].get("loss")
    summary["train_log"] = str(result.log_path)
    return summary


def evaluate_key(run, ctx: SuiteContext, store: StageStore) -> str:
    """A run's evaluation: keyed by its training's key (so a policy trained anew is evaluated
    anew) and the evaluation's settings and code (in eval_key). Never taken from other
    evaluation code, even with --reuse-stale: the reference's evaluation and the runs' must be
    of one code to be compared."""
    return content_hash("evaluate", train_key(run, ctx, store), ctx.eval_key)


def evaluate_run(run, checkpoint, ctx: SuiteContext, store: StageStore) -> Path:
    def build(tmp: Path) -> dict:
        return {**evaluate_policy(Path(checkpoint), ctx.eval_ctx, tmp, is_reference=False),
                "code": ctx.codes["evaluate"].record()}

    return store.run("evaluate", evaluate_key(run, ctx, store), build)


DISCARDED = DISCARDED_NOTE   # in a run's train folder: its weights went after evaluation


def discard_checkpoint(checkpoint: Path) -> None:
    """`keep_checkpoints: false`: delete a run's weights once its evaluation is stored, leaving a
    note (steps, when) so that a rerun reuses the evaluation instead of training again."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        return
    from trainers.checkpoint import LOG_FILE, completed_steps
    from trainers.manifest import file_digest

    note = {"steps": completed_steps(checkpoint)}
    log = checkpoint.parent / LOG_FILE
    if log.is_file():     # the log outlives the weights: still checked on reuse (discarded_log_problem)
        note["log"] = {LOG_FILE: file_digest(log)}
    (checkpoint.parent / DISCARDED).write_text(json.dumps(note))
    import shutil

    shutil.rmtree(checkpoint)


def _weights_discarded(work: Path) -> bool:
    """A run's train folder says its weights went after an evaluation (and they are gone), and
    its train log is as it was then."""
    return (work / DISCARDED).exists() and not (work / "checkpoint").exists() and discarded_log_problem(work) is None


def discarded_log_problem(work: Path) -> str | None:
    """What is wrong with the train log of a run whose weights were discarded (None: intact)."""
    from trainers.manifest import check_manifest

    try:
        note = json.loads((work / DISCARDED).read_text())
    except (OSError, ValueError) as err:
        return f"{DISCARDED} is unreadable ({type(err).__name__})"
    problems = check_manifest(work, note.get("log") or {}) if isinstance(note, dict) else ["not a JSON object"]
    return f"the train log of {work} is damaged ({problems[0]})" if problems else None


def discarded_evaluation(run, ctx: SuiteContext, store: StageStore) -> Path | None:
    """The stored evaluation of a run whose weights were discarded, else None (then it trains:
    a discarded run whose evaluation settings changed is trained again)."""
    work = store.work_dir("train", train_key(run, ctx, store))
    if (work / DISCARDED).exists() and not (work / "checkpoint").exists():
        problem = discarded_log_problem(work)
        if problem is None and store.is_done("evaluate", evaluate_key(run, ctx, store)):
            return store.run("evaluate", evaluate_key(run, ctx, store), None)
        if problem is not None:
            from trainers.errors import say

            say(f"{problem}; training this run again")
        (work / DISCARDED).unlink()
    return None


def run_is_stored(run, ctx: SuiteContext, store: StageStore) -> bool:
    """Every stage of the run is stored: its evaluation, and its weights or the note that they
    went after that evaluation. (An executor reads such a run itself instead of sending it out.)"""
    if not store.is_done("evaluate", evaluate_key(run, ctx, store)):
        return False
    from trainers.checkpoint import CorruptStateError, completed_steps

    work = store.work_dir("train", train_key(run, ctx, store))
    if _weights_discarded(work):
        return True
    try:
        return completed_steps(work / "checkpoint") is not None
    except CorruptStateError:   # the run's own task says so and trains it again
        return False


def _reference_keys(ctx: SuiteContext) -> tuple[str, str | None]:
    """(the reference evaluation's key, the chosen responses' judgments' key or None)."""
    return content_hash("evaluate", "reference", ctx.eval_key), ctx.chosen_key


def reference_is_stored(ctx: SuiteContext, store: StageStore) -> bool:
    key, chosen = _reference_keys(ctx)
    return store.is_done("evaluate", key) and (chosen is None or store.is_done("chosen", chosen))


def evaluate_reference(ctx: SuiteContext, store: StageStore, bar) -> Path:
    bar.stage("evaluate reference")
    key, chosen = _reference_keys(ctx)
    folder = store.run("evaluate", key, lambda tmp: {**evaluate_policy(ctx.reference_dir, ctx.eval_ctx, tmp,
                                                                       is_reference=True),
                                                     "code": ctx.codes["evaluate"].record()})
    if chosen is not None:
        store.run("chosen", chosen,
                  lambda tmp: chosen_judgments(ctx.eval_ctx).to_parquet(tmp / "judgments.parquet", index=False))
    return folder


def judge_runs(ctx: SuiteContext, store: StageStore, out: Path, reference_eval: Path, records: list[PolicyRecord],
               bar) -> list[str]:
    """The pairwise scorers (bench.evaluation.scoring.registry; the LLM judge) on every evaluated
    run: sets each judged record's `judge_dir`; returns one line per scorer that stopped early
    (its cause also in logs/<scorer>.log). A failure here fails no run and stops no other stage."""
    import traceback

    from bench.evaluation.scoring.registry import active_pairwise

    def write_log(path: Path, text: str) -> str:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except OSError as err:   # a full disk: said in the line, not raised over the failure being told
            return f"its log could not be written to {path}: {err.strerror or err}"
        return f"log: {path}"

    failures = []
    evaluated = [r for r in records if r.status == "ok" and r.eval_dir is not None]
    for scorer in active_pairwise(ctx.eval_ctx):
        if not evaluated:
            break
        bar.stage(scorer.name)
        try:
            outcome = scorer.pairwise(ctx.eval_ctx, store, reference_eval, [r.eval_dir for r in evaluated],
                                      suite_dir=ctx.suite_dir, progress=None)
        except Exception as err:  # noqa: BLE001 - this stage fails alone, with its reason and log
            log = write_log(out / "logs" / f"{scorer.name}.log", traceback.format_exc())
            failures.append(f"{scorer.name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
                            f"({log})")
            continue
        for record in evaluated:
            record.judge_dir = outcome.stage_dirs.get(record.eval_dir)
        if outcome.requests:   # what it cost: a rerun whose judgments are all stored sends none
            from bench.run.store import say

            say(f"{scorer.name}: {outcome.requests} requests sent, {len(outcome.stage_dirs)} of {len(evaluated)} "
                "policies judged")
        if outcome.failure:
            write_log(out / "logs" / f"{scorer.name}.log", outcome.failure + "\n")
            failures.append(f"{scorer.name}: {outcome.failure} (logs/{scorer.name}.log)")
    return failures


def objective_name(run) -> str:
    names = [term["name"] for term in run.objective_spec]
    return names[0] if len(names) == 1 else "+".join(names)


# ---------------------------------------------------------------- aggregate
def import_aggregate_modules() -> None:
    """Import what `aggregate` imports on first use (the report's modules), so that a process
    that did not evaluate (an executor's parent) can do it early. Not matplotlib: the parent
    hands every plot to its pool (bench.tables.plot_jobs). Not scipy.stats: only suites with
    several seeds need it (bench.tables.metrics), and it is ~1 s."""
    import bench.tables.report  # noqa: F401
    import bench.tables.results  # noqa: F401
    import threadpoolctl  # noqa: F401


def _relative(path: str | None, out: Path) -> str:
    """A path inside the results folder, stored relative to it (the folder can be moved)."""
    if not path:
        return ""
    try:
        return str(Path(path).resolve().relative_to(out.resolve()))
    except ValueError:
        return str(Path(path).resolve())


def aggregate(suite, ctx: SuiteContext, out: Path, reference_eval: Path, records: list[PolicyRecord],
              runs, store: StageStore, pool=None, write_invariants: Callable[[], None] | None = None) -> str:
    """Judgments -> results.parquet/csv, runs.parquet, leaderboard and plots; returns the leaderboard.
    ``pool`` (a concurrent.futures executor of processes): computes the runs' result rows side by
    side, and draws the plots while this process writes the tables (bench.tables.report).
    ``write_invariants``: writes the folder's invariants.json (bench.gate.integrity) when the
    tables are computed, not when a stored aggregate is reused (it is one of its outputs)."""
    import pandas as pd

    from bench.run import aggregate_cache
    from bench.tables.leaderboard import StatsSettings, write_settings
    from bench.tables.report import write_report
    from bench.tables.results import provenance, write_results, write_units

    reference_judgments = pd.read_parquet(reference_eval / "judgments.parquet")
    chosen_dir = store.path("chosen", ctx.chosen_key or "none")
    chosen = pd.read_parquet(chosen_dir / "judgments.parquet") if (chosen_dir / "judgments.parquet").exists() else None
    n_boot, seed = suite.scoring.bootstrap_samples, suite.generation.seed
    extra = listed_sample_metrics(suite.scoring.scorers)   # the scorers the suite adds by name
    reference = PolicyRecord(run_id=REFERENCE_ID, label=REFERENCE_ID, objective=REFERENCE_ID, params="{}",
                             seed=seed, eval_dir=reference_eval)
    for record in records:   # what each run trained on, checked by the gold verifier
        if ctx.train_audit is not None:
            record.train_summary["train_data"] = ctx.train_audit
    suite_hash = (out / SUITE_HASH).read_text().strip() if (out / SUITE_HASH).exists() else ""
    key = aggregate_cache.aggregate_key(
        [reference, *records], extra=dict(chosen=aggregate_cache.marker_text(chosen_dir), suite_hash=suite_hash, runs=[r.run_id for r in runs],
                                          fingerprints=ctx.fingerprints, data=ctx.data_info,
                                          reference_dir=str(ctx.reference_dir), reuse_stale=ctx.reuse_stale,
                                          stale=ctx.stale))
    reused = aggregate_cache.reuse(out, key)
    if reused is not None:
        return reused
    if write_invariants is not None:
        write_invariants()
    # The reference's rows here (its unreadable files fail the suite), each run's in the pool if any.
    inputs = dict(suite=suite.name, reference_judgments=reference_judgments, chosen_judgments=chosen,
                  n_boot=n_boot, seed=seed, extra_scorers=extra)
    rows = policy_rows(reference, **inputs)
    units = [policy_units(reference, **_units_inputs(inputs))]
    tables = functools.partial(_record_tables, **inputs)
    for record, (its_rows, its_units, unreadable) in zip(records, (pool.map if pool else map)(tables, records)):
        if unreadable:  # one run's unreadable files fail that run, not the aggregate
            record.status, record.reason = "failed", unreadable
        rows += its_rows
        units.append(its_units)
    prov = provenance()
    by_id = {run.run_id: run for run in runs}
    reference.checkpoint = str(ctx.reference_dir)
    inputs = dict(fingerprints=json.dumps(ctx.fingerprints, sort_keys=True), suite_hash=suite_hash,
                  reuse_stale=str(ctx.reuse_stale).lower())
    run_rows = [dict(suite=suite.name, run_id=r.run_id, label=r.label, objective=r.objective, params=r.params,
                     seed=r.seed, status=r.status, reason=r.reason or "", checkpoint=_relative(r.checkpoint, out),
                     checkpoint_kept=str(r.checkpoint_kept).lower(), **inputs,
                     stale_code=",".join(r.stale_code),
                     train_log=_relative(r.train_summary.get("train_log"), out),
                     config=json.dumps(by_id[r.run_id].training.model_dump(mode="json"), sort_keys=True)
                     if r.run_id in by_id else "{}",
                     data=json.dumps(ctx.data_info, sort_keys=True), **prov) for r in [reference, *records]]
    write_results(out, rows, run_rows)
    write_units(out, units)
    write_settings(out, StatsSettings(compare_to=suite.scoring.compare_to, n_boot=n_boot, seed=seed))
    _write_validity(ctx, out, reference_eval, [reference, *records])
    leaderboard = write_report(out, plot_pool=pool)
    aggregate_cache.remember(out, key)
    return leaderboard


def _record_tables(record: PolicyRecord, **inputs) -> tuple[list[dict], object, str | None]:
    """One run's result rows and unit values, and why its evaluation files are unreadable (None
    when they are not; when they are, neither rows nor units). A module-level function: it
    travels to a pool's process by pickle, the record with it."""
    import pandas as pd

    from bench.tables.results import UNIT_COLUMNS

    try:
        rows = policy_rows(record, **inputs)
    except Exception as err:  # noqa: BLE001 - reported on the run's record by the caller
        return [], pd.DataFrame(columns=UNIT_COLUMNS), \
            f"its evaluation files are unreadable ({type(err).__name__}: {str(err)[:200]})"
    return rows, policy_units(record, **_units_inputs(inputs)), None


def _units_inputs(inputs: dict) -> dict:
    """Of policy_rows' keyword arguments, those policy_units takes."""
    return {key: inputs[key] for key in ("reference_judgments", "chosen_judgments", "extra_scorers")}


def _judge_validity(records) -> dict | None:
    """The LLM judge's validity facts (bench.tables.validity.judge_facts) over the judged records."""
    import pandas as pd

    from bench.tables import validity

    judged = [r for r in records if r.judge_dir is not None and (Path(r.judge_dir) / "judge.parquet").is_file()]
    if not judged:
        return None
    name = lambda r: f"{r.label} seed={r.seed}"   # noqa: E731
    frames = {name(r): pd.read_parquet(Path(r.judge_dir) / "judge.parquet") for r in judged}
    gold, reference_gold = {}, None
    reference = next((r for r in records if r.run_id == REFERENCE_ID), None)
    if reference is not None and reference.eval_dir is not None:
        ref = pd.read_parquet(reference.eval_dir / "judgments.parquet")
        if "gold" in ref:
            reference_gold = ref
            gold = {name(r): pd.read_parquet(r.eval_dir / "judgments.parquet") for r in judged}
            gold = {k: v for k, v in gold.items() if "gold" in v}
    info_file = Path(judged[0].judge_dir) / "judge_info.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    info = {k: info[k] for k in ("model", "template", "template_sha256") if k in info}
    return validity.judge_facts(frames, gold, reference_gold, info)


def _write_validity(ctx: SuiteContext, out: Path, reference_eval: Path, records) -> None:
    """What each scorer measured (bench.tables.validity): judge accuracy by pair kind, budget, tasks."""
    import pandas as pd

    from bench.tables import validity
    from bench.evaluation.budget import longest_response_tokens

    judgments = {}
    for record in records:
        path = record.eval_dir / "judgments.parquet" if record.eval_dir is not None else None
        if path is not None and path.is_file():
            judgments[f"{record.label} seed={record.seed}" if record.run_id != REFERENCE_ID else REFERENCE_ID] = \
                pd.read_parquet(path, columns=["finish_reason"])
    lm_eval_file = reference_eval / "lm_eval.json"
    facts = validity.collect(
        reward_dir=ctx.eval_ctx.reward_model_dir, budget=ctx.suite.generation.max_new_tokens,
        longest_chosen=longest_response_tokens(ctx.eval_ctx.eval_pairs, ctx.tokenizer), judgments=judgments,
        reference_lm_eval=json.loads(lm_eval_file.read_text()) if lm_eval_file.is_file() else [],
        judge=_judge_validity(records))
    validity.write(out, facts)

