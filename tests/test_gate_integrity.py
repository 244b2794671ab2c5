"""The gate's integrity invariants (bench/gate/integrity.py, integrity_check.py) on small inputs:
each one holds on correct data and fails, with its count in the line, on the bug it catches.
The same bugs on the whole pipeline are in tests/gate_mutations.py (slow)."""
from __future__ import annotations

import json
import math

import pytest

from bench.data.arith import make_pairs
from bench.data.splits import Splits, split_pairs
from bench.errors import BenchError
from bench.gate import integrity
from bench.gate.baseline import Entry
from bench.gate.check import _judge
from bench.gate.integrity_check import check_integrity, flatten
from trainers.tokenize import tokenize_pairs

LIMITS = dict(max_length=256, max_prompt_length=64)   # nothing cut: every response keeps its EOS


@pytest.fixture(scope="module")
def pairs():
    return make_pairs(40, seed=3)


def _facts(tmp_path, **changes):
    facts = {"format": 1, "splits": {"prompts": {"train": 10, "eval": 2, "drift": 2},
                                     "shared_prompts": {"drift&eval": 0, "drift&train": 0, "eval&train": 0},
                                     "trained": 10, "trained_not_in_train_split": 0},
             "tokenization": {}, "data_audit": {}, "reference_logps": None, "runs": {}}
    facts.update(changes)
    (tmp_path / integrity.FILE).write_text(json.dumps(facts))
    return tmp_path


def _check(folder, pinned=None, labels=None):
    fails, passes = [], []
    check_integrity(folder, pinned, labels, fails, passes)
    return fails, passes


def test_contract_holds_on_the_tokeniser_and_fails_on_a_dropped_eos(pairs, char_tokenizer, monkeypatch, tmp_path):
    data, _ = tokenize_pairs(pairs, char_tokenizer, **LIMITS)
    clean = integrity.contract(pairs, data, char_tokenizer, **LIMITS)
    assert clean["pairs"] == len(data) and clean["boundary_ok"] == len(data)
    assert clean["eos_exactly_one_at_end"] == 2 * len(data) and clean["eos_missing"] == 0
    assert _check(_facts(tmp_path, tokenization={"train": clean}))[0] == []
    # the bug: responses tokenised without their EOS
    import trainers.tokenize as module

    monkeypatch.setattr(module, "_end_with_one_eos", lambda ids, eos: [t for t in ids if t != eos])
    broken, _ = tokenize_pairs(pairs, char_tokenizer, **LIMITS)
    counts = integrity.contract(pairs, broken, char_tokenizer, **LIMITS)
    assert counts["eos_missing"] == 2 * len(broken) and counts["boundary_mismatch"] == len(broken)
    fails, _ = _check(_facts(tmp_path, tokenization={"train": counts}))
    assert any(line.startswith("invariant one EOS per response (train)") for line in fails), fails


def test_contract_fails_on_a_boundary_one_token_early(pairs, char_tokenizer, monkeypatch):
    import trainers.tokenize as module

    real = module._common_prefix
    monkeypatch.setattr(module, "_common_prefix", lambda a, b: max(real(a, b) - 1, 0))
    broken, _ = tokenize_pairs(pairs, char_tokenizer, **LIMITS)
    counts = integrity.contract(pairs, broken, char_tokenizer, **LIMITS)
    assert counts["boundary_mismatch"] == len(broken) and counts["eos_missing"] == 0


def test_contract_counts_truncation_and_allows_a_cut_eos(char_tokenizer):
    from bench.data.records import PreferencePair

    pair = PreferencePair(id="a", prompt="abcdefgh", chosen="123456", rejected="xy")
    data, _ = tokenize_pairs([pair], char_tokenizer, max_length=8, max_prompt_length=5)
    counts = integrity.contract([pair], data, char_tokenizer, max_length=8, max_prompt_length=5)
    assert counts["prompts_truncated"] == 1 and counts["responses_truncated"] == 1
    assert counts["eos_missing"] == 1 and counts["boundary_ok"] == 1


def test_splits_count_shared_prompts_of_a_leak(pairs, tmp_path):
    parts = split_pairs(pairs, eval_prompts=5, drift_pairs=5, seed=0)
    clean = integrity.splits(vars(parts), trained_ids=[p.id for p in parts.train])
    assert set(clean["shared_prompts"].values()) == {0}
    leaky = Splits(train=parts.train + parts.drift, eval=parts.eval, drift=parts.drift)
    counts = integrity.splits(vars(leaky), trained_ids=[p.id for p in leaky.train])
    assert counts["shared_prompts"]["drift&train"] == 5 and counts["trained_not_in_train_split"] == 0
    fails, _ = _check(_facts(tmp_path, splits=counts))
    assert any(line.startswith("invariant disjoint prompts drift & train: 5 shared") for line in fails), fails
    # training on pairs that are not the train split's (the eval pairs handed to the trainer)
    stray = integrity.splits(vars(parts), trained_ids=[p.id for p in parts.train + parts.eval])
    assert stray["trained_not_in_train_split"] == 5
    fails, _ = _check(_facts(tmp_path, splits=stray))
    assert fails == [f for f in fails if f.startswith("invariant trained pairs from the train split: 5 of")] != []


