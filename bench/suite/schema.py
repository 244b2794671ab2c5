"""The suite schema: pydantic sections of a suite file, strict (unknown keys are errors).

Pure data. Reading the file (`yaml_file`), `--set` overrides (`overrides`), paths (`paths`),
one-line errors (`field_errors`) and grid expansion (`runs`) are modules beside this one;
`bench.suite.load.load_suite` puts them together. Each stage consumes its own section from here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt, PrivateAttr, model_serializer, model_validator

# The training sections are the trainer's own settings (the trainer imports nothing from bench).
from trainers.config import LoraSpec, Seed, Strict, TrainConfig  # noqa: F401  (the suite's names for them)

from bench.suite.executor import ExecutorSection


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
    # a registered generation backend (bench.evaluation.generation.registry; validate and the
    # runner ask the registry, so a new backend file needs no change here)
    backend: str = "hf"
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


class JudgeConfig(Strict):
    """An LLM judge behind an OpenAI-compatible endpoint (bench.evaluation.scoring.judge): each
    policy's sample against the reference's (and, asked for, the dataset's chosen response) for the
    same prompt, in both orders. The key is read from the environment variable `api_key_env`
    only; it is never part of the suite, the results or a log."""

    base_url: str | None = None                   # e.g. http://127.0.0.1:8000/v1 (vllm serve), https://api.openai.com/v1
    model: str | None = None                      # the model name the server serves
    api_key_env: str = "OPENAI_API_KEY"           # the NAME of the variable holding the key (EMPTY for a keyless local server)
    template: str = "arena_hard"                  # arena_hard | alpaca_eval | mt_bench, or a path to a template YAML
    against: list[Literal["reference", "chosen"]] = Field(default_factory=lambda: ["reference"], min_length=1)
    max_concurrency: PositiveInt = 8              # requests in flight at once
    max_requests: PositiveInt | None = None       # budget of HTTP requests per command (retries count); None: no limit
    max_retries: int = Field(6, ge=0)             # per request, on 429, 5xx, timeouts and refused connections
    timeout_s: float = Field(120.0, gt=0)         # per request
    temperature: float = Field(0.0, ge=0)
    max_tokens: PositiveInt | None = None         # None: the template's


class ScoringConfig(Strict):
    reward_model: bool = True
    gold: str | None = None                       # verifier name, e.g. arith
    lm_eval: LmEvalConfig = LmEvalConfig()
    drift: bool = True
    bootstrap_samples: PositiveInt = 1000
    # The baseline every other objective is compared with (paired Δ, p-values, Holm): a label
    # or an objective name with one label in the suite. Empty: no comparisons.
    compare_to: str | None = "dpo"
    # Further registered scorers to run, by name (bench.evaluation.scoring.registry); the builtin
    # ones above are switched by their own settings.
    scorers: list[str] = Field(default_factory=list)
    # An LLM judge (pairwise win rates against the reference); None: no judge.
    judge: JudgeConfig | None = None

    @model_serializer(mode="wrap")
    def _omit_no_scorers(self, handler):
        # Left out of the dump while empty: the resolved suite, its hash and the evaluation's key
        # stay those of suites written before the field existed (their stored stages are reused).
        out = handler(self)
        if not self.scorers:
            out.pop("scorers", None)
        if self.judge is None:
            out.pop("judge", None)
        return out


class TermEntry(Strict):
    """One weighted term of a composite objective, e.g. `{name: nll, weight: 0.2}`."""

    name: str
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)


class ObjectiveEntry(Strict):
    """One objective of a suite; list values in `params` or `training` expand into a grid."""

    name: str | None = None
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    terms: list[TermEntry] | None = None
    training: dict[str, Any] = Field(default_factory=dict)   # overrides of the suite's TrainConfig

    @model_validator(mode="after")
    def _name_or_terms(self):
        if (self.name is None) == (self.terms is None):
            raise ValueError("give exactly one of 'name' (one objective) or 'terms' (a weighted list)")
        if self.terms is not None and not self.terms:
            raise ValueError("terms must not be empty")
        if self.terms is not None and self.params:
            raise ValueError("params belong inside each term when 'terms' is given")
        return self


class AccelerateSection(Strict):
    num_processes: PositiveInt = 1
    config_file: str | None = None


class Suite(Strict):
    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    description: str = ""
    seeds: list[Seed] = Field(min_length=1)
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    sft: SFTConfig = SFTConfig()
    reward_model: RewardModelConfig = RewardModelConfig()
    training: TrainConfig = TrainConfig()
    objectives: list[ObjectiveEntry] = Field(min_length=1)
    generation: GenerationConfigSection = GenerationConfigSection()
    scoring: ScoringConfig = ScoringConfig()
    launcher: Literal["inprocess", "accelerate"] = "inprocess"
    accelerate: AccelerateSection = AccelerateSection()
    executor: ExecutorSection = ExecutorSection()     # where the runs train and evaluate (bench.executors)
    # false: a run's trained weights are deleted once its evaluation is stored (a 0.5B suite
    # writes 21 x ~1 GB); a rerun then reuses the evaluation instead of retraining.
    keep_checkpoints: bool = True

    _source: str = PrivateAttr(default="<suite>")
    # The runs the grid expands to, set once by `load_suite` (bench.suite.runs.expand_runs);
    # every later reader (validate, the runner) takes them from here.
    _runs: tuple | None = PrivateAttr(default=None)

    @property
    def source(self) -> str:
        """The suite file this suite was loaded from (for error messages)."""
        return self._source

    @property
    def suite_dir(self) -> Path:
        return Path(self._source).resolve().parent

    @property
    def expanded(self) -> bool:
        """Whether `complete_suite` (bench.suite.load) has expanded the grid into `runs`."""
        return self._runs is not None

    @property
    def runs(self) -> list:
        """Every run (`bench.suite.runs.RunSpec`), as `load_suite` expanded them."""
        if self._runs is None:
            raise RuntimeError("this Suite was not made by load_suite, so its grid was never expanded")
        return list(self._runs)
