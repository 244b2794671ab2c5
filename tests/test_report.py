"""Leaderboard aggregation (hand-computed t-intervals), rendering with bold best, files and plots."""
from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest

from bench.tables import plots
from bench.errors import BenchError
from bench.tables.cells import aggregate
from bench.tables.leaderboard import leaderboard, metric_keys
from bench.tables.metrics import seed_aggregate
from bench.tables.render import render
from bench.tables.report import report_text, write_report, write_report_files
from bench.tables.validity import section as report_section
from bench.tables.results import make_row, write_results

T_975_DF2 = 4.302652729749464   # Student t quantile 0.975 with 2 degrees of freedom
DPO = "dpo[beta=0.1]"
STATIC = "adpo[granularity=static,k=1]"
ADAPTIVE = "adpo[granularity=adaptive,m=4]"

# label -> (objective, params, per-seed {(scorer, metric): value})
VALUES = {
    DPO: ("dpo", {"beta": 0.1}, {
        ("reward_model", "win_rate_vs_reference"): [0.60, 0.62, 0.64],
        ("kl", "kl_to_reference"): [0.5, 0.7, 0.9],
        ("drift", "chosen_logp_down"): [0.8, 0.7, 0.9],
        ("length", "mean_tokens"): [30.0, 32.0, 34.0],
        ("gold", "accuracy"): [0.40, 0.50, 0.60],
    }),
    STATIC: ("adpo", {"granularity": "static", "k": 1}, {
        ("reward_model", "win_rate_vs_reference"): [0.70, 0.72, 0.77],
        ("kl", "kl_to_reference"): [0.2, 0.3, 0.4],
        ("drift", "chosen_logp_down"): [0.3, 0.2, 0.4],
        ("length", "mean_tokens"): [20.0, 21.0, 22.0],
        ("gold", "accuracy"): [0.50, 0.55, 0.60],
    }),
    # seed 2 of this one fails: its (absurd) values must not reach the aggregates
    ADAPTIVE: ("adpo", {"granularity": "adaptive", "m": 4}, {
        ("reward_model", "win_rate_vs_reference"): [0.66, 0.68, 0.0],
        ("kl", "kl_to_reference"): [0.4, 0.6, 99.0],
        ("drift", "chosen_logp_down"): [0.5, 0.5, 1.0],
        ("length", "mean_tokens"): [25.0, 27.0, 500.0],
        ("gold", "accuracy"): [0.45, 0.55, 0.0],
    }),
}


def synthetic(tmp_path=None, train_logs=False):
    rows, runs = [], []
    for label, (objective, params, metrics) in VALUES.items():
        for seed in range(3):
            run_id = f"{label}-s{seed}"
            failed = label == ADAPTIVE and seed == 2
            for (scorer, metric), values in metrics.items():
                v = values[seed]
                rows.append(make_row(suite="t", run_id=run_id, objective=objective, params=params, seed=seed,
                                     scorer=scorer, metric=metric, value=v, ci_low=v - 0.05, ci_high=v + 0.05, n=20))
            log = None
            if train_logs and tmp_path is not None:
                log = tmp_path / f"{run_id}.jsonl"
                slope = -1.0 if objective == "dpo" else -0.2
                log.write_text("\n".join(json.dumps({"step": s, "logratio/chosen": slope * s + seed * 0.01, "loss": 0.6})
                                         for s in range(0, 50, 10)) + "\n")
            runs.append({"suite": "t", "run_id": run_id, "objective": objective, "label": label,
                         "params": params, "seed": seed, "status": "failed" if failed else "ok",
                         "reason": "nan loss" if failed else None, "train_log": str(log) if log else None})
    rows.append(make_row(suite="t", run_id="reference", objective="reference", params={}, seed=0,
                         scorer="gold", metric="accuracy", value=0.35, ci_low=0.25, ci_high=0.45, n=20))
    rows.append(make_row(suite="t", run_id="reference", objective="reference", params={}, seed=0,
                         scorer="length", metric="mean_tokens", value=24.0, n=20))
    rows.append(make_row(suite="t", run_id="reference", objective="reference", params={}, seed=0,
                         scorer="lm_eval:arith_local", metric="exact_match", value=0.3, ci_low=0.2, ci_high=0.4, n=20,
                         extra={"stderr": 0.05}))
    rows.append(make_row(suite="t", run_id="reference", objective="reference", params={}, seed=0,
                         scorer="lm_eval:arith_local", metric="exact_match_stderr", value=0.05))
    runs.append({"suite": "t", "run_id": "reference", "objective": "reference", "label": "reference",
                 "params": {}, "seed": 0, "status": "ok"})
    return pd.DataFrame(rows), pd.DataFrame(runs)


