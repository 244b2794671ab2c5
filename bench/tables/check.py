"""Regression gate: a results folder against a baseline made from a trusted run (CI's check).

``python bench.py baseline RESULTS_DIR -o FILE`` writes the baseline: for every objective
configuration (``label``), scorer and metric, the value of *each seed*, plus the train-log
loss and implicit-reward accuracy at the last step, the paired per-seed differences of every
objective against an anchor objective (``contrasts``) and the golden training invariants
that apply to the suite (``invariants``). ``python bench.py check DIR --baseline FILE``
then decides, per entry, with a rule derived from the baseline's own seed spread:

*Level and contrast entries.* With baseline seed values v_1..v_n (mean v̄, standard deviation
s) and a new run of m seeds (mean w̄), the allowed band is v̄ ± h with

    h = max( t_{n-1, 1-α/2} · s · sqrt(1/n + 1/m),  floor(metric kind) ),

the prediction interval for the mean of m new seeds drawn like the baseline's. A CI rerun
uses the *same* seeds, so a clean run on another machine differs from the baseline only by
float order; that perturbation is at worst as large as drawing new seeds (training is
chaotic over long runs: a different CPU can decorrelate a seed, never do worse than an
independent draw). The band is therefore a worst-case band for clean code. A label with one
seed (the reference policy) takes the spread pooled over the labels that have several.
The floor keeps metrics with no seed spread (a constant, an identity, a count) from alarming
on float noise: see :func:`floor_for`. ``higher_is_better`` metrics fail below the band,
``lower_is_better`` above it, and the others (KL, length, log-ratios, losses) and every
contrast outside it on either side. A metric the baseline has but the results lack fails.

*Invariants* (exact, not statistical, as in TRL's and NeMo-RL's nightly tests):

- ``step1_loss``: at step 1 the policy is the reference, every margin is 0, so a DPO-family
  loss equals its closed form there (DPO: ln 2) to 1e-6, read from the run's train log;
- ``identities``: ADPO with one adaptive segment is DPO: per seed, their train-log losses
  at every logged step and their drift metrics agree to a small tolerance.

Older baselines whose entries carry ``value`` and ``tolerance`` (fixed bands) still load.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import yaml

from bench.errors import BenchError
from bench.tables.results import REFERENCE, metric_info, read_results, read_runs

DIRECTIONS = ("higher_is_better", "lower_is_better", "either")
FORMAT = 2
DEFAULT_CONFIDENCE = 0.99
TRAIN_LOG = "train_log"                 # the scorer name of values read from the runs' train logs
TRAIN_LOG_METRICS = ("loss", "accuracy", "margin")
STEP1_METRICS = ("logps/chosen", "logps/rejected")
STEP1_ATOL = 1e-6
IDENTITY_RTOL = 1e-4
LN2 = math.log(2.0)

# Metrics that are shares of items in [0, 1] (the results table's `n` counts the items).
_RATE_METRICS = {"accuracy", "win_rate_vs_reference", "lc_win_rate_vs_reference", "win_rate_vs_chosen",
                 "chosen_logp_down", "implicit_accuracy", "acc", "acc_norm", "exact_match"}
_COUNT_METRICS = {("train", "steps")}


@dataclass
class CheckResult:
    ok: bool
    regressions: list[str] = field(default_factory=list)
    checked: int = 0
    passed: list[str] = field(default_factory=list)     # one line per passing entry (for --verbose)


# --------------------------------------------------------------------------- reading a results folder

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


# --------------------------------------------------------------------------- the rule

def metric_kind(scorer: str, metric: str) -> str:
    """``rate`` (a share of items in [0, 1]), ``count`` (an integer that float order cannot move),
    ``training value`` (a train-log loss, margin...) or ``continuous``."""
    base = metric.split("@")[0]
    if (scorer, metric) in _COUNT_METRICS:
        return "count"
    if base in _RATE_METRICS or (scorer == TRAIN_LOG and base == "accuracy"):
        return "rate"
    if scorer == TRAIN_LOG or (scorer, metric) == ("train", "final_loss"):
        return "training value"
    return "continuous"


def floor_for(kind: str, mean: float, items: int | None) -> float:
    """The smallest half-width a band may have, per metric kind.

    - rate: two items per seed. Greedy decoding is discontinuous: float noise can flip the
      answer to a prompt whose top two tokens are nearly tied, and a flip moves a share by
      1/n; two flips per seed is noise, not a regression. Without n: 0.02.
    - count: 0.5 (steps are integers; any change is real).
    - training value and continuous: 1e-3·|mean| + 1e-3. Float order moves a short tiny-model run by
      far less (measured: 1e-5 relative, tests/test_gate.py); the floor only matters when the
      seeds agree exactly (a constant metric, the reference's single value, an identity).
    """
    if kind == "rate":
        return 2.0 / items if items else 0.02
    if kind == "count":
        return 0.5
    return 1e-3 * abs(mean) + 1e-3


def t_quantile(df: int, confidence: float) -> float:
    from scipy.stats import t

    return float(t.ppf(1.0 - (1.0 - confidence) / 2.0, df))


@dataclass(frozen=True)
class Band:
    center: float
    low: float
    high: float
    how: str

    def contains(self, value: float, direction: str) -> bool:
        if not math.isfinite(value):
            return False
        if direction == "higher_is_better":
            return value >= self.low
        if direction == "lower_is_better":
            return value <= self.high
        return self.low <= value <= self.high

    def text(self, direction: str) -> str:
        low = "-inf" if direction == "lower_is_better" else f"{self.low:.4g}"
        high = "+inf" if direction == "higher_is_better" else f"{self.high:.4g}"
        return f"[{low}, {high}]"


def band(seed_values: list[float], m: int, *, kind: str, items: int | None, confidence: float,
         pooled: tuple[float, int] | None = None, floor: float | None = None) -> Band:
    """The allowed band for the mean of ``m`` new seeds given the baseline's seed values."""
    v = np.asarray(seed_values, float)
    n, center = len(v), float(v.mean())
    if n >= 2:
        s, df = float(v.std(ddof=1)), n - 1
    elif pooled is not None and pooled[1] >= 1:
        s, df = pooled
    else:
        s, df = 0.0, 0
    half = t_quantile(df, confidence) * s * math.sqrt(1.0 / n + 1.0 / max(m, 1)) if df else 0.0
    minimum = floor if floor is not None else floor_for(kind, center, items)
    how = (f"t-interval over {n} seed{'s' if n > 1 else ''}" + ("" if n >= 2 else " (pooled spread)" if df else "")
           + f", {confidence:.0%}")
    if half < minimum:
        half, how = minimum, f"floor for a {kind}"
    return Band(center, center - half, center + half, how)


def pooled_spread(entries: Iterable[tuple[tuple[str, str], list[float]]]) -> dict[tuple[str, str], tuple[float, int]]:
    """(scorer, metric) -> (pooled within-label standard deviation, its degrees of freedom)."""
    sums: dict[tuple[str, str], list[float]] = {}
    for key, values in entries:
        if len(values) >= 2:
            v = np.asarray(values, float)
            acc = sums.setdefault(key, [0.0, 0])
            acc[0] += float(((v - v.mean()) ** 2).sum())
            acc[1] += len(v) - 1
    return {key: (math.sqrt(ss / df), int(df)) for key, (ss, df) in sums.items() if df}


# --------------------------------------------------------------------------- invariants

def zero_margin_loss(objective: str, params: dict) -> tuple[float, str] | None:
    """The per-pair loss of an objective when policy = reference (every log-ratio 0), in closed
    form, for the objectives that have one; None otherwise (reference-free or composite).

    DPO: −(1−ε)·log σ(0) − ε·log σ(0) = ln 2 for any label smoothing ε; robust DPO:
    ((1−ε) − ε)·ln 2 / (1−2ε) = ln 2; AdaDPO: −log σ(β_w·0 − β·0) = ln 2; ADPO with m adaptive
    segments: m·ln 2 (empty segments count, as the objective says); IPO: (0 − 1/(2β))²;
    hinge: max(0, 1 − 0) = 1.
    """
    if objective in ("dpo", "robust", "adadpo"):
        return LN2, "ln 2"
    if objective == "adpo" and params.get("granularity") == "adaptive" and "m" in params:
        m = int(params["m"])
        return m * LN2, "ln 2" if m == 1 else f"{m}·ln 2"
    if objective == "ipo" and "beta" in params:
        return (0.5 / float(params["beta"])) ** 2, "(1/(2β))²"
    if objective == "hinge":
        return 1.0, "1"
    return None


def default_identities(objectives: dict[str, tuple[str, dict]]) -> list[dict]:
    """Pairs (ADPO adaptive m=1, DPO with the same β and no label smoothing) both in the suite."""
    pairs = []
    for label, (name, params) in sorted(objectives.items()):
        if name != "adpo" or params.get("granularity") != "adaptive" or int(params.get("m", 0)) != 1:
            continue
        beta = params.get("beta")
        for other, (other_name, other_params) in sorted(objectives.items()):
            # a DPO label with training overrides (a control at another learning rate) is not the twin
            if other_name == "dpo" and other_params.get("beta") == beta \
                    and not other_params.get("label_smoothing") and set(other_params) <= _DPO_KEYS:
                pairs.append({"label": label, "equals": other, "rtol": IDENTITY_RTOL})
                break
    return pairs


def _check_step1(label: str, value: float, form: str, logs: dict[int, list[dict]] | None,
                 fails: list[str], passes: list[str]) -> None:
    if not logs:
        fails.append(f"invariant step-1 loss of {label}: no train log in the results")
        return
    for seed, rows in sorted(logs.items()):
        first = next((r for r in rows if r["step"] == 1), None)
        if first is None or not isinstance(first.get("loss"), (int, float)):
            fails.append(f"invariant step-1 loss of {label} seed {seed}: step 1 is not in its train log")
            continue
        loss = float(first["loss"])
        tol = STEP1_ATOL * max(1.0, abs(value))
        line = (f"invariant step-1 loss of {label} seed {seed}: baseline {form} = {value:.7g}, now {loss:.7g}, "
                f"allowed ±{tol:.0e}")
        (passes if abs(loss - value) <= tol else fails).append(line)


def _check_identity(spec: dict, observed: Observed, fails: list[str], passes: list[str]) -> None:
    a, b, rtol = spec["label"], spec["equals"], float(spec.get("rtol", IDENTITY_RTOL))
    logs_a, logs_b = observed.logs.get(a), observed.logs.get(b)
    if not logs_a or not logs_b:
        fails.append(f"invariant {a} equals {b}: {'both' if not logs_a and not logs_b else a if not logs_a else b} "
                     f"missing from the results")
        return
    worst, where = 0.0, ""
    for seed in sorted(set(logs_a) & set(logs_b)):
        steps_b = {r["step"]: r for r in logs_b[seed]}
        for row in logs_a[seed]:
            other = steps_b.get(row["step"])
            if other is None or not isinstance(row.get("loss"), (int, float)):
                continue
            gap = abs(row["loss"] - other["loss"]) / (abs(other["loss"]) + 1e-8)
            if gap > worst:
                worst, where = gap, f"seed {seed} step {row['step']} loss {row['loss']:.7g} vs {other['loss']:.7g}"
        for (label, scorer, metric), values in observed.values.items():
            if label != a or scorer != "drift" or seed not in values:
                continue
            other_value = observed.values.get((b, scorer, metric), {}).get(seed)
            if other_value is None:
                continue
            gap = abs(values[seed] - other_value) / (abs(other_value) + 1e-3)
            if gap > worst:
                worst, where = gap, f"seed {seed} drift/{metric} {values[seed]:.7g} vs {other_value:.7g}"
    line = (f"invariant {a} equals {b} (train-log losses, drift metrics): baseline 0, now max relative gap "
            f"{worst:.2g}{' at ' + where if where else ''}, allowed {rtol:g}")
    (passes if worst <= rtol else fails).append(line)


# --------------------------------------------------------------------------- making a baseline

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
    return {"format": FORMAT, "suite": ",".join(suites), "made_by": made_by, "confidence": confidence,
            "anchor": anchor, "invariants": {"step1_loss": step1, "identities": identities},
            "metrics": metrics, "contrasts": contrasts}


_DPO_KEYS = {"beta", "label_smoothing"}


def _default_anchor(objectives: dict[str, tuple[str, dict]], trained: list[str]) -> str | None:
    # plain DPO first: a DPO label with training overrides (e.g. a zero-effect control) is not the anchor
    dpo = sorted((label for label in trained if objectives.get(label, ("",))[0] == "dpo"),
                 key=lambda label: not set(objectives[label][1]) <= _DPO_KEYS)
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


# --------------------------------------------------------------------------- loading a baseline

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
    return Baseline(path, confidence, metrics, contrasts, step1, identities)


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


# --------------------------------------------------------------------------- checking

def check(results_dir: str | Path, baseline_file: str | Path, *, labels: Iterable[str] | None = None) -> CheckResult:
    """Every baseline entry (restricted to ``labels`` when given) against the results folder."""
    baseline = load_baseline(baseline_file)
    observed = observe(results_dir)
    keep = set(labels) if labels else None

    def wanted(*names: str) -> bool:
        return keep is None or all(name in keep for name in names)

    fails: list[str] = []
    passes: list[str] = []
    checked = 0
    pooled = pooled_spread(((e.scorer, e.metric), list(e.seeds)) for e in baseline.metrics if e.seeds)
    for entry in baseline.metrics:
        if not wanted(entry.label):
            continue
        checked += 1
        new = observed.values.get((entry.label, entry.scorer, entry.metric), {})
        _judge(entry, [v for v in new.values()], baseline.confidence, pooled, fails, passes)
    for entry in baseline.contrasts:
        if not wanted(entry.label, entry.minus):
            continue
        checked += 1
        a = observed.values.get((entry.label, entry.scorer, entry.metric), {})
        b = observed.values.get((entry.minus, entry.scorer, entry.metric), {})
        _judge(entry, [a[s] - b[s] for s in sorted(set(a) & set(b))], baseline.confidence, None, fails, passes)
    for spec in baseline.step1:
        if not wanted(spec["label"]):
            continue
        checked += 1
        _check_step1(spec["label"], float(spec["value"]), str(spec.get("form", "closed form")),
                     observed.logs.get(spec["label"]), fails, passes)
    for spec in baseline.identities:
        if not wanted(spec["label"], spec["equals"]):
            continue
        checked += 1
        _check_identity(spec, observed, fails, passes)
    return CheckResult(ok=not fails, regressions=fails, checked=checked, passed=passes)


def _judge(entry: Entry, new: list[float], confidence: float, pooled, fails: list[str], passes: list[str]) -> None:
    finite = [v for v in new if math.isfinite(v)]
    now = float(np.mean(finite)) if finite and len(finite) == len(new) else math.nan
    kind = metric_kind(entry.scorer, entry.metric)
    if entry.seeds:
        b = band(list(entry.seeds), len(finite), kind=kind, items=entry.items, confidence=confidence,
                 pooled=(pooled or {}).get((entry.scorer, entry.metric)), floor=entry.floor)
    else:
        b = Band(entry.value, entry.value - entry.tolerance, entry.value + entry.tolerance,
                 f"fixed tolerance {entry.tolerance:g}")
    shown = "missing" if not math.isfinite(now) else f"{now:.4g}"
    line = (f"{entry.name}: baseline {b.center:.4g}, now {shown}, allowed {b.text(entry.direction)} "
            f"({b.how}, {entry.direction})")
    (passes if b.contains(now, entry.direction) else fails).append(line)
