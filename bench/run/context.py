"""What every stage after the preparation shares: the suite's `SuiteContext`, and the resolved
suite written into the results folder."""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.evaluation.evaluate import EvalContext


BUILTIN_PREFIX = "builtin:"
PAIR_FILES = ("train", "eval", "drift")
REFERENCE_ID = "reference"
SUITE_FILE, SUITE_HASH = "suite.resolved.yaml", "suite.resolved.sha256"


def write_resolved_suite(suite, out: Path) -> str:
    """The suite as run (defaults filled, --set applied, paths resolved) and its sha256, into
    the results folder; returns the hash (also a column of runs.parquet)."""
    # Without `executor:`: where the runs ran changes no result, so neither the hash nor the
    # aggregate's key (which reads it) depends on it.
    text = yaml.safe_dump(suite.model_dump(mode="json", exclude={"executor"}), sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    (out / SUITE_FILE).write_text(text)
    (out / SUITE_HASH).write_text(digest + "\n")
    return digest


@dataclass
class SuiteContext:
    suite: object
    suite_dir: Path
    data_key: str
    base_key: str
    reference_dir: Path
    tokenizer: object
    train_data: list
    ref_logps: dict | None
    eval_ctx: EvalContext
    eval_key: str
    data_info: dict
    progress: bool
    fingerprints: dict = dataclasses.field(default_factory=dict)
    train_audit: dict | None = None     # gold verifier over the training pairs (bench.evaluation.scoring.gold.audit_pairs)
    chosen_key: str | None = None       # the chosen responses' judgments (None: no reward model)
    codes: dict = dataclasses.field(default_factory=dict)   # stage (or "train:<run id>") -> CodePrint
    reuse_stale: bool = False           # --reuse-stale: stages of other code stand in for missing ones
    stale: list = dataclasses.field(default_factory=list)   # the suite-wide stages so taken
