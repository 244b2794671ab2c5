"""Regression check: the band comes from the baseline's seed spread, floors stop float-noise
alarms, invariants are exact, bad input is one line (exit 2)."""
from __future__ import annotations

import json
import math

import pytest
import yaml
from click.testing import CliRunner

from bench.gate.check import check
from bench.gate.baseline import load_baseline, make_baseline, write_baseline
from bench.gate.rule import band, floor_for, t_quantile
from bench.errors import BenchError
from bench.tables.results import make_row, write_results

DPO = "dpo[beta=0.1]"
ADPO1 = "adpo[beta=0.1,granularity=adaptive,m=1]"


def _log(folder, name, losses):
    path = folder / "logs_in" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"step": i + 1, "loss": loss, "accuracy": 0.5 + 0.01 * i, "margin": 0.1 * i})
                            + "\n" for i, loss in enumerate(losses)))
    return str(path.relative_to(folder))


def _write(folder, win=(0.60, 0.62, 0.64), down=(0.5, 0.5, 0.5), kl=(0.3, 0.31, 0.32), failed_seed=None,
           step1=math.log(2), adpo_shift=0.0, with_adpo=False, n=64):
    """A results folder: DPO (and optionally ADPO m=1, its twin) over 3 seeds, with train logs."""
    rows, runs = [], []
    objectives = [("dpo", {"beta": 0.1}, DPO, 0.0)]
    if with_adpo:
        objectives.append(("adpo", {"beta": 0.1, "granularity": "adaptive", "m": 1}, ADPO1, adpo_shift))
    for objective, params, label, shift in objectives:
        for seed in range(3):
            run_id = f"{objective}-s{seed}"
            for scorer, metric, values in (("reward_model", "win_rate_vs_reference", win),
                                           ("drift", "chosen_logp_down", down), ("kl", "kl_to_reference", kl),
                                           ("drift", "margin", (1.0, 1.2, 1.4))):
                rows.append(make_row(suite="t", run_id=run_id, objective=objective, params=params, seed=seed,
                                     scorer=scorer, metric=metric, value=values[seed] + shift, n=n))
            log = _log(folder, run_id, [step1, 0.65 - 0.01 * seed + shift, 0.6 - 0.01 * seed + shift,
                                        0.55 - 0.01 * seed + shift])
            runs.append({"suite": "t", "run_id": run_id, "objective": objective, "label": label, "seed": seed,
                         "params": json.dumps(params), "train_log": log,
                         "status": "failed" if seed == failed_seed else "ok"})
    write_results(folder, rows, runs)
    return folder


def _baseline(tmp_path, **kwargs):
    return write_baseline(tmp_path / "base.yaml", make_baseline(_write(tmp_path / "old", **kwargs)))


def test_band_is_the_t_prediction_interval_with_a_floor():
    # n = m = 3, s = 0.02: h = t(2, 0.995) * 0.02 * sqrt(2/3)
    b = band([0.60, 0.62, 0.64], 3, kind="rate", items=1000, confidence=0.99)
    half = t_quantile(2, 0.99) * 0.02 * math.sqrt(2 / 3)
    assert t_quantile(2, 0.99) == pytest.approx(9.925, abs=1e-3)
    assert (b.low, b.high) == (pytest.approx(0.62 - half), pytest.approx(0.62 + half))
    assert b.how.startswith("t-interval over 3 seeds")
    # zero spread: the floor decides (two items of 64 for a rate)
    flat = band([0.5, 0.5, 0.5], 3, kind="rate", items=64, confidence=0.99)
    assert (flat.low, flat.high, flat.how) == (0.5 - 2 / 64, 0.5 + 2 / 64, "floor for a rate")
    # one seed: the pooled spread of the other labels
    pooled = band([0.5], 1, kind="continuous", items=None, confidence=0.95, pooled=(0.1, 4))
    assert pooled.high - 0.5 == pytest.approx(t_quantile(4, 0.95) * 0.1 * math.sqrt(2))
    assert floor_for("count", 20, None) == 0.5 and floor_for("continuous", -10.0, None) == pytest.approx(0.011)


