"""Dataset loader for the local lm-eval task `arith_qa`.

lm-eval passes `dataset_kwargs.data_files` to `datasets.load_dataset` unchanged, so a
relative path there resolves against the *process's* cwd, not the YAML. The task uses
lm-eval's `custom_dataset: !function` hook instead: lm-eval imports this module from the
YAML's directory, and the data file is found next to this file, from any cwd.
"""
from __future__ import annotations

from pathlib import Path

DATA_FILE = Path(__file__).resolve().with_name("arith_qa.jsonl")


def load(**_metadata):
    """Return a DatasetDict with one `test` split (lm-eval passes task metadata; unused)."""
    import datasets

    return datasets.load_dataset("json", data_files={"test": str(DATA_FILE)})
