"""`bench.py validate`: check everything about a suite that can be checked without training.

Schema, objectives and hyperparameters, grid and duplicate runs (all via `load_suite`);
the data source (a local file must exist and parse; a hub dataset needs the network);
the policy and reward models (`trainers.models.resolve_model`; `builtin:` names are built
in code); and the lm-eval task names (lm-eval's own TaskManager, with the suite's local
`tasks/` folder on its include path). Each failure is one line naming file and field.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.suite.load import load_suite
from bench.suite.paths import tasks_dir
from bench.suite.runs import RunSpec
from bench.suite.schema import Suite
from bench.errors import BenchError, NetworkRequiredError, SuiteError, SuiteErrors
from trainers.errors import nearest

from bench.suite.model_check import BUILTIN_PREFIX, check_model, weights_problem  # noqa: F401  (validate's checks)
from bench.data.registry import find_source, get_source
from bench.data.sources import _LOCAL_BUILDERS, load_pairs
from bench.data.splits import split_pairs
from bench.data.tasks import builtin_words
from bench.evaluation.budget import check_generation_budget
from bench.evaluation.generation.registry import get_backend
from bench.evaluation.scoring.registry import get_scorer
from trainers.models import load_tokenizer
from trainers import net   # module, not name: tests replace the network probe


@dataclass
class ValidationSummary:
    """What `validate` found: the suite, its runs, and a note per checked resource."""

    suite: str
    file: str
    runs: list[RunSpec]
    checks: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def num_runs(self) -> int:
        return len(self.runs)

    def __str__(self) -> str:
        lines = [f"suite {self.suite} ({self.file}): OK, {self.num_runs} runs"]
        if self.description:     # what the suite is for, as its author wrote it
            lines.append(f"  {self.description}")
        lines += [f"  {check}" for check in self.checks]
        rows = [(r.label, _short_params(r.params), str(r.seed), r.run_id) for r in self.runs]
        header = ("label", "params", "seed", "run_id")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        return "\n".join(lines)


def _short_params(params: dict, limit: int = 60) -> str:
    text = json.dumps(params, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_suite(path, overrides=()) -> ValidationSummary:
    """Load and check the suite completely. Every problem found is reported, one line each:
    a single one as its own error, several as `SuiteErrors` (a check that cannot run because
    an earlier one failed, such as batch sizes without readable data, is skipped)."""
    suite = load_suite(path, list(overrides))   # schema errors: all of them at once
    summary = ValidationSummary(suite=suite.name, file=str(path), runs=suite.runs,
                                description=suite.description)
    errors: list[BenchError] = []

    def attempt(check, *args):
        try:
            result = check(*args)
        except SuiteErrors as err:
            errors.extend(err.errors)
            return None
        except BenchError as err:
            errors.append(err)
            return None
        summary.checks.append(result[0] if isinstance(result, tuple) else result)
        return result

    data = attempt(_check_data_counts, suite)
    if data is not None and data[1] is not None:
        attempt(check_batch_sizes, suite, summary.runs, data[1])
    attempt(check_model, suite, suite.model.policy, "model.policy")
    if suite.reward_model.kind == "load":
        attempt(check_model, suite, suite.reward_model.path, "reward_model.path")
    attempt(check_backend, suite)
    attempt(check_scorers, suite)
    attempt(check_judge, suite)
    attempt(check_lm_eval_tasks, suite)
    if suite.launcher == "accelerate":
        attempt(check_accelerate_config, suite)
    attempt(check_budget, suite)   # last: it builds the data split
    if errors:
        raise errors[0] if len(errors) == 1 else SuiteErrors(errors)
    return summary


# ---------------------------------------------------------------- batch sizes
def check_batch_sizes(suite: Suite, runs, n_train: int) -> str:
    """Every batch is at most the training pairs: a larger one repeats each pair many times a
    step (a 5-step run of a 4096-pair batch on 4 pairs ran for minutes doing nothing useful)."""
    problems = []
    seen = set()
    for run in runs:
        per_step = run.training.batch_size * run.training.grad_accum
        where = "training.batch_size" if run.training.batch_size == suite.training.batch_size else \
            f"objectives ({run.label}).training.batch_size"
        if per_step > n_train and where not in seen:
            seen.add(where)
            accum = f" x grad_accum {run.training.grad_accum}" if run.training.grad_accum > 1 else ""
            problems.append(SuiteError(suite.source, where, f"{run.training.batch_size}{accum} pairs a step is more than "
                                                            f"the {n_train} training pairs (after the held-out eval and "
                                                            f"drift pairs); lower it to at most {n_train}"))
    rm = suite.reward_model
    if rm.kind == "train" and suite.scoring.reward_model and rm.training.batch_size * rm.training.grad_accum > n_train:
        problems.append(SuiteError(suite.source, "reward_model.training.batch_size",
                                   f"{rm.training.batch_size} pairs a step is more than the {n_train} training pairs"))
    if problems:
        raise problems[0] if len(problems) == 1 else SuiteErrors(problems)
    return f"batch sizes: at most the {n_train} training pairs"


# ---------------------------------------------------------------- generation backend
def check_backend(suite: Suite) -> str:
    """The backend is registered and can run here (its package installed; CUDA when it needs it)."""
    field_name = "generation.backend"
    try:
        backend = get_backend(suite.generation.backend)
    except BenchError as err:
        raise SuiteError(suite.source, field_name, str(err)) from None
    # Runs on Ray or Slurm start their engines on the cluster's machines, not on this one.
    cuda = suite.executor.kind not in ("inprocess", "local") or _cuda_here()
    problem = backend.unavailable(cuda=cuda)
    if problem:
        raise SuiteError(suite.source, field_name, problem)
    return f"generation: {backend.name} backend available"


def _cuda_here() -> bool:
    import torch

    return torch.cuda.is_available()


# ---------------------------------------------------------------- scorers
def check_scorers(suite: Suite) -> str:
    """Each name in scoring.scorers is a registered scorer that the suite lets run: the builtin
    ones are switched by their own settings, and a scorer's needs (a reward model, drift pairs)
    must be met. One line per problem."""
    problems: list[BenchError] = []
    rm, scoring = suite.reward_model, suite.scoring
    for i, name in enumerate(scoring.scorers):
        where = f"scoring.scorers[{i}]"
        try:
            scorer = get_scorer(name)
        except BenchError as err:
            problems.append(SuiteError(suite.source, where, str(err)))
            continue
        if scorer.enabled is not None:
            problems.append(SuiteError(suite.source, where, f"scorer {name!r} is builtin and switched by its own "
                                                            f"setting under scoring:, not listed here"))
        elif scorer.needs_reward_model and (rm.kind == "none" or not scoring.reward_model):
            problems.append(SuiteError(suite.source, where, f"scorer {name!r} needs a reward model; set "
                                                            "reward_model.kind: train or load and scoring.reward_model: true"))
        elif scorer.needs_drift_pairs and (not scoring.drift or suite.data.drift_pairs == 0):
            problems.append(SuiteError(suite.source, where, f"scorer {name!r} needs the held-out drift pairs; set "
                                                            "scoring.drift: true and data.drift_pairs above 0"))
    if problems:
        raise problems[0] if len(problems) == 1 else SuiteErrors(problems)
    return f"scorers: {', '.join(scoring.scorers)} registered" if scoring.scorers else "scorers: builtin only"


def check_judge(suite: Suite) -> str:
    """scoring.judge, when set: a base URL and a model, a template with every placeholder, a key
    in the variable named, and a server that serves the model and answers one tiny request
    (bench.evaluation.judge_client.probe). One line naming the setting."""
    judge = suite.scoring.judge
    if judge is None:
        return "judge: none"
    for name in ("base_url", "model"):
        if not getattr(judge, name):
            raise SuiteError(suite.source, f"scoring.judge.{name}", "required when a judge is asked for "
                                                                    "(e.g. --set scoring.judge.base_url=http://127.0.0.1:8000/v1)")
    from bench.evaluation.judge_client import probe
    from bench.evaluation.scoring.judge import load_template

    try:   # the template first: a bad one is found without a request
        template = load_template(judge.template, Path(suite.source).parent)
        note = probe(judge)
    except BenchError as err:   # its words name the setting (scoring.judge.<field>: ...)
        raise SuiteError(suite.source, None, str(err)) from None
    return note + f", template {template.name} (sha256 {template.fingerprint[:12]})"


# ---------------------------------------------------------------- launcher
# The trainer's code paths: DDP (every process holds the model) and FSDP (sharded). DeepSpeed
# clips gradients and checkpoints itself, which the loop does not hand over to it.
SUPPORTED_DISTRIBUTED_TYPES = ("NO", "MULTI_GPU", "FSDP")


def check_accelerate_config(suite: Suite) -> str:
    """The accelerate config file exists, is an accelerate config, and names a setup the trainer runs."""
    options = suite.accelerate
    if not options.config_file:
        return f"launcher: accelerate, {options.num_processes} processes, DDP"
    field = "accelerate.config_file"
    path = Path(options.config_file)
    if not path.is_file():
        raise SuiteError(suite.source, field, f"no accelerate config file at {path} (relative paths are from the "
                                              f"directory you run bench.py in)")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SuiteError(suite.source, field, f"{path} is not YAML ({str(err).splitlines()[0]})") from None
    kind = config.get("distributed_type") if isinstance(config, dict) else None
    if kind not in SUPPORTED_DISTRIBUTED_TYPES:
        raise SuiteError(suite.source, field, f"{path}: distributed_type {kind!r} is not supported by the trainer; "
                                              f"use one of {', '.join(SUPPORTED_DISTRIBUTED_TYPES)} "
                                              "(configs/accelerate/ has DDP and FSDP files)")
    if kind == "FSDP" and any(run.training.lora is not None for run in suite.runs):
        raise SuiteError(suite.source, "training.lora", f"LoRA is not supported under FSDP ({path}); "
                                                        "use DDP (no config file) for LoRA runs")
    import torch

    cpu_note = "" if torch.cuda.is_available() or kind != "FSDP" else " (no GPU here: accelerate runs it as DDP on CPUs)"
    return f"launcher: accelerate, {options.num_processes} processes, {kind} from {path}{cpu_note}"


# ---------------------------------------------------------------- generation budget
def check_budget(suite: Suite) -> str:
    """The generation budget against the eval split's longest chosen response (bench.evaluation.budget),
    when the data and the tokenizer can be had here; the runner checks again before generating."""
    cfg = suite.data
    if _reads_hub(cfg):
        return "generation budget: checked at run time (the data is on the hub)"
    try:
        tokenizer = _policy_tokenizer(suite)
        pairs = load_pairs(cfg, progress=False).pairs
    except BenchError:
        return "generation budget: checked at run time (data or tokenizer not available here)"
    split = split_pairs(pairs, eval_prompts=cfg.eval_prompts, drift_pairs=cfg.drift_pairs, seed=cfg.shuffle_seed)
    return check_generation_budget(suite, split.eval, tokenizer)


def _policy_tokenizer(suite: Suite):
    if suite.model.policy.startswith(BUILTIN_PREFIX):
        # Imported here: bench.models imports transformers at its top (seconds at every validate).
        from bench.models import build_builtin_tokenizer

        return build_builtin_tokenizer(suite.model.builtin.tokenizer, builtin_words(suite.data.source))
    return load_tokenizer(suite.model.policy, trust_remote_code=suite.model.trust_remote_code)


# ---------------------------------------------------------------- data
def check_data(suite: Suite) -> str:
    """A local or builtin source must load; a hub dataset needs the network (not downloaded here)."""
    return _check_data_counts(suite)[0]


def _check_data_counts(suite: Suite) -> tuple[str, int | None]:
    """(what was checked, training pairs after the held-out splits; None when not known here)."""
    cfg = suite.data
    if _reads_hub(cfg):
        return _check_hub_data(suite), None
    try:
        loaded = load_pairs(cfg, progress=False)
    except NetworkRequiredError:
        raise
    except BenchError as err:
        raise SuiteError(suite.source, "data", str(err)) from None
    if not loaded.pairs:
        raise SuiteError(suite.source, "data.path" if cfg.path else "data",
                         f"no usable pairs (skipped: {dict(loaded.skipped)})")
    try:
        splits = split_pairs(loaded.pairs, eval_prompts=cfg.eval_prompts, drift_pairs=cfg.drift_pairs,
                             seed=cfg.shuffle_seed)
    except BenchError as err:
        raise SuiteError(suite.source, "data", str(err).removeprefix("data: ")) from None
    skipped = f", skipped {dict(loaded.skipped)}" if loaded.skipped else ""
    where = cfg.path or f"builtin task {cfg.source}"
    return f"data: {where}: {len(loaded.pairs)} pairs readable{skipped}, {len(splits.train)} for training", \
        len(splits.train)


def _reads_hub(cfg) -> bool:
    """The suite's data source reads rows from the hub (an unknown source is load_pairs' to report)."""
    source = find_source(cfg.source)
    return source is not None and source.needs_network(cfg)


def _check_hub_data(suite: Suite) -> str:
    cfg = suite.data
    source = get_source(cfg.source)
    hub_id = source.hub_dataset(cfg)
    if not hub_id:
        raise SuiteError(suite.source, "data.path", f"source {cfg.source!r} needs data.path (a local file) or data.hub_id")
    if source.splits and not cfg.hub_id and cfg.split not in source.splits:
        raise SuiteError(suite.source, "data.split", f"{hub_id} has no split {cfg.split!r}; did you mean "
                                                     f"{nearest(cfg.split, source.splits, cutoff=0.0)!r}? "
                                                     f"(splits: {', '.join(source.splits)})")
    if not net.network_available():
        raise NetworkRequiredError(
            f"{suite.source}: data.hub_id: dataset {hub_id} is on the Hugging Face hub and this machine has no "
            "network; download it elsewhere and point the suite at the local file with `data.path: ...`"
        )
    return f"data: hub dataset {hub_id} (reachable; downloaded at run time)"


# ---------------------------------------------------------------- lm-eval tasks
def _task_index(include_path: str | None, tasks: tuple[str, ...]) -> dict[str, dict]:
    """lm-eval's tasks: name -> config, from the scorer's TaskManager (local folder only when it
    holds every task the suite names; lm-eval's whole index otherwise, for the closest-name hint)."""
    # Imported here, not at the top: the scorer brings pandas (the aggregate's file names) and
    # lm-eval's task machinery, which a suite without lm-eval tasks never needs.
    from bench.evaluation.scoring.lm_eval_scorer import task_manager

    index = task_manager(include_path, tasks).task_index
    return {name: (getattr(entry, "cfg", None) or (entry.get("cfg") if isinstance(entry, dict) else None) or {})
            for name, entry in index.items()}


def check_lm_eval_tasks(suite: Suite) -> str:
    """Every task name is known to lm-eval, and every task's data is local, cached or reachable."""
    tasks = suite.scoring.lm_eval.tasks
    if not tasks:
        return "lm-eval: no tasks"

    local = tasks_dir(suite)  # scoring.lm_eval.include_path, else tasks/ next to the suite file
    if local is not None and not local.is_dir():
        raise SuiteError(suite.source, "scoring.lm_eval.include_path", f"{local} is not a directory")
    index = _task_index(str(local) if local is not None else None, tuple(tasks))
    problems: list[BenchError] = []
    for i, task in enumerate(tasks):
        field_name = f"scoring.lm_eval.tasks[{i}]"
        if task not in index:
            near = nearest(task, sorted(index))
            hint = f"; closest known task: {near!r}" if near else ""
            problems.append(SuiteError(suite.source, field_name, f"unknown lm-eval task {task!r}{hint}"))
            continue
        hub = _task_hub_dataset(index[task])
        if hub and not _dataset_reachable(hub):
            problems.append(NetworkRequiredError(
                f"{suite.source}: {field_name}: task {task!r} reads dataset {hub} from the Hugging Face hub, which "
                "is not in the local cache, and this machine has no network; run it where there is network once "
                "(the cache then serves it), or use a local task YAML in suites/tasks/"))
    if problems:
        raise problems[0] if len(problems) == 1 else SuiteErrors(problems)
    return f"lm-eval: tasks {', '.join(tasks)} known, data available"


def _task_hub_dataset(cfg: dict) -> str | None:
    """The hub dataset a task reads, or None for local data (custom loaders, local builders, paths)."""
    path = cfg.get("dataset_path")
    if not path or cfg.get("custom_dataset") or path in _LOCAL_BUILDERS or Path(os.path.expanduser(path)).exists():
        return None
    return path


def _dataset_reachable(dataset: str) -> bool:
    if os.environ.get("HF_DATASETS_OFFLINE", "0") in ("0", "", "false", "False") and \
            os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false", "False"):
        if net.network_available():
            return True
    try:   # cached by `datasets` or by the hub client: lm-eval loads it from there offline
        import datasets.config
        from huggingface_hub import constants

        cached = [Path(datasets.config.HF_DATASETS_CACHE) / dataset.replace("/", "___"),
                  Path(constants.HF_HUB_CACHE) / f"datasets--{dataset.replace('/', '--')}"]
    except Exception:  # noqa: BLE001 - an unusual setup is the same as not cached
        return False
    return any(p.exists() for p in cached)


__all__ = ["ValidationSummary", "validate_suite", "check_data", "check_model", "check_lm_eval_tasks",
           "check_accelerate_config", "check_batch_sizes", "check_backend", "check_scorers"]