def test_baseline_keeps_seeds_and_same_results_pass(tmp_path):
    base = _baseline(tmp_path, with_adpo=True)
    data = yaml.safe_load(base.read_text())
    assert base.read_text().startswith("# Regression baseline")
    entries = {(e["label"], e["scorer"], e["metric"]): e for e in data["metrics"]}
    win = entries[(DPO, "reward_model", "win_rate_vs_reference")]
    assert win["seeds"] == {0: 0.6, 1: 0.62, 2: 0.64} and win["direction"] == "higher_is_better" and win["n"] == 64
    assert entries[(DPO, "drift", "chosen_logp_down")]["direction"] == "lower_is_better"
    assert entries[(DPO, "kl", "kl_to_reference")]["direction"] == "either"
    # train-log values over the second half of training (steps 3-4)
    assert entries[(DPO, "train_log", "loss@3-4")]["seeds"][0] == pytest.approx(0.575)
    assert data["anchor"] == DPO
    assert {(c["label"], c["minus"]) for c in data["contrasts"]} == {(ADPO1, DPO)}
    assert [s["label"] for s in data["invariants"]["step1_loss"]] == [ADPO1, DPO]
    assert data["invariants"]["identities"] == [{"label": ADPO1, "equals": DPO, "rtol": 1e-4}]
    result = check(tmp_path / "old", base)
    assert result.ok, result.regressions
    assert result.checked == len(data["metrics"]) + len(data["contrasts"]) + 3


def test_flags_exactly_the_regressed_metrics_with_their_band(tmp_path):
    base = _baseline(tmp_path)
    # win rate drops by 0.3 (far outside t*s), chosen-down falls (better), KL moves by 3 (either): 2 regressions
    new = _write(tmp_path / "new", win=(0.30, 0.32, 0.34), down=(0.1, 0.1, 0.1), kl=(3.3, 3.31, 3.32))
    result = check(new, base)
    assert not result.ok
    assert sorted(line.split(" of ")[0] for line in result.regressions) == ["kl/kl_to_reference",
                                                                           "reward_model/win_rate_vs_reference"]
    win = next(line for line in result.regressions if "win_rate" in line)
    half = t_quantile(2, 0.99) * 0.02 * math.sqrt(2 / 3)
    assert f"of {DPO}: baseline 0.62, now 0.32, allowed [{0.62 - half:.4g}, +inf]" in win
    # the same moves the other way: only chosen-down (lower is better) regresses
    worse = check(_write(tmp_path / "worse", win=(0.9, 0.92, 0.94), down=(0.6, 0.6, 0.6)), base)
    assert [line.split(" of ")[0] for line in worse.regressions] == ["drift/chosen_logp_down"]
    # a zero-spread metric moved by one item of 64 (float noise on greedy decoding) passes;
    # by four items it regresses
    assert check(_write(tmp_path / "one", down=(0.5 + 1 / 64,) * 3), base).ok
    assert not check(_write(tmp_path / "four", down=(0.5 + 4 / 64,) * 3), base).ok


def test_invariants_step1_loss_and_identity(tmp_path):
    base = _baseline(tmp_path, with_adpo=True)
    off = check(_write(tmp_path / "step1", step1=math.log(2) + 5e-6, with_adpo=True), base)
    assert [line for line in off.regressions if "step-1" in line][0].startswith(
        f"invariant step-1 loss of {ADPO1} seed 0: baseline ln 2 = 0.6931472, now 0.6931522, allowed ±1e-06")
    assert check(_write(tmp_path / "close", step1=math.log(2) + 5e-7, with_adpo=True), base).ok
    # ADPO m=1 drifting from DPO by 0.2% breaks the identity (and only that: its level bands are wide)
    drift = check(_write(tmp_path / "twin", adpo_shift=0.002, with_adpo=True), base)
    assert any(line.startswith(f"invariant {ADPO1} equals {DPO}") for line in drift.regressions)


def test_failed_seed_is_excluded_and_missing_metric_regresses(tmp_path):
    base = _baseline(tmp_path)
    # seed 2 failed with an absurd win rate: excluded; the mean of seeds 0-1 is inside the band
    assert check(_write(tmp_path / "f", win=(0.60, 0.62, 0.0), failed_seed=2), base).ok
    data = yaml.safe_load(base.read_text())
    data["metrics"].append({"label": "ipo[beta=0.1]", "scorer": "gold", "metric": "accuracy",
                            "seeds": {0: 0.4, 1: 0.5}})
    base.write_text(yaml.safe_dump(data))
    result = check(tmp_path / "old", base)
    assert len(result.regressions) == 1
    assert result.regressions[0].startswith("gold/accuracy of ipo[beta=0.1]: baseline 0.45, now missing")
    assert check(tmp_path / "old", base, labels=[DPO]).ok      # --only: the other label is not checked


