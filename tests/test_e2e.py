"""End to end: the reduced smoke suite through the real CLI, every stage, every objective.

Three runs of the same suite share this module: one uninterrupted; one killed during
training and resumed; and a rerun of the finished one, which must recompute nothing.
"""
from __future__ import annotations

import json
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


# `finished`, the uninterrupted run, is tests/conftest.py's: the executors' tests compare with it too.


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
    # The integrity record the gate checks (bench/gate/integrity.py): disjoint parts, the contract held.
    facts = json.loads((out / "invariants.json").read_text())
    assert set(facts["splits"]["shared_prompts"].values()) == {0}
    assert facts["tokenization"]["train"]["boundary_mismatch"] == 0 and facts["reference_logps"]["sum_chosen"] < 0
    assert {r["data_order"] is not None for r in facts["runs"].values() if r["label"] != "reference"} == {True}
    # The reference against itself is exactly a coin flip.
    ref = results[(results.run_id == "reference") & (results.metric == "win_rate_vs_reference")]
    assert (ref.value == 0.5).all()
    assert (out / "leaderboard.md").read_text().count("|") > 10
    assert "| objective |" in done.stdout and f"{len(trained)}/{len(trained)} runs ok" in done.stdout
    # --quiet is quiet: lm-eval's notices and bars went to each evaluation's lm_eval.log
    assert "Custom kwargs" not in done.stderr and "loglikelihood" not in done.stderr and "it/s]" not in done.stderr
    assert any("Custom kwargs" in log.read_text() for log in (out / "stages" / "evaluate").glob("*/lm_eval.log"))
    # Where the time went (bench.run.phases): one line for this command, its phases in order.
    from bench.run.phases import last_phases

    lines = (out / "logs" / "phases.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"executor": "inprocess"' in lines[0]
    phases = last_phases(out)
    seconds = float(done.stdout.split(" runs ok in ")[1].split("s")[0])
    assert list(phases) == ["setup", "runs", "aggregate"] and all(v > 0 for v in phases.values()), phases
    assert sum(phases.values()) <= seconds + 1, (phases, seconds)
    # Every plot kind this suite can have, the drift curves read from the runs' train logs included.
    for plot in ("drift_curves", "winrate_vs_kl", "winrate_vs_length", "granularity_sweep", "deltas_vs_baseline"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000, plot


def test_stored_unit_values_reproduce_every_mean_and_feed_the_comparisons(finished):
    out, _ = finished
    results = pd.read_parquet(out / "results.parquet")
    units = pd.read_parquet(out / "units.parquet")
    assert {"gold", "reward_model", "length", "kl", "drift", "lm_eval:arith_qa"} <= set(units.scorer)
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


def test_rerun_reuses_the_aggregate_unless_an_output_or_a_setting_changed(finished, tmp_path):
    """A rerun does not redo the tables and plots (most of its time) when nothing they read changed;
    a damaged output is rewritten, and a changed scoring setting is never served stale."""
    src, _ = finished
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    assert bench("run", str(SUITE), "--out", str(out), "--quiet").returncode == 0   # key for this path
    board = out / "leaderboard.md"
    written = board.stat().st_mtime_ns
    (out / ".locks" / "stage-from-another-run.lock").parent.mkdir(exist_ok=True)
    (out / ".locks" / "stage-from-another-run.lock").write_text("")   # a lock is not an output
    again = bench("run", str(SUITE), "--out", str(out), "--quiet")
    assert again.returncode == 0 and board.stat().st_mtime_ns == written, "the aggregate was recomputed"
    expected = board.read_text()
    (out / "leaderboard.csv").unlink()
    board.write_text("edited by hand\n")
    assert bench("run", str(SUITE), "--out", str(out), "--quiet").returncode == 0
    assert board.read_text() == expected and (out / "leaderboard.csv").is_file()
    other = bench("run", str(SUITE), "--out", str(out), "--quiet", "--set", "scoring.compare_to=ipo")
    assert other.returncode == 0, other.stderr[-2000:]
    assert "the baseline ipo" in board.read_text() and "(0 stages computed" in other.stdout


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


def _cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def damage_one_of_each(out: Path) -> dict[str, str]:
    """Damage one artifact of every kind a results folder caches; returns {what: the stage
    folder it belongs to}. Also leaves temporary leftovers of killed stages behind."""
    stages = out / "stages"
    damaged = {}
    data = next((stages / "data").iterdir())
    lines = (data / "train.jsonl").read_text().splitlines(keepends=True)
    (data / "train.jsonl").write_text("".join(lines[: len(lines) // 2]))     # 50 of 104 lines: was silent
    damaged["train.jsonl"] = data.name
    evals = sorted(d for d in (stages / "evaluate").iterdir() if (d / "drift.json").exists())
    _cut(evals[0] / "judgments.parquet")
    damaged["judgments.parquet"] = evals[0].name
    _cut(evals[1] / "lm_eval.json")
    damaged["lm_eval.json"] = evals[1].name
    _cut(evals[2] / "drift.json")
    damaged["drift.json"] = evals[2].name
    (evals[3] / "STAGE_DONE.json").write_text("")
    damaged["STAGE_DONE.json"] = evals[3].name
    chosen = next((stages / "chosen").iterdir())
    _cut(chosen / "judgments.parquet")
    damaged["chosen judgments.parquet"] = chosen.name
    init = next((stages / "init").iterdir())
    _cut(init / "model.safetensors")
    damaged["init model.safetensors"] = init.name
    sft = next((stages / "sft").iterdir())
    _cut(sft / "checkpoint" / "model.safetensors")
    damaged["SFT model.safetensors"] = sft.name
    reward = next((stages / "reward").iterdir())
    _cut(reward / "model" / "model.safetensors")
    damaged["reward model.safetensors"] = reward.name
    runs = sorted((stages / "train").iterdir())
    _cut(runs[0] / "checkpoint" / "model.safetensors")
    damaged["policy model.safetensors"] = runs[0].name
    cache = sorted((stages / "ref_logps").rglob("*.safetensors"))[0]     # ref_logps/<code digest>/
    _cut(cache)
    damaged["reference log-prob cache"] = cache.name
    # The train log is in the checkpoint's manifest (its final loss is a result): a damaged one
    # is found, and the run trained again to the same log.
    log = runs[1] / "train_log.jsonl"
    log_lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join([log_lines[0][:7] + b"\xff\n", *log_lines[1:]]))
    damaged["train log"] = runs[1].name
    (stages / "evaluate" / ".0123456789ab.tmp-999-deadbeef").mkdir()
    (runs[2] / "checkpoint.tmp").mkdir()
    return damaged


def test_each_damaged_artifact_is_found_and_only_its_stage_recomputed(finished, tmp_path):
    out, _ = finished
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    damaged = damage_one_of_each(broken)
    check = bench("verify", str(broken))
    assert check.returncode == 1, check.stdout + check.stderr
    reported = [ln for ln in check.stdout.splitlines() if ln.startswith("DAMAGED ")]
    for stage in damaged.values():
        assert any(stage in ln for ln in reported), (stage, check.stdout)
    assert "2 temporary leftover(s)" in check.stdout

    done = bench("run", str(SUITE), "--out", str(broken), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    for stage in damaged.values():     # one line for each damaged stage, naming it
        if not stage.endswith(".safetensors"):
            assert stage[:12] in done.stderr, (stage, done.stderr[-3000:])
    assert "removed 2 temporary leftover(s)" in done.stderr
    # every damaged stage recomputed, and nothing else (the reference cache is one of the ref_logps stage)
    assert f"({len(damaged)} stages computed" in done.stdout, done.stdout[-500:]
    assert (broken / "results.csv").read_bytes() == (out / "results.csv").read_bytes()
    runs = pd.read_parquet(broken / "runs.parquet")
    assert (runs.status == "ok").all()
    again = bench("verify", str(broken))
    assert again.returncode == 0 and "all intact" in again.stdout and "leftover" not in again.stdout


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


def test_ctrl_c_and_sigterm_save_training_and_the_rerun_resumes(tmp_path):
    """SIGINT (as Ctrl-C sends it) and SIGTERM during training: one line saying where the state
    is and how to resume; the rerun says where training resumed and finishes."""
    out = tmp_path / "out"
    args = [sys.executable, str(REPO / "bench.py"), "run", str(SUITE), "--out", str(out), "--quiet", "--only", "dpo",
            "--set", "sft.enabled=false", "--set", "training.max_steps=400", "--set", "scoring.lm_eval.tasks=[]",
            "--set", "reward_model.kind=none", "--set", "scoring.reward_model=false"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    steps = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 600
        logs = out / "stages" / "train"
        while time.time() < deadline and proc.poll() is None:
            lines = [ln for log in logs.glob("*/train_log.jsonl") for ln in log.read_text().splitlines()] \
                if logs.exists() else []
            if len(lines) >= (steps[-1] if steps else 0) + 3:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "training finished before it could be interrupted"
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 130, stderr[-2000:]
        assert "Traceback" not in stderr and "Aborted!" not in stderr
        line = [ln for ln in stderr.splitlines() if ln.startswith("stopped: ")]
        assert len(line) == 1 and f"interrupted ({sig.name}) at step " in line[0], stderr[-2000:]
        assert "run the same command again to resume" in line[0]
        steps.append(int(line[0].split(" at step ")[1].split()[0]))
    assert steps[1] > steps[0]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming training from step {steps[1]} of 400" in done.stderr


def test_two_runs_on_one_folder_at_once_one_stops_none_corrupts(tmp_path):
    """Two `run`s started together on one folder: one runs, the other stops at once in one line
    naming the holder; the folder verifies intact and a third run reuses everything."""
    out = tmp_path / "shared"
    args = [sys.executable, str(REPO / "bench.py"), "run", str(SUITE), "--out", str(out), "--quiet", "--only", "dpo",
            "--set", "scoring.lm_eval.tasks=[]", "--set", "reward_model.kind=none", "--set", "scoring.reward_model=false"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p, *p.communicate(timeout=900)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2], [(p.returncode, err[-1500:]) for p, _, err in results]
    loser = next(err for p, _, err in results if p.returncode == 2)
    winner = next(p for p, _, _ in results if p.returncode == 0)
    lines = [ln for ln in loser.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is in use by another run (pid " in lines[0] and f"pid {winner.pid} " in lines[0]
    check = bench("verify", str(out))
    assert check.returncode == 0 and "all intact" in check.stdout, check.stdout
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "(0 stages computed" in again.stdout, again.stderr[-2000:]


def test_moved_results_folder_and_relative_out_recompute_nothing(finished, tmp_path):
    out, _ = finished
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(out, moved)
    relative = os.path.relpath(moved, REPO)
    again = bench("run", str(SUITE), "--out", relative, "--quiet")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(0 stages computed" in again.stdout
    assert (moved / "results.csv").read_bytes() == (out / "results.csv").read_bytes()


def test_python_api_reads_the_table_and_reruns_a_loaded_suite(finished):
    """`from bench import run_suite, load_results`: the CLI's table, and a rerun that reuses it."""
    from bench import load_results, run_suite
    from bench.errors import BenchError
    from bench.suite.load import load_suite

    out, _ = finished
    table = load_results(out)
    assert RESULT_COLUMNS <= set(table.columns)
    assert len(table) == len(pd.read_csv(out / "results.csv"))
    suite = load_suite(SUITE)
    with pytest.raises(BenchError, match="overrides apply when a suite file is loaded"):
        run_suite(suite, out=out, overrides=["seeds=[0]"])
    import gc

    import bench.run.one_run as one_run

    frozen_during_runs = []
    original = one_run.train_and_evaluate

    def recording(*args, **kwargs):
        frozen_during_runs.append(gc.get_freeze_count())
        return original(*args, **kwargs)

    one_run.train_and_evaluate = recording     # the runner imports it when it runs the stages
    try:
        again = run_suite(suite, out=out)             # every stage is reused: the same table
    finally:
        one_run.train_and_evaluate = original
    pd.testing.assert_frame_equal(again, table)
    # Runs see the suite's long-lived objects frozen (trainers.devices.settle_memory); the suite
    # hands them back to the collector when it ends.
    assert len(frozen_during_runs) == 9 and min(frozen_during_runs) > 0
    assert gc.get_freeze_count() == 0
    assert again.attrs["summary"].startswith("suite ci_smoke: 9/9 runs ok") and again.attrs["out"] == str(out)
