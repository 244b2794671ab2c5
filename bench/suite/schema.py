"""The suite schema: pydantic sections of a suite file, strict (unknown keys are errors).

Pure data: loading YAML, `--set` overrides, grid expansion and friendly error messages
live in `bench.suite.load`; each stage consumes its own section from here.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, model_validator

# The training sections are the trainer's own settings (the trainer imports nothing from bench).
from trainers.config import LoraSpec, Seed, Strict, TrainConfig  # noqa: F401  (the suite's names for them)


class BuiltinModel(Strict):
    hidden_size: PositiveInt = 64
    layers: PositiveInt = 2
    heads: PositiveInt = 4
    # char: one token per character; word: whole numbers and the task's words are tokens
    # (bench.models.build_word_tokenizer), so a solution step's result is one token.
    tokenizer: Literal["char", "word"] = "word"


class ModelConfig(Strict):
    # "builtin:tiny-llama" builds the tiny model in code; anything else is a hub id or a path.
    policy: str = "builtin:tiny-llama"
    builtin: BuiltinModel = BuiltinModel()
    trust_remote_code: bool = False


class DataConfig(Strict):
    # builtin task name (arith) | hh_rlhf | preference (prompt/chosen/rejected columns)
    source: str = "arith"
    path: str | None = None                      # local .jsonl / .jsonl.gz / .json / .parquet
    hub_id: str | None = None                    # e.g. Anthropic/hh-rlhf
    data_dir: str | None = None                  # hub sub-directory, e.g. harmless-base
    split: str = "train"
    limit: PositiveInt | None = None
    shuffle_seed: Seed = 0
    eval_prompts: int = Field(64, ge=0)          # held out for generation
    drift_pairs: int = Field(64, ge=0)           # held-out pairs for likelihood drift
    on_bad_row: Literal["skip", "error"] = "skip"
    task_options: dict[str, Any] = Field(default_factory=dict)   # options of a builtin task


class SFTConfig(Strict):
    """Optional base stage: fine-tune the base model with `nll` to make the reference."""

    enabled: bool = False
    data: Literal["demos", "chosen"] = "demos"   # builtin task demonstrations, or the train pairs' chosen
    num_examples: PositiveInt | None = None
    error_rate: float = Field(0.3, ge=0, le=1)   # builtin tasks: share of flawed demonstrations
    training: TrainConfig = TrainConfig()


class RewardModelConfig(Strict):
    kind: Literal["none", "train", "load"] = "train"
    path: str | None = None                       # hub id or path when kind == load
    training: TrainConfig = TrainConfig(learning_rate=1e-3, epochs=1.0)
    batch_size: PositiveInt = 32

    @model_validator(mode="after")
    def _path_when_loading(self):
        if self.kind == "load" and not self.path:
            raise ValueError("path is required when kind is 'load'")
        return self


class GenerationConfigSection(Strict):
    backend: Literal["hf", "vllm"] = "hf"
    max_new_tokens: PositiveInt = 64
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    n: PositiveInt = 1
    batch_size: PositiveInt = 64
    tensor_parallel_size: PositiveInt = 1
    seed: Seed = 0
    # vLLM's share of GPU memory (of the engines of generation and of lm-eval), and the context
    # limit of both backends (None: the model's). Prompts longer than the limit minus
    # max_new_tokens keep their end and are counted (bench.evaluation.generation.base.truncate_prompts).
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    max_model_len: PositiveInt | None = None
    # A budget below the longest chosen eval response is refused (bench.evaluation.budget) unless set.
    allow_truncation: bool = False

    @model_validator(mode="after")
    def _samples_differ(self):
        if self.n > 1 and self.temperature == 0:
            raise ValueError("n > 1 with temperature 0 gives n identical greedy samples; "
                             "set generation.temperature > 0 or n: 1")
        return self


class LmEvalConfig(Strict):
    tasks: list[str] = Field(default_factory=list)
    # folder of local task YAMLs; default: the `tasks/` folder beside the suite file
    include_path: str | None = None
    limit: PositiveInt | None = None
    num_fewshot: int | None = Field(None, ge=0)
    batch_size: PositiveInt = 16


class ScoringConfig(Strict):
    reward_model: bool = True
    gold: str | None = None                       # verifier name, e.g. arith
    lm_eval: LmEvalConfig = LmEvalConfig()
    drift: bool = True
    bootstrap_samples: PositiveInt = 1000
    # The baseline every other objective is compared with (paired Δ, p-values, Holm): a label
    # or an objective name with one label in the suite. Empty: no comparisons.
    compare_to: str | None = "dpo"