def test_older_fixed_tolerance_entries_still_load(tmp_path):
    results = _write(tmp_path / "r")
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"default_tolerance": 0.05, "metrics": [
        {"label": DPO, "scorer": "reward_model", "metric": "win_rate_vs_reference", "value": 0.70}]}))
    result = check(results, path)
    assert result.regressions == [f"reward_model/win_rate_vs_reference of {DPO}: baseline 0.7, now 0.62, "
                                  f"allowed [0.65, +inf] (fixed tolerance 0.05, higher_is_better)"]


@pytest.mark.parametrize("text, message", [
    ("metrics: [unclosed", "not valid YAML"),
    ("- just a list", "mapping with a 'metrics' list"),
    ("metrics:\n  - {label: a, scorer: gold, metric: accuracy}", r"metrics\[0\]: missing field 'seeds'"),
    ("metrics:\n  - {label: a, scorer: gold, metric: accuracy, seeds: {0: high}}", r"metrics\[0\].seeds\[0\]: expected a finite number"),
    ("metrics:\n  - {label: a, scorer: gold, metric: accuracy, seeds: []}", r"metrics\[0\].seeds: expected a non-empty mapping"),
    ("metrics:\n  - {label: a, scorer: gold, metric: accuracy, value: 1, direction: up}", r"metrics\[0\].direction"),
    ("metrics:\n  - {label: a, scorer: gold, metric: accuracy, seeds: {0: 1}, n: 0}", r"metrics\[0\].n: expected a positive"),
    ("confidence: 1.5\nmetrics: []", "confidence: must lie in"),
    ("default_tolerance: -1\nmetrics: []", "default_tolerance: must be >= 0"),
    ("metrics: []\ncontrasts:\n  - {label: a, scorer: gold, metric: accuracy, seeds: {0: 1}}", r"contrasts\[0\]: missing field 'minus'"),
    ("metrics: []\ninvariants: {step1_loss: [{label: a}]}", r"invariants.step1_loss\[0\]: missing field 'value'"),
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
    results = _write(tmp_path / "r")
    (results / "logs_in" / "dpo-s1.jsonl").unlink()
    with pytest.raises(BenchError, match=r"dpo-s1.jsonl: train log named in runs.parquet is missing"):
        check(results, tmp_path / "b.yaml")


def test_cli_baseline_and_check_exit_codes(tmp_path):
    from bench.cli import main

    runner = CliRunner()
    _write(tmp_path / "old", with_adpo=True)
    made = runner.invoke(main, ["baseline", str(tmp_path / "old"), "-o", str(tmp_path / "b.yaml")])
    assert made.exit_code == 0, made.output
    assert f"contrasts against {DPO}, 2 step-1 loss and 1 identity invariants" in made.output
    base = str(tmp_path / "b.yaml")
    ok = runner.invoke(main, ["check", str(tmp_path / "old"), "--baseline", base])
    assert ok.exit_code == 0 and ok.output.strip().endswith("0 regressed")
    bad = _write(tmp_path / "new", win=(0.1, 0.1, 0.1), with_adpo=True)
    res = runner.invoke(main, ["check", str(bad), "--baseline", base])
    assert res.exit_code == 1
    assert f"REGRESSION reward_model/win_rate_vs_reference of {DPO}: baseline 0.62, now 0.1, allowed [" in res.output
    res = runner.invoke(main, ["check", str(bad), "--baseline", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "baseline file not found" in res.output
    res = runner.invoke(main, ["baseline", str(tmp_path / "old"), "-o", base, "--anchor", "nope"])
    assert res.exit_code == 2 and "--anchor nope: no such trained label" in res.output


def test_identity_and_anchor_skip_a_dpo_control_with_training_overrides():
    """A zero-effect control (DPO at another learning rate) is not ADPO m=1's twin nor the anchor."""
    from bench.gate.baseline import _default_anchor
    from bench.gate.invariants import default_identities

    objectives = {"control-lr0": ("dpo", {"beta": 0.1, "label_smoothing": 0.0, "learning_rate": 1e-12}),
                  "dpo[beta=0.1]": ("dpo", {"beta": 0.1, "label_smoothing": 0.0}),
                  "adpo[m=1]": ("adpo", {"beta": 0.1, "granularity": "adaptive", "m": 1})}
    assert [(i["label"], i["equals"]) for i in default_identities(objectives)] == [("adpo[m=1]", "dpo[beta=0.1]")]
    assert _default_anchor(objectives, sorted(objectives)) == "dpo[beta=0.1]"
