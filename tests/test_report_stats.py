"""Leaderboard statistics from stored unit values: intervals in range, paired comparisons with
the suite's baseline, Holm within a column, the files and the Δ plot."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from bench.tables import stats
from bench.tables.aggregate import PolicyRecord, drift_units, policy_units
from bench.tables.cells import aggregate
from bench.tables.comparisons import comparisons, resolve_baseline
from bench.tables.leaderboard import StatsSettings, leaderboard, read_settings, write_settings
from bench.tables.metrics import seed_aggregate
from bench.tables.render import render
from bench.tables.report import COMPARISONS_FILE, write_report_files
from bench.tables.results import make_row, read_units, write_results, write_units

GOLD = ("gold", "accuracy")
TOKENS = ("length", "mean_tokens")


def folder_tables(values: dict):
    """values: label -> (objective, {seed: {(scorer, metric): per-unit array}}) -> results, units."""
    rows, units, runs = [], [], []
    for label, (objective, per_seed) in values.items():
        for seed, metrics in per_seed.items():
            run_id = f"{label}-s{seed}"
            runs.append({"suite": "t", "run_id": run_id, "objective": objective, "label": label, "params": {},
                         "seed": seed, "status": "ok"})
            for (scorer, metric), arr in metrics.items():
                arr = np.asarray(arr, dtype=float)
                rows.append(make_row(suite="t", run_id=run_id, objective=objective, params={}, label=label,
                                     seed=seed, scorer=scorer, metric=metric, value=arr.mean(), n=arr.size))
                units.append(pd.DataFrame({"run_id": run_id, "label": label, "objective": objective, "seed": seed,
                                           "scorer": scorer, "metric": metric,
                                           "unit": [f"p{i}" for i in range(arr.size)], "value": arr}))
    return pd.DataFrame(rows), pd.DataFrame(runs), pd.concat(units, ignore_index=True)


def test_proportion_across_three_seeds_stays_in_unit_interval():
    # The case: seed means 0.7, 1.0, 1.0; Student's t gives an upper bound above 1.
    rng = np.random.default_rng(0)
    first = np.ones(40)
    first[rng.choice(40, 12, replace=False)] = 0.0
    results, runs, units = folder_tables({"dpo": ("dpo", {0: {GOLD: first}, 1: {GOLD: np.ones(40)},
                                                          2: {GOLD: np.ones(40)}})})
    t_low, t_high = seed_aggregate([0.7, 1.0, 1.0]).ci_low, seed_aggregate([0.7, 1.0, 1.0]).ci_high
    assert t_high > 1.0
    for table in (units, None):      # with unit values, and the fallback without them
        row = aggregate(results, runs, table, n_boot=500).iloc[0]
        assert 0.0 <= row["ci_low"] <= row["value"] <= row["ci_high"] <= 1.0
        assert row["ci_high"] == 1.0
    assert aggregate(results, runs, units, n_boot=500).iloc[0]["interval"] == "seeds x units"
    assert aggregate(results, runs, None).iloc[0]["interval"] == "t over seeds"


def test_truncation_rate_interval_stays_in_unit_interval():
    # The default's SimPO row: one sample of 500 cut in one seed of four, Student's t over the
    # seeds reached -0.001. A truncation rate is a share of samples: its interval is clipped.
    truncated = ("generation", "truncation_rate")
    per_seed = {seed: {truncated: np.r_[np.ones(int(seed == 1)), np.zeros(500 - int(seed == 1))]} for seed in range(4)}
    results, runs, _ = folder_tables({"simpo": ("simpo", per_seed)})
    assert seed_aggregate(list(results["value"])).ci_low < 0.0
    row = aggregate(results, runs, None).iloc[0]
    assert 0.0 == row["ci_low"] <= row["value"] <= row["ci_high"] <= 1.0


def test_reference_gets_the_prompt_bootstrap():
    x = np.array([0.0, 1.0] * 50)
    results, runs, units = folder_tables({"reference": ("reference", {0: {GOLD: x}})})
    row = aggregate(results, runs, units, n_boot=2000).iloc[0]
    assert row["interval"] == "units" and row["n_seeds"] == 1
    assert row["ci_low"] == pytest.approx(0.40, abs=0.02) and row["ci_high"] == pytest.approx(0.60, abs=0.02)


def shifted_suite(shift=0.05, seeds=(0, 1, 2)):
    """dpo, a policy that is dpo + shift on every (seed, prompt), an identical copy of dpo and the reference."""
    rng = np.random.default_rng(1)
    difficulty = rng.random(80) * 40
    base = {s: difficulty + rng.standard_normal(80) for s in seeds}
    return folder_tables({
        "dpo": ("dpo", {s: {TOKENS: base[s]} for s in seeds}),
        "better": ("better", {s: {TOKENS: base[s] + shift * 40} for s in seeds}),
        "same": ("same", {s: {TOKENS: base[s].copy()} for s in seeds}),
        "reference": ("reference", {0: {TOKENS: difficulty}}),
    })


def test_paired_comparison_separates_what_unpaired_intervals_do_not():
    results, runs, units = shifted_suite()
    long = aggregate(results, runs, units, n_boot=1000).set_index("label")
    assert long.loc["better", "ci_low"] < long.loc["dpo", "ci_high"]    # the levels' intervals overlap
    comp = comparisons(results, runs, units, "dpo", [TOKENS], n_boot=1000).set_index("label")
    assert comp.loc["better", "delta"] == pytest.approx(2.0)
    assert comp.loc["better", ["ci_low", "ci_high"]].tolist() == pytest.approx([2.0, 2.0])
    assert comp.loc["better", "paired_by"] == "seed+unit" and comp.loc["better", "significant"]
    assert comp.loc["same", "delta"] == 0.0 and comp.loc["same", "p_value"] == 1.0
    assert not comp.loc["same", "significant"]
    assert comp.loc["reference", "paired_by"] == "unit"   # one policy: paired by prompt only
    # Holm within the column: three comparisons, the smallest p (2/1001) times 3.
    assert comp.loc["better", "p_holm"] == pytest.approx(3 * 2 / 1001)


def test_leaderboard_marks_significant_differences_in_every_format(tmp_path):
    results, runs, units = shifted_suite()
    write_results(tmp_path, results, runs)
    write_units(tmp_path, units)
    write_settings(tmp_path, StatsSettings(compare_to="dpo", n_boot=500, seed=3))
    assert read_settings(tmp_path) == StatsSettings("dpo", 500, 3)
    board, written = write_report_files(tmp_path)
    assert board.attrs["baseline"] == "dpo"
    row = board.set_index("label").loc["better"]
    assert row["length/mean_tokens:delta"] == pytest.approx(2.0) and row["length/mean_tokens:p_holm"] < 0.05
    md = (tmp_path / "leaderboard.md").read_text()
    better_line = next(line for line in md.splitlines() if line.startswith("| better |"))
    same_line = next(line for line in md.splitlines() if line.startswith("| same |"))
    assert "▲" in better_line and "▲" not in same_line and "▼" not in same_line
    assert "Δ vs dpo" in md and "Holm" in md
    tex = (tmp_path / "leaderboard.tex").read_text()   # a significant Δ is bold in the paper's Δ table
    assert r"\mathbf{+2.0}" in tex and "Holm" in tex
    assert "▲" in (tmp_path / "leaderboard.html").read_text()
    assert "length/mean_tokens:p_holm" in (tmp_path / "leaderboard.csv").read_text()
    comp = pd.read_csv(tmp_path / COMPARISONS_FILE)
    assert set(comp["label"]) == {"better", "same", "reference"} and (comp["baseline"] == "dpo").all()
    assert (tmp_path / "plots" / "deltas_vs_baseline.png").stat().st_size > 1000
    assert written["plot:deltas_vs_baseline"].exists()


def test_baseline_resolution():
    pairs = {"dpo[beta=0.1]": "dpo", "adpo[k=1]": "adpo", "adpo[k=2]": "adpo", "reference": "reference"}
    assert resolve_baseline("dpo", pairs) == ("dpo[beta=0.1]", "")
    assert resolve_baseline("adpo[k=2]", pairs) == ("adpo[k=2]", "")
    label, note = resolve_baseline("adpo", pairs)
    assert label is None and "adpo[k=1], adpo[k=2]" in note
    label, note = resolve_baseline("kto", pairs)
    assert label is None and "names no label" in note
    results, runs, units = shifted_suite()
    board = leaderboard(results, runs, units, StatsSettings(compare_to="kto", n_boot=200))
    assert board.attrs["baseline"] is None and "names no label" in render(board, "md")
    assert board["length/mean_tokens:p_holm"].isna().all()


def test_one_seed_suite_compares_by_prompt_only():
    results, runs, units = shifted_suite(seeds=(0,))
    comp = comparisons(results, runs, units, "dpo", [TOKENS], n_boot=500).set_index("label")
    assert comp.loc["better", "n_seeds"] == 1 and comp.loc["better", "paired_by"] == "seed+unit"
    assert comp.loc["better", "significant"]


def test_metric_without_units_is_compared_across_seeds_only():
    results, runs, _ = shifted_suite()
    comp = comparisons(results, runs, None, "dpo", [TOKENS], n_boot=500).set_index("label")
    assert comp.loc["better", "paired_by"] == "seed" and comp.loc["better", "n_units"] == 1
    one_seed, one_runs, _ = shifted_suite(seeds=(0,))
    lone = comparisons(one_seed, one_runs, None, "dpo", [TOKENS], n_boot=500).set_index("label")
    assert math.isnan(lone.loc["better", "p_value"])     # one value each: nothing to resample


def test_drift_units_from_drift_json(tmp_path):
    drift = {"n": 3, "r_w": 0.0, "pair_ids": ["a", "b", "c"],
             "per_pair": {"r_w": [-1.0, 2.0, -0.5], "r_l": [-2.0, 3.0, -1.0],
                          "r_w_per_token": [-0.1, 0.2, -0.05], "r_l_per_token": [-0.2, 0.3, -0.1]}}
    units = drift_units(drift)
    assert units[("drift", "chosen_logp_down")].tolist() == [1.0, 0.0, 1.0]
    assert units[("drift", "implicit_accuracy")].tolist() == [1.0, 0.0, 1.0]
    assert units[("drift", "margin")].tolist() == pytest.approx([1.0, -1.0, 0.5])
    assert list(units[("drift", "logratio_chosen")].index) == ["a", "b", "c"]
    older = drift_units({k: v for k, v in drift.items() if k != "pair_ids"})
    assert list(older[("drift", "logratio_chosen")].index) == ["0", "1", "2"]
    # Through policy_units: judgments plus drift of one evaluated policy, stored and read back.
    judg = pd.DataFrame({"prompt_id": ["x", "x", "y", "y"], "sample_index": [0, 1, 0, 1],
                         "num_tokens": [4, 6, 10, 10], "num_chars": [8, 12, 20, 20], "gold": [1.0, 0.0, 1.0, 1.0]})
    (tmp_path / "judgments.parquet").write_bytes(b"")
    judg.to_parquet(tmp_path / "judgments.parquet", index=False)
    (tmp_path / "drift.json").write_text(json.dumps(drift))
    rec = PolicyRecord(run_id="r", label="dpo", objective="dpo", params="{}", seed=0, eval_dir=tmp_path)
    pu = policy_units(rec, reference_judgments=judg, chosen_judgments=None)
    gold = pu[(pu.scorer == "gold") & (pu.metric == "accuracy")].set_index("unit")["value"]
    assert gold.to_dict() == {"x": 0.5, "y": 1.0}
    wins = pu[(pu.scorer == "gold") & (pu.metric == "win_rate_vs_reference")]["value"]
    assert (wins == 0.5).all()        # against itself: every comparison a tie
    write_units(tmp_path, [pu])
    back = read_units(tmp_path)
    assert len(back) == len(pu) and set(back["metric"]) >= {"logratio_chosen", "accuracy", "mean_tokens"}


def test_cost_of_the_statistics_of_a_large_folder():
    """10 labels x 5 seeds x 500 prompts (+256 drift pairs) and the reference, 2000 replicates:
    the figure the README quotes (printed with -s); the bound only catches an accidental
    blow-up (seconds are expected, even on a busy 2-core machine)."""
    import time

    import scipy.stats  # noqa: F401  (imported once by any report; not the bootstrap's cost)

    rng = np.random.default_rng(0)
    per_prompt = [("gold", "accuracy"), ("gold", "win_rate_vs_reference"), ("reward_model", "win_rate_vs_reference"),
                  ("reward_model", "win_rate_vs_chosen"), ("reward_model", "mean_reward"), TOKENS,
                  ("kl", "kl_to_reference")]
    per_pair = [("drift", "logratio_chosen"), ("drift", "chosen_logp_down"), ("drift", "logratio_chosen_per_token")]
    values = {("dpo" if i == 0 else f"obj{i}"): ("dpo" if i == 0 else f"obj{i}", {
        s: {**{m: rng.random(500) for m in per_prompt}, **{m: rng.standard_normal(256) for m in per_pair}}
        for s in range(5)}) for i in range(10)}
    values["reference"] = ("reference", {0: {m: rng.random(500) for m in per_prompt}})
    results, runs, units = folder_tables(values)
    start = time.perf_counter()
    board = leaderboard(results, runs, units, StatsSettings("dpo", 2000, 0))
    seconds = time.perf_counter() - start
    print(f"\nstatistics of 10 labels x 5 seeds x 500 prompts, 2000 replicates: {seconds:.2f} s "
          f"({len(board.attrs['comparisons'])} comparisons)")
    assert len(board.attrs["comparisons"]) == 9 * 10 + 7    # 9 objectives x 10 metrics, reference x 7
    assert seconds < 60


def judged_folder(tmp_path, shift: float, seeds=(0, 1, 2), n=120):
    """Judgments of the reference, dpo and a policy whose reward is dpo's + shift on every
    prompt, through the real aggregate code: results rows and unit values."""
    from bench.tables.aggregate import policy_rows

    rng = np.random.default_rng(5)
    ids = [f"q{i:03d}" for i in range(n)]
    difficulty = rng.standard_normal(n) * 2

    def judgments(reward, tokens):
        return pd.DataFrame({"prompt_id": ids, "sample_index": 0, "num_tokens": tokens, "num_chars": tokens * 2,
                             "reward": reward, "gold": (reward > 0).astype(float)})

    ref_tokens = rng.integers(10, 40, n).astype(float)
    reference = judgments(difficulty, ref_tokens)
    rows, units = [], []
    records = [("reference", "reference", 0, reference)]
    for s in seeds:
        tokens = ref_tokens + rng.integers(0, 10, n)
        dpo = difficulty + 0.03 * tokens + 0.3 * rng.standard_normal(n) + 0.2 * s
        records.append(("dpo", "dpo", s, judgments(dpo, tokens)))
        records.append(("shifted", "shifted", s, judgments(dpo + shift, tokens)))
    for label, objective, s, judg in records:
        folder = tmp_path / f"{label}-{s}"
        folder.mkdir()
        judg.to_parquet(folder / "judgments.parquet", index=False)
        rec = PolicyRecord(run_id=f"{label}-{s}", label=label, objective=objective, params="{}", seed=s,
                           eval_dir=folder)
        rows += policy_rows(rec, suite="t", reference_judgments=reference, chosen_judgments=None, n_boot=200, seed=0)
        units.append(policy_units(rec, reference_judgments=reference, chosen_judgments=None))
    runs = pd.DataFrame([{"run_id": f"{lab}-{s}", "label": lab, "objective": obj, "seed": s, "status": "ok"}
                         for lab, obj, s, _ in records])
    return pd.DataFrame(rows), runs, pd.concat(units, ignore_index=True)


def test_lc_win_rate_gets_the_two_way_interval_and_a_paired_comparison(tmp_path):
    results, runs, units = judged_folder(tmp_path, shift=0.4)
    lc = ("reward_model", "lc_win_rate_vs_reference")
    long = aggregate(results, runs, units, n_boot=1000).set_index(["label", "scorer", "metric"])
    for label in ("dpo", "shifted", "reference"):
        row = long.loc[(label, *lc)]
        assert row["interval"] == ("units" if label == "reference" else "seeds x units")
        assert 0.0 <= row["ci_low"] <= row["value"] <= row["ci_high"] <= 1.0
    # Unit means reproduce every mean-type row of the results table.
    means = units[~units["metric"].str.contains(":")].groupby(["run_id", "scorer", "metric"])["value"].mean()
    stored = results.set_index(["run_id", "scorer", "metric"])["value"]
    assert means.to_numpy() == pytest.approx(stored.loc[means.index].to_numpy(), abs=1e-9)
    comp = comparisons(results, runs, units, "dpo", [lc, ("reward_model", "win_rate_vs_reference")],
                       n_boot=1000).set_index(["label", "metric"])
    row = comp.loc[("shifted", lc[1])]
    assert row["paired_by"] == "seed+unit" and row["delta"] > 0 and row["ci_low"] > 0 and row["significant"]
    assert comp.loc[("reference", lc[1]), "paired_by"] == "unit"
    # No shift: the same policy under another name; paired by seed and prompt, every
    # replicate's Δ is exactly 0.
    (tmp_path / "same").mkdir()
    same_results, same_runs, same_units = judged_folder(tmp_path / "same", shift=0.0)
    same = comparisons(same_results, same_runs, same_units, "dpo", [lc], n_boot=1000).set_index("label")
    assert same.loc["shifted", ["delta", "ci_low", "ci_high"]].tolist() == pytest.approx([0, 0, 0], abs=1e-12)
    assert same.loc["shifted", "p_value"] == 1.0 and not same.loc["shifted", "significant"]


def test_report_cli_compare_to_overrides_the_baseline_or_fails_in_one_line(tmp_path):
    from click.testing import CliRunner

    from bench.cli import main

    results, runs, units = shifted_suite()
    write_results(tmp_path, results, runs)
    write_units(tmp_path, units)
    runner = CliRunner()
    write_settings(tmp_path, StatsSettings(compare_to="dpo", n_boot=200, seed=0))
    own = runner.invoke(main, ["report", str(tmp_path)])
    assert own.exit_code == 0, own.output
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    done = runner.invoke(main, ["report", str(tmp_path), "--compare-to", "better"])
    assert done.exit_code == 0, done.output
    assert "Δ vs better" in done.output
    # Another baseline goes to a sub-report; the run's own files (statistics.json included) stay.
    sub = tmp_path / "compare-to-better"
    assert set(pd.read_csv(sub / COMPARISONS_FILE)["baseline"]) == {"better"}
    assert read_settings(sub).compare_to == "better" and read_settings(tmp_path).compare_to == "dpo"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert {p.name for p in sub.iterdir()} >= {"leaderboard.md", "leaderboard.tex", "leaderboard.html", "plots"}
    bad = runner.invoke(main, ["report", str(tmp_path), "--compare-to", "kto"])
    assert bad.exit_code == 2
    lines = bad.output.strip().splitlines()
    assert len(lines) == 1 and "--compare-to: baseline 'kto' names no label" in lines[0] and "dpo" in lines[0]


def test_delta_of_a_share_stays_within_minus_one_and_one():
    # Two seeds whose shares disagree wildly: the expanded interval of Δ (factor 9.17 for two
    # seeds) would leave [-1, 1]; a difference of two shares cannot.
    share = ("drift", "chosen_logp_down")
    results, runs, units = folder_tables({
        "dpo": ("dpo", {0: {share: np.zeros(16)}, 1: {share: np.zeros(16)}}),
        "ipo": ("ipo", {0: {share: np.ones(16)}, 1: {share: np.r_[np.ones(2), np.zeros(14)]}}),
    })
    row = comparisons(results, runs, units, "dpo", [share], n_boot=500).iloc[0]
    assert row["delta"] == pytest.approx((1 + 2 / 16) / 2)
    assert -1.0 <= row["ci_low"] and row["ci_high"] == 1.0


def test_leaderboard_says_when_too_few_replicates_can_mark_nothing():
    results, runs, units = shifted_suite()
    few = render(leaderboard(results, runs, units, StatsSettings("dpo", 100, 0)), "md")
    assert "smallest Holm-adjusted p is 0.0594" in few and "bootstrap_samples >= 120" in few   # 3 comparisons
    assert "▲" not in few.split("\n\n")[0]
    enough = render(leaderboard(results, runs, units, StatsSettings("dpo", 200, 0)), "md")
    assert "smallest Holm-adjusted" not in enough and "▲" in enough.split("\n\n")[0]


def test_delta_plot_titles_legend_and_tick_labels_do_not_collide(tmp_path, monkeypatch):
    """The Δ plot is laid out by hand (no tight_layout pass): its title and legend sit above the
    panels, each panel's title clears the tick labels of the row above, and the longest label
    fits inside the figure (tight_layout put the suptitle over the top panels' titles)."""
    from bench.tables import plots

    metrics = [GOLD, TOKENS, ("kl", "kl_to_reference"), ("reward_model", "win_rate_vs_reference"),
               ("reward_model", "mean_reward"), ("reward_model", "win_rate_vs_chosen"), ("gold", "win_rate_vs_reference"),
               ("drift", "chosen_logp_down"), ("drift", "logratio_chosen"), ("generation", "truncation_rate"),
               ("drift", "logratio_chosen_per_token"), ("lm_eval:arith_qa", "acc_norm"), ("lm_eval:arith_qa", "acc")]
    rng = np.random.default_rng(2)
    labels = ["dpo", "adpo[granularity=adaptive,m=4]", "adpo[granularity=static,k=2]", "adadpo", "hinge", "ipo",
              "simpo", "rpo", "reference"]   # the CI suite's, where the suptitle hid a panel's title
    results, runs, units = folder_tables({
        label: (label.split("[")[0], {0: {m: rng.random(30) for m in metrics}}) for label in labels})
    board = leaderboard(results, runs, units, StatsSettings("dpo", 200, 0))
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: None)    # kept open to be measured, as saved
    assert plots.plot_deltas(board, tmp_path / "d.png") is not None
    fig = plots.plt.figure(plots.plt.get_fignums()[-1])
    monkeypatch.undo()
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    used = [ax for ax in fig.axes if ax.axison]
    titles = [ax.title.get_window_extent(renderer) for ax in used]
    ticks = [(ax, t.get_window_extent(renderer)) for ax in used for t in ax.get_xticklabels() if t.get_text()]
    legend = fig.legends[0] if fig.legends else fig.axes[0].get_legend()
    above = [fig._suptitle.get_window_extent(renderer), legend.get_window_extent(renderer)]
    for box in above:
        assert not any(box.overlaps(t) for t in titles)
        assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in used)
    for ax, title in zip(used, titles):
        assert not any(title.overlaps(tick) for other, tick in ticks if other is not ax)
    assert len(used) >= 12 and used[0].get_position().y0 > used[-1].get_position().y1   # four rows of panels
    for label in fig.axes[0].get_yticklabels():
        assert label.get_window_extent(renderer).x0 >= 0
    plots.plt.close(fig)


def test_the_comparisons_reuse_the_unit_resamples_drawn_for_the_cells(monkeypatch):
    """The report computes the cells first (for the plots that need no baseline) and hands them
    to the leaderboard: the comparisons then draw no unit resample again, and the board is the
    one computed in one go."""
    from bench.tables import cells as cells_lib
    from bench.tables.leaderboard import leaderboard_cells

    results, runs, units = shifted_suite()
    settings = StatsSettings("dpo", 300, 0)
    computed = leaderboard_cells(results, runs, units, settings)
    drawn = []
    drawing = cells_lib.SharedCounts.__call__

    def counted(self, scorer, metric, n_units):
        if (scorer, metric, n_units) not in self._cache:
            drawn.append((scorer, metric, n_units))
        return drawing(self, scorer, metric, n_units)

    monkeypatch.setattr(cells_lib.SharedCounts, "__call__", counted)
    board = leaderboard(results, runs, units, settings, cells=computed)
    assert drawn == []
    pd.testing.assert_frame_equal(board, leaderboard(results, runs, units, settings))
    assert drawn      # computed in one go, the same resamples are drawn once, by the cells
