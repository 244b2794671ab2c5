"""Results table: canonical labels/params, stable byte-identical writes, provenance, errors."""
from __future__ import annotations

import json
import random
import re

import pandas as pd
import pytest

from bench.errors import BenchError
from bench.tables.results import (RESULT_COLUMNS, canonical_json, make_label, make_row, metric_info,
                           provenance, read_results, read_runs, write_results)


def _rows():
    rows = []
    for seed in (0, 1, 2):
        for objective, params in (("dpo", {"beta": 0.1}), ("adpo", {"k": 2, "granularity": "static"})):
            for scorer, metric, value in (("gold", "accuracy", 0.1 * seed + 0.05), ("kl", "kl_to_reference", 1.0 / 3 + seed)):
                rows.append(make_row(suite="smoke", run_id=f"{objective}-s{seed}", objective=objective,
                                     params=params, seed=seed, scorer=scorer, metric=metric, value=value,
                                     ci_low=value - 0.01, ci_high=value + 0.01, n=16,
                                     extra={"task_version": 1, "n_shot": 0}))
    return rows


def test_label_and_params_are_canonical():
    assert make_label("adpo", {"k": 1, "granularity": "static"}) == "adpo[granularity=static,k=1]"
    assert make_label("dpo", {}) == "dpo"
    row = make_row(suite="s", run_id="r", objective="adpo", params={"m": 4, "granularity": "adaptive"},
                   seed=0, scorer="gold", metric="accuracy", value=1)
    assert row["params"] == '{"granularity":"adaptive","m":4}'
    assert row["label"] == "adpo[granularity=adaptive,m=4]"
    assert row["extra"] == "{}" and row["value"] == 1.0
    # a params string round-trips to the same canonical form
    assert make_row(**{**_kw(), "params": '{"m": 4, "granularity": "adaptive"}'})["params"] == row["params"]
    assert canonical_json({"b": [1, 2], "a": None}) == '{"a":null,"b":[1,2]}'


def _kw():
    return dict(suite="s", run_id="r", objective="adpo", params={}, seed=0, scorer="gold", metric="accuracy", value=1)


def test_csv_is_byte_identical_and_sorted_regardless_of_input_order(tmp_path):
    rows = _rows()
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    write_results(tmp_path / "a", rows)
    write_results(tmp_path / "b", shuffled)
    first = (tmp_path / "a" / "results.csv").read_bytes()
    assert first == (tmp_path / "b" / "results.csv").read_bytes()
    write_results(tmp_path / "a", rows)   # rewriting the same rows changes nothing
    assert (tmp_path / "a" / "results.csv").read_bytes() == first
    lines = first.decode().splitlines()
    assert lines[0] == ",".join(RESULT_COLUMNS)
    assert len(lines) == 1 + len(rows)
    # sorted by label then seed: adpo rows (all seeds) precede dpo rows
    labels = [line.split(",")[3] for line in lines[1:]]
    assert labels == sorted(labels)
    assert not list(tmp_path.glob("a/.*tmp*"))   # no temporary files left behind


def test_roundtrip_keeps_values_and_types(tmp_path):
    written = write_results(tmp_path, _rows(), runs=[
        {"suite": "smoke", "run_id": "dpo-s0", "objective": "dpo", "label": "dpo[beta=0.1]",
         "params": '{"beta":0.1}', "seed": 0, "status": "ok", "config": {"lr": 1e-3, "steps": 5},
         "version_torch": "2.13.0"}])
    back = read_results(tmp_path)
    pd.testing.assert_frame_equal(back, written)
    assert str(back["seed"].dtype) == "Int64" and str(back["value"].dtype) == "float64"
    kl = back[(back["label"] == "dpo[beta=0.1]") & (back["metric"] == "kl_to_reference") & (back["seed"] == 2)]
    assert kl["value"].iloc[0] == pytest.approx(1.0 / 3 + 2, abs=0)
    assert json.loads(back["extra"].iloc[0]) == {"n_shot": 0, "task_version": 1}
    runs = read_runs(tmp_path)
    assert json.loads(runs["config"].iloc[0]) == {"lr": 1e-3, "steps": 5}
    assert runs["status"].iloc[0] == "ok" and runs["version_torch"].iloc[0] == "2.13.0"


