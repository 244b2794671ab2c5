"""The data-source registry: a one-file source (tests/parts/qa_source.py) registers itself and is
read by load_pairs, checked by validate and fingerprinted, all through its flags."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import trainers.net
from bench.data import registry
from bench.data.sources import load_pairs
from bench.errors import DataError, NetworkRequiredError, SuiteError
from bench.run.fingerprint import suite_fingerprints
from bench.suite.load import load_suite
from bench.suite.schema import DataConfig
from bench.suite.validate import validate_suite
from tests.parts import registered


@pytest.fixture
def qa():
    """The test-local source registered for one test, then removed (the registry is global)."""
    with registered(("tests.parts.qa_source", registry.SOURCES, "qa")):
        yield registry.get_source("qa")


def _rows(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "qa.jsonl"
    rows = [{"question": f"{i}+1?", "good": str(i + 1), "bad": str(i + 2)} for i in range(n)] + [{"question": "x"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _suite(tmp_path: Path, data: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text("name: t\nseeds: [0]\nobjectives:\n  - name: dpo\nscoring: {lm_eval: {tasks: []}}\n"
                    f"training: {{batch_size: 2}}\ndata: {{{data}}}\n")
    return path


def test_builtin_sources_declare_their_capabilities():
    arith, hh, pref = (registry.get_source(n) for n in ("arith", "hh_rlhf", "preference"))
    assert (arith.builtin, arith.gold, arith.hub_id) == (True, "arith", None)
    assert (hh.builtin, hh.hub_id, hh.splits) == (False, "Anthropic/hh-rlhf", ("train", "test"))
    assert (pref.builtin, pref.hub_id) == (False, None)
    assert hh.needs_network(DataConfig(source="hh_rlhf")) and not hh.needs_network(DataConfig(source="hh_rlhf", path="x"))


def test_one_file_source_loads_and_validates(qa, tmp_path):
    path = _rows(tmp_path, 12)
    loaded = load_pairs(DataConfig(source="qa", path=str(path), shuffle_seed=0), progress=False)
    assert len(loaded.pairs) == 12 and loaded.skipped == {"missing_field": 1}
    pair = next(p for p in loaded.pairs if p.id == "qa:3")
    assert (pair.prompt, pair.chosen, pair.rejected) == ("Q: 3+1?\nA:", " 4", " 5")
    text = str(validate_suite(_suite(tmp_path, f"source: qa, path: {path}, eval_prompts: 2, drift_pairs: 2")))
    assert f"data: {path}: 12 pairs readable, skipped {{'missing_field': 1}}, 8 for training" in text


def test_one_file_source_hub_default_is_asked_not_named(qa, tmp_path, monkeypatch):
    monkeypatch.setattr(trainers.net, "network_available", lambda: False)
    with pytest.raises(NetworkRequiredError, match="data.hub_id: dataset example/qa-pairs is on the Hugging Face hub"):
        validate_suite(_suite(tmp_path, "source: qa"))
    with pytest.raises(SuiteError, match=r"data.split: example/qa-pairs has no split 'tran'; did you mean 'train'\?"):
        validate_suite(_suite(tmp_path, "source: qa, split: tran"))
    fingerprint = suite_fingerprints(load_suite(_suite(tmp_path, "source: qa")))["data"]
    assert fingerprint.startswith("hub:example/qa-pairs@")


def test_unknown_source_is_one_line_with_did_you_mean(qa):
    with pytest.raises(DataError) as err:
        load_pairs(DataConfig(source="qaa"), progress=False)
    assert str(err.value) == ("data.source: unknown source 'qaa'; did you mean 'qa'? "
                              "(sources: arith, hh_rlhf, preference, qa)")
    with pytest.raises(DataError, match=r"data.task_options: only builtin tasks \(arith\) take options, not 'qa'"):
        load_pairs(DataConfig(source="qa", path="x.jsonl", task_options={"k": 1}), progress=False)
