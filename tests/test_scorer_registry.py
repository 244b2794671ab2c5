"""The scorer registry: a one-file scorer (tests/parts/vowel_scorer.py) registers itself, is
checked by validate, runs in evaluate_policy and gets its rows from the aggregate."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bench.errors import SuiteError, SuiteErrors
from bench.evaluation.scoring import registry
from bench.suite.validate import validate_suite
from tests.parts import registered

MINIMAL = "name: t\nseeds: [0]\nobjectives:\n  - name: dpo\n"


@pytest.fixture
def scorers():
    """The test-local scorer and backend registered for one test, then removed (the registries are global)."""
    from bench.evaluation.generation import registry as backends

    with registered(("tests.parts.echo_backend", backends.BACKENDS, "echo"),
                    ("tests.parts.vowel_scorer", registry.SCORERS, "vowels")):
        yield registry.get_scorer("vowels")


def _suite(tmp_path: Path, scoring: str, extra: str = "") -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(MINIMAL + f"scoring: {{lm_eval: {{tasks: []}}, {scoring}}}\n" + extra)
    return path


def test_builtin_scorers_declare_their_capabilities():
    flags = {name: registry.get_scorer(name) for name in ("reward_model", "gold", "drift", "lm_eval")}
    assert flags["reward_model"].needs_reward_model and flags["reward_model"].sample
    assert flags["reward_model"].column == "reward" and "lc_win_rate_vs_reference" in flags["reward_model"].metrics
    assert flags["drift"].needs_drift_pairs and not flags["drift"].needs_generations and not flags["drift"].on_reference
    assert not flags["lm_eval"].sample and flags["gold"].metrics == ("accuracy", "win_rate_vs_reference")


def test_one_file_scorer_validates_evaluates_and_aggregates(scorers, tmp_path):
    assert "scorers: vowels registered" in str(validate_suite(_suite(tmp_path, "scorers: [vowels]")))

    from bench.data.records import PreferencePair
    from bench.evaluation.evaluate import EvalContext, evaluate_policy
    from bench.suite.schema import GenerationConfigSection, LmEvalConfig
    from bench.tables.aggregate import PolicyRecord, policy_rows, policy_units

    class Plain:   # render_prompt's tokenizer: no chat template
        chat_template = None

    pairs = [PreferencePair("p0", "xa", " x", " y"), PreferencePair("p1", "bcde", " x", " y")]
    ctx = EvalContext(eval_pairs=pairs, tokenizer=Plain(), reference_dir=tmp_path,
                      generation=GenerationConfigSection(backend="echo", max_new_tokens=8), reward_model_dir=None,
                      reward_batch_size=1, gold=None, lm_eval=LmEvalConfig(), lm_eval_include=None, drift_data=None,
                      drift_reference=None, progress=False, scorers=("vowels",))
    evaluate_policy(tmp_path / "policy", ctx, tmp_path, is_reference=True)
    judgments = pd.read_parquet(tmp_path / "judgments.parquet")
    assert judgments["vowels"].tolist() == [0.5, 0.25]      # "ax": 1 of 2, "edcb": 1 of 4

    extra = registry.listed_sample_metrics(["vowels"])
    assert extra == (("vowels", "vowels", "vowel_share"),)
    record = PolicyRecord(run_id="r", label="r", objective="dpo", params="{}", seed=0, eval_dir=tmp_path)
    rows = {(r["scorer"], r["metric"]): r for r in policy_rows(record, suite="t", reference_judgments=judgments,
                                                                 chosen_judgments=None, n_boot=20, seed=0,
                                                                 extra_scorers=extra)}
    assert rows[("vowels", "vowel_share")]["value"] == pytest.approx(0.375)
    assert rows[("vowels", "win_rate_vs_reference")]["value"] == pytest.approx(0.5)   # against itself: all ties
    units = policy_units(record, reference_judgments=judgments, chosen_judgments=None, extra_scorers=extra)
    share = units[(units.scorer == "vowels") & (units.metric == "vowel_share")]
    assert dict(zip(share.unit, share.value)) == {"p0": 0.5, "p1": 0.25}


def test_unknown_scorer_is_one_line_with_did_you_mean(scorers, tmp_path):
    with pytest.raises(SuiteError) as err:
        validate_suite(_suite(tmp_path, "scorers: [vowel]"))
    assert str(err.value).endswith("scoring.scorers[0]: unknown scorer 'vowel' (did you mean 'vowels'?); "
                                   "registered: drift, gold, judge, lm_eval, reward_model, vowels")


def test_scorer_needs_are_checked(scorers, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.SCORERS.parts, "vowels", registry.Scorer(
        "vowels", ("vowel_share",), "", score=scorers.score, column="vowels", needs_reward_model=True))
    with pytest.raises(SuiteErrors) as err:
        validate_suite(_suite(tmp_path, "scorers: [vowels, gold]", "reward_model: {kind: none}\n"))
    assert [line.split(": ", 1)[1] for line in err.value.lines] == [
        "scoring.scorers[0]: scorer 'vowels' needs a reward model; set reward_model.kind: train or load and "
        "scoring.reward_model: true",
        "scoring.scorers[1]: scorer 'gold' is builtin and switched by its own setting under scoring:, not listed here"]


def test_no_scorers_leaves_the_resolved_suite_as_it_was():
    from bench.suite.schema import ScoringConfig

    assert "scorers" not in ScoringConfig().model_dump(mode="json")
    assert ScoringConfig(scorers=["vowels"]).model_dump(mode="json")["scorers"] == ["vowels"]
