"""lm-eval scoring: the harness's rows equal lm-eval's own command line on the same task."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.evaluation.scoring.lm_eval_scorer import evaluate

TASKS_DIR = Path(__file__).resolve().parents[1] / "suites" / "tasks"
LIMIT = 20


@pytest.fixture(scope="module")
def harness_rows(tiny_model_dir):
    return evaluate(tiny_model_dir, ["arith_qa"], include_path=TASKS_DIR, limit=LIMIT, batch_size=16)


def test_rows_have_the_fields(harness_rows):
    by_metric = {r["metric"]: r for r in harness_rows}
    assert set(by_metric) == {"acc", "acc_norm"}
    for row in harness_rows:
        assert row["task"] == "arith_qa" and row["filter"] == "none"
        assert 0.0 <= row["value"] <= 1.0 and row["stderr"] > 0
        assert row["n"] == LIMIT and row["n_shot"] == 0
        assert row["task_version"] == 2.0   # version 2: choices are worked solutions
        assert row["lm_eval_version"].startswith("0.4")
        # acc over 20 items is a multiple of 1/20 and its stderr is the sample one
        k = round(row["value"] * LIMIT)
        assert row["value"] == pytest.approx(k / LIMIT)
        p = row["value"]
        assert row["stderr"] == pytest.approx((p * (1 - p) / (LIMIT - 1)) ** 0.5)


def test_harness_equals_lm_eval_command_line(harness_rows, tiny_model_dir, tmp_path):
    # Run from another cwd: the task must find its local data file from anywhere.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf",
           "--model_args", f"pretrained={tiny_model_dir},dtype=float32", "--tasks", "arith_qa",
           "--include_path", str(TASKS_DIR), "--limit", str(LIMIT), "--device", "cpu",
           "--batch_size", "16", "--output_path", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [results_file] = list((tmp_path / "out").rglob("results_*.json"))
    cli = json.loads(results_file.read_text())["results"]["arith_qa"]
    for row in harness_rows:
        assert row["value"] == pytest.approx(cli[f"{row['metric']},none"], abs=1e-12)
        assert row["stderr"] == pytest.approx(cli[f"{row['metric']}_stderr,none"], abs=1e-12)


def test_unknown_task_is_one_line_naming_it(tiny_model_dir):
    with pytest.raises(BenchError, match="arith_qaa.*closest known: 'arith_qa'") as err:
        evaluate(tiny_model_dir, ["arith_qaa"], include_path=TASKS_DIR, limit=2)
    assert "\n" not in str(err.value)


def test_task_data_matches_the_arith_format():
    """Four complete worked solutions per problem: exactly one reaches the right answer
    through right steps (the gold index), three slip at one step and end wrong."""
    rows = [json.loads(line) for line in (TASKS_DIR / "arith_qa.jsonl").read_text().splitlines()]
    assert 200 <= len(rows) <= 400
    from bench.evaluation.scoring.gold import get_verifier

    verify = get_verifier("arith")
    for r in rows:
        assert r["question"].startswith("Compute ") and r["question"].endswith(".\n")
        expr = r["question"][len("Compute "):-2]
        assert eval(expr, {"__builtins__": {}}) == r["answer"]  # noqa: S307 - digits and + - * only
        assert len(set(r["choices"])) == 4
        right = [i for i, c in enumerate(r["choices"]) if verify(c, {"answer": r["answer"]}) == 1.0]
        assert right == [r["gold"]]
        for choice in r["choices"]:   # every step of the gold solution is true arithmetic
            steps = [s.strip() for s in choice.split("Answer:")[0].split(".") if s.strip()]
            ok = all(eval(s.split("=")[0], {"__builtins__": {}}) == int(s.split("=")[1]) for s in steps)  # noqa: S307
            assert ok == (choice == r["choices"][r["gold"]])


def test_local_tasks_index_only_their_folder():
    """A suite whose tasks are all in its own folder does not pay for indexing lm-eval's ~13k task
    YAMLs (about 10 s, twice per run); one that names a shipped task gets lm-eval's whole index."""
    from bench.evaluation.scoring.lm_eval_scorer import task_manager

    local = task_manager(TASKS_DIR, ["arith_qa"])
    assert "arith_qa" in local.all_tasks and "hellaswag" not in local.all_tasks
    mixed = task_manager(TASKS_DIR, ["arith_qa", "hellaswag"])
    assert {"arith_qa", "hellaswag"} <= set(mixed.all_tasks)


def test_per_document_values_average_to_the_rows(tiny_model_dir):
    """Each document's value is stored so comparisons pair policies by document; their mean is
    lm-eval's own value for the task."""
    per_doc: dict = {}
    rows = evaluate(tiny_model_dir, ["arith_qa"], include_path=TASKS_DIR, limit=LIMIT, batch_size=16,
                    per_doc=per_doc)
    for row in rows:
        docs = per_doc["arith_qa"][row["metric"]]
        assert len(docs) == LIMIT and set(docs.values()) <= {0.0, 1.0}
        assert sum(docs.values()) / len(docs) == pytest.approx(row["value"])


def test_per_document_values_keep_one_filter_metrics_only():
    from bench.evaluation.scoring.lm_eval_scorer import per_doc_values

    samples = {"t": [
        {"doc_id": 0, "filter": "none", "metrics": ["acc"], "acc": 1.0},
        {"doc_id": 1, "filter": "none", "metrics": ["acc"], "acc": 0.0},
        {"doc_id": 0, "filter": "strict", "metrics": ["exact_match"], "exact_match": 1.0},
        {"doc_id": 0, "filter": "flexible", "metrics": ["exact_match"], "exact_match": 0.0},
        {"doc_id": 2, "filter": "none", "metrics": ["acc", "bleu"], "acc": True, "bleu": "n/a"},
    ]}
    assert per_doc_values(samples) == {"t": {"acc": {"0": 1.0, "1": 0.0}}}


def test_environment_report_is_collected_once_per_process(tiny_model_dir, monkeypatch):
    """lm-eval's `add_env_info` runs torch's collect_env (subprocesses, ~1.2 s) after every
    task; the scorer computes that record once and copies it into later calls."""
    import torch.utils.collect_env as collect_env

    from bench.evaluation.scoring import lm_eval_scorer

    calls = []
    monkeypatch.setattr(collect_env, "get_pretty_env_info", lambda: calls.append(1) or "env report")
    lm_eval_scorer._environment_info.cache_clear()
    for _ in range(2):
        evaluate(tiny_model_dir, ["arith_qa"], include_path=TASKS_DIR, limit=4, batch_size=16)
    assert len(calls) == 1
    record: dict = {}
    import lm_eval.evaluator

    lm_eval.evaluator.add_env_info(record)     # what simple_evaluate stores in its results
    assert record["pretty_env_info"] == "env report" and "lm_eval_version" in record
    lm_eval_scorer._environment_info.cache_clear()
