"""Scorers measure what they claim: the generation budget fits the answers, truncation is
reported, the reward model's accuracy is broken down by kind of pair, and the word-level
tokenizer gives each number and word one token."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.tables.aggregate import judgment_rows
from bench.data import arith
from bench.errors import SuiteError
from bench.models import build_word_tokenizer
from bench.suite.validate import validate_suite

SUITE = """name: budget
seeds: [0]
model: {{policy: "builtin:tiny-llama", builtin: {{tokenizer: word}}}}
data: {{source: arith, limit: 200, eval_prompts: 50, drift_pairs: 10,
       task_options: {{length_confound: 0.5, max_operands: 3, max_operand: 12, max_factor: 5}}}}
objectives: [{{name: dpo}}]
generation: {{max_new_tokens: {budget}{extra}}}
scoring: {{lm_eval: {{tasks: []}}}}
"""


def _suite(tmp_path, budget: int, extra: str = ""):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(budget=budget, extra=extra))
    return path


def _longest(tmp_path) -> int:
    from bench.evaluation.budget import longest_response_tokens
    from bench.suite.load import load_suite
    from bench.data.sources import load_pairs
    from bench.data.splits import split_pairs

    suite = load_suite(_suite(tmp_path, 99))
    pairs = load_pairs(suite.data, progress=False).pairs
    split = split_pairs(pairs, eval_prompts=50, drift_pairs=10, seed=0)
    return longest_response_tokens(split.eval, build_word_tokenizer(arith.WORDS))


def test_a_budget_below_the_longest_chosen_answer_is_refused_naming_both_numbers(tmp_path):
    longest = _longest(tmp_path)
    with pytest.raises(SuiteError) as info:
        validate_suite(_suite(tmp_path, longest - 1))
    text = str(info.value)
    assert "\n" not in text and "generation.max_new_tokens" in text
    assert f"{longest - 1} new tokens" in text and f"({longest} tokens" in text and "allow_truncation" in text


def test_the_exact_budget_and_an_explicit_allow_truncation_pass(tmp_path):
    longest = _longest(tmp_path)
    assert f">= {longest}" in str(validate_suite(_suite(tmp_path, longest)))
    summary = str(validate_suite(_suite(tmp_path, 5, ", allow_truncation: true")))
    assert "allow_truncation is set" in summary


def test_the_runner_checks_the_budget_before_generating(tmp_path):
    from click.testing import CliRunner

    from bench.cli import main

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(_suite(tmp_path, 3)), "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "generation.max_new_tokens" in result.output
    assert not list(out.glob("stages/train/*")) and not list(out.glob("stages/evaluate/*"))


def test_truncation_rate_is_a_result_row():
    frame = pd.DataFrame({"prompt_id": ["a", "b", "c", "d"], "sample_index": 0, "num_tokens": [5, 40, 7, 40],
                          "num_chars": [9, 80, 12, 80], "finish_reason": ["stop", "length", "stop", "length"]})
    ref = frame.assign(finish_reason="stop")
    rows = {(s, m): est for s, m, est in judgment_rows(frame, ref, None, n_boot=10, seed=0)}
    assert rows[("generation", "truncation_rate")].value == pytest.approx(0.5)
    assert rows[("generation", "truncation_rate")].n == 4


def test_word_tokenizer_gives_numbers_and_words_one_token_and_round_trips():
    tok = build_word_tokenizer(arith.WORDS)
    pairs = arith.make_pairs(50, 0, length_confound=1.0)
    for pair in pairs:
        for text in (pair.prompt, pair.chosen, pair.rejected):
            ids = tok(text, add_special_tokens=False).input_ids
            assert tok.unk_token_id not in ids
            assert tok.decode(ids) == text
    pieces = tok.convert_ids_to_tokens(tok(" 37+48=85. Answer: 85", add_special_tokens=False).input_ids)
    assert pieces == [" 37", "+", "48", "=", "85", ".", " Answer", ":", " 85"]


def test_heldout_accuracy_is_broken_down_by_kind_of_pair(monkeypatch):
    from bench.evaluation.scoring import reward_model

    pairs = arith.make_pairs(80, 1, length_confound=0.5, rejected_filler=0.3)
    seen = {}

    def fake_accuracy(model, encoded, pad_id, batch_size=64):
        seen[len(encoded)] = True
        return len(encoded) / 100

    monkeypatch.setattr(reward_model, "pair_accuracy", fake_accuracy)
    monkeypatch.setattr(reward_model, "_encode_pairs", lambda tok, group, max_length: list(group))
    by_kind = reward_model.heldout_accuracy_by_kind(None, None, pairs, 0, 48, arith.pair_kind)
    expected = {}
    for pair in pairs:
        expected[arith.pair_kind(pair)] = expected.get(arith.pair_kind(pair), 0) + 1
    assert {k: v["n"] for k, v in by_kind.items()} == expected
    assert "correctness_only" in by_kind and "chosen_padded" in by_kind
    assert by_kind["chosen_padded"]["accuracy"] == pytest.approx(expected["chosen_padded"] / 100)
    # without a task classifier pairs are grouped by which response is longer
    by_length = reward_model.heldout_accuracy_by_kind(None, None, pairs, 0, 48)
    assert set(by_length) <= {"chosen_longer", "chosen_shorter", "equal_length"}
    assert sum(v["n"] for v in by_length.values()) == len(pairs)


def test_validity_section_states_the_judge_the_budget_and_the_tasks(tmp_path):
    from bench.tables import validity

    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / "reward_train.json").write_text(json.dumps({
        "heldout_accuracy": 0.6, "n_heldout": 10, "train_accuracy": 0.7,
        "heldout_by_kind": {"correctness_only": {"accuracy": 0.5, "n": 6}, "chosen_padded": {"accuracy": 1.0, "n": 4}}}))
    judgments = {"reference": pd.DataFrame({"finish_reason": ["stop", "stop"]}),
                 "dpo seed=0": pd.DataFrame({"finish_reason": ["stop", "length"]})}
    facts = validity.collect(reward_dir=rm, budget=40, longest_chosen=35, judgments=judgments,
                             reference_lm_eval=[{"task": "arith_qa", "metric": "acc", "value": 0.9, "stderr": 0.01, "n": 200}])
    validity.write(tmp_path, facts)
    text = validity.section(tmp_path)
    assert "| correctness_only | 50.0% | 6 |" in text and "| chosen_padded | 100.0% | 4 |" in text
    assert "40 new tokens" in text and "takes 35" in text and "50.0% (dpo seed=0)" in text
    assert "arith_qa acc of the reference: 0.900" in text
