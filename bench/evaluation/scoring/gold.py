"""Gold verifiers: programmatic rewards for tasks with a checkable answer.

A verifier maps (generated text, pair metadata) to a score in [0, 1]; `arith` is exact
final-answer match, the analogue of GSM8K accuracy used in the ADPO paper's math setting.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from bench.errors import BenchError
from bench.evaluation.scoring.registry import register_scorer
from trainers.errors import nearest
from bench.data.arith import verify

Verifier = Callable[[str, dict], float]


def _arith(text: str, metadata: dict) -> float:
    # bench.data.arith owns the answer format; this is its verifier under the name `arith`.
    return float(verify(text, metadata))


VERIFIERS: dict[str, Verifier] = {"arith": _arith}


def register_verifier(name: str, fn: Verifier) -> None:
    """Add (or replace) a verifier under ``name``."""
    if not callable(fn):
        raise TypeError(f"verifier {name!r} must be callable")
    VERIFIERS[name] = fn


def get_verifier(name: str) -> Verifier:
    """The verifier registered under ``name``; an unknown name names the closest one."""
    try:
        return VERIFIERS[name]
    except KeyError:
        close = nearest(name, VERIFIERS)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise BenchError(f"unknown gold verifier {name!r}{hint}; known: {', '.join(sorted(VERIFIERS))}") from None


def gold_accuracy(texts: Sequence[str], metadatas: Sequence[dict], verifier: Verifier | str) -> list[float]:
    """Score each text against its metadata; returns one score per text, in order."""
    if len(texts) != len(metadatas):
        raise ValueError(f"gold_accuracy got {len(texts)} texts but {len(metadatas)} metadata rows")
    fn = get_verifier(verifier) if isinstance(verifier, str) else verifier
    return [float(fn(t, m)) for t, m in zip(texts, metadatas)]


def audit_pairs(pairs: Sequence, name: str | None) -> dict | None:
    """The share of preference pairs whose chosen, and whose rejected, response the gold verifier
    ``name`` accepts (None without a verifier or pairs).

    A check of the data a run trained on, not of the model: on a task with a verifier every
    chosen response is right and every rejected one wrong, so a loader bug that swaps labels or
    mixes files moves these shares at once, where a tiny policy that fits any labels shows nothing.
    """
    if not name or not pairs:
        return None
    verify = get_verifier(name)
    chosen = sum(verify(p.chosen, p.metadata) for p in pairs) / len(pairs)
    rejected = sum(verify(p.rejected, p.metadata) for p in pairs) / len(pairs)
    return {"n": len(pairs), "chosen_verified": float(chosen), "rejected_verified": float(rejected)}


@register_scorer("gold", order=20, enabled=lambda ctx: ctx.gold is not None,
                 metrics=("accuracy", "win_rate_vs_reference"),
                 reference="programmatic verifiers of tasks with a checkable answer (GSM8K-style exact match, "
                           "Cobbe et al. 2021, arXiv:2110.14168)")
def score_samples(ctx, generations, pairs) -> list[float]:
    """The suite's gold verifier (scoring.gold) on each sample: 1.0 right, 0.0 wrong."""
    verify = get_verifier(ctx.gold)
    return [float(verify(g.text, pair.metadata)) for g, pair in zip(generations, pairs)]
