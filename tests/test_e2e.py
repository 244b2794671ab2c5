"""End to end: the reduced smoke suite through the real CLI, every stage, every objective.

Three runs of the same suite share this module: one uninterrupted; one killed during
training and resumed; and a rerun of the finished one, which must recompute nothing.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "suites" / "ci_smoke.yaml"
RESULT_COLUMNS = {"suite", "run_id", "objective", "params", "seed", "scorer", "metric", "value", "ci_low",
                  "ci_high", "n"}


def bench(*args, timeout=900, **kwargs):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPO / "bench.py"), *args], cwd=REPO, env=env, timeout=timeout,
                          capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "out"
    done = bench("run", str(SUITE), "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return out, done


def test_full_tiny_suite_writes_results_runs_and_leaderboard(finished):
    out, done = finished
    results = pd.read_parquet(out / "results.parquet")
    assert RESULT_COLUMNS <= set(results.columns)
    runs = pd.read_parquet(out / "runs.parquet")
    trained = runs[runs.run_id != "reference"]
    assert (trained.status == "ok").all(), trained[["label", "reason"]]
    objectives = set(trained.objective)
    assert {"dpo", "ipo", "simpo", "adpo", "adadpo"} <= objectives
    for scorer in ("reward_model", "gold", "length", "kl", "drift"):
        assert scorer in set(results.scorer), scorer
    assert any(s.startswith("lm_eval:") for s in results.scorer)
    # Every trained policy has a win rate against the reference, inside its own interval.
    wins = results[(results.metric == "win_rate_vs_reference") & (results.scorer == "reward_model")]
    assert set(wins.run_id) == set(trained.run_id) | {"reference"}
    assert ((wins.ci_low <= wins.value) & (wins.value <= wins.ci_high)).all()
    # The reference against itself is exactly a coin flip.
    ref = results[(results.run_id == "reference") & (results.metric == "win_rate_vs_reference")]
    assert (ref.value == 0.5).all()
    assert (out / "leaderboard.md").read_text().count("|") > 10
    assert "| objective |" in done.stdout and f"{len(trained)}/{len(trained)} runs ok" in done.stdout
    # Every plot kind this suite can have, the drift curves read from the runs' train logs included.
    for plot in ("drift_curves", "winrate_vs_kl", "winrate_vs_length", "granularity_sweep", "deltas_vs_baseline"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000, plot


def test_stored_unit_values_reproduce_every_mean_and_feed_the_comparisons(finished):
    out, _ = finished
    results = pd.read_parquet(out / "results.parquet")
    units = pd.read_parquet(out / "units.parquet")
    assert {"gold", "reward_model", "length", "kl", "drift"} <= set(units.scorer)
    means = units[~units.metric.str.contains(":")].groupby(["run_id", "scorer", "metric"])["value"].mean()
    stored = results.set_index(["run_id", "scorer", "metric"])["value"]
    # Every metric kept per prompt or per drift pair is the mean of its units: recomputable
    # (the LC win rate's fit terms, "metric:term", are the exception: a fit, not a mean).
    assert units.metric.str.startswith("lc_win_rate_vs_reference:").any()
    assert means.index.isin(stored.index).all()
    assert means.to_numpy() == pytest.approx(stored.loc[means.index].to_numpy(), abs=1e-5)
    drift = units[(units.scorer == "drift") & (units.metric == "logratio_chosen")]
    assert drift.groupby("run_id")["unit"].nunique().eq(8).all()      # ci_smoke: 8 drift pairs
    comp = pd.read_csv(out / "comparisons.csv")
    assert (comp["baseline"] == "dpo").all() and "ipo" in set(comp["label"])
    assert comp["p_holm"].dropna().between(0, 1).all()
    board = pd.read_csv(out / "leaderboard.csv")
    for col in [c for c in board.columns if ("win_rate" in c or "gold/accuracy" in c) and ":ci_" in c]:
        assert board[col].dropna().between(0, 1).all(), col


def test_rerun_of_finished_suite_recomputes_nothing(finished):
    out, _ = finished
    before = (out / "results.csv").read_bytes()
    again = bench("run", str(SUITE), "--out", str(out), "--quiet")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(0 stages computed" in again.stdout
    assert (out / "results.csv").read_bytes() == before


def test_killed_run_resumes_to_the_same_results(finished, tmp_path):
    out, _ = finished
    resumed = tmp_path / "resumed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "bench.py"), "run", str(SUITE), "--out", str(resumed),
                             "--quiet"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    # Kill it once the second training run has saved resumable state, mid-suite.
    deadline = time.time() + 600
    train_dir = resumed / "stages" / "train"
    while time.time() < deadline and proc.poll() is None:
        if train_dir.exists() and len([d for d in train_dir.iterdir() if (d / "checkpoint").exists()]) >= 1 \
                and len(list(train_dir.iterdir())) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the suite finished before it could be killed; slow it down or kill earlier"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (resumed / "results.csv").exists()
    done = bench("run", str(SUITE), "--out", str(resumed), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (resumed / "results.csv").read_bytes() == (out / "results.csv").read_bytes()


def test_corrupt_checkpoint_fails_that_run_only(finished, tmp_path):
    out, _ = finished
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    shutil.rmtree(broken / "stages" / "evaluate")          # force every policy to be evaluated again
    victim = sorted((broken / "stages" / "train").iterdir())[0]
    (victim / "checkpoint" / "model.safetensors").write_bytes(b"not a safetensors file")
    done = bench("run", str(SUITE), "--out", str(broken), "--quiet")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    runs = pd.read_parquet(broken / "runs.parquet")
    trained = runs[runs.run_id != "reference"]
    failed = trained[trained.status == "failed"]
    assert len(failed) == 1 and failed.reason.iloc[0]
    assert (trained.status == "ok").sum() == len(trained) - 1        # the others' results are kept
    assert f"{len(trained) - 1}/{len(trained)} runs ok" in done.stdout and "FAILED" in done.stdout
    results = pd.read_parquet(broken / "results.parquet")
    ok_ids = set(trained[trained.status == "ok"].run_id)
    assert ok_ids <= set(results[results.metric == "win_rate_vs_reference"].run_id)


def test_accelerate_launcher_two_processes_equal_one_at_the_same_global_batch(finished, tmp_path):
    """`launcher: accelerate` with 2 processes x 8 pairs trains what 1 process x 16 does."""
    common = ("--only", "dpo", "--quiet", "--set", "objectives=[{name: dpo}]")
    two = bench("run", str(SUITE), "--out", str(tmp_path / "two"), *common, "--set", "launcher=accelerate",
                "--set", "accelerate.num_processes=2")
    one = bench("run", str(SUITE), "--out", str(tmp_path / "one"), *common, "--set", "training.batch_size=16")
    assert two.returncode == 0 and one.returncode == 0, two.stderr[-2000:] + one.stderr[-2000:]

    def trained(out):
        rows = pd.read_parquet(out / "results.parquet")
        rows = rows[(rows.objective == "dpo") & rows.metric.isin(["final_loss", "logratio_chosen"])]
        return rows.set_index("metric").value

    assert trained(tmp_path / "two").to_dict() == pytest.approx(trained(tmp_path / "one").to_dict(), abs=1e-5)
    # ... and it is not a single process at 8 pairs a step in disguise (the in-process default run).
    single_at_8 = trained(finished[0])
    assert abs(trained(tmp_path / "two")["final_loss"] - single_at_8["final_loss"]) > 1e-4
