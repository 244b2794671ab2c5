"""Two-way (seeds × prompts) bootstrap, paired comparisons and Holm, on hand-worked tables."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench.tables import stats
from bench.tables.metrics import seed_aggregate


def test_two_seeds_without_prompt_noise_give_the_three_possible_means():
    # Seed 0 scores 0.2 on every prompt, seed 1 scores 0.6: a replicate draws the seeds
    # {0,0}, {0,1} or {1,1} (means 0.2, 0.4, 0.6 with probabilities 1/4, 1/2, 1/4); the
    # prompt resample changes nothing. The plain 2.5% and 97.5% percentiles are 0.2 and 0.6.
    x = np.array([[0.2] * 10, [0.6] * 10])
    est = stats.two_way_interval(x, n_boot=2000, rng=np.random.default_rng(1), expand=False)
    assert (est.value, est.ci_low, est.ci_high) == pytest.approx((0.4, 0.2, 0.6))
    assert (est.n_seeds, est.n_units) == (2, 10)
    # Expanded (the default): deviations ±0.2 widened by t_{.975,1}/z_{.975}·√2 = 12.706/1.960·1.414.
    k2 = 12.706204736174698 / 1.959963984540054 * math.sqrt(2)
    assert stats.expansion(2) == pytest.approx(k2) and stats.expansion(1) == 1.0
    assert stats.expansion(3) == pytest.approx(4.302652729749464 / 1.959963984540054 * math.sqrt(1.5))
    wide = stats.two_way_interval(x, n_boot=2000, rng=np.random.default_rng(1))
    assert (wide.ci_low, wide.ci_high) == pytest.approx((0.4 - 0.2 * k2, 0.4 + 0.2 * k2))


def test_expanded_seed_stage_matches_student_t_width_with_many_resamples():
    # Seeds only (one unit): the expanded interval of 5 normal-ish values is close to the
    # t-interval (the plain percentile bootstrap is much narrower).
    values = np.array([0.1, 0.3, 0.35, 0.5, 0.75])
    t = seed_aggregate(values)
    mean, t_low, t_high = t.value, t.ci_low, t.ci_high
    est = stats.two_way_interval(values[:, None], n_boot=20000, rng=np.random.default_rng(3))
    plain = stats.two_way_interval(values[:, None], n_boot=20000, rng=np.random.default_rng(3), expand=False)
    assert est.ci_high - est.ci_low == pytest.approx(t_high - t_low, rel=0.1)
    assert plain.ci_high - plain.ci_low < 0.75 * (t_high - t_low)


def test_prompts_are_crossed_with_seeds_not_nested():
    # Five identical seeds carry no seed information: the interval must be exactly the one
    # seed's prompt bootstrap. Resampling prompts independently within each seed (nested)
    # would shrink it by about √5.
    x = np.random.default_rng(3).random(50)
    one = stats.two_way_interval(x[None, :], n_boot=1000, rng=np.random.default_rng(4))
    five = stats.two_way_interval(np.vstack([x] * 5), n_boot=1000, rng=np.random.default_rng(4))
    assert (five.ci_low, five.ci_high) == pytest.approx((one.ci_low, one.ci_high), abs=1e-12)
    assert one.ci_high - one.ci_low > 0.1


def test_single_seed_is_the_prompt_bootstrap():
    # One seed, 100 prompts, half right: the interval is about 0.5 ± 1.96·0.05.
    x = np.array([[0.0, 1.0] * 50])
    est = stats.two_way_interval(x, n_boot=2000, rng=np.random.default_rng(5))
    assert est.value == 0.5 and est.n_seeds == 1
    assert est.ci_low == pytest.approx(0.402, abs=0.02) and est.ci_high == pytest.approx(0.598, abs=0.02)


def test_paired_delta_separates_a_constant_shift_that_unpaired_intervals_miss():
    # Prompt difficulty spreads values over [0, 1]; the policy adds 0.03 to every (seed, prompt).
    rng = np.random.default_rng(6)
    difficulty = rng.random(100)
    base = difficulty[None, :] + 0.02 * rng.standard_normal((3, 100))
    policy = base + 0.03
    a = stats.two_way_interval(policy, n_boot=1000, rng=np.random.default_rng(7))
    b = stats.two_way_interval(base, n_boot=1000, rng=np.random.default_rng(8))
    assert a.ci_low < b.ci_high       # unpaired intervals overlap
    d = stats.paired_delta(policy, base, n_boot=1000, rng=np.random.default_rng(9))
    assert (d.delta, d.ci_low, d.ci_high) == pytest.approx((0.03, 0.03, 0.03))
    assert d.p_value == pytest.approx(2 / 1001)
    assert (d.n_seeds, d.n_units, d.paired_seeds) == (3, 100, True)


def test_unpaired_seeds_still_pair_the_prompts():
    # The reference (one policy) against three seeds: prompts stay paired, so the prompt
    # difficulty cancels and only the seeds' spread (0.1 apart) remains: the extreme seed
    # draws (all 0.1 or all 0.3, 1/27 each) give 0.2 ∓ 0.1, widened by the 3-seed expansion.
    difficulty = np.linspace(0, 1, 60)
    ref = difficulty[None, :]
    trained = np.vstack([difficulty + s for s in (0.1, 0.2, 0.3)])
    d = stats.paired_delta(trained, ref, paired_seeds=False, n_boot=4000, rng=np.random.default_rng(10))
    k3 = stats.expansion(3)
    assert d.delta == pytest.approx(0.2)
    assert (d.ci_low, d.ci_high) == pytest.approx((0.2 - 0.1 * k3, 0.2 + 0.1 * k3))
    assert d.p_value == pytest.approx(2 / 27, abs=0.02)   # only the all-0.1 draw crosses 0


def test_identical_policies_have_zero_delta_and_p_one():
    x = np.random.default_rng(11).random((3, 30))
    d = stats.paired_delta(x, x.copy(), n_boot=500, rng=np.random.default_rng(12))
    assert (d.delta, d.ci_low, d.ci_high, d.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_p_value_by_hand():
    reps = np.arange(-10.0, 90.0)        # 100 replicates: 11 are <= 0, 90 are >= 0
    assert stats.bootstrap_p_value(reps) == pytest.approx(2 * 12 / 101)


def test_holm_on_known_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005, math.nan])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert stats.holm([0.3, 0.9]) == pytest.approx([0.6, 0.9])
    assert stats.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])


def test_missing_units_are_dropped_and_order_of_cells_does_not_matter():
    x = np.array([[1.0, 0.0, np.nan], [1.0, 1.0, 0.0]])
    est = stats.two_way_interval(x, n_boot=200, rng=np.random.default_rng(0))
    assert est.n_units == 2 and est.value == pytest.approx(0.75)
    a = stats.rng_for(0, "gold", "accuracy", "dpo").random(3)
    b = stats.rng_for(0, "gold", "accuracy", "dpo").random(3)
    assert (a == b).all() and (a != stats.rng_for(0, "gold", "accuracy", "ipo").random(3)).any()


def test_sign_flip_p_value_is_exact_over_seeds():
    # Three seeds moving the same way: 2 of the 8 sign vectors reach |mean| >= observed.
    assert stats.sign_flip_p_value([-0.5, -0.5, -0.5]) == pytest.approx(0.25)
    # [1, 2, 3]: the 8 signed sums are ±6, ±4, ±2, 0, 0; |sum| >= 6 in 2 of 8.
    assert stats.sign_flip_p_value([1.0, 2.0, 3.0]) == pytest.approx(0.25)
    assert stats.sign_flip_p_value([1.0, -1.0]) == 1.0
    six = stats.sign_flip_p_value([1.0] * 6)
    assert six == pytest.approx(2 / 64)
