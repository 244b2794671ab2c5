"""What the regression gate reads from a results folder: each seed's values and the train logs."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.tables.results import REFERENCE, read_results, read_runs

STEP1_METRICS = ("logps/chosen", "logps/rejected")


TRAIN_LOG = "train_log"                 # the scorer name of values read from the runs' train logs


TRAIN_LOG_METRICS = ("loss", "accuracy", "margin")


CI_WIDTH = "/ci_width"                  # suffix of the reference's interval widths (ci_high − ci_low)


@dataclass
class Observed:
    """What a results folder says, seed by seed."""

    values: dict[tuple[str, str, str], dict[int, float]]   # (label, scorer, metric) -> seed -> value
    items: dict[tuple[str, str, str], int]                 # (label, scorer, metric) -> items per seed (n)
    logs: dict[str, dict[int, list[dict]]]                 # label -> seed -> train-log rows
    objectives: dict[str, tuple[str, dict]]                # label -> (objective name, params)


def observe(results_dir: str | Path) -> Observed:
    """Per-seed values of every ok run of a folder, its train logs and each label's objective.

    Failed runs are left out (as in the leaderboard): a failed seed shrinks m, which widens
    the band, and a label with no ok seed is missing, which fails.
    """
    folder = Path(results_dir)
    table = read_results(folder)
    runs = read_runs(folder)
    ok_ids = None
    logs: dict[str, dict[int, list[dict]]] = {}
    objectives: dict[str, tuple[str, dict]] = {}
    if runs is not None and len(runs):
        ok = runs[runs["status"].astype(str) == "ok"]
        ok_ids = set(ok["run_id"].astype(str))
        for run in ok.itertuples():
            params = _json(getattr(run, "params", "{}"))
            objectives[str(run.label)] = (str(run.objective), params)
            log = getattr(run, "train_log", None)
            if isinstance(log, str) and log:
                path = Path(log) if Path(log).is_absolute() else folder / log
                logs.setdefault(str(run.label), {})[int(run.seed)] = _read_log(path)
    if ok_ids is not None:
        table = table[table["run_id"].astype(str).isin(ok_ids)]
    values: dict[tuple[str, str, str], dict[int, float]] = {}
    items: dict[tuple[str, str, str], int] = {}
    for row in table.itertuples():
        key = (str(row.label), str(row.scorer), str(row.metric))
        seed = int(row.seed) if not pd.isna(row.seed) else 0
        values.setdefault(key, {})[seed] = float(row.value)
        if not pd.isna(row.n):
            items[key] = int(row.n)
        if key[0] == REFERENCE and not pd.isna(row.ci_low) and not pd.isna(row.ci_high):
            # The statistics' own output, on the one policy no objective touches: a bootstrap at
            # the wrong level or over the wrong unit changes the width of every interval.
            values.setdefault((key[0], key[1], key[2] + CI_WIDTH), {})[seed] = float(row.ci_high - row.ci_low)
    for label, by_seed in logs.items():
        name = objectives.get(label, ("",))[0]
        for seed, rows in by_seed.items():
            for metric, value in train_log_summary(rows, name).items():
                values.setdefault((label, TRAIN_LOG, metric), {})[seed] = value
    return Observed(values, items, logs, objectives)


def train_log_summary(rows: list[dict], objective: str) -> dict[str, float]:
    """Train-log values late in training: ``loss``, ``accuracy`` (implicit reward accuracy of the
    batch), ``margin`` and the objective's own logged values (e.g. AdaDPO's ``adadpo/beta_w``),
    each averaged over the logged steps of the second half of training and named ``x@a-b``;
    and the reference log-prob sums of the first batch, ``logps/chosen@1`` and ``logps/rejected@1``.

    One step's value is the mean over one batch of 16-odd pairs, whose composition varies a lot
    between seeds; the mean over the second half keeps "the loss at step N" while averaging
    out the batch, which narrows the band ~sqrt(steps) and so raises the gate's power.
    """
    if not rows:
        return {}
    last = int(rows[-1]["step"])
    late = [r for r in rows if r["step"] > last // 2] or rows[-1:]
    span = f"{late[0]['step']}-{last}" if late[0]["step"] != last else str(last)
    keys = [k for k in TRAIN_LOG_METRICS if k in late[-1]]
    keys += sorted(k for k in late[-1] if objective and k.startswith(objective + "/") and not k.endswith("/loss"))
    out = {}
    for key in keys:
        vals = [float(r[key]) for r in late if isinstance(r.get(key), (int, float))]
        if len(vals) == len(late):
            out[f"{key}@{span}"] = float(np.mean(vals))
    # Step 1 scores the first batch under the reference itself (policy = reference): its log-prob
    # sums depend on the data, the tokenisation, the response masks and the reference model, and
    # on nothing that training does, so a masking or data bug moves them by whole nats.
    first = rows[0] if rows[0]["step"] == 1 else None
    for key in STEP1_METRICS:
        if first is not None and isinstance(first.get(key), (int, float)):
            out[f"{key}@1"] = float(first[key])
    return out


def _json(text: Any) -> dict:
    try:
        value = json.loads(text) if isinstance(text, str) and text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        raise BenchError(f"{path}: train log named in runs.parquet is missing (copy the results folder whole)")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise BenchError(f"{path}: line {number}: not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise BenchError(f"{path}: line {number}: a train-log row needs an integer 'step'")
        rows.append(row)
    return rows