def test_data_audit_counts_duplicates_and_lengths(pairs):
    audit = integrity.audit(pairs + pairs[:3])
    assert audit["pairs"] == 43 and audit["duplicate_pairs"] == 3 and audit["duplicate_ids"] == 3
    assert audit["chosen_chars"]["mean"] > 0 and "median" in audit["rejected_chars"]


def _run(label, seed, order, trace, loss=math.log(2), closed=math.log(2)):
    return {"label": label, "seed": seed, "status": "ok", "data_order": order, "loss_trace": trace,
            "step1_loss": loss, "step1_closed_form": closed, "step1_form": "ln 2"}


def test_seed_independence_fails_when_seeds_share_an_order(tmp_path):
    independent = {f"r{s}": _run("dpo", s, f"o{s}", f"t{s}") for s in range(3)}
    assert _check(_facts(tmp_path, runs=independent))[0] == []
    same = {f"r{s}": _run("dpo", s, "o0", "t0") for s in range(3)}
    fails, _ = _check(_facts(tmp_path, runs=same))
    assert fails == [f for f in fails if "seed independence of dpo: seeds 0, 1, 2 trained on 1 distinct" in f]
    assert len(fails) == 1
    assert _check(_facts(tmp_path, runs=same), labels={"other"})[0] == []   # --only leaves it out


def test_step1_closed_forms():
    first = {"adpo/feedback_length": 7.5}
    ln2 = math.log(2)
    assert integrity.step1_closed_form([{"name": "dpo", "weight": 1.0}], first) == (ln2, "ln 2")
    assert integrity.step1_closed_form([{"name": "ipo", "beta": 0.1}], first)[0] == pytest.approx(25.0)
    assert integrity.step1_closed_form([{"name": "hinge", "beta": 0.1}], first)[0] == 1.0
    assert integrity.step1_closed_form([{"name": "adpo", "granularity": "adaptive", "m": 4}], first)[0] == 4 * ln2
    assert integrity.step1_closed_form([{"name": "adpo", "granularity": "static", "k": 1}], first)[0] == 7.5 * ln2
    both = integrity.step1_closed_form([{"name": "dpo"}, {"name": "hinge", "weight": 0.5}], first)
    assert both == (pytest.approx(ln2 + 0.5), "ln 2 + 0.5·1")
    assert integrity.step1_closed_form([{"name": "simpo"}], first) is None
    assert integrity.step1_closed_form([{"name": "dpo"}, {"name": "nll"}], first) is None


def test_step1_closed_form_fails_off_by_more_than_1e6(tmp_path):
    runs = {"r0": _run("dpo", 0, "o0", "t0", loss=0.70), "r1": _run("dpo", 1, "o1", "t1")}
    fails, _ = _check(_facts(tmp_path, runs=runs))
    assert fails == ["invariant step-1 closed form of dpo seed 0: ln 2 = 0.6931472, now 0.7, allowed ±1e-06"]


def test_pinned_values_against_the_baseline(tmp_path):
    folder = _facts(tmp_path, data_audit={"train": {"pairs": 64, "chosen_chars": {"mean": 20.5}}},
                    reference_logps={"sha256": "ab", "sum_chosen": -1000.0})
    pinned = flatten(json.loads((folder / integrity.FILE).read_text()))
    assert "reference_logps.sha256" not in pinned and pinned["data_audit.train.pairs"] == 64
    assert _check(folder, pinned)[0] == []
    moved = {**pinned, "reference_logps.sum_chosen": -1000.0 * (1 + 1e-3), "data_audit.train.pairs": 65}
    fails, _ = _check(folder, moved)
    assert [f.split(":")[0] for f in fails] == ["invariant integrity data_audit.train.pairs",
                                                "invariant integrity reference_logps.sum_chosen"]
    float_order = {**pinned, "reference_logps.sum_chosen": -1000.0 * (1 + 1e-6)}
    assert _check(folder, float_order)[0] == []


def test_missing_and_damaged_records(tmp_path):
    fails, _ = _check(tmp_path, pinned={"splits.pairs.train": 64})
    assert len(fails) == 1 and "invariants.json is missing" in fails[0]
    assert _check(tmp_path) == ([], [])      # an older baseline pins nothing: an older folder passes
    (tmp_path / integrity.FILE).write_text("{not json")
    with pytest.raises(BenchError, match="invariants.json: not valid JSON"):
        _check(tmp_path)


def test_better_jump_is_suspicious_only_where_no_objective_explains_it():
    def judged(label, scorer, now):
        fails, passes = [], []
        entry = Entry(label=label, scorer=scorer, metric="accuracy", direction="higher_is_better",
                      seeds=(0.5,), items=32)
        _judge(entry, [now], 0.99, None, fails, passes)
        return fails

    assert judged("reference", "gold", 0.9)[0].startswith("SUSPICIOUS gold/accuracy of reference")
    assert judged("reference", "gold", 0.5) == []
    assert judged("dpo", "gold", 0.9) == []                        # a trained label may improve
    assert judged("dpo", "train_data", 0.9)[0].startswith("SUSPICIOUS")
    assert not judged("reference", "gold", 0.1)[0].startswith("SUSPICIOUS")   # a drop is a regression