def test_t_interval_by_hand():
    mean, low, high, n = dataclasses.astuple(seed_aggregate([0.60, 0.62, 0.64]))
    half = T_975_DF2 * 0.02 / math.sqrt(3)
    assert (mean, n) == (pytest.approx(0.62), 3)
    assert low == pytest.approx(0.62 - half) and high == pytest.approx(0.62 + half)
    assert math.isnan(seed_aggregate([1.0]).ci_low)


def test_leaderboard_means_intervals_and_failed_runs():
    results, runs = synthetic()
    board = leaderboard(results, runs).set_index("label")
    assert list(board.index) == ["reference", DPO, ADAPTIVE, STATIC]   # reference, the baseline, then sorted
    key = "reward_model/win_rate_vs_reference"
    # dpo: mean 0.62, sd 0.02 over 3 seeds
    half = T_975_DF2 * 0.02 / math.sqrt(3)
    assert board.loc[DPO, key] == pytest.approx(0.62)
    assert board.loc[DPO, key + ":ci_low"] == pytest.approx(0.62 - half)
    assert board.loc[DPO, key + ":ci_high"] == pytest.approx(0.62 + half)
    # static: 0.70, 0.72, 0.77 -> mean 0.73, sd sqrt((0.0009 + 0.0001 + 0.0016) / 2)
    sd = math.sqrt((0.03**2 + 0.01**2 + 0.04**2) / 2)
    assert board.loc[STATIC, key] == pytest.approx(0.73)
    assert board.loc[STATIC, key + ":ci_high"] - 0.73 == pytest.approx(T_975_DF2 * sd / math.sqrt(3))
    # adaptive: failed seed 2 excluded (two seeds 0.66, 0.68 -> t with 1 df = 12.706...)
    assert board.loc[ADAPTIVE, key] == pytest.approx(0.67)
    assert board.loc[ADAPTIVE, key + ":ci_high"] - 0.67 == pytest.approx(12.706204736174698 * math.sqrt(0.0002) / math.sqrt(2))
    assert board.loc[ADAPTIVE, "kl/kl_to_reference"] == pytest.approx(0.5)
    assert (board.loc[ADAPTIVE, "failed"], board.loc[ADAPTIVE, "seeds"]) == (1, 2)
    assert (board.loc[DPO, "failed"], board.loc[DPO, "seeds"]) == (0, 3)
    # the reference row: one seed -> the scorer's own interval; lm-eval main metric, not its stderr
    assert board.loc["reference", "gold/accuracy"] == pytest.approx(0.35)
    assert board.loc["reference", "gold/accuracy:ci_low"] == pytest.approx(0.25)
    assert board.loc["reference", "lm_eval:arith_local/exact_match"] == pytest.approx(0.3)
    assert "lm_eval:arith_local/exact_match_stderr" not in board.columns
    assert math.isnan(board.loc["reference", key])
    # column order follows the documented leaderboard order
    metric_cols = metric_keys(board)
    # the verifier leads: a learned reward model can reward an artefact, a verifier cannot
    assert metric_cols == ["gold/accuracy", "reward_model/win_rate_vs_reference", "length/mean_tokens",
                           "drift/chosen_logp_down", "kl/kl_to_reference", "lm_eval:arith_local/exact_match"]


def test_markdown_headers_say_the_direction_and_bold_only_a_separated_best():
    results, runs = synthetic()
    md = render(leaderboard(results, runs), "md")
    first_table = md.split("\n\n")[0]   # the Δ-vs-baseline table follows
    lines = {line.split("|")[1].strip(): line for line in first_table.splitlines() if line.startswith("| ")}
    cells = {label: [c.strip() for c in line.strip("|").split("|")] for label, line in lines.items()}
    header = cells["objective"]
    win = header.index("RM win rate vs ref ↑")
    down = header.index("chosen log-prob down ↓")
    kl = header.index("KL to ref")                                # no direction, no arrow
    gold = header.index("gold accuracy ↑")
    # The raw RM win rate is never bold (a reward model may reward length), the others' bests
    # lie inside their runner-up's interval here: nothing is bold.
    assert cells[STATIC][win].startswith("0.730 [") and "**" not in first_table
    assert cells[STATIC][down].startswith("0.300 [") and cells[STATIC][gold].startswith("0.550 [")
    assert cells[DPO][kl].startswith("0.700 [")
    assert cells["reference"][win] == "–"
    assert cells[ADAPTIVE][header.index("failed")] == "1"


