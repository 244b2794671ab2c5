"""Regression check: exactly the metrics moved beyond tolerance in the bad direction are flagged."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bench.check import check, load_baseline, make_baseline, write_baseline
from bench.errors import BenchError
from bench.results import make_row, write_results

DPO = "dpo[beta=0.1]"


def _write(folder, win=(0.60, 0.62, 0.64), down=(0.5, 0.5, 0.5), kl=(0.3, 0.3, 0.3), failed_seed=None):
    rows, runs = [], []
    for seed in range(3):
        run_id = f"dpo-s{seed}"
        for scorer, metric, values in (("reward_model", "win_rate_vs_reference", win),
                                       ("drift", "chosen_logp_down", down), ("kl", "kl_to_reference", kl)):
            rows.append(make_row(suite="t", run_id=run_id, objective="dpo", params={"beta": 0.1}, seed=seed,
                                 scorer=scorer, metric=metric, value=values[seed]))
        runs.append({"suite": "t", "run_id": run_id, "objective": "dpo", "label": DPO, "seed": seed,
                     "status": "failed" if seed == failed_seed else "ok"})
    write_results(folder, rows, runs)
    return folder


def test_baseline_from_same_results_passes(tmp_path):
    results = _write(tmp_path / "r")
    baseline = make_baseline(results, {"default": 0.02, "kl": 0.1})
    entries = {(e["scorer"], e["metric"]): e for e in baseline["metrics"]}
    assert entries[("reward_model", "win_rate_vs_reference")]["value"] == pytest.approx(0.62)
    assert entries[("reward_model", "win_rate_vs_reference")]["direction"] == "higher_is_better"
    assert entries[("drift", "chosen_logp_down")]["direction"] == "lower_is_better"
    assert entries[("kl", "kl_to_reference")] == {"label": DPO, "scorer": "kl", "metric": "kl_to_reference",
                                                 "value": 0.3, "tolerance": 0.1, "direction": "either"}
    path = write_baseline(tmp_path / "base.yaml", baseline)
    result = check(results, path)
    assert (result.ok, result.regressions, result.checked) == (True, [], 3)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_flags_exactly_the_regressed_metrics(tmp_path, suffix):
    base = write_baseline(tmp_path / f"base{suffix}", make_baseline(_write(tmp_path / "old"), 0.05))
    # win rate drops by 0.10 (> 0.05): regression; chosen-down falls (better): fine; KL moves 0.2 (either): regression
    new = _write(tmp_path / "new", win=(0.50, 0.52, 0.54), down=(0.1, 0.1, 0.1), kl=(0.5, 0.5, 0.5))
    result = check(new, base)
    assert not result.ok and result.checked == 3
    assert len(result.regressions) == 2
    win_line = next(line for line in result.regressions if "win_rate_vs_reference" in line)
    assert DPO in win_line and "baseline 0.62" in win_line and "now 0.52" in win_line
    assert any("kl_to_reference" in line for line in result.regressions)
    # the opposite moves: win rate up, chosen-down up by 0.2 (worse): only chosen-down regresses
    worse = _write(tmp_path / "worse", win=(0.9, 0.9, 0.9), down=(0.7, 0.7, 0.7))
    result = check(worse, base)
    assert [line.split(" of ")[0] for line in result.regressions] == ["drift/chosen_logp_down"]
    # within tolerance in the bad direction: passes
    assert check(_write(tmp_path / "close", win=(0.58, 0.58, 0.58), down=(0.54, 0.54, 0.54)), base).ok


def test_failed_seed_is_excluded_and_missing_metric_regresses(tmp_path):
    base = write_baseline(tmp_path / "b.json", make_baseline(_write(tmp_path / "old"), 0.05))
    # seed 2 failed with an absurd win rate: excluded, the mean of seeds 0-1 (0.61) passes
    assert check(_write(tmp_path / "f", win=(0.60, 0.62, 0.0), failed_seed=2), base).ok
    data = json.loads(base.read_text())
    data["metrics"].append({"label": "ipo[beta=0.1]", "scorer": "gold", "metric": "accuracy", "value": 0.4})
    base.write_text(json.dumps(data))
    result = check(tmp_path / "old", base)
    assert result.regressions == ["gold/accuracy of ipo[beta=0.1]: baseline 0.4, now missing "
                                  "(tolerance 0.05, higher_is_better)"]


@pytest.mark.parametrize("text, message", [
    ("metrics: [unclosed", "not valid YAML"),
    ("- just a list", "mapping with a 'metrics' list"),
    ("metrics:\n  - {label: a, scorer: gold, metric: accuracy}", r"metrics\[0\]: missing field 'value'"),
    ("metrics:\n  - {label: a, scorer: gold, metric: accuracy, value: high}", r"metrics\[0\].value: expected a finite number"),
    ("metrics:\n  - {label: a, scorer: gold, metric: accuracy, value: 1, direction: up}", r"metrics\[0\].direction"),
    ("default_tolerance: -1\nmetrics: []", "default_tolerance: must be >= 0"),
    ("metrics:\n  - {label: a, scorer: gold, metric: accuracy, value: 1, tolerance: -0.1}", r"metrics\[0\].tolerance: must be >= 0"),
])
def test_corrupt_baseline_is_one_line_bench_error(tmp_path, text, message):
    path = tmp_path / "base.yaml"
    path.write_text(text)
    with pytest.raises(BenchError, match=message) as err:
        load_baseline(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_files_are_bench_errors(tmp_path):
    with pytest.raises(BenchError, match="baseline file not found"):
        check(tmp_path, tmp_path / "none.yaml")
    (tmp_path / "b.yaml").write_text("metrics: []\n")
    with pytest.raises(BenchError, match="no such results folder"):
        check(tmp_path / "absent", tmp_path / "b.yaml")


def test_cli_exit_codes(tmp_path):
    from bench.cli import main

    base = write_baseline(tmp_path / "b.yaml", make_baseline(_write(tmp_path / "old"), 0.05))
    runner = CliRunner()
    ok = runner.invoke(main, ["check", str(tmp_path / "old"), "--baseline", str(base)])
    assert ok.exit_code == 0 and "checked 3 metrics: 0 regressed" in ok.output
    bad = _write(tmp_path / "new", win=(0.1, 0.1, 0.1))
    res = runner.invoke(main, ["check", str(bad), "--baseline", str(base)])
    assert res.exit_code == 1 and "REGRESSION reward_model/win_rate_vs_reference of dpo[beta=0.1]" in res.output
    res = runner.invoke(main, ["check", str(bad), "--baseline", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "baseline file not found" in res.output
