"""The stages before training, once per suite: data, base model (or SFT reference), reward model,
reference log-probs, and the evaluation context. Each is keyed by the hash of its inputs."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from bench.evaluation.evaluate import EvalContext
from bench.hashing import content_hash
from bench.run import shared_stages
from bench.run.store import StageStore
from bench.run.context import BUILTIN_PREFIX, PAIR_FILES, SuiteContext
from bench.suite.paths import tasks_dir



def _write_pairs(path: Path, pairs) -> None:
    with path.open("w") as f:
        for pair in pairs:
            f.write(json.dumps(dataclasses.asdict(pair), sort_keys=True) + "\n")


def read_pairs(path: Path) -> list:
    from bench.data.records import PreferencePair

    pairs = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        row["messages"] = tuple(row["messages"]) if row.get("messages") else None
        pairs.append(PreferencePair(**row))
    return pairs


def data_stage(suite, store: StageStore, progress: bool = True, fingerprints: dict | None = None,
               codes: dict | None = None) -> tuple[str, dict[str, list], dict]:
    from bench.data.sources import load_pairs
    from bench.data.splits import split_pairs
    from bench.run.fingerprint import suite_fingerprints

    fingerprints = fingerprints or suite_fingerprints(suite)
    # the file's (or hub revision's) content, not only its name: data edited in place reloads;
    # and the code that loads and splits it (bench.run.code_keys)
    key = store.key("data", content_hash("data", suite.data, fingerprints["data"]), (codes or _codes(suite))["data"])

    def build(tmp: Path):
        loaded = load_pairs(suite.data, progress=progress)
        splits = split_pairs(loaded.pairs, eval_prompts=suite.data.eval_prompts,
                             drift_pairs=suite.data.drift_pairs, seed=suite.data.shuffle_seed)
        for name in PAIR_FILES:
            _write_pairs(tmp / f"{name}.jsonl", getattr(splits, name))
        return {"source": loaded.source, "skipped": dict(loaded.skipped),
                **{f"n_{name}": len(getattr(splits, name)) for name in PAIR_FILES}}

    folder = store.run("data", key, build)
    return key, {name: read_pairs(folder / f"{name}.jsonl") for name in PAIR_FILES}, store.info("data", key)


def base_stage(suite, store: StageStore, data_key: str, train_pairs, *, progress: bool,
               fingerprints: dict | None = None, codes: dict | None = None) -> tuple[str, Path]:
    """The reference policy: the base model, SFT-trained with `nll` when the suite asks."""
    from bench.run.fingerprint import suite_fingerprints

    sft = suite.sft
    fingerprints = fingerprints or suite_fingerprints(suite)
    codes = codes or _codes(suite)
    # The policy's weights (or hub commit), not only its path: new weights at the same path
    # give a new key here and so in every stage downstream (train, evaluate). The initial model
    # reads the model section (and, built in code, the task's vocabulary), nothing of the SFT:
    # an SFT setting changed trains the SFT again from the same initial model.
    vocabulary = suite.data.source if suite.model.policy.startswith(BUILTIN_PREFIX) else None
    init_key = store.key("init", content_hash("init", suite.model, fingerprints["policy"], vocabulary), codes["init"])
    base = _initial_model(suite, store, init_key)
    if not sft.enabled:
        return init_key, base
    # SFT reads its demonstrations: the train pairs' chosen, or the task's own demonstrations.
    demos_from = data_key if sft.data == "chosen" else ("demos", suite.data.source, suite.data.task_options)
    key = store.key("sft", content_hash("sft", init_key, sft, demos_from), codes["sft"])
    from trainers.objectives import build_objective
    from trainers.trainer import train

    tokenizer = _load_tokenizer(base, suite)
    demos = _sft_examples(suite, train_pairs)
    tokenized = tokenize_for_training(demos, tokenizer, sft.training, "sft")
    result = train(model_path=str(base), objective=build_objective([{"name": "nll", "weight": 1.0}]),
                   train_data=tokenized, config=sft.training, out_dir=store.work_dir("sft", key), progress=progress,
                   trust_remote_code=suite.model.trust_remote_code)
    store.count("sft", key, reused=result.started_at is None)
    if result.status != "ok":
        from bench.errors import BenchError

        raise BenchError(f"SFT of the reference failed: {result.reason}")
    return key, Path(result.checkpoint)


def _codes(suite) -> dict:
    """The code of each suite-wide stage (bench.run.code_keys); `prepare` computes it once and
    hands it to each stage (a stage called alone computes its own)."""
    from bench.run.code_keys import stage_codes

    return stage_codes(suite)


def _initial_model(suite, store: StageStore, key: str) -> Path:
    policy = suite.model.policy
    if not policy.startswith(BUILTIN_PREFIX):
        from trainers.models import resolve_model

        resolved = resolve_model(policy)   # a local directory or a loadable hub id; else one clear line
        return Path(resolved) if Path(resolved).exists() else resolved
    def build(tmp: Path) -> None:
        # Imported here: bench.models imports transformers' model classes (~3 s), which a
        # finished stage does not need (an executor's parent process never trains).
        from bench.data.tasks import builtin_words
        from bench.models import build_builtin_tokenizer, build_tiny_causal_lm

        size = suite.model.builtin
        tokenizer = build_builtin_tokenizer(size.tokenizer, builtin_words(suite.data.source))
        build_tiny_causal_lm(tmp, tokenizer, hidden_size=size.hidden_size, layers=size.layers,
                             heads=size.heads, seed=0)

    return store.run("init", key, build)


def tokenize_for_training(pairs, tokenizer, config, section: str):
    """Tokenised training examples; none left is one line naming the section and why each went."""
    from bench.errors import BenchError
    from trainers.tokenize import tokenize_pairs

    tokenized, skipped = tokenize_pairs(pairs, tokenizer, max_length=config.max_length,
                                        max_prompt_length=config.max_prompt_length)
    if pairs and not tokenized:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items()))
        raise BenchError(f"{section}: no training examples left after tokenisation of {len(pairs)} "
                         f"(skipped {reasons}; check {section}.training.max_length and max_prompt_length)")
    return tokenized


def _sft_examples(suite, train_pairs):
    sft = suite.sft
    if sft.data == "chosen":
        # Demonstrations by the records' convention (rejected "" and metadata["sft"]), so the
        # tokeniser keeps them instead of skipping each as a pair with an empty rejected reply.
        examples = [dataclasses.replace(p, rejected="", metadata={**p.metadata, "sft": True}) for p in train_pairs]
        return examples[: sft.num_examples] if sft.num_examples else examples
    from bench.data.tasks import get_task

    n = sft.num_examples or len(train_pairs)
    return get_task(suite.data.source).make_sft_demos(n, seed=sft.training.seed, error_rate=sft.error_rate,
                                                      **suite.data.task_options)


def _load_tokenizer(model_dir, suite):
    from trainers.models import load_tokenizer

    return load_tokenizer(str(model_dir), trust_remote_code=suite.model.trust_remote_code)


def prepare(suite, suite_path: Path, store: StageStore, runs, bar, *, progress: bool, session=None) -> SuiteContext:
    """The shared stages; with an executor `session`, the independent ones run side by side on it."""
    from trainers.tokenize import tokenize_pairs

    from bench.run.fingerprint import suite_fingerprints

    fingerprints = suite_fingerprints(suite)
    codes = _codes(suite)
    bar.stage("data")
    data_key, pairs, data_info = data_stage(suite, store, progress, fingerprints, codes)
    from bench.suite.validate import check_batch_sizes

    check_batch_sizes(suite, runs, len(pairs["train"]))   # before SFT: a batch larger than the data
    bar.stage("base")
    base_key, reference_dir = base_stage(suite, store, data_key, pairs["train"], progress=progress,
                                         fingerprints=fingerprints, codes=codes)
    tokenizer = _load_tokenizer(reference_dir, suite)
    from bench.evaluation.budget import check_generation_budget

    check_generation_budget(suite, pairs["eval"], tokenizer)
    training = suite.training
    train_data, skipped = tokenize_pairs(pairs["train"], tokenizer, max_length=training.max_length,
                                         max_prompt_length=training.max_prompt_length)
    if pairs["train"] and not train_data:
        tokenize_for_training(pairs["train"], tokenizer, training, "training")   # raises, naming the reasons
    data_info = {**data_info, "skipped_at_tokenization": dict(skipped)}
    drift_data = None
    if suite.scoring.drift and pairs["drift"]:
        drift_data, _ = tokenize_pairs(pairs["drift"], tokenizer, max_length=training.max_length,
                                       max_prompt_length=training.max_prompt_length)
    needs_reference = any(run.needs_reference for run in runs)
    ref_cache = ref_cache_dir(store, codes["ref_logps"])
    cached_before = _cache_files(ref_cache)
    # The reward model and the reference log-probs need the SFT reference, not each other: on
    # an executor they are computed side by side on its workers (bench.run.shared_stages), and
    # then read back below as finished stages.
    counting = store
    if session is not None:
        inputs = dict(suite=suite, data_key=data_key, base_key=base_key, reference_dir=reference_dir,
                      reuse_stale=store.reuse_stale, codes=codes,
                      train_pairs=pairs["train"], train_data=train_data if needs_reference else None,
                      drift_data=drift_data)
        names = shared_stages.to_compute(suite, store, data_key=data_key, base_key=base_key,
                                         reference_dir=reference_dir, train_data=inputs["train_data"],
                                         drift_data=drift_data, ref_cache=ref_cache, codes=codes)
        inputs["ref_cache"] = ref_cache
        if len(names) > 1:
            shared_stages.run_side_by_side(session, names, inputs, store, bar)
            counting = StageStore(store.out, reuse_stale=store.reuse_stale)   # the workers' counts are in `store`
    bar.stage("reward")
    reward_dir = shared_stages.reward_stage(suite, counting, data_key, base_key, reference_dir, pairs["train"],
                                            progress=progress, codes=codes)
    from bench.evaluation.scoring.gold import audit_pairs

    train_audit = audit_pairs(pairs["train"], suite.scoring.gold)
    if needs_reference:
        bar.stage("ref_logps")
    ref_logps, drift_reference = shared_stages.reference_stage(
        suite, reference_dir, train_data if needs_reference else None, drift_data, ref_cache, progress=progress)
    if ref_logps is not None or drift_reference is not None:   # a new or rewritten cache file: computed now
        store.count("ref_logps", base_key, reused=_cache_files(ref_cache) == cached_before)
    eval_ctx = EvalContext(
        eval_pairs=pairs["eval"], tokenizer=tokenizer, reference_dir=reference_dir, generation=suite.generation,
        reward_model_dir=reward_dir, reward_batch_size=suite.reward_model.batch_size, gold=suite.scoring.gold,
        lm_eval=suite.scoring.lm_eval, lm_eval_include=tasks_dir(suite), drift_data=drift_data,
        drift_reference=drift_reference, progress=progress, trust_remote_code=suite.model.trust_remote_code,
        scorers=tuple(suite.scoring.scorers), judge=suite.scoring.judge, judge_code=codes["judge"].digest,
    )
    # The reward model by where it is relative to the results folder (a trained one is inside it):
    # a moved folder, or --out written relative instead of absolute, keeps every evaluation; a
    # loaded one, and the lm-eval tasks, by their contents.
    # compare_to and bootstrap_samples shape only the aggregate, so changing them re-evaluates nothing.
    scoring = suite.scoring.model_dump(mode="json", exclude=AGGREGATE_ONLY_SCORING)
    judge = (_portable(reward_dir, store.root), suite.reward_model, fingerprints["reward_model"])
    # The evaluation code is part of eval_key, so of every evaluation's key (the reference's and each run's).
    eval_key = content_hash("eval", data_key, base_key, *judge, suite.generation, scoring,
                            training.max_length, training.max_prompt_length, fingerprints["lm_eval_tasks"],
                            codes["evaluate"].digest)
    # The chosen responses' judgments read the eval prompts, the judge and its code: not the
    # generation settings, nor the policy (a new SFT keeps them).
    chosen_key = None if reward_dir is None else store.key(
        "chosen", content_hash("chosen", data_key, *judge, suite.model.trust_remote_code), codes["evaluate"],
        may_be_stale=False)    # compared with the evaluations, which are always of this code
    return SuiteContext(suite=suite, suite_dir=suite_path.parent, data_key=data_key, base_key=base_key,
                        reference_dir=reference_dir, tokenizer=tokenizer, train_data=train_data, ref_logps=ref_logps,
                        eval_ctx=eval_ctx, eval_key=eval_key, data_info=data_info, progress=progress,
                        fingerprints=fingerprints, train_audit=train_audit, chosen_key=chosen_key,
                        codes={**codes, **{f"train:{run.run_id}": run_code(suite, run) for run in suite.runs}},
                        reuse_stale=store.reuse_stale, stale=sorted(set(store.stale + counting.stale)))


def run_code(suite, run):
    """The code of one run's training (bench.run.code_keys.train_code)."""
    from bench.run.code_keys import train_code

    return train_code(run.objective_spec, run.training, suite.launcher)


def ref_cache_dir(store: StageStore, code) -> Path:
    """The reference log-prob caches of one code: `stages/ref_logps/<code digest>/` (their own
    file names hash the model and the data)."""
    return store.root / "ref_logps" / code.digest


def _cache_files(folder: Path) -> dict[str, tuple[int, int]]:
    """name -> (size, modification time) of the reference caches: a rewritten one differs."""
    if not folder.is_dir():
        return {}
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.glob("*.safetensors")}


def _portable(path: Path | None, root: Path) -> str | None:
    """`path` relative to `root` when inside it (so independent of where `root` lives), else as given."""
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


# The judge reads stored generations after every evaluation (its own stage, bench.run.pipeline.judge_runs):
# adding or changing it re-evaluates nothing.
AGGREGATE_ONLY_SCORING = {"compare_to", "bootstrap_samples", "judge"}
