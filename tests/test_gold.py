"""Gold verifier registry and the arith exact-final-answer verifier."""
from __future__ import annotations

import pytest

from bench.errors import BenchError
from bench.evaluation.scoring.gold import VERIFIERS, get_verifier, gold_accuracy, register_verifier


def test_arith_checks_the_last_stated_answer():
    v = get_verifier("arith")
    assert v(" 8*6=48. 37+48=85. 85-5=80. Answer: 80", {"answer": 80}) == 1.0
    assert v(" Answer: 79", {"answer": 80}) == 0.0
    # the LAST answer counts: a corrected answer wins, a retracted right one loses
    assert v("Answer: 79 ... no. Answer: 80", {"answer": 80}) == 1.0
    assert v("Answer: 80 ... no. Answer: 79", {"answer": 80}) == 0.0
    assert v("Answer: -3", {"answer": -3}) == 1.0
    assert v("the answer is 80", {"answer": 80}) == 0.0  # no "Answer:" marker


def test_gold_accuracy_keeps_order_and_accepts_a_name():
    texts = ["Answer: 1", "Answer: 5", "nothing", "Answer: 2"]
    metas = [{"answer": 1}, {"answer": 4}, {"answer": 0}, {"answer": 2}]
    assert gold_accuracy(texts, metas, "arith") == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        gold_accuracy(texts, metas[:2], "arith")


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(BenchError, match="'arith'") as err:
        get_verifier("arithm")
    assert "\n" not in str(err.value)


def test_register_a_custom_verifier():
    register_verifier("_len_test", lambda text, meta: float(len(text) == meta["n"]))
    try:
        assert gold_accuracy(["abc", "ab"], [{"n": 3}, {"n": 3}], "_len_test") == [1.0, 0.0]
    finally:
        VERIFIERS.pop("_len_test")
    with pytest.raises(TypeError):
        register_verifier("bad", 3)


def test_audit_of_training_pairs_counts_each_side():
    from types import SimpleNamespace as Pair

    from bench.evaluation.scoring.gold import audit_pairs

    pairs = [Pair(chosen="Answer: 3", rejected="Answer: 4", metadata={"answer": 3}),
             Pair(chosen="Answer: 5", rejected="Answer: 6", metadata={"answer": 5}),
             Pair(chosen="Answer: 8", rejected="Answer: 7", metadata={"answer": 7}),    # labels swapped
             Pair(chosen="Answer: 1", rejected="Answer: 1", metadata={"answer": 2})]    # both wrong
    assert audit_pairs(pairs, "arith") == {"n": 4, "chosen_verified": 0.5, "rejected_verified": 0.25}
    assert audit_pairs(pairs, None) is None and audit_pairs([], "arith") is None
