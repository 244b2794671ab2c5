"""Evaluate one policy: generate on the eval prompts, then judge every sample.

Writes into the stage directory it is given:
- `generations.jsonl`: the raw generations (expensive; never recomputed for a new metric);
- `judgments.parquet`: one row per sample: length, a column per active sample scorer
  (reward-model score, gold score...; bench.evaluation.scoring.registry), and the sample's
  log-prob under the policy and under the reference (for the KL estimate);
- `drift.json`: likelihood drift on the held-out pairs (policies only);
- `lm_eval.json`: lm-evaluation-harness rows, one per task metric.
- `lm_eval_units.json`: each document's value of those metrics ({task: {metric: {doc_id: value}}}).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from bench.tables.aggregate import JUDGMENTS
from bench.evaluation.generation.base import GenerationConfig, encode_prompt, write_generations
from bench.evaluation.generation.registry import get_backend, get_generator
from bench.evaluation.scoring.registry import active_scorers
from bench.evaluation.scoring.reward_model import score_rewards
from bench.suite.schema import GenerationConfigSection, LmEvalConfig
from trainers.tokenize import TokenizedPair, render_prompt
from trainers import devices   # module, not name: a test may replace release_memory
from trainers.models import load_model
from trainers.reference import compute_reference


@dataclass
class EvalContext:
    """What every policy's evaluation shares (built once per suite by the runner)."""

    eval_pairs: list            # PreferencePair, the held-out prompts
    tokenizer: object
    reference_dir: Path
    generation: GenerationConfigSection
    reward_model_dir: Path | None
    reward_batch_size: int
    gold: str | None
    lm_eval: LmEvalConfig
    lm_eval_include: Path | None
    drift_data: list | None     # TokenizedPair, held-out pairs
    drift_reference: dict | None
    progress: bool = True
    trust_remote_code: bool = False   # the suite's model.trust_remote_code, for every load
    scorers: tuple = ()               # scoring.scorers: further registered scorers to run
    judge: object = None              # scoring.judge (JudgeConfig): the pairwise LLM judge, or None
    judge_code: str | None = None     # digest of the judge's code (bench.run.code_keys): in its stage's key


def prompts_of(ctx: EvalContext) -> list[tuple[str, str]]:
    return [(pair.id, render_prompt(pair, ctx.tokenizer)) for pair in ctx.eval_pairs]


def generator_options(section) -> dict:
    """Constructor options of the suite's generation backend (the backend says which it takes)."""
    return get_backend(section.backend).cls.options(section)


def generate(policy_dir: Path, ctx: EvalContext, out_dir: Path):
    """Generate, then write the samples and the decoding settings they were made with
    (`generation_params.json`: the resolved parameters, the checkpoint's generation_config that
    they override, and how many prompts were cut to fit the context)."""
    devices.release_memory()      # whatever the previous stage left (a trained policy) goes before an engine starts
    section = ctx.generation
    generator = get_generator(section.backend, str(policy_dir), progress=ctx.progress,
                              trust_remote_code=ctx.trust_remote_code, **generator_options(section))
    try:
        config = GenerationConfig.from_section(section)
        generations = generator.generate(prompts_of(ctx), config)
        params = {**generator.resolved_params(config), "prompts_truncated": generator.truncated,
                  "prompts": len(ctx.eval_pairs)}
    finally:
        generator.close()
    write_generations(out_dir / "generations.jsonl", generations)
    (out_dir / "generation_params.json").write_text(json.dumps(params, sort_keys=True, indent=1, default=str))
    return generations


def sample_logps(model_dir: Path, prompt_ids: dict, samples: list[tuple[str, list[int]]], *,
                 trust_remote_code: bool, batch_size: int = 32, progress: bool = False) -> list[float]:
    """Sum of log-probs of each (prompt_id, response ids) under the model at `model_dir`."""
    model = load_model(str(model_dir), trust_remote_code=trust_remote_code, role="kl")
    data = [TokenizedPair(id=str(i), prompt_ids=prompt_ids[pid], chosen_ids=ids, rejected_ids=None)
            for i, (pid, ids) in enumerate(samples) if ids]
    per_sample = compute_reference(model, data, batch_size=batch_size, progress=progress)
    del model
    # An empty response (immediate stop without EOS) has log-prob 0: the empty product.
    return [float(per_sample[str(i)][0].sum()) if str(i) in per_sample else 0.0 for i in range(len(samples))]


def response_ids(tokenizer, generation) -> list[int]:
    """The sample's token ids as the policy produced them: its text re-tokenised, plus EOS
    when generation stopped there (exact for tokenizers that round-trip, such as the char one)."""
    ids = tokenizer(generation.text, add_special_tokens=False).input_ids
    return ids + [tokenizer.eos_token_id] if generation.finish_reason == "stop" else ids


def judge(policy_dir: Path, generations, ctx: EvalContext, *, with_kl: bool,
          scorers: list | None = None) -> pd.DataFrame:
    """One row per sample: its length and finish, each active sample scorer's column
    (bench.evaluation.scoring.registry), and with `with_kl` its log-prob under policy and reference."""
    pairs = {pair.id: pair for pair in ctx.eval_pairs}
    frame = pd.DataFrame({
        "prompt_id": [g.prompt_id for g in generations],
        "sample_index": [g.sample_index for g in generations],
        "num_tokens": [g.num_tokens for g in generations],
        "num_chars": [len(g.text) for g in generations],
        "finish_reason": [g.finish_reason for g in generations],
    })
    scorers = active_scorers(ctx, is_reference=not with_kl) if scorers is None else scorers
    for scorer in scorers:
        if scorer.sample:
            frame[scorer.column] = scorer.score(ctx, generations, [pairs[g.prompt_id] for g in generations])
    if with_kl:
        # The same prompt tokens generation conditioned on (BOS handling included).
        prompt_ids = {pid: encode_prompt(ctx.tokenizer, text) for pid, text in prompts_of(ctx)}
        samples = [(g.prompt_id, response_ids(ctx.tokenizer, g)) for g in generations]
        frame["logp_policy"] = sample_logps(policy_dir, prompt_ids, samples, trust_remote_code=ctx.trust_remote_code)
        frame["logp_ref"] = sample_logps(ctx.reference_dir, prompt_ids, samples, trust_remote_code=ctx.trust_remote_code)
    return frame


def chosen_judgments(ctx: EvalContext) -> pd.DataFrame:
    """The dataset's chosen responses judged like a policy's samples (for win rate vs chosen)."""
    pairs = ctx.eval_pairs
    frame = pd.DataFrame({"prompt_id": [p.id for p in pairs], "sample_index": 0})
    frame["reward"] = score_rewards(ctx, pairs, [p.chosen for p in pairs])
    return frame


def evaluate_policy(policy_dir: Path, ctx: EvalContext, out_dir: Path, *, is_reference: bool) -> dict:
    """The whole evaluation of one policy into `out_dir`: generate, the sample scorers into
    the judgments, then the policy scorers (drift, lm-eval...) into their own files."""
    scorers = active_scorers(ctx, is_reference=is_reference)
    generations = generate(policy_dir, ctx, out_dir)
    judgments = judge(policy_dir, generations, ctx, with_kl=not is_reference, scorers=scorers)
    judgments.to_parquet(out_dir / JUDGMENTS, index=False)
    for scorer in scorers:
        if not scorer.sample:
            scorer.run(policy_dir, ctx, out_dir)
    return {"samples": len(generations)}
