"""No bad row aborts a load: every fault class of the corpus is counted under its reason
with `on_bad_row: skip`, and named by file, 1-based line and reason with `error`."""
from __future__ import annotations

import gzip
import json

import pytest

from bench.data.sources import load_pairs
from bench.errors import DataError
from bench.suite.schema import DataConfig
from tests.fault_corpus import FAULTS


def _load(path, source="preference", **kw):
    return load_pairs(DataConfig(source=source, path=str(path), **kw), progress=False)


def test_fault_corpus_counts_every_bad_row_and_keeps_the_good(fault_corpus):
    result = _load(fault_corpus.path)
    assert result.skipped == fault_corpus.skipped
    assert sorted(p.metadata["row"] + 1 for p in result.pairs) == fault_corpus.good_lines
    assert {"undecodable_bytes", "too_deeply_nested", "invalid_text"} <= set(result.skipped)


def test_kept_rows_of_the_corpus_tokenize(fault_corpus, char_tokenizer):
    """A lone surrogate used to load and then abort the suite at tokenisation (TypeError)."""
    from trainers.tokenize import tokenize_pairs

    pairs = _load(fault_corpus.path).pairs
    tokenized, _ = tokenize_pairs(pairs, char_tokenizer, max_length=64, max_prompt_length=32)
    assert len(tokenized) == len(pairs)


@pytest.mark.parametrize("label,line,reason", [(lbl, data, r) for lbl, data, r in FAULTS if r],
                         ids=[lbl for lbl, _, r in FAULTS if r])
def test_on_bad_row_error_names_file_line_and_reason(tmp_path, label, line, reason):
    path = tmp_path / "one_bad.jsonl"
    path.write_bytes(FAULTS[0][1] + b"\n" + line + b"\n")
    with pytest.raises(DataError) as err:
        _load(path, on_bad_row="error")
    message = str(err.value)
    assert message.startswith(f"{path}: line 2: {reason} (")
    assert "\n" not in message and len(message) < 400


def test_cut_gzip_keeps_the_rows_before_the_cut(tmp_path):
    rows = [json.dumps({"prompt": f"Q{i} " + "x" * (i % 97), "chosen": " a", "rejected": " b"}) for i in range(2000)]
    whole = gzip.compress("\n".join(rows).encode())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    result = _load(cut)
    assert result.skipped == {"truncated_file": 1} and 1 <= len(result.pairs) < 2000
    with pytest.raises(DataError, match=r"cut\.jsonl\.gz: line \d+: truncated_file \(.*(EOFError|BadGzipFile|Error)"):
        _load(cut, on_bad_row="error")
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_bytes(b'{"prompt": "Q"}\n')
    assert _load(not_gzip).skipped == {"truncated_file": 1}


def test_json_list_with_bad_bytes_skips_only_that_record(tmp_path):
    good = json.dumps({"prompt": "Q", "chosen": " a", "rejected": " b"}).encode()
    bad = b'{"prompt": "caf\xe9", "chosen": " a", "rejected": " b"}'
    path = tmp_path / "list.json"
    path.write_bytes(b"[" + good + b",\n" + bad + b",\n" + good.replace(b"Q", b"R") + b"]")
    result = _load(path)
    assert len(result.pairs) == 2 and result.skipped == {"invalid_text": 1}
    with pytest.raises(DataError, match=r"list\.json: record 2: invalid_text"):
        _load(path, on_bad_row="error")


def test_whole_file_faults_are_one_line(tmp_path):
    nested = tmp_path / "nested.json"
    nested.write_bytes(b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(DataError, match="nested.json is nested too deeply"):
        _load(nested)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="broken.parquet is not a readable parquet file"):
        _load(broken)
    with pytest.raises(DataError, match="is a directory"):
        (tmp_path / "d.jsonl").mkdir()
        _load(tmp_path / "d.jsonl")


def test_parquet_is_read_in_batches(tmp_path, monkeypatch):
    """Streamed: rows come from iter_batches, never one whole-table read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": f"Q{i}", "chosen": " a", "rejected": " b"} for i in range(3000)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet", row_group_size=500)
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("whole-table read"))
    result = _load(tmp_path / "p.parquet")
    assert len(result.pairs) == 3000 and result.pairs[0].id.startswith("p:")


def test_hh_source_survives_the_same_byte_and_nesting_faults(tmp_path):
    good = json.dumps({"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: Go"})
    path = tmp_path / "hh.jsonl"
    path.write_bytes(b"\n".join([good.encode(), b'{"chosen": "\xff"}', b"[" * 100_000,
                                 b'{"chosen": "\\n\\nHuman: Hi\\n\\nAssistant: \\ud800", "rejected": "\\n\\nHuman: Hi\\n\\nAssistant: b"}']))
    result = _load(path, source="hh_rlhf")
    assert len(result.pairs) == 1
    assert result.skipped == {"undecodable_bytes": 1, "too_deeply_nested": 1, "invalid_text": 1}


def test_a_suite_on_the_fault_corpus_runs_to_the_end(tmp_path, fault_corpus):
    """Load, split, tokenise, train, generate and aggregate over the corpus: no bad row aborts it."""
    from bench.run.runner import run_suite

    suite = tmp_path / "faults.yaml"
    suite.write_text(
        "name: faults\nseeds: [0]\nmodel: {policy: 'builtin:tiny-llama', builtin: {hidden_size: 32, layers: 1, heads: 2}}\n"
        f"data: {{source: preference, path: {fault_corpus.path}, eval_prompts: 2, drift_pairs: 0}}\n"
        "sft: {enabled: false}\nreward_model: {kind: none}\n"
        "training: {max_steps: 2, batch_size: 2, max_length: 64, max_prompt_length: 32}\n"
        "generation: {max_new_tokens: 4, batch_size: 2}\n"
        "scoring: {reward_model: false, drift: false, bootstrap_samples: 10}\nobjectives:\n  - name: dpo\n")
    summary = run_suite(suite, out_dir=tmp_path / "out", progress=False)
    assert not summary.failed and summary.total == 1
    import pandas as pd

    runs = pd.read_parquet(tmp_path / "out" / "runs.parquet")
    data = json.loads(runs.data.iloc[0])
    assert data["skipped"] == fault_corpus.skipped
