"""The regression gate's exact invariants: the step-1 closed-form loss and identities between
objectives (ADPO with one adaptive segment is DPO)."""
from __future__ import annotations

import math


from bench.gate.observed import Observed

DPO_KEYS = {"beta", "label_smoothing"}


STEP1_ATOL = 1e-6


IDENTITY_RTOL = 1e-4


LN2 = math.log(2.0)


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
                    and not other_params.get("label_smoothing") and set(other_params) <= DPO_KEYS:
                pairs.append({"label": label, "equals": other, "rtol": IDENTITY_RTOL})
                break
    return pairs


def check_step1(label: str, value: float, form: str, logs: dict[int, list[dict]] | None,
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


def check_identity(spec: dict, observed: Observed, fails: list[str], passes: list[str]) -> None:
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
