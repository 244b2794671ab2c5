"""prefbench: an evaluation-first benchmark harness for preference optimisation objectives.

    from bench import run_suite, load_results      # the Python API (bench.api)

The two names are imported on first use: running a suite needs torch and transformers, and
every `import bench.<module>` (the CLI's --help, `validate`, the trainer's subprocesses) would
otherwise pay for them.
"""
from __future__ import annotations

__all__ = ["run_suite", "load_results"]


def __getattr__(name: str):
    if name in __all__:
        from bench import api

        return getattr(api, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
