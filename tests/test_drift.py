"""Drift metrics on hand-worked tensors."""
from __future__ import annotations

import pytest
import torch

from bench.scoring.drift import drift_metrics


def _case():
    # Two pairs, response axis T = 3. Mask zeroes the padded positions (their values are junk
    # on purpose so that a missing mask shows up in the numbers).
    cm = torch.tensor([[1, 1, 0], [1, 1, 1]])
    rm = torch.tensor([[1, 0, 0], [1, 1, 0]])
    ref_c = torch.tensor([[-1.0, -1.0, 99.0], [-2.0, -2.0, -2.0]])
    ref_r = torch.tensor([[-3.0, 99.0, 99.0], [-1.0, -1.0, 99.0]])
    # pair 0: policy chosen sum -3 vs ref -2  -> r_w = -1 ; rejected -5 vs -3 -> r_l = -2
    # pair 1: policy chosen sum -4 vs ref -6  -> r_w = +2 ; rejected  0 vs -2 -> r_l = +2
    pol_c = torch.tensor([[-1.5, -1.5, -50.0], [-1.0, -1.0, -2.0]])
    pol_r = torch.tensor([[-5.0, 7.0, 7.0], [0.0, 0.0, 7.0]])
    return pol_c, pol_r, ref_c, ref_r, cm, rm


def test_hand_worked_values():
    m = drift_metrics(*_case())
    assert m["per_pair"]["r_w"] == pytest.approx([-1.0, 2.0])
    assert m["per_pair"]["r_l"] == pytest.approx([-2.0, 2.0])
    assert m["r_w"] == pytest.approx(0.5)
    assert m["r_l"] == pytest.approx(0.0)
    # per token: chosen lengths 2 and 3 -> -0.5, 2/3 ; rejected lengths 1 and 2 -> -2, 1
    assert m["r_w_per_token"] == pytest.approx((-0.5 + 2 / 3) / 2)
    assert m["r_l_per_token"] == pytest.approx((-2.0 + 1.0) / 2)
    assert m["chosen_logp_down"] == pytest.approx(0.5)
    # pair 0: -1 > -2 (correct); pair 1: 2 > 2 is false (a tie is not a win)
    assert m["reward_accuracy"] == pytest.approx(0.5)
    assert m["margin"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["n"] == 2


def test_policy_equal_to_reference_has_no_drift():
    pol_c, pol_r, ref_c, ref_r, cm, rm = _case()
    m = drift_metrics(ref_c, ref_r, ref_c, ref_r, cm, rm)
    assert m["r_w"] == m["r_l"] == m["margin"] == 0.0
    assert m["chosen_logp_down"] == 0.0 and m["reward_accuracy"] == 0.0


def test_empty_input_is_an_error():
    z = torch.zeros(0, 3)
    with pytest.raises(ValueError):
        drift_metrics(z, z, z, z, z, z)
