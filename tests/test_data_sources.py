"""load_pairs: generic preference files (strings and chat lists), formats, hub route, errors."""
from __future__ import annotations

import gzip
import json

import pytest

from bench.data import arith
from bench.data.sources import load_pairs
from bench.errors import BenchError, DataError, NetworkRequiredError
from bench.suite.schema import DataConfig

UF_ROW = {  # UltraFeedback-binarized style: the last assistant message is the response
    "prompt": "Name a colour.",
    "chosen": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
    "rejected": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Seven."}],
}
ROWS = [
    {"prompt": "Q: 2+2?\nA:", "chosen": " 4", "rejected": " 5"},                    # 0 ok
    UF_ROW,                                                                           # 1 ok
    {"prompt": "Q", "chosen": " a"},                                                  # 2 missing_field
    {"prompt": "Q", "chosen": " a", "rejected": "   "},                               # 3 empty_response
    {"prompt": "Q", "chosen": " a", "rejected": " a"},                                # 4 identical_responses
    {"chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"}],
     "rejected": [{"role": "user", "content": "y"}, {"role": "assistant", "content": "b"}]},  # 5 prompts_differ
    {"prompt": "Q", "chosen": [{"role": "user", "content": "Q"}], "rejected": [{"role": "assistant", "content": "b"}]},  # 6 unparseable
    {"prompt": "Say hi.", "chosen": "Say hi. Hello!", "rejected": "Say hi. Go."},       # 7 ok, prompt repeated
    {"prompt": [{"role": "user", "content": "Hi"}],                                   # 8 ok, conversational prompt
     "chosen": [{"role": "assistant", "content": "Hello"}], "rejected": [{"role": "assistant", "content": "No"}]},
]
UF_ROW2 = {
    "prompt": "Greet me.",
    "chosen": [{"role": "user", "content": "Greet me."}, {"role": "assistant", "content": "Hello!"}],
    "rejected": [{"role": "user", "content": "Greet me."}, {"role": "assistant", "content": ""}],
}
SKIPPED = {"missing_field": 1, "empty_response": 1, "identical_responses": 1, "prompts_differ": 1, "unparseable": 1}


def _write_jsonl(path, rows, extra_lines=()):
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def _load(path, **kw):
    return load_pairs(DataConfig(source="preference", path=str(path), **kw), progress=False)


def test_generic_rows_strings_and_chat_lists(tmp_path):
    result = _load(_write_jsonl(tmp_path / "prefs.jsonl", ROWS, ["{not json"]))
    assert result.skipped == {**SKIPPED, "unparseable": 2}  # the broken JSON line is counted, not fatal
    pairs = {p.metadata["row"]: p for p in result.pairs}
    assert sorted(pairs) == [0, 1, 7, 8]
    assert (pairs[0].prompt, pairs[0].chosen, pairs[0].rejected, pairs[0].messages) == ("Q: 2+2?\nA:", " 4", " 5", None)
    assert pairs[1].prompt == "\n\nHuman: Name a colour.\n\nAssistant:"
    assert (pairs[1].chosen, pairs[1].rejected) == (" Blue.", " Seven.")
    assert pairs[1].messages == ({"role": "user", "content": "Name a colour."},)
    assert (pairs[7].prompt, pairs[7].chosen, pairs[7].rejected) == ("Say hi.", " Hello!", " Go.")
    assert pairs[8].messages == ({"role": "user", "content": "Hi"},) and pairs[8].chosen == " Hello"
    assert pairs[0].id == "prefs:0" and result.source == "prefs"


