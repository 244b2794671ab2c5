"""Score a checkpoint on lm-eval tasks through lm-eval itself (`lm_eval.simple_evaluate`).

The numbers are lm-eval's own (metric, stderr, version), reshaped into tidy rows; nothing
is re-implemented here. Local task YAMLs (e.g. `suites/tasks/arith_qa.yaml`) are found
through `include_path`. lm-eval's hub access is switched off for the call only when the
machine has no network (a local task reads a local file either way).

`lm_eval` itself is imported inside the functions that use it, never at the top: its import
takes seconds (every validate and report would pay it), and the hub's offline switches it
reads at import time must be set first (`offline_hub`).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.errors import BenchError
from bench.evaluation.capture import output_to_log
from bench.evaluation.generation.registry import get_backend, list_backends
from bench.evaluation.scoring.registry import register_scorer
from bench.tables.aggregate import LM_EVAL_UNITS
from trainers.errors import nearest
from trainers import devices, net   # modules, not names: tests replace placement and the network probe
from trainers.models import resolve_model

_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@functools.cache
def _environment_info() -> dict:
    """lm-eval's environment record (torch's `collect_env` report, versions, git hash), once."""
    from lm_eval.loggers import utils as lm_eval_log_utils

    info: dict = {}
    lm_eval_log_utils.add_env_info(info)
    return info


def _add_env_info_once(storage: dict) -> None:
    storage.update(_environment_info())


def record_environment_once() -> None:
    """Make `simple_evaluate` compute its environment record once per process.

    `simple_evaluate` ends with `add_env_info`, whose `torch.utils.collect_env` report starts
    subprocesses (pip, nvidia-smi, ...): 1.1-1.4 s per call on this 2-core machine, as long
    as training a run. The environment does not change within a process, so later calls copy
    the first record; the results keep the same fields.
    """
    import lm_eval.evaluator

    lm_eval.evaluator.add_env_info = _add_env_info_once


def lm_eval_version() -> str:
    try:
        return version("lm_eval")
    except PackageNotFoundError:  # installed from a checkout without metadata
        import lm_eval

        return getattr(lm_eval, "__version__", "unknown")


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """Set the offline switches for the duration of the call, then restore them.

    huggingface_hub and datasets read these variables at import time, so their already
    imported constants are switched too (and restored afterwards).
    """
    import sys

    saved_env = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    os.environ.update(_OFFLINE_ENV)
    patched = []
    for module, attr in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                         ("datasets.config", "HF_DATASETS_OFFLINE")):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, attr):
            patched.append((mod, attr, getattr(mod, attr)))
            setattr(mod, attr, True)
    try:
        yield
    finally:
        for mod, attr, old in patched:
            setattr(mod, attr, old)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def task_manager(include_path, tasks: Sequence[str] = ()):
    """lm-eval's TaskManager for ``tasks`` with the suite's local task folder(s) ``include_path``."""
    paths = [str(Path(p).resolve()) for p in ([include_path] if isinstance(include_path, (str, Path)) else include_path or [])]
    for p in paths:
        if not Path(p).is_dir():
            raise BenchError(f"lm-eval include_path {p} is not a directory")
    return _cached_task_manager(tuple(paths), frozenset(tasks))


@functools.lru_cache(maxsize=4)
def _cached_task_manager(paths: tuple[str, ...], tasks: frozenset[str]):
    """One TaskManager per include path and task set per process. Indexing every task YAML lm-eval
    ships takes about 10 s (twice per run: validate and evaluate), which dominated a tiny suite; when
    every task the suite names is in its own folder, only that folder is indexed."""
    from lm_eval.tasks import TaskManager

    if paths and tasks:
        local = TaskManager(include_path=list(paths), include_defaults=False)
        if tasks <= set(local.all_tasks):
            return local
    return TaskManager(include_path=list(paths) or None)


def _check_tasks(manager, tasks: Sequence[str]) -> None:
    known = set(manager.all_tasks)
    for task in tasks:
        if task not in known:
            close = nearest(task, sorted(known))
            hint = f" (closest known: {close!r})" if close else ""
            raise BenchError(f"unknown lm-eval task {task!r}{hint}")


def tidy_results(results: dict, lm_version: str) -> list[dict]:
    """lm-eval's results dict -> rows: task, metric, filter, value, stderr, n_shot, versions, n.

    lm-eval keys metrics as ``"<metric>,<filter>"`` with ``"<metric>_stderr,<filter>"``
    beside them; the filter is kept as its own column.
    """
    rows = []
    for task, metrics in results["results"].items():
        n = results.get("n-samples", {}).get(task, {})
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key:
                continue  # "alias" and the stderr entries (joined below)
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({
                "task": task, "metric": metric, "filter": filt, "value": _num(value),
                "stderr": _num(stderr), "n_shot": results.get("n-shot", {}).get(task),
                "task_version": results.get("versions", {}).get(task),
                "lm_eval_version": lm_version, "n": n.get("effective") if isinstance(n, dict) else n,
            })
    return rows


def _num(x):
    # lm-eval writes "N/A" for a stderr it could not compute (e.g. one sample).
    return float(x) if isinstance(x, (int, float)) else None


def lm_eval_backend(backend: str):
    """The registered generation backend `backend`, refused in one line when lm-eval has no model type for it."""
    spec = get_backend(backend)
    if spec.lm_eval_model is None:
        usable = [name for name in list_backends() if get_backend(name).lm_eval_model is not None]
        raise BenchError(f"generation backend {backend!r} has no lm-eval model type; lm-eval runs with "
                         f"{', '.join(usable)}")
    return spec


def model_args(backend: str, model_path: str, *, dtype: str, tensor_parallel_size: int = 1,
               gpu_memory_utilization: float = 0.85, max_model_len: int | None = None,
               trust_remote_code: bool = False) -> str:
    """lm-eval's `model_args` for any backend: the same dtype (`trainers.devices.placement`); the
    parallelism and context limit in the backend's own words (its `lm_eval_args`)."""
    args = [f"pretrained={model_path}", f"dtype={dtype}"]
    if trust_remote_code:   # lm-eval passes it on to from_pretrained / vllm.LLM (its default is False)
        args.append("trust_remote_code=True")
    args += lm_eval_backend(backend).cls.lm_eval_args(tensor_parallel_size=tensor_parallel_size,
                                                      gpu_memory_utilization=gpu_memory_utilization,
                                                      max_model_len=max_model_len)
    return ",".join(args)