def test_latex_html_csv():
    results, runs = synthetic()
    board = leaderboard(results, runs)
    tex = render(board, "latex")
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert tex.count(r"\begin{table*}") == tex.count(r"\end{table*}") == tex.count(r"\caption{") >= 3
    assert r"$0.730" not in tex                          # the raw RM win rate is not a paper column
    assert r"adpo[granularity=static,k=1]" in tex and r"$0.550^{+" in tex
    assert r"accuracy $\uparrow$" in tex and r"down $\downarrow$" in tex
    page = render(board, "html")
    first_table = page.split("</table>")[0]   # the Δ-vs-baseline table follows
    assert page.startswith("<!DOCTYPE html>") and ">0.730<" in page and first_table.count("<tr") == 5
    csv = pd.read_csv(pd.io.common.StringIO(render(board, "csv")))
    row = csv.set_index("label").loc[DPO]
    assert row["reward_model/win_rate_vs_reference"] == pytest.approx(0.62)
    assert row["kl/kl_to_reference:ci_low"] < 0.7 < row["kl/kl_to_reference:ci_high"]
    with pytest.raises(BenchError, match="not one of"):
        render(board, "pdf")


def test_write_report_files_and_plots(tmp_path):
    results, runs = synthetic(tmp_path, train_logs=True)
    write_results(tmp_path, results, runs)
    md = write_report(tmp_path)
    board, written = write_report_files(tmp_path)
    # rendered again here from the board, not read back from the file the report wrote
    expected = render(board, "md") + report_section(tmp_path)
    assert md == expected and (tmp_path / "leaderboard.md").read_text() == expected and "| objective |" in md
    for suffix in ("md", "tex", "html", "csv"):
        assert (tmp_path / f"leaderboard.{suffix}").stat().st_size > 100
    for name in ("drift_curves", "winrate_vs_kl", "winrate_vs_length", "granularity_sweep"):
        png = written[f"plot:{name}"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert report_text(tmp_path, "md") == (expected, tmp_path)


def test_plots_drawn_by_a_pool_of_processes_are_the_ones_drawn_here(tmp_path):
    """The local executor draws the plots in processes of their own while the parent writes
    the tables (bench.executors.local_workers.LocalPool.aggregate_processes): the same files either way."""
    import multiprocessing
    import shutil
    from concurrent.futures import ProcessPoolExecutor

    here = tmp_path / "here"
    here.mkdir()
    results, runs = synthetic(here, train_logs=True)
    write_results(here, results, runs)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(here, elsewhere)
    _, drawn_here = write_report_files(here)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        _, drawn_elsewhere = write_report_files(elsewhere, plot_pool=pool)
    plots = [key for key in drawn_here if key.startswith("plot:")]
    assert len(plots) >= 4 and plots == [key for key in drawn_elsewhere if key.startswith("plot:")]
    for key in plots:
        assert drawn_here[key].read_bytes() == drawn_elsewhere[key].read_bytes(), key
    assert (here / "leaderboard.md").read_text() == (elsewhere / "leaderboard.md").read_text()


def test_plots_return_none_without_data(tmp_path):
    results, runs = synthetic()
    only_gold = results[results["scorer"] == "gold"]
    long = aggregate(only_gold, runs)
    assert plots.plot_winrate_vs_kl(long, tmp_path / "a.png") is None
    assert plots.plot_drift_curves(runs, tmp_path / "b.png") is None          # no train logs recorded
    assert plots.plot_drift_curves(None, tmp_path / "b.png") is None
    one_point = results[results["label"] != ADAPTIVE]                          # only static k=1: no sweep
    assert plots.plot_granularity_sweep(leaderboard(one_point, runs), one_point, tmp_path / "c.png") is None
    assert not list(tmp_path.glob("*.png"))


def test_drift_curves_skip_missing_and_partial_logs(tmp_path):
    results, runs = synthetic(tmp_path, train_logs=True)
    runs.loc[runs["label"] == DPO, "train_log"] = str(tmp_path / "gone.jsonl")   # missing: skipped
    log = tmp_path / f"{STATIC}-s0.jsonl"
    log.write_text(log.read_text() + '{"step": 60, "logratio/ch')              # killed mid-write
    points = plots._read_log(log)
    assert list(points["step"]) == [0, 10, 20, 30, 40]
    assert points["value"].iloc[-1] == pytest.approx(-0.2 * 40)
    assert plots.plot_drift_curves(runs, tmp_path / "drift.png").stat().st_size > 0


def test_granularity_points():
    results, _ = synthetic()
    grid = plots.granularity_points(results).set_index("label")
    assert grid.loc[STATIC, "family"] == "static (k)" and grid.loc[STATIC, "x"] == 1
    assert grid.loc[ADAPTIVE, "family"] == "adaptive (m)" and grid.loc[ADAPTIVE, "x"] == 4
    assert DPO not in grid.index


def test_all_runs_failed_gives_failed_counts_and_no_metrics(tmp_path):
    _, runs = synthetic()
    runs["status"] = "failed"
    write_results(tmp_path, [], runs)
    board = leaderboard(pd.read_parquet(tmp_path / "results.parquet"), runs).set_index("label")
    assert board.loc[DPO, "failed"] == 3 and board.loc[DPO, "seeds"] == 0
    assert "| dpo[beta=0.1] | 0 | 3 |" in write_report(tmp_path)


def test_each_objective_has_one_colour_in_every_plot(tmp_path, monkeypatch):
    """Before, each plot took matplotlib's colour cycle in its own order, so one objective had
    different colours in different plots."""
    import matplotlib.axes

    drawn: dict[str, set] = {}
    for method in ("plot", "errorbar"):
        real = getattr(matplotlib.axes.Axes, method)

        def record(self, *args, _real=real, **kwargs):
            if kwargs.get("label") in VALUES:
                drawn.setdefault(kwargs["label"], set()).add((matplotlib.colors.to_hex(kwargs.get("color", "none")),
                                                              kwargs.get("marker") or kwargs.get("fmt")))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(matplotlib.axes.Axes, method, record)
    results, runs = synthetic(tmp_path, train_logs=True)
    # drift curves use every label, the scatter plots only those with the metric: orders differ
    results = results[~((results["label"] == DPO) & (results["scorer"] == "kl"))]
    write_results(tmp_path, results, runs)
    write_report_files(tmp_path)
    assert set(drawn) == set(VALUES)
    assert all(len(styles) == 1 for styles in drawn.values()), drawn
    assert len({next(iter(s))[0] for s in drawn.values()}) == len(VALUES)     # distinct colours


def test_a_pool_gets_the_plots_that_need_no_comparisons_before_those_are_computed(tmp_path, monkeypatch):
    """With a pool (the local executor's aggregate), the drift curves go as soon as the files are
    read and the plots of the cells as soon as the cells are, so that they are drawn while this
    process computes the comparisons; the Δ plot, which needs them, goes last."""
    import importlib
    from concurrent.futures import Future

    from bench.tables import report

    results, runs = synthetic(tmp_path, train_logs=True)
    write_results(tmp_path, results, runs)
    events = []

    class DrawsAtOnce:
        def submit(self, function, *args):
            events.append("warm" if function is importlib.import_module else args[0])
            done = Future()
            done.set_result(function(*args))
            return done

    comparing = report.leaderboard
    monkeypatch.setattr(report, "leaderboard", lambda *a, **k: events.append("comparisons") or comparing(*a, **k))
    _, written = write_report_files(tmp_path, plot_pool=DrawsAtOnce())
    early = ("plot_drift_curves", "plot_winrate_vs_kl", "plot_winrate_vs_length")
    assert max(events.index(name) for name in early) < events.index("comparisons") < events.index("plot_deltas")
    assert events.index("comparisons") < events.index("plot_granularity_sweep")   # its Δ are paired comparisons
    assert events.index("plot_drift_curves") < events.index("warm") < events.index("plot_winrate_vs_kl")
    assert {"plot:drift_curves", "plot:winrate_vs_kl", "plot:granularity_sweep"} <= set(written)


def test_a_process_that_hands_its_plots_to_a_pool_never_imports_matplotlib(tmp_path):
    """The local executor's parent: every plot is a job for its pool (bench.tables.plot_jobs),
    so the ~0.8 s of matplotlib's import is paid only where the plots are drawn."""
    import subprocess
    import sys

    results, runs = synthetic(tmp_path, train_logs=True)
    write_results(tmp_path, results, runs)
    script = (
        "import sys\n"
        "from concurrent.futures import Future\n"
        "from bench.tables.report import write_report_files\n"
        "import bench.run.pipeline as pipeline\n"
        "class Refuses:\n"
        "    def submit(self, function, *args):\n"
        "        done = Future(); done.set_result(None); return done\n"
        "pipeline.import_aggregate_modules()\n"
        f"write_report_files({str(tmp_path)!r}, plot_pool=Refuses())\n"
        "print('matplotlib' in sys.modules)\n")
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "False"
    assert (tmp_path / "leaderboard.md").exists()
