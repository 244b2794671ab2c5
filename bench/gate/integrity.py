"""Integrity invariants, recorded per results folder in ``invariants.json`` and checked by the gate.

Bugs that leave every metric within its seed noise still change what the results mean: held-out
prompts that were trained on, seeds that all saw the same data order (a fake seed spread), a
broken tokenisation contract. They are facts about the data and the runs, not statistics, so
they are recorded as counts a reviewer can read, next to the results, by :func:`record` (the
pipeline's aggregate calls it), and checked exactly by :mod:`bench.gate.integrity_check`:

- ``splits``: pairs and unique prompts of train / eval / drift and the prompts each pair of
  parts shares (counted, not a flag), and trained pairs that are not in the train split;
- ``data_audit``: per part, duplicates, chosen == rejected, chosen and rejected length stats;
- ``tokenization``: per tokenised part, the contract re-derived here from the texts
  (boundary at the common prefix of prompt and prompt+response, exactly one EOS closing each
  response, truncation of the prompt's head and the response's tail) against what training got;
- ``reference_logps``: a fingerprint (sha256 of ids and values) and sums of the shared pass;
- ``runs``: per run, its step-1 loss with its closed form where the objective has one, and the
  digest of the data order it trained on (``data/batch`` of its train log, step by step).
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
from collections import Counter
from pathlib import Path
from typing import Callable

from bench.gate.invariants import LN2, zero_margin_loss

FILE = "invariants.json"
FORMAT = 1


def record(out: Path, ctx, store, records, runs, read_pairs: Callable[[Path], list]) -> dict:
    """Compute the folder's invariants and write ``out/invariants.json``; returns them.
    ``read_pairs``: the data stage's own reader (bench.run.prepare), so the pairs audited are
    the pairs the runs received."""
    folder = store.path("data", ctx.data_key)
    pairs = {name: read_pairs(folder / f"{name}.jsonl") for name in ("train", "eval", "drift")}
    training = ctx.suite.training
    limits = dict(max_length=training.max_length, max_prompt_length=training.max_prompt_length)
    tokenized = {"train": ctx.train_data}
    if ctx.eval_ctx.drift_data:
        tokenized["drift"] = ctx.eval_ctx.drift_data
    specs = {run.run_id: run for run in runs}
    facts = {
        "format": FORMAT,
        "splits": splits(pairs, trained_ids=[p.id for p in ctx.train_data]),
        "data_audit": {name: audit(part) for name, part in pairs.items()},
        "tokenization": {name: contract(pairs[name], data, ctx.tokenizer, **limits)
                         for name, data in tokenized.items()},
        "reference_logps": logps_fingerprint(ctx.ref_logps),
        "runs": {r.run_id: run_facts(r, specs.get(r.run_id)) for r in records},
    }
    (Path(out) / FILE).write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    return facts


# --------------------------------------------------------------------------- data

def splits(pairs: dict[str, list], trained_ids: list[str]) -> dict:
    prompts = {name: {p.prompt for p in part} for name, part in pairs.items()}
    train_ids = {p.id for p in pairs["train"]}
    names = sorted(prompts)
    return {
        "pairs": {name: len(part) for name, part in pairs.items()},
        "prompts": {name: len(found) for name, found in prompts.items()},
        "shared_prompts": {f"{a}&{b}": len(prompts[a] & prompts[b])
                           for i, a in enumerate(names) for b in names[i + 1:]},
        "trained": len(trained_ids),
        "trained_not_in_train_split": sum(1 for i in trained_ids if i not in train_ids),
    }


def audit(part: list) -> dict:
    """Counts and length statistics of one part (characters: the same on every tokenizer)."""
    triples = Counter((p.prompt, p.chosen, p.rejected) for p in part)
    chosen = [len(p.chosen) for p in part]
    rejected = [len(p.rejected or "") for p in part]
    return {
        "pairs": len(part),
        "unique_prompts": len({p.prompt for p in part}),
        "duplicate_pairs": sum(n - 1 for n in triples.values()),
        "duplicate_ids": len(part) - len({p.id for p in part}),
        "chosen_equals_rejected": sum(1 for p in part if p.chosen == p.rejected),
        "chosen_chars": _stats(chosen),
        "rejected_chars": _stats(rejected),
        "chosen_longer": sum(1 for c, r in zip(chosen, rejected) if c > r),
    }


def _stats(values: list[int]) -> dict:
    if not values:
        return {"mean": 0.0, "median": 0.0, "min": 0, "max": 0}
    return {"mean": round(statistics.fmean(values), 6), "median": float(statistics.median(values)),
            "min": min(values), "max": max(values)}


# --------------------------------------------------------------------------- tokenisation

def contract(pairs: list, tokenized: list, tokenizer, *, max_length: int, max_prompt_length: int) -> dict:
    """The tokenisation contract of trainers/tokenize.py, re-derived from the texts, against what
    training received: counts of responses by EOS, of prompts and responses truncated, and of
    pairs whose prompt/response split differs from the contract's."""
    from trainers.tokenize import encode_prompt, render_full, render_prompt

    by_id = {p.id: p for p in pairs}
    eos = tokenizer.eos_token_id
    counts = Counter()
    for item in tokenized:
        pair = by_id.get(item.id)
        responses = [item.chosen_ids] + ([item.rejected_ids] if item.rejected_ids is not None else [])
        for ids in responses:
            n = ids.count(eos)
            counts["responses"] += 1
            counts["eos_exactly_one_at_end" if n == 1 and ids[-1] == eos else
                   "eos_missing" if n == 0 else "eos_extra_or_misplaced"] += 1
        if pair is None:
            counts["not_in_split"] += 1
            continue
        prompt = encode_prompt(tokenizer, render_prompt(pair, tokenizer))
        fulls = [encode_prompt(tokenizer, render_full(pair, text, tokenizer))
                 for text in ([pair.chosen] + ([pair.rejected] if item.rejected_ids is not None else []))]
        # re-derived with the standard library, not trainers.tokenize's helper: the invariant
        # must not share the code it checks
        cut = min(len(os.path.commonprefix([prompt, full])) for full in fulls)
        want_prompt = fulls[0][:cut][-max_prompt_length:]
        room = max(max_length - len(want_prompt), 0)
        if cut > max_prompt_length:
            counts["prompts_truncated"] += 1
        boundary_ok = item.prompt_ids == want_prompt
        for full, got in zip(fulls, responses):
            body = full[cut:]
            want = body[: len(body) - body[::-1].index(eos)] if eos in body else body + [eos]
            if len(want) > room:
                counts["responses_truncated"] += 1
            boundary_ok = boundary_ok and got == want[:room]
        counts["pairs"] += 1
        counts["boundary_ok" if boundary_ok else "boundary_mismatch"] += 1
    keys = ("pairs", "responses", "eos_exactly_one_at_end", "eos_missing", "eos_extra_or_misplaced",
            "boundary_ok", "boundary_mismatch", "prompts_truncated", "responses_truncated", "not_in_split")
    return {key: counts[key] for key in keys}


