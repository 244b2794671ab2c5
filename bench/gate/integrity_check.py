"""The gate's exact checks of a folder's ``invariants.json`` (recorded by bench/gate/integrity.py).

Two kinds:

- *self-contained*: true of any correct run whatever the baseline: no prompt shared between
  train, eval and drift; every trained pair from the train split; exactly one EOS closing each
  response (none only where max_length cut it) and the prompt/response boundary where the
  contract puts it; runs differing only in seed trained on different data orders and got
  different losses; the step-1 loss equal to its closed form;
- *against the baseline* (its ``integrity`` section): the data audit, split and tokenisation
  counts are exact (the data is a function of the suite), the reference pass's sums agree to
  1e-4 relative (float order moves them by ~1e-7).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from bench.errors import BenchError
from bench.gate.integrity import FILE

STEP1_ATOL = 1e-6
LOGPS_RTOL = 1e-4
STATS_RTOL = 1e-9


def read(results_dir: str | Path) -> dict | None:
    path = Path(results_dir) / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BenchError(f"{path}: not valid JSON (rerun the suite into the folder to rewrite it)") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path}: expected a JSON object")
    return data


def flatten(facts: dict) -> dict[str, float]:
    """The values of a folder's invariants that a baseline pins: every number of splits, data
    audit, tokenisation and the reference pass (not its hash: float order moves the bits)."""
    out: dict[str, float] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix] = value

    for section in ("splits", "data_audit", "tokenization", "reference_logps"):
        walk(section, facts.get(section) or {})
    return out


def check_integrity(results_dir: str | Path, pinned: dict[str, float] | None, labels: set[str] | None,
                    fails: list[str], passes: list[str]) -> int:
    """Append one line per invariant to ``fails`` or ``passes``; returns how many were checked."""
    facts = read(results_dir)
    if facts is None and not pinned:
        return 0            # a baseline from before the record, on a folder without one: nothing to check
    if facts is None:
        fails.append(f"invariant record: {Path(results_dir) / FILE} is missing (written by every run since the "
                     f"gate records invariants; rerun the suite into the folder)")
        return 1
    before = len(fails) + len(passes)
    _splits(facts.get("splits") or {}, fails, passes)
    for part, counts in sorted((facts.get("tokenization") or {}).items()):
        _tokenization(part, counts, fails, passes)
    runs = {rid: r for rid, r in (facts.get("runs") or {}).items()
            if r.get("status") == "ok" and (labels is None or r.get("label") in labels)}
    _seed_independence(runs, fails, passes)
    _step1(runs, fails, passes)
    if pinned:
        _against_baseline(flatten(facts), pinned, fails, passes)
    return len(fails) + len(passes) - before


def _line(ok: bool, text: str, fails: list[str], passes: list[str]) -> None:
    (passes if ok else fails).append(text)


def _splits(splits: dict, fails: list[str], passes: list[str]) -> None:
    prompts = splits.get("prompts", {})
    for pair, shared in sorted((splits.get("shared_prompts") or {}).items()):
        a, b = pair.split("&")
        _line(shared == 0, f"invariant disjoint prompts {a} & {b}: {shared} shared of {prompts.get(a)} and "
                           f"{prompts.get(b)} prompts, allowed 0 (a held-out prompt trained on)", fails, passes)
    stray = splits.get("trained_not_in_train_split", 0)
    _line(stray == 0, f"invariant trained pairs from the train split: {stray} of {splits.get('trained')} "
                      f"trained pairs are not in it, allowed 0", fails, passes)


def _tokenization(part: str, c: dict, fails: list[str], passes: list[str]) -> None:
    missing, truncated = c.get("eos_missing", 0), c.get("responses_truncated", 0)
    _line(missing <= truncated and c.get("eos_extra_or_misplaced", 0) == 0,
          f"invariant one EOS per response ({part}): {c.get('eos_exactly_one_at_end')} of {c.get('responses')} "
          f"end in exactly one, {missing} have none ({truncated} cut by max_length may), "
          f"{c.get('eos_extra_or_misplaced', 0)} have more or elsewhere (allowed 0)", fails, passes)
    _line(c.get("boundary_mismatch", 0) == 0 and c.get("not_in_split", 0) == 0,
          f"invariant prompt/response boundary ({part}): {c.get('boundary_mismatch', 0)} of {c.get('pairs')} pairs "
          f"split elsewhere than the contract's boundary and truncation, {c.get('not_in_split', 0)} not in the "
          f"split, allowed 0", fails, passes)


def _seed_independence(runs: dict, fails: list[str], passes: list[str]) -> None:
    by_label: dict[str, list[dict]] = {}
    for r in runs.values():
        by_label.setdefault(str(r["label"]), []).append(r)
    for label, group in sorted(by_label.items()):
        if len(group) < 2:
            continue
        seeds = ", ".join(str(r["seed"]) for r in sorted(group, key=lambda r: r["seed"]))
        orders = {r.get("data_order") for r in group}
        traces = {r.get("loss_trace") for r in group}
        ok = None not in orders and len(orders) == len(group) and len(traces) == len(group)
        _line(ok, f"invariant seed independence of {label}: seeds {seeds} trained on {len(orders - {None})} "
                  f"distinct data orders with {len(traces - {None})} distinct loss traces, allowed {len(group)} "
                  f"of each (identical seeds make the seed spread and every interval on it fake)", fails, passes)


def _step1(runs: dict, fails: list[str], passes: list[str]) -> None:
    for r in sorted(runs.values(), key=lambda r: (str(r["label"]), r["seed"])):
        closed = r.get("step1_closed_form")
        if closed is None:
            continue
        loss = r.get("step1_loss")
        tol = STEP1_ATOL * max(1.0, abs(closed))
        ok = isinstance(loss, (int, float)) and abs(loss - closed) <= tol
        shown = f"{loss:.7g}" if isinstance(loss, (int, float)) else "missing"
        _line(ok, f"invariant step-1 closed form of {r['label']} seed {r['seed']}: {r['step1_form']} = "
                  f"{closed:.7g}, now {shown}, allowed ±{tol:.0e}", fails, passes)


def _against_baseline(now: dict[str, float], pinned: dict[str, float], fails: list[str], passes: list[str]) -> None:
    for key, want in sorted(pinned.items()):
        got = now.get(key)
        rtol = LOGPS_RTOL if key.startswith("reference_logps.sum") else STATS_RTOL
        ok = got is not None and math.isclose(got, want, rel_tol=rtol, abs_tol=rtol)
        allowed = "exactly" if isinstance(want, int) and rtol == STATS_RTOL else f"to {rtol:g} relative"
        _line(ok, f"invariant integrity {key}: baseline {want:.8g}, now {'missing' if got is None else f'{got:.8g}'}, "
                  f"allowed {allowed}", fails, passes)