def test_formats_agree(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = [UF_ROW, UF_ROW2]  # chat lists: the nested case that formats handle differently
    (tmp_path / "p.json").write_text(json.dumps(good))
    pq.write_table(pa.Table.from_pylist(good), tmp_path / "p.parquet")
    _write_jsonl(tmp_path / "p.jsonl.gz", good)
    loaded = [_load(tmp_path / name) for name in ("p.json", "p.parquet", "p.jsonl.gz")]
    assert loaded[0].pairs == loaded[1].pairs == loaded[2].pairs and len(loaded[0].pairs) == 1
    assert loaded[0].skipped == loaded[1].skipped == loaded[2].skipped == {"empty_response": 1}


def test_on_bad_row_error_names_file_and_row(tmp_path):
    path = _write_jsonl(tmp_path / "prefs.jsonl", ROWS)
    with pytest.raises(DataError, match=r"prefs\.jsonl: line 3: missing_field"):
        _load(path, on_bad_row="error")


def test_limit_and_shuffle(tmp_path):
    rows = [{"prompt": f"Q{i}", "chosen": " a", "rejected": " b"} for i in range(40)]
    path = _write_jsonl(tmp_path / "many.jsonl", rows)
    first = _load(path, limit=10, shuffle_seed=5).pairs
    assert len(first) == 10 and first == _load(path, limit=10, shuffle_seed=5).pairs
    assert [p.id for p in first] != [f"many:{i}" for i in range(10)]  # a seeded sample, not the head
    assert all(p.prompt == f"Q{p.metadata['row']}" for p in first)


def test_missing_file_and_bad_extension(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl does not exist"):
        _load(tmp_path / "nope.jsonl")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="data.csv is not one of"):
        _load(tmp_path / "data.csv")


def test_hub_route_on_local_files(tmp_path, monkeypatch):
    """The hub path calls datasets.load_dataset(hub_id, data_dir=..., split=...); exercised with the json builder."""
    import trainers.net

    monkeypatch.setattr(trainers.net, "network_available", lambda: False)
    (tmp_path / "hub").mkdir()
    # hub datasets have one type per column, so the rows here are all chat-list rows
    _write_jsonl(tmp_path / "hub" / "train.jsonl", [UF_ROW, UF_ROW2, UF_ROW])
    cfg = DataConfig(source="preference", hub_id="json", data_dir=str(tmp_path / "hub"), split="train")
    result = load_pairs(cfg, progress=False)
    assert len(result.pairs) == 2 and result.skipped == {"empty_response": 1}
    assert result.pairs[0].id.startswith("json/") and result.source.endswith(":train")
    assert {p.chosen for p in result.pairs} == {" Blue."}


def test_hub_without_network_is_one_line_error(monkeypatch):
    import trainers.net

    monkeypatch.setattr(trainers.net, "network_available", lambda: False)
    with pytest.raises(NetworkRequiredError, match="Anthropic/hh-rlhf .*no network.*data.path"):
        load_pairs(DataConfig(source="hh_rlhf", data_dir="harmless-base"), progress=False)
    with pytest.raises(NetworkRequiredError, match="HuggingFaceH4/ultrafeedback_binarized"):
        load_pairs(DataConfig(source="preference", hub_id="HuggingFaceH4/ultrafeedback_binarized"), progress=False)
    with pytest.raises(DataError, match="needs data.path"):
        load_pairs(DataConfig(source="preference"), progress=False)
    with pytest.raises(DataError, match="only builtin tasks"):
        load_pairs(DataConfig(source="preference", path="x.jsonl", task_options={"n": 1}), progress=False)


def test_unknown_source_names_nearest():
    with pytest.raises(DataError, match="did you mean 'hh_rlhf'"):
        load_pairs(DataConfig(source="hh-rlhf"), progress=False)


def test_builtin_task_source():
    cfg = DataConfig(source="arith", limit=20, task_options={"max_operands": 2})
    result = load_pairs(cfg, task_seed=7)
    assert result.pairs == arith.make_pairs(20, 7, max_operands=2) and result.skipped == {}
    assert load_pairs(DataConfig(source="arith", limit=5, shuffle_seed=7)).pairs == arith.make_pairs(5, 7)
    with pytest.raises(BenchError, match="did you mean min_operands"):
        load_pairs(DataConfig(source="arith", limit=5, task_options={"min_operandz": 2}))
