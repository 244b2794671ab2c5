"""A regression baseline: made from a trusted results folder, written as YAML, loaded and checked
(one line naming the file and entry for a bad one)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from bench.errors import BenchError
from bench.tables.results import REFERENCE, metric_info, read_results
from bench.gate.invariants import DPO_KEYS, IDENTITY_RTOL, default_identities, zero_margin_loss
from bench.gate.observed import TRAIN_LOG, observe
from bench.gate.rule import DIRECTIONS


FORMAT = 2


DEFAULT_CONFIDENCE = 0.99


def make_baseline(results_dir: str | Path, *, anchor: str | None = None, confidence: float = DEFAULT_CONFIDENCE,
                  labels: Iterable[str] | None = None) -> dict:
    """A baseline dict from a trusted results folder (``bench.py baseline``)."""
    if not 0.5 < confidence < 1:
        raise BenchError(f"--confidence must lie in (0.5, 1), got {confidence}")
    observed = observe(results_dir)
    keep = set(labels) if labels else None
    trained = sorted({label for label, _, _ in observed.values if label != REFERENCE})
    if anchor is None:
        anchor = _default_anchor(observed.objectives, trained)
    elif anchor not in trained:
        raise BenchError(f"--anchor {anchor}: no such trained label in {results_dir}; labels are: {', '.join(trained)}")
    metrics = []
    for (label, scorer, metric), by_seed in sorted(observed.values.items()):
        if keep is not None and label not in keep:
            continue
        finite = {s: v for s, v in by_seed.items() if math.isfinite(v)}
        if not finite:
            continue
        entry = {"label": label, "scorer": scorer, "metric": metric, "direction": _default_direction(scorer, metric),
                 "seeds": {int(s): _round(v) for s, v in sorted(finite.items())}}
        items = observed.items.get((label, scorer, metric))
        if items:
            entry["n"] = items
        metrics.append(entry)
    contrasts = []
    if anchor is not None:
        for (label, scorer, metric), by_seed in sorted(observed.values.items()):
            if label in (anchor, REFERENCE) or (keep is not None and label not in keep):
                continue
            base = observed.values.get((anchor, scorer, metric), {})
            diffs = {s: by_seed[s] - base[s] for s in sorted(set(by_seed) & set(base))
                     if math.isfinite(by_seed[s]) and math.isfinite(base[s])}
            if len(diffs) >= 2:
                entry = {"label": label, "minus": anchor, "scorer": scorer, "metric": metric,
                         "seeds": {int(s): _round(d) for s, d in diffs.items()}}
                items = observed.items.get((label, scorer, metric))
                if items:
                    entry["n"] = items
                contrasts.append(entry)
    step1 = []
    for label, (name, params) in sorted(observed.objectives.items()):
        closed = zero_margin_loss(name, params)
        if closed is not None and label in observed.logs and (keep is None or label in keep):
            step1.append({"label": label, "value": _round(closed[0], 10), "form": closed[1]})
    identities = [i for i in default_identities(observed.objectives)
                  if keep is None or (i["label"] in keep and i["equals"] in keep)]
    suites = sorted(set(read_results(results_dir)["suite"].dropna().astype(str))) or ["SUITE"]
    made_by = (f"python bench.py run suites/{suites[0]}.yaml --out results/{suites[0]} --quiet && "
               f"python bench.py baseline results/{suites[0]} --confidence {confidence:g}"
               + (f" --anchor '{anchor}'" if anchor and anchor != _default_anchor(observed.objectives, trained) else ""))
    from bench.gate.integrity_check import flatten, read

    facts = read(results_dir)
    integrity = {k: _round(v, 12) if isinstance(v, float) else v for k, v in flatten(facts).items()} if facts else {}
    return {"format": FORMAT, "suite": ",".join(suites), "made_by": made_by, "confidence": confidence,
            "anchor": anchor, "invariants": {"step1_loss": step1, "identities": identities},
            "integrity": integrity, "metrics": metrics, "contrasts": contrasts}


def _default_anchor(objectives: dict[str, tuple[str, dict]], trained: list[str]) -> str | None:
    # plain DPO first: a DPO label with training overrides (e.g. a zero-effect control) is not the anchor
    dpo = sorted((label for label in trained if objectives.get(label, ("",))[0] == "dpo"),
                 key=lambda label: not set(objectives[label][1]) <= DPO_KEYS)
    return dpo[0] if dpo else (trained[0] if trained else None)


def _round(value: float, digits: int = 8) -> float:
    return float(f"{value:.{digits}g}")


def write_baseline(path: str | Path, baseline: dict) -> Path:
    """Write a baseline as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".yaml", ".yml"):
        header = ("# Regression baseline: per-seed values of a trusted run (suites/baselines/README.md).\n"
                  f"# Regenerate: {baseline.get('made_by', 'python bench.py baseline RESULTS_DIR')} -o {path}\n")
        path.write_text(header + yaml.safe_dump(baseline, sort_keys=False, width=120), encoding="utf-8")
    else:
        path.write_text(json.dumps(baseline, indent=2) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class Entry:
    label: str
    scorer: str
    metric: str
    direction: str
    seeds: tuple[float, ...] = ()          # per-seed values (the rule), or
    value: float | None = None             # a fixed value and tolerance (older baselines)
    tolerance: float | None = None
    items: int | None = None
    floor: float | None = None
    minus: str | None = None               # a contrast: label − minus, paired by seed

    @property
    def name(self) -> str:
        who = f"{self.label} − {self.minus} (paired by seed)" if self.minus else self.label
        return f"{self.scorer}/{self.metric} of {who}"


@dataclass
class Baseline:
    path: Path
    confidence: float
    metrics: list[Entry]
    contrasts: list[Entry]
    step1: list[dict]
    identities: list[dict]
    integrity: dict[str, float]          # invariants.json's pinned values (bench.gate.integrity_check.flatten)


def load_baseline(path: str | Path) -> Baseline:
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
    confidence = _number(data.get("confidence", DEFAULT_CONFIDENCE), path, "confidence")
    if not 0.5 < confidence < 1:
        raise BenchError(f"{path}: confidence: must lie in (0.5, 1), got {confidence}")
    default_tol = data.get("default_tolerance")
    if default_tol is not None and _number(default_tol, path, "default_tolerance") < 0:
        raise BenchError(f"{path}: default_tolerance: must be >= 0, got {default_tol}")
    metrics = [_entry(item, f"metrics[{i}]", default_tol, path) for i, item in enumerate(data["metrics"])]
    contrasts_raw = data.get("contrasts") or []
    if not isinstance(contrasts_raw, list):
        raise BenchError(f"{path}: contrasts: expected a list")
    contrasts = [_entry(item, f"contrasts[{i}]", None, path, contrast=True) for i, item in enumerate(contrasts_raw)]
    invariants = data.get("invariants") or {}
    if not isinstance(invariants, dict):
        raise BenchError(f"{path}: invariants: expected a mapping")
    step1 = _list_of(invariants.get("step1_loss"), path, "invariants.step1_loss", ("label", "value"))
    for i, item in enumerate(step1):
        _number(item["value"], path, f"invariants.step1_loss[{i}].value")
    identities = _list_of(invariants.get("identities"), path, "invariants.identities", ("label", "equals"))
    for i, item in enumerate(identities):
        if _number(item.get("rtol", IDENTITY_RTOL), path, f"invariants.identities[{i}].rtol") < 0:
            raise BenchError(f"{path}: invariants.identities[{i}].rtol: must be >= 0")
    integrity = data.get("integrity") or {}
    if not isinstance(integrity, dict):
        raise BenchError(f"{path}: integrity: expected a mapping name -> number")
    for key, value in integrity.items():
        _number(value, path, f"integrity.{key}")
    return Baseline(path, confidence, metrics, contrasts, step1, identities, integrity)


def _list_of(value: Any, path: Path, where: str, keys: tuple[str, ...]) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BenchError(f"{path}: {where}: expected a list")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise BenchError(f"{path}: {where}[{i}]: expected a mapping, got {item!r}")
        for key in keys:
            if key not in item:
                raise BenchError(f"{path}: {where}[{i}]: missing field '{key}'")
    return value


def _entry(item: Any, where: str, default_tol: Any, path: Path, contrast: bool = False) -> Entry:
    if not isinstance(item, dict):
        raise BenchError(f"{path}: {where}: expected a mapping, got {item!r}")
    for key in ("label", "scorer", "metric") + (("minus",) if contrast else ()):
        if key not in item:
            raise BenchError(f"{path}: {where}: missing field '{key}'")
    scorer, metric = str(item["scorer"]), str(item["metric"])
    direction = "either" if contrast else item.get("direction") or _default_direction(scorer, metric)
    if direction not in DIRECTIONS:
        raise BenchError(f"{path}: {where}.direction: {direction!r} is not one of {', '.join(DIRECTIONS)}")
    items = item.get("n")
    if items is not None and (isinstance(items, bool) or not isinstance(items, int) or items < 1):
        raise BenchError(f"{path}: {where}.n: expected a positive integer, got {items!r}")
    floor = item.get("floor")
    if floor is not None and _number(floor, path, f"{where}.floor") < 0:
        raise BenchError(f"{path}: {where}.floor: must be >= 0, got {floor}")
    common = dict(label=str(item["label"]), scorer=scorer, metric=metric, direction=direction, items=items,
                  floor=None if floor is None else float(floor), minus=str(item["minus"]) if contrast else None)
    if "seeds" in item:
        seeds = item["seeds"]
        if not isinstance(seeds, dict) or not seeds:
            raise BenchError(f"{path}: {where}.seeds: expected a non-empty mapping seed -> value")
        values = tuple(_number(v, path, f"{where}.seeds[{k}]") for k, v in seeds.items())
        return Entry(seeds=values, **common)
    if contrast or "value" not in item:
        raise BenchError(f"{path}: {where}: missing field 'seeds'"
                         + ("" if contrast else " (or 'value' with 'tolerance')"))
    tolerance = _number(item.get("tolerance", default_tol if default_tol is not None else 0.05), path,
                        f"{where}.tolerance")
    if tolerance < 0:
        raise BenchError(f"{path}: {where}.tolerance: must be >= 0, got {tolerance}")
    return Entry(value=_number(item["value"], path, f"{where}.value"), tolerance=tolerance, **common)


def _number(value: Any, path: Path, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BenchError(f"{path}: {where}: expected a finite number, got {value!r}")
    return float(value)


def _default_direction(scorer: str, metric: str) -> str:
    if scorer == TRAIN_LOG:
        return "either"        # a loss or a batch accuracy mid-training: a change either way is a change
    higher = metric_info(scorer, metric).higher_is_better
    return "either" if higher is None else "higher_is_better" if higher else "lower_is_better"