# --------------------------------------------------------------------------- reference pass

def logps_fingerprint(values: dict | None) -> dict | None:
    """sha256 over the shared reference pass (ids, then each response's per-token values) and its
    sums: the hash tells a reviewer whether two folders share a pass; the gate checks the sums
    (float order moves the bits, never the sums beyond 1e-4 relative)."""
    if not values:
        return None
    h = hashlib.sha256()
    sums = {"chosen": 0.0, "rejected": 0.0}
    tokens = {"chosen": 0, "rejected": 0}
    for key in sorted(values, key=str):
        h.update(str(key).encode())
        for side, tensor in zip(("chosen", "rejected"), values[key]):
            if tensor is None:
                continue
            flat = tensor.detach().float().cpu().reshape(-1)
            h.update(flat.numpy().tobytes())
            sums[side] += float(flat.double().sum())
            tokens[side] += int(flat.numel())
    return {"sha256": h.hexdigest(), "pairs": len(values), "tokens_chosen": tokens["chosen"],
            "tokens_rejected": tokens["rejected"], "sum_chosen": sums["chosen"], "sum_rejected": sums["rejected"]}


# --------------------------------------------------------------------------- runs

def run_facts(record, spec) -> dict:
    """A run's step-1 loss against its closed form, and the digest of its data order."""
    rows = _log_rows(record.train_summary.get("train_log"))
    first = next((r for r in rows if r.get("step") == 1), None)
    terms = list(getattr(spec, "objective_spec", None) or [])
    closed = step1_closed_form(terms, first) if first is not None else None
    return {
        "label": record.label, "seed": int(record.seed), "status": record.status,
        "step1_loss": None if first is None else first.get("loss"),
        "step1_closed_form": None if closed is None else closed[0],
        "step1_form": None if closed is None else closed[1],
        "data_order": _digest([str(r.get("data/batch")) for r in rows]) if rows and "data/batch" in rows[0] else None,
        "loss_trace": _digest([repr(r.get("loss")) for r in rows]) if rows else None,
        "logged_steps": len(rows),
    }


def step1_closed_form(terms: list[dict], first: dict) -> tuple[float, str] | None:
    """The loss at step 1 (policy = reference: every log-ratio is 0) of an objective built of
    ``terms`` (each {"name", "weight", **hyperparameters}), or None when a term has no closed form.

    DPO (any label smoothing), robust DPO, AdaDPO: ln 2; ADPO adaptive: m·ln 2 (empty segments
    count); ADPO static: T′·ln 2 with T′ the batch mean of its logged ``feedback_length``; IPO:
    (1/(2β))²; hinge: 1. A composite is the weighted sum. SimPO (reference-free: its margin is
    the policy's own length-normalised log-prob gap, not 0) and NLL have none.
    """
    total, forms = 0.0, []
    prefixes = [t["name"] for t in terms]
    for term in terms:
        name, weight = term["name"], float(term.get("weight", 1.0))
        if name == "adpo" and term.get("granularity") != "adaptive":
            # static windows: T′ depends on the batch, read from the logged feedback length
            key = f"{name}/feedback_length" if prefixes.count(name) == 1 else None
            if key is None or not isinstance(first.get(key), (int, float)):
                return None
            value, form = float(first[key]) * LN2, "T′·ln 2"
        else:
            closed = zero_margin_loss(name, term)      # the single objectives' forms (bench.gate.invariants)
            if closed is None:
                return None
            value, form = closed
        total += weight * value
        forms.append(form if weight == 1 else f"{weight:g}·{form}")
    return (total, " + ".join(forms)) if forms else None


def _log_rows(path) -> list[dict]:
    if not path or not Path(path).is_file():
        return []
    from trainers.trainer import read_log_lines

    return [row for _, row in read_log_lines(Path(path))]


def _digest(items: list[str]) -> str:
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]