def test_provenance_names_revision_versions_and_device():
    info = provenance()
    assert re.fullmatch(r"([0-9a-f]{40}(\+dirty)?|unknown)", info["git_revision"])
    assert info["device"] == "cpu" or info["device"].startswith("cuda:")
    import torch
    assert info["version_torch"] == torch.__version__
    for name in ("transformers", "lm_eval", "vllm", "datasets", "accelerate", "peft"):
        assert info[f"version_{name}"]
    try:
        import vllm  # noqa: F401
    except ImportError:
        assert info["version_vllm"] == "not installed"


def test_params_and_extra_are_recanonicalised(tmp_path):
    row = {"suite": "s", "run_id": "r", "objective": "adpo", "params": '{"m": 4, "granularity": "adaptive"}',
           "seed": 0, "scorer": "gold", "metric": "accuracy", "value": 0.5, "extra": '{"b": 1, "a": 2}'}
    df = write_results(tmp_path, [row, {**row, "metric": "win_rate_vs_reference", "extra": None}])
    assert set(df["params"]) == {'{"granularity":"adaptive","m":4}'}
    assert list(df["extra"]) == ['{"a":2,"b":1}', "{}"]
    assert set(df["label"]) == {"adpo[granularity=adaptive,m=4]"}   # derived when not given
    assert df["ci_low"].isna().all() and df["n"].isna().all()


def test_metric_directions():
    assert metric_info("gold", "accuracy").higher_is_better is True
    assert metric_info("drift", "chosen_logp_down").higher_is_better is False
    assert metric_info("kl", "kl_to_reference").higher_is_better is None
    assert metric_info("lm_eval:arith_local", "exact_match").higher_is_better is True
    assert metric_info("lm_eval:wikitext", "word_perplexity").higher_is_better is False


def test_missing_or_corrupt_results_are_one_line_errors(tmp_path):
    with pytest.raises(BenchError, match="no such results folder"):
        read_results(tmp_path / "nope")
    with pytest.raises(BenchError, match="no results.parquet"):
        read_results(tmp_path)
    (tmp_path / "results.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(BenchError, match="results.parquet: unreadable"):
        read_results(tmp_path)
    with pytest.raises(BenchError, match="lack the columns"):
        write_results(tmp_path / "x", [{"suite": "s", "value": 1.0}])


def test_a_run_with_unreadable_evaluation_files_gives_no_rows_and_says_why(tmp_path):
    """The aggregate's piece for one run (bench.run.pipeline._record_tables), in this process
    or in a pool's: a damaged judgments file fails that run alone, with its reason."""
    import functools
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from bench.run.pipeline import _record_tables
    from bench.tables.aggregate import PolicyRecord

    (tmp_path / "judgments.parquet").write_bytes(b"not a parquet file")
    record = PolicyRecord(run_id="dpo-s0", label="dpo", objective="dpo", params="{}", seed=0, eval_dir=tmp_path,
                          train_summary={"final_loss": 0.5, "steps": 5})
    piece = functools.partial(_record_tables, suite="s", reference_judgments=pd.DataFrame(), chosen_judgments=None,
                              n_boot=10, seed=0, extra_scorers=())
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for rows, units, unreadable in (piece(record), next(pool.map(piece, [record]))):
            assert rows == [] and units.empty
            assert unreadable.startswith("its evaluation files are unreadable (") and "parquet" in unreadable.lower()


def test_phases_of_the_last_command_or_none(tmp_path):
    from bench.run.phases import PhaseClock, last_phases

    assert last_phases(tmp_path) is None
    clock = PhaseClock("local", started=100.0)
    clock.marks.update(prepared=103.0, runs_done=110.5, aggregated=112.0)
    clock.write(tmp_path)
    assert last_phases(tmp_path) == {"setup": 3.0, "runs": 7.5, "aggregate": 1.5}
    with open(tmp_path / "logs" / "phases.jsonl", "a") as handle:
        handle.write('{"executor": "local", "started": 1.0, "prepared": 2.0}\n')   # a line without every mark
    assert last_phases(tmp_path) is None
    (tmp_path / "logs" / "phases.jsonl").write_text("not json\n")
    assert last_phases(tmp_path) is None
