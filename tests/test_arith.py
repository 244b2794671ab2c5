"""The builtin `arith` task: determinism, correctness of chosen/rejected, verifier, confound."""
from __future__ import annotations

import pytest

from bench.data import arith
from bench.data.tasks import get_task, list_tasks
from bench.errors import BenchError
from bench.models import CHARACTERS


def test_same_seed_same_pairs_other_seed_other_pairs():
    assert arith.make_pairs(50, seed=3) == arith.make_pairs(50, seed=3)
    assert [p.prompt for p in arith.make_pairs(50, seed=3)] != [p.prompt for p in arith.make_pairs(50, seed=4)]
    assert arith.make_sft_demos(30, seed=3) == arith.make_sft_demos(30, seed=3)


def test_chosen_is_right_and_rejected_wrong():
    pairs = arith.make_pairs(300, seed=0)
    assert len({p.prompt for p in pairs}) == 300  # prompts are distinct
    for p in pairs:
        truth = eval(p.prompt[len("Compute "):-2])  # the expression, with Python's precedence
        assert p.metadata["answer"] == truth
        assert arith.verify(p.chosen, p.metadata) == 1.0
        assert arith.verify(p.rejected, p.metadata) == 0.0


def test_every_written_step_of_chosen_is_true_and_rejected_has_one_false_step():
    for p in arith.make_pairs(200, seed=1):
        bad_chosen = [s for s in _steps(p.chosen) if not _true(s)]
        bad_rejected = [s for s in _steps(p.rejected) if not _true(s)]
        assert bad_chosen == []
        assert len(bad_rejected) == 1  # one slip, later steps computed right from the wrong value


def _steps(text):
    import re

    return re.findall(r" (-?\d+)([-+*])(\d+)=(-?\d+)\.", text)


def _true(step):
    a, op, b, r = int(step[0]), step[1], int(step[2]), int(step[3])
    return {"+": a + b, "-": a - b, "*": a * b}[op] == r


def test_solve_hand_example():
    steps, answer = arith.solve([37, 8, 6, 5], ["+", "*", "-"])
    assert answer == 80
    assert arith.render(steps, answer) == " 8*6=48. 37+48=85. 85-5=80. Answer: 80"
    wrong_steps, wrong = arith.solve([37, 8, 6, 5], ["+", "*", "-"], error_step=0, delta=1)
    assert arith.render(wrong_steps, wrong) == " 8*6=49. 37+49=86. 86-5=81. Answer: 81"


@pytest.mark.parametrize(
    "text, expected",
    [
        (" 8*6=48. 37+48=85. 85-5=80. Answer: 80", 1.0),
        (" Answer: 79", 0.0),
        ("Answer: 12 then Answer: 80", 1.0),   # the LAST answer counts
        ("Answer: 80 no wait Answer: 81", 0.0),
        ("Answer:80", 1.0),
        ("", 0.0),
        ("garbage ### Answer: x80", 0.0),
        ("Answer: -80", 0.0),
    ],
)
def test_verify_hand_examples(text, expected):
    assert arith.verify(text, {"answer": 80}) == expected


def test_verify_negative_answer_and_bad_metadata():
    assert arith.verify("Answer: -13", {"answer": -13}) == 1.0
    assert arith.verify("Answer: 3", {}) == 0.0
    assert arith.verify(None, {"answer": 3}) == 0.0
    assert arith.extract_answer("no answer here") is None
    assert arith.extract_answer("Answer: 4. Answer: -17") == -17


def test_length_confound_fractions_roughly_as_set():
    pairs = arith.make_pairs(2000, seed=0, length_confound=0.4, rejected_filler=0.1)
    chosen_padded = sum(p.metadata["chosen_filler"] for p in pairs) / len(pairs)
    rejected_padded = sum(p.metadata["rejected_filler"] for p in pairs) / len(pairs)
    assert abs(chosen_padded - 0.4) < 0.04 and abs(rejected_padded - 0.1) < 0.03
    longer = sum(len(p.chosen) > len(p.rejected) for p in pairs) / len(pairs)
    assert longer > 0.3  # chosen is longer far more often than rejected, which shows length bias
    plain = arith.make_pairs(200, seed=0, length_confound=0.0, rejected_filler=0.0)
    assert not any(p.metadata["chosen_filler"] or p.metadata["rejected_filler"] for p in plain)


def test_text_stays_in_tokenizer_alphabet_and_short():
    alphabet = set(CHARACTERS)
    pairs = arith.make_pairs(1000, seed=2) + arith.make_sft_demos(500, seed=2)
    for p in pairs:
        assert set(p.prompt + p.chosen + p.rejected) <= alphabet
        assert len(p.prompt) <= 30 and len(p.chosen) <= 140 and len(p.rejected) <= 140


def test_sft_demos_error_rate_and_shape():
    demos = arith.make_sft_demos(1000, seed=0, error_rate=0.3)
    assert all(d.rejected == "" and d.metadata["sft"] for d in demos)
    wrong = [d for d in demos if arith.verify(d.chosen, d.metadata) == 0.0]
    assert abs(len(wrong) / len(demos) - 0.3) < 0.05
    assert all(not d.metadata["correct"] for d in wrong)
    assert all(arith.verify(d.chosen, d.metadata) == 1.0 for d in arith.make_sft_demos(100, seed=0, error_rate=0.0))


def test_demo_prompts_never_overlap_pair_prompts():
    pairs = {p.prompt for p in arith.make_pairs(1500, seed=0)}
    demos = {d.prompt for d in arith.make_sft_demos(1500, seed=0)}
    assert pairs.isdisjoint(demos)


def test_difficulty_options_take_effect():
    pairs = arith.make_pairs(200, seed=0, min_operands=3, max_operands=3, mult_prob=0.0, max_operand=9)
    for p in pairs:
        expr = p.metadata["expression"]
        assert sum(ch in "+-" for ch in expr.lstrip("-")) == 2 and "*" not in expr
        assert all(int(n) <= 9 for n in expr.replace("+", " ").replace("-", " ").split())


def test_bad_options_are_one_line_errors():
    with pytest.raises(BenchError, match="did you mean max_operand"):
        arith.make_pairs(5, 0, max_opernd=3)
    with pytest.raises(BenchError, match="length_confound"):
        arith.make_pairs(5, 0, length_confound=1.5)
    with pytest.raises(BenchError, match="distinct problems"):
        arith.make_pairs(500, 0, min_operands=2, max_operands=2, max_operand=2, mult_prob=0.0)


def test_registry():
    assert "arith" in list_tasks()
    task = get_task("arith")
    assert len(task.make_pairs(3, 0)) == 3
    with pytest.raises(BenchError, match="'arith'"):
        get_task("arth")
