"""`bench.py validate`: check everything about a suite that can be checked without training.

Schema, objectives and hyperparameters, grid and duplicate runs (all via `load_suite`);
the data source (a local file must exist and parse; a hub dataset needs the network);
the policy and reward models (`bench.models.resolve_model`; `builtin:` names are built
in code); and the lm-eval task names (lm-eval's own TaskManager, with the suite's local
`tasks/` folder on its include path). Each failure is one line naming file and field.
"""
from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.config import RunSpec, Suite, expand_runs, load_suite
from bench.errors import BenchError, ModelNotFoundError, NetworkRequiredError, SuiteError

BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = ("builtin:tiny-llama",)
_ROW_SOURCES = ("preference", "hh_rlhf")   # sources that read rows from a file or the hub


@dataclass
class ValidationSummary:
    """What `validate` found: the suite, its runs, and a note per checked resource."""

    suite: str
    file: str
    runs: list[RunSpec]
    checks: list[str] = field(default_factory=list)

    @property
    def num_runs(self) -> int:
        return len(self.runs)

    def __str__(self) -> str:
        lines = [f"suite {self.suite} ({self.file}): OK, {self.num_runs} runs"]
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
    """Load and check the suite completely; raise a one-line BenchError at the first fault."""
    suite = load_suite(path, list(overrides))
    summary = ValidationSummary(suite=suite.name, file=str(path), runs=expand_runs(suite))
    summary.checks.append(check_data(suite))
    summary.checks.append(check_model(suite, suite.model.policy, "model.policy"))
    if suite.reward_model.kind == "load":
        summary.checks.append(check_model(suite, suite.reward_model.path, "reward_model.path"))
    summary.checks.append(check_lm_eval_tasks(suite))
    if suite.launcher == "accelerate":
        summary.checks.append(check_accelerate_config(suite))
    return summary


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
    if kind == "FSDP" and any(run.training.lora is not None for run in expand_runs(suite)):
        raise SuiteError(suite.source, "training.lora", f"LoRA is not supported under FSDP ({path}); "
                                                        "use DDP (no config file) for LoRA runs")
    import torch

    cpu_note = "" if torch.cuda.is_available() or kind != "FSDP" else " (no GPU here: accelerate runs it as DDP on CPUs)"
    return f"launcher: accelerate, {options.num_processes} processes, {kind} from {path}{cpu_note}"


# ---------------------------------------------------------------- data
def check_data(suite: Suite) -> str:
    """A local or builtin source must load; a hub dataset needs the network (not downloaded here)."""
    cfg = suite.data
    if not cfg.path and cfg.source in _ROW_SOURCES:
        return _check_hub_data(suite)
    from bench.data.sources import load_pairs

    if not cfg.path:  # builtin task: a few pairs prove the task name and its options
        cfg = cfg.model_copy(update={"limit": min(cfg.limit or 16, 16)})
    try:
        loaded = load_pairs(cfg, progress=False)
    except NetworkRequiredError:
        raise
    except BenchError as err:
        raise SuiteError(suite.source, "data", str(err)) from None
    if not loaded.pairs:
        raise SuiteError(suite.source, "data.path" if cfg.path else "data",
                         f"no usable pairs (skipped: {dict(loaded.skipped)})")
    skipped = f", skipped {dict(loaded.skipped)}" if loaded.skipped else ""
    where = cfg.path or f"builtin task {cfg.source}"
    return f"data: {where}: {len(loaded.pairs)} pairs readable{skipped}"


def _check_hub_data(suite: Suite) -> str:
    from bench.data.sources import HH_HUB_ID
    from bench.net import network_available

    cfg = suite.data
    hub_id = cfg.hub_id or (HH_HUB_ID if cfg.source == "hh_rlhf" else None)
    if not hub_id:
        raise SuiteError(suite.source, "data.path", f"source {cfg.source!r} needs data.path (a local file) or data.hub_id")
    if not network_available():
        raise NetworkRequiredError(
            f"{suite.source}: data.hub_id: dataset {hub_id} is on the Hugging Face hub and this machine has no "
            "network; download it elsewhere and point the suite at the local file with `data.path: ...`"
        )
    return f"data: hub dataset {hub_id} (reachable; downloaded at run time)"


# ---------------------------------------------------------------- models
def check_model(suite: Suite, name: str, field_name: str) -> str:
    """A builtin name, an existing HF model directory, or a hub id that is cached or reachable."""
    if name.startswith(BUILTIN_PREFIX):
        if name not in BUILTIN_MODELS:
            near = difflib.get_close_matches(name, BUILTIN_MODELS, n=1, cutoff=0.0)
            raise SuiteError(suite.source, field_name, f"unknown builtin model {name!r}; did you mean {near[0]!r}?")
        return f"{field_name}: {name} (built in code)"
    from bench.models import resolve_model

    try:
        resolved = resolve_model(name)
    except NetworkRequiredError as err:
        raise NetworkRequiredError(f"{suite.source}: {field_name}: {err}") from None
    except ModelNotFoundError as err:
        raise SuiteError(suite.source, field_name, str(err)) from None
    return f"{field_name}: {resolved}"


# ---------------------------------------------------------------- lm-eval tasks
@functools.lru_cache(maxsize=4)
def _known_tasks(include_path: str | None) -> frozenset[str]:
    """lm-eval's task names (slow to index, about 10 s, so cached per include path)."""
    from lm_eval.tasks import TaskManager

    return frozenset(TaskManager(include_path=include_path).all_tasks)


def check_lm_eval_tasks(suite: Suite) -> str:
    tasks = suite.scoring.lm_eval.tasks
    if not tasks:
        return "lm-eval: no tasks"
    local = suite.suite_dir / "tasks"  # local task YAMLs live next to the suite file
    known = _known_tasks(str(local) if local.is_dir() else None)
    for i, task in enumerate(tasks):
        if task not in known:
            near = difflib.get_close_matches(task, sorted(known), n=1)
            hint = f"; closest known task: {near[0]!r}" if near else ""
            raise SuiteError(suite.source, f"scoring.lm_eval.tasks[{i}]", f"unknown lm-eval task {task!r}{hint}")
    return f"lm-eval: tasks {', '.join(tasks)} known"


__all__ = ["ValidationSummary", "validate_suite", "check_data", "check_model", "check_lm_eval_tasks",
           "check_accelerate_config"]
