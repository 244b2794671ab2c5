"""Regression check of a results folder against a baseline file (CI's gate).

Baseline file (YAML or JSON)::

    default_tolerance: 0.05            # absolute; used where an entry gives none
    metrics:
      - label: dpo[beta=0.1]
        scorer: gold
        metric: accuracy
        value: 0.42                    # mean across seeds when the baseline was made
        tolerance: 0.10                # optional
        direction: higher_is_better    # or lower_is_better, or either (two-sided)

A metric regresses when, for ``higher_is_better``, the new mean across seeds is below
``value - tolerance``; for ``lower_is_better`` above ``value + tolerance``; for
``either``, off by more than ``tolerance`` in either direction. A baseline metric that is
missing from the results (or NaN) is a regression too: a silently dropped scorer must not pass.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from bench.errors import BenchError
from bench.report import aggregate
from bench.results import metric_info, read_results, read_runs

DIRECTIONS = ("higher_is_better", "lower_is_better", "either")
DEFAULT_TOLERANCE = 0.05


@dataclass
class CheckResult:
    ok: bool
    regressions: list[str] = field(default_factory=list)
    checked: int = 0


@dataclass(frozen=True)
class BaselineEntry:
    label: str
    scorer: str
    metric: str
    value: float
    tolerance: float
    direction: str

    def regressed(self, new: float) -> bool:
        if not math.isfinite(new):
            return True
        if self.direction == "higher_is_better":
            return new < self.value - self.tolerance
        if self.direction == "lower_is_better":
            return new > self.value + self.tolerance
        return abs(new - self.value) > self.tolerance

    def describe(self, new: float) -> str:
        shown = "missing" if not math.isfinite(new) else f"{new:.4g}"
        return (f"{self.scorer}/{self.metric} of {self.label}: baseline {self.value:.4g}, now {shown} "
                f"(tolerance {self.tolerance:g}, {self.direction})")


def load_baseline(path: str | Path) -> list[BaselineEntry]:
    """Parse and validate a baseline file; any problem is one BenchError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{path}: baseline file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))   # YAML is a superset of JSON
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise BenchError(f"{path}: not valid YAML/JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), list):
        raise BenchError(f"{path}: a baseline must be a mapping with a 'metrics' list")
    default = _number(data.get("default_tolerance", DEFAULT_TOLERANCE), path, "default_tolerance")
    if default < 0:
        raise BenchError(f"{path}: default_tolerance: must be >= 0, got {default}")
    return [_entry(item, i, default, path) for i, item in enumerate(data["metrics"])]


def _entry(item: Any, index: int, default: float, path: Path) -> BaselineEntry:
    where = f"metrics[{index}]"
    if not isinstance(item, dict):
        raise BenchError(f"{path}: {where}: expected a mapping, got {item!r}")
    for key in ("label", "scorer", "metric", "value"):
        if key not in item:
            raise BenchError(f"{path}: {where}: missing field '{key}'")
    direction = item.get("direction") or _default_direction(str(item["scorer"]), str(item["metric"]))
    if direction not in DIRECTIONS:
        raise BenchError(f"{path}: {where}.direction: {direction!r} is not one of {', '.join(DIRECTIONS)}")
    tolerance = _number(item.get("tolerance", default), path, f"{where}.tolerance")
    if tolerance < 0:
        raise BenchError(f"{path}: {where}.tolerance: must be >= 0, got {tolerance}")
    return BaselineEntry(str(item["label"]), str(item["scorer"]), str(item["metric"]),
                         _number(item["value"], path, f"{where}.value"), tolerance, direction)


def _number(value: Any, path: Path, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BenchError(f"{path}: {where}: expected a finite number, got {value!r}")
    return float(value)


def _default_direction(scorer: str, metric: str) -> str:
    higher = metric_info(scorer, metric).higher_is_better
    return "either" if higher is None else "higher_is_better" if higher else "lower_is_better"


def _means(results_dir: str | Path) -> dict[tuple[str, str, str], float]:
    """(label, scorer, metric) -> mean across the ok seeds of a results folder."""
    long = aggregate(read_results(results_dir), read_runs(results_dir))
    return {(r.label, r.scorer, r.metric): float(r.value) for r in long.itertuples()}


def check(results_dir: str | Path, baseline_file: str | Path) -> CheckResult:
    """Compare every baseline metric with the folder's mean across seeds."""
    entries = load_baseline(baseline_file)
    means = _means(results_dir)
    regressions = []
    for entry in entries:
        new = means.get((entry.label, entry.scorer, entry.metric), math.nan)
        if entry.regressed(new):
            regressions.append(entry.describe(new))
    return CheckResult(ok=not regressions, regressions=regressions, checked=len(entries))


def make_baseline(results_dir: str | Path, tolerances: Mapping[str, float] | float | None = None) -> dict:
    """A baseline dict from a results folder: every (label, scorer, metric) mean.

    ``tolerances``: one number for all, or a mapping of ``scorer/metric`` (or ``scorer``)
    to a tolerance with an optional ``default`` key.
    """
    if tolerances is None or isinstance(tolerances, (int, float)):
        table, default = {}, DEFAULT_TOLERANCE if tolerances is None else float(tolerances)
    else:
        table = dict(tolerances)
        default = float(table.pop("default", DEFAULT_TOLERANCE))
    entries = []
    for (label, scorer, metric), value in sorted(_means(results_dir).items()):
        if not math.isfinite(value):
            continue
        tol = table.get(f"{scorer}/{metric}", table.get(scorer, default))
        entries.append({"label": label, "scorer": scorer, "metric": metric, "value": round(value, 6),
                        "tolerance": float(tol), "direction": _default_direction(scorer, metric)})
    return {"default_tolerance": default, "metrics": entries}


def write_baseline(path: str | Path, baseline: dict) -> Path:
    """Write a baseline as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".yaml", ".yml"):
        path.write_text(yaml.safe_dump(baseline, sort_keys=False), encoding="utf-8")
    else:
        path.write_text(json.dumps(baseline, indent=2) + "\n", encoding="utf-8")
    return path
