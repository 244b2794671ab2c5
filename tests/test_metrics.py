"""Metrics on inputs whose answer is known (hand-worked values and invariants)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench.tables import metrics as m


def _length_world(n, *, seed, mean_gap, c, quality_gap=0.0):
    """Policy and reference responses: quality ~ N(0,1) each, the policy `mean_gap` tokens
    longer on average; the judge rewards quality + c·length."""
    rng = np.random.default_rng(seed)
    len_ref = rng.integers(10, 40, n).astype(float)
    len_pol = len_ref + rng.normal(mean_gap, 6, n).round()
    q_pol, q_ref = rng.normal(quality_gap, 1, n), rng.normal(0, 1, n)
    return q_pol + c * len_pol, q_ref + c * len_ref, len_pol, len_ref


def test_identical_policies_win_half_and_lc_half():
    rewards = np.random.default_rng(0).normal(size=50)
    lengths = np.arange(50, dtype=float)
    assert m.win_rate(rewards, rewards).value == 0.5
    lc = m.length_controlled_win_rate(rewards, rewards, lengths, lengths, n_boot=50)
    assert lc.value == pytest.approx(0.5, abs=1e-9)


def test_all_wins_is_one_and_hand_worked_ties():
    assert m.win_rate([2.0, 3.0, 4.0], [1.0, 1.0, 1.0]).value == 1.0
    # win, tie, loss, win -> (1 + .5 + 0 + 1) / 4
    assert m.win_rate([2, 1, 0, 5], [1, 1, 1, 4]).value == pytest.approx(0.625)


def test_several_samples_average_within_prompt_first():
    # prompt 0: samples (2, 0) vs one other response 1 -> ½; prompt 1: (3, 3) vs 1 -> 1
    est = m.win_rate(np.array([[2.0, 0.0], [3.0, 3.0]]), np.array([[1.0], [1.0]]))
    assert est.value == pytest.approx(0.75) and est.n == 2


def test_length_loving_judge_inflates_raw_but_not_lc():
    r_pol, r_ref, l_pol, l_ref = _length_world(3000, seed=1, mean_gap=3, c=0.2)
    raw = m.win_rate(r_pol, r_ref, n_boot=200)
    lc = m.length_controlled_win_rate(r_pol, r_ref, l_pol, l_ref, n_boot=200)
    assert raw.value > 0.57
    assert abs(lc.value - 0.5) < 0.05


def test_better_policy_of_equal_length_keeps_lc_above_half():
    rng = np.random.default_rng(2)
    lengths = rng.integers(10, 40, 1000).astype(float)
    r_pol, r_ref = rng.normal(0.7, 1, 1000) + 0.2 * lengths, rng.normal(0, 1, 1000) + 0.2 * lengths
    lc = m.length_controlled_win_rate(r_pol, r_ref, lengths, lengths, n_boot=200)
    assert lc.ci_low > 0.55
    # all length differences are 0 -> LC is exactly the mean soft label (documented degenerate case)
    soft = 1 / (1 + np.exp(-(r_pol - r_ref)))
    assert lc.value == pytest.approx(soft.mean(), abs=1e-6)


def test_interval_contains_value_narrows_with_n_and_is_seeded():
    rng = np.random.default_rng(3)
    small = rng.normal(size=(50,)), rng.normal(size=(50,))
    large = rng.normal(size=(2000,)), rng.normal(size=(2000,))
    e_small, e_large = m.win_rate(*small, seed=5), m.win_rate(*large, seed=5)
    for e in (e_small, e_large):
        assert e.ci_low <= e.value <= e.ci_high
    assert (e_large.ci_high - e_large.ci_low) < (e_small.ci_high - e_small.ci_low) / 3
    assert m.win_rate(*small, seed=5) == e_small
    # win outcomes are coarse (quantiles of 50 halves often coincide), so the seed's effect is
    # checked on a continuous mean
    assert m.mean_ci(small[0], seed=5) == m.mean_ci(small[0], seed=5) != m.mean_ci(small[0], seed=6)
    lc_args = (*small, np.arange(50.0), np.arange(50.0)[::-1])
    assert m.length_controlled_win_rate(*lc_args, n_boot=100, seed=1) == \
        m.length_controlled_win_rate(*lc_args, n_boot=100, seed=1)


def test_lc_interval_contains_value():
    r_pol, r_ref, l_pol, l_ref = _length_world(300, seed=4, mean_gap=3, c=0.2, quality_gap=0.3)
    lc = m.length_controlled_win_rate(r_pol, r_ref, l_pol, l_ref, n_boot=300)
    assert lc.ci_low < lc.value < lc.ci_high and lc.n == 300


def test_mean_ci_bootstrap_of_constant_and_of_known_mean():
    const = m.mean_ci([0.3] * 10)
    assert (const.value, const.ci_low, const.ci_high, const.n) == pytest.approx((0.3, 0.3, 0.3, 10))
    est = m.mean_ci(np.arange(100.0), n_boot=2000)
    assert est.value == 49.5
    # the bootstrap standard error of a mean is s/sqrt(n) ≈ 2.9: the 95% half-width ≈ 5.7
    assert (est.ci_high - est.ci_low) / 2 == pytest.approx(1.96 * np.std(np.arange(100.0)) / 10, rel=0.15)


def test_seed_aggregate_hand_computed_t_interval():
    est = m.seed_aggregate([0.5, 0.6, 0.7])
    half = 4.303 * 0.1 / math.sqrt(3)   # s = 0.1, t_{0.975,2} = 4.303
    assert est.value == pytest.approx(0.6)
    assert est.ci_low == pytest.approx(0.6 - half, abs=1e-4)
    assert est.ci_high == pytest.approx(0.6 + half, abs=1e-4)
    one = m.seed_aggregate([0.4])
    assert one.value == 0.4 and math.isnan(one.ci_low) and math.isnan(one.ci_high) and one.n == 1


def test_kl_estimate():
    logps = np.array([-3.0, -5.0, -1.5])
    assert m.kl_estimate(logps, logps) == m.Estimate(0.0, 0.0, 0.0, 3)
    est = m.kl_estimate([-1.0, -2.0, -3.0, -4.0], [-2.0, -2.0, -5.0, -4.0])   # diffs 1, 0, 2, 0
    assert est.value == pytest.approx(0.75)
    half = 1.96 * np.std([1, 0, 2, 0], ddof=1) / 2
    assert est.ci_high - est.value == pytest.approx(half, rel=1e-3)


def test_length_stats():
    stats = m.length_stats([2, 4, 9], [10, 20, 30], [5, 5, 5])
    assert stats == {"mean_tokens": 5.0, "median_tokens": 4.0, "mean_chars": 20.0,
                     "length_ratio_to_reference": 1.0}
    assert "length_ratio_to_reference" not in m.length_stats([1], [1])


def test_lc_one_step_matches_full_refits_on_resamples():
    # 300 prompts where the reward favours length and the policy a little beyond it: the
    # one-step refit of each resample is within a few thousandths of the full Newton refit.
    from bench.tables.stats import draw_counts

    rng = np.random.default_rng(0)
    n = 300
    len_p, len_r = rng.integers(10, 60, n).astype(float), rng.integers(10, 60, n).astype(float)
    rew_p = 0.05 * len_p + 0.3 + rng.standard_normal(n)
    rew_r = 0.05 * len_r + rng.standard_normal(n)
    theta_m, terms = m.lc_influence(rew_p, rew_r, len_p, len_r)
    full = m.length_controlled_win_rate(rew_p, rew_r, len_p, len_r, n_boot=10)
    assert m._sigmoid(theta_m) == pytest.approx(full.value, abs=1e-9)
    assert terms.shape == (n, 5) and np.abs(terms[:, :2].sum(axis=0)).max() < 1e-6   # score 0 at the fit
    counts = draw_counts(n, 200, np.random.default_rng(1))
    one_step = m.lc_one_step(theta_m, terms, counts)
    assert m.lc_one_step(theta_m, terms, np.ones((1, n)))[0] == pytest.approx(full.value, abs=1e-9)
    p, d, prompt, weight = m._pair_observations(rew_p, rew_r, len_p, len_r)
    refit = m._sigmoid(m._fit_lc(p, d, counts[:, prompt] * weight))
    assert np.abs(one_step - refit).max() < 0.005
    assert one_step.std() > 0.01          # the resamples do move it