def evaluate(checkpoint, tasks: Sequence[str], *, include_path=None, limit: int | float | None = None,
             num_fewshot: int | None = None, batch_size: int = 16, backend: str = "hf",
             tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
             max_model_len: int | None = None, trust_remote_code: bool = False,
             per_doc: dict | None = None) -> list[dict]:
    """Run lm-eval on ``checkpoint`` (HF dir or hub id) and return tidy result rows.

    A ``per_doc`` dict is filled with each document's metric values (`per_doc_values`), whose
    means are the rows' values: comparisons between policies then pair by document.

    ``backend`` is a registered generation backend; lm-eval runs its model type (the backend's
    `lm_eval_model`). The device and dtype are `trainers.devices.placement("lm_eval")`'s under
    all. The hub is switched off for the call only when this machine has no network: hub tasks
    (hellaswag...) then fail in one line instead of hanging, while with network they download
    as lm-eval does.
    """
    spec = lm_eval_backend(backend)
    tasks = list(tasks)
    if not tasks:
        return []
    model_path = resolve_model(str(checkpoint))
    where = devices.placement("lm_eval")
    hub = contextlib.nullcontext() if net.network_available() else offline_hub()
    with hub:
        import lm_eval

        record_environment_once()
        manager = task_manager(include_path, tasks)
        _check_tasks(manager, tasks)
        args = model_args(backend, model_path, dtype=where.dtype_name, tensor_parallel_size=tensor_parallel_size,
                          gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                          trust_remote_code=trust_remote_code)
        out = lm_eval.simple_evaluate(
            model=spec.lm_eval_model, model_args=args, tasks=tasks, task_manager=manager, limit=limit,
            num_fewshot=num_fewshot, batch_size=batch_size,
            device=str(where.device) if spec.cls.lm_eval_takes_device else None, log_samples=per_doc is not None,
        )
    spec.cls.after_lm_eval()
    devices.release_memory()
    if out is None:  # simple_evaluate returns None on non-zero ranks of a distributed run
        return []
    if per_doc is not None:
        per_doc.update(per_doc_values(out.get("samples") or {}))
    return tidy_results(out, lm_eval_version())


def per_doc_values(samples: dict) -> dict[str, dict[str, dict[str, float]]]:
    """lm-eval's logged samples -> {task: {metric: {doc_id: value}}}, for the numeric metrics a task
    reports under one filter (under several, a metric's rows are not one mean, so none is kept)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for task, examples in samples.items():
        values: dict[str, dict[str, dict[str, float]]] = {}
        for example in examples:
            for metric in example.get("metrics", []):
                value = example.get(metric)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    values.setdefault(metric, {}).setdefault(example.get("filter", "none"), {})[
                        str(example["doc_id"])] = float(value)
        out[task] = {metric: next(iter(by_filter.values())) for metric, by_filter in values.items()
                     if len(by_filter) == 1}
    return out


@register_scorer("lm_eval", kind="policy", order=40, enabled=lambda ctx: bool(ctx.lm_eval.tasks),
                 metrics=("<each task's own metrics>",),
                 reference="Gao et al., lm-evaluation-harness (doi:10.5281/zenodo.5371628)")
def run_lm_eval(policy_dir, ctx, out_dir) -> None:
    """lm_eval.json (one row per task metric) and lm_eval_units.json (each document's values);
    lm-eval runs the suite's generation backend's model type."""
    gen = ctx.generation
    per_doc: dict = {}
    with output_to_log(out_dir / "lm_eval.log"):   # its notices and bars: kept, off the screen
        rows = evaluate(str(policy_dir), ctx.lm_eval.tasks, include_path=ctx.lm_eval_include,
                        limit=ctx.lm_eval.limit, num_fewshot=ctx.lm_eval.num_fewshot,
                        batch_size=ctx.lm_eval.batch_size, backend=gen.backend,
                        tensor_parallel_size=gen.tensor_parallel_size,
                        gpu_memory_utilization=gen.gpu_memory_utilization, max_model_len=gen.max_model_len,
                        trust_remote_code=ctx.trust_remote_code, per_doc=per_doc)
    (out_dir / "lm_eval.json").write_text(json.dumps(rows, sort_keys=True, default=str))
    (out_dir / LM_EVAL_UNITS).write_text(json.dumps(per_doc, sort_keys=True))
