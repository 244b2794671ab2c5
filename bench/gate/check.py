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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from bench.gate.baseline import Entry, load_baseline
from bench.tables.results import REFERENCE
from bench.gate.integrity_check import check_integrity
from bench.gate.invariants import check_identity, check_step1
from bench.gate.observed import observe
from bench.gate.rule import Band, band, metric_kind, pooled_spread


@dataclass
class CheckResult:
    ok: bool
    regressions: list[str] = field(default_factory=list)
    checked: int = 0
    passed: list[str] = field(default_factory=list)     # one line per passing entry (for --verbose)


# --------------------------------------------------------------------------- reading a results folder


# --------------------------------------------------------------------------- the rule


# --------------------------------------------------------------------------- invariants


# --------------------------------------------------------------------------- making a baseline


# --------------------------------------------------------------------------- loading a baseline


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
        check_step1(spec["label"], float(spec["value"]), str(spec.get("form", "closed form")),
                     observed.logs.get(spec["label"]), fails, passes)
    for spec in baseline.identities:
        if not wanted(spec["label"], spec["equals"]):
            continue
        checked += 1
        check_identity(spec, observed, fails, passes)
    checked += check_integrity(results_dir, baseline.integrity, keep, fails, passes)
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
    if b.contains(now, entry.direction):
        if two_sided(entry) and not b.contains(now, "either"):
            # better than the band, where nothing a trainer does can make it better: suspicious
            fails.append(f"SUSPICIOUS {line}: moved beyond its band in the better direction; a scorer- or "
                         f"data-level value that jumps is a bug until a change explains it (then regenerate "
                         f"the baseline)")
        else:
            passes.append(line)
    else:
        fails.append(line)


def two_sided(entry: Entry) -> bool:
    """Whether a "better" jump beyond the band is suspicious rather than good news.

    The reference policy's values (every scorer's view of the fixed SFT reference) and the data
    audit (``train_data``: the verifier over the training pairs) depend on the data, the
    generation and the scorers, never on an objective: when they move, a scorer, a split or a
    loader changed (a verifier accepting more, a leak). The trained labels' quality metrics stay
    one-sided: an objective or trainer fix may legitimately raise them, and a drop is the regression.
    """
    return entry.minus is None and entry.direction != "either" and (
        entry.label == REFERENCE or entry.scorer == "train_data")
