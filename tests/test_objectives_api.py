"""Objective API: masks and precision, composition, shared metrics, validation messages, descriptions."""
from __future__ import annotations

import json
import math

import pytest
import torch

from bench.errors import BenchError
from trainers.objectives import (ObjectiveError, PairLogps, build_objective, describe_objectives, get_objective,
                                 list_objectives, pair_metrics)

ALL = {"dpo": {}, "ipo": {}, "hinge": {}, "robust": {}, "simpo": {}, "nll": {},
       "adpo": {"granularity": "static", "k": 2}, "adpo-adaptive": {"granularity": "adaptive", "m": 3}, "adadpo": {}}


def objective(key: str):
    return get_objective(key.split("-")[0])


def random_pair(seed: int, dtype=torch.float32, poison=None, requires_grad=False) -> PairLogps:
    g = torch.Generator().manual_seed(seed)
    def side(t):
        lens = torch.randint(1, t + 1, (5,), generator=g)
        mask = (torch.arange(t)[None, :] < lens[:, None]).long()
        pol, ref = -3 * torch.rand(5, t, generator=g), -3 * torch.rand(5, t, generator=g)
        if poison is not None:
            pol, ref = pol.masked_fill(mask == 0, poison), ref.masked_fill(mask == 0, poison)
        return pol.to(dtype).requires_grad_(requires_grad), ref.to(dtype), mask
    pw, rw, mw = side(8)
    pl, rl, ml = side(6)
    return PairLogps(pw, pl, rw, rl, mw, ml)


# ---------------------------------------------------------------- masks and precision
@pytest.mark.parametrize("poison", [1e30, -1e30, float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("key", sorted(ALL))
def test_poisoned_padding_changes_nothing(key, poison):
    clean = objective(key)(random_pair(0, poison=0.0), **ALL[key])
    dirty_pair = random_pair(0, poison=poison, requires_grad=True)
    dirty = objective(key)(dirty_pair, **ALL[key])
    torch.testing.assert_close(dirty.losses, clean.losses)
    for name, value in clean.metrics.items():
        torch.testing.assert_close(dirty.metrics[name], value)
    # Gradients too: padded positions get exactly 0, and nothing anywhere is NaN.
    grad_w, grad_l = torch.autograd.grad(dirty.losses.sum(), (dirty_pair.policy_chosen, dirty_pair.policy_rejected),
                                         allow_unused=True)
    for grad, mask in ((grad_w, dirty_pair.chosen_mask), (grad_l, dirty_pair.rejected_mask)):
        if grad is not None:
            assert torch.isfinite(grad).all() and (grad[mask == 0] == 0).all()


@pytest.mark.parametrize("key", sorted(ALL))
def test_bf16_inputs_give_the_float32_result(key):
    pair16 = random_pair(1, dtype=torch.bfloat16)
    out16 = objective(key)(pair16, **ALL[key])
    assert out16.losses.dtype == torch.float32
    # Exactly the float32 computation on the bf16-rounded values: every reduction happened in float32 ...
    up = PairLogps(*(None if x is None else x.float() for x in (pair16.policy_chosen, pair16.policy_rejected,
                                                                   pair16.ref_chosen, pair16.ref_rejected)),
                   pair16.chosen_mask, pair16.rejected_mask)
    torch.testing.assert_close(out16.losses, objective(key)(up, **ALL[key]).losses, rtol=1e-6, atol=1e-6)
    # ... and within bf16 input rounding (relative 2^-8 per log-prob) of the unrounded float32 result.
    exact = objective(key)(random_pair(1), **ALL[key]).losses
    torch.testing.assert_close(out16.losses, exact, rtol=0.05, atol=0.05)


# ---------------------------------------------------------------- reference and rejected requirements
@pytest.mark.parametrize("name", ["dpo", "ipo", "hinge", "robust", "adpo", "adadpo"])
def test_objectives_needing_a_reference_say_so(name):
    pair = random_pair(2)
    no_ref = PairLogps(pair.policy_chosen, pair.policy_rejected, None, None, pair.chosen_mask, pair.rejected_mask)
    assert get_objective(name).needs_reference
    with pytest.raises(ObjectiveError, match=f"objective '{name}' needs reference log-probs"):
        get_objective(name)(no_ref)


def test_reference_free_objectives_run_without_reference():
    pair = random_pair(3)
    no_ref = PairLogps(pair.policy_chosen, pair.policy_rejected, None, None, pair.chosen_mask, pair.rejected_mask)
    for name in ("simpo", "nll"):
        assert not get_objective(name).needs_reference
        torch.testing.assert_close(get_objective(name)(no_ref).losses, get_objective(name)(pair).losses)


def test_sft_batch_runs_nll_and_rejects_pairwise_objectives():
    pair = random_pair(4)
    sft = PairLogps(pair.policy_chosen, None, chosen_mask=pair.chosen_mask)
    torch.testing.assert_close(get_objective("nll")(sft).losses, get_objective("nll")(pair).losses)
    with pytest.raises(ObjectiveError, match="'simpo' compares pairs"):
        get_objective("simpo")(sft)


def test_mismatched_shapes_are_named():
    with pytest.raises(ObjectiveError, match=r"ref_chosen has shape \(2, 3\), policy_chosen has \(2, 4\)"):
        PairLogps(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 4),
                  torch.ones(2, 4), torch.ones(2, 4))


# ---------------------------------------------------------------- composition
def test_composite_is_the_weighted_sum():
    pair = random_pair(5)
    rpo = build_objective([{"name": "dpo", "weight": 1.0, "beta": 0.2}, {"name": "nll", "weight": 0.2}])
    dpo = get_objective("dpo")(pair, beta=0.2).losses
    nll = get_objective("nll")(pair).losses
    out = rpo(pair)
    torch.testing.assert_close(out.losses, dpo + 0.2 * nll)
    torch.testing.assert_close(out.metrics["dpo/loss"], dpo)
    torch.testing.assert_close(out.metrics["nll/loss"], nll)
    assert rpo.needs_reference and rpo.name == "dpo+0.2*nll"


def test_composite_prefixes_metrics_and_tracks_reference_need():
    pair = random_pair(6)
    comp = build_objective([{"name": "adpo", "weight": 0.5, "granularity": "adaptive", "m": 2},
                            {"name": "adadpo", "weight": 2.0}])
    out = comp(pair)
    assert out.metrics["adpo/feedback_length"].tolist() == [2.0] * 5
    torch.testing.assert_close(out.metrics["adadpo/beta_w"], get_objective("adadpo")(pair).metrics["beta_w"])
    torch.testing.assert_close(out.losses, 0.5 * out.metrics["adpo/loss"] + 2.0 * out.metrics["adadpo/loss"])
    free = build_objective([{"name": "simpo", "weight": 1.0}, {"name": "nll", "weight": 0.1}])
    assert not free.needs_reference
    twice = build_objective([{"name": "dpo", "weight": 1.0}, {"name": "dpo", "weight": 1.0, "beta": 0.5}])
    assert {"dpo#0/loss", "dpo#1/loss"} <= set(twice(pair).metrics)


def test_composite_validates_terms_when_built():
    with pytest.raises(ObjectiveError, match="objective 'nll': unknown parameter 'beta'"):
        build_objective([{"name": "dpo", "weight": 1.0}, {"name": "nll", "weight": 0.2, "beta": 0.1}])
    with pytest.raises(ObjectiveError, match="parameter 'weight' = 'heavy'"):
        build_objective([{"name": "dpo", "weight": "heavy"}])


# ---------------------------------------------------------------- shared metrics
def test_pair_metrics_by_hand():
    # chosen h = [1, 0] (r_w = 1, s_w = −3); rejected h = [−2, 0] (r_l = −2, s_l = −4); padded slot holds NaN
    pair = PairLogps(torch.tensor([[-1.0, -2.0]]), torch.tensor([[-3.0, -1.0, float("nan")]]),
                     torch.tensor([[-2.0, -2.0]]), torch.tensor([[-1.0, -1.0, float("nan")]]),
                     torch.tensor([[1, 1]]), torch.tensor([[1, 1, 0]]))
    got = {k: v.tolist() for k, v in pair_metrics(pair).items()}
    assert got == {"logps/chosen": [-3.0], "logps/rejected": [-4.0], "logratio/chosen": [1.0],
                   "logratio/rejected": [-2.0], "margin": [3.0], "accuracy": [1.0], "len/chosen": [2.0],
                   "len/rejected": [2.0]}


def test_pair_metrics_without_reference_or_rejected():
    pair = random_pair(7)
    no_ref = pair_metrics(PairLogps(pair.policy_chosen, pair.policy_rejected, None, None,
                                    pair.chosen_mask, pair.rejected_mask))
    assert set(no_ref) == {"logps/chosen", "logps/rejected", "len/chosen", "len/rejected"}
    sft = pair_metrics(PairLogps(pair.policy_chosen, None, chosen_mask=pair.chosen_mask))
    assert set(sft) == {"logps/chosen", "len/chosen"}
    full = pair_metrics(pair)
    assert full["accuracy"].tolist() == (full["margin"] > 0).float().tolist()
    torch.testing.assert_close(full["len/chosen"], pair.chosen_mask.sum(1).float())


# ---------------------------------------------------------------- validation messages
BAD = [
    # (objective, hyperparameters, parameter named, what "allowed" says)
    ("dpo", {"bta": 0.1}, "bta", "did you mean 'beta'?"),
    ("dpo", {"beta": 0.0}, "beta", "a float in (0, inf)"),
    ("simpo", {"beta": -1}, "beta", "a float in (0, inf)"),
    ("ipo", {"beta": float("nan")}, "beta", "a float in (0, inf)"),
    ("hinge", {"beta": "0.1"}, "beta", "a float in (0, inf)"),
    ("dpo", {"label_smoothing": 0.5}, "label_smoothing", "a float in [0, 0.5)"),
    ("dpo", {"label_smoothing": -0.1}, "label_smoothing", "a float in [0, 0.5)"),
    ("robust", {"epsilon": 0.7}, "epsilon", "a float in [0, 0.5)"),
    ("adpo", {"k": 0}, "k", "a positive integer"),
    ("adpo", {"k": 2.0}, "k", "a positive integer"),
    ("adpo", {"m": True}, "m", "a positive integer"),
    ("adpo", {"m": -3}, "m", "a positive integer"),
    ("adpo", {"granularity": "adaptiv"}, "granularity", "one of 'static', 'adaptive'"),
    ("adadpo", {"clip": 0}, "clip", "a float in (0, inf)"),
    ("adadpo", {"balance_space": "prob"}, "balance_space", "one of 'ratio', 'policy'"),
    ("adadpo", {"length_normalize": 1}, "length_normalize", "true or false"),
    ("simpo", {"gamma_beta_ratio": -0.5}, "gamma_beta_ratio", "a float in [0, inf)"),
    ("adpo", {"window": 4}, "window", "valid parameters: beta, granularity, k, m"),
]


@pytest.mark.parametrize("name, hp, param, allowed", BAD)
def test_validation_message_names_objective_parameter_value_and_allowed(name, hp, param, allowed):
    with pytest.raises(ObjectiveError) as info:
        get_objective(name).validate(**hp)
    message = str(info.value)
    assert "\n" not in message
    for part in (f"objective {name!r}", f"{param!r}", repr(hp[param]), allowed):
        assert part in message, (part, message)
    assert info.value.param == param and info.value.objective == name
    assert isinstance(info.value, ValueError) and isinstance(info.value, BenchError)


def test_calling_with_a_bad_value_raises_before_computing():
    with pytest.raises(ObjectiveError, match="'beta' = -0.1"):
        get_objective("dpo")(random_pair(8), beta=-0.1)


def test_unknown_objective_suggests_the_closest():
    with pytest.raises(ObjectiveError, match=r"unknown objective 'adpoo' \(did you mean 'adpo'\?\); valid objectives"):
        get_objective("adpoo")
    with pytest.raises(ObjectiveError, match="unknown objective 'xyz'; valid objectives: adadpo, adpo"):
        build_objective([{"name": "xyz", "weight": 1.0}])


def test_validate_fills_defaults_and_keeps_types():
    assert get_objective("dpo").validate() == {"beta": 0.1, "label_smoothing": 0.0}
    assert get_objective("adadpo").validate(beta=1) == {"beta": 1.0, "balance_space": "ratio",
                                                        "length_normalize": True, "clip": 2.0}
    assert get_objective("adpo").validate(granularity="adaptive", m=4) == {"beta": 0.1, "granularity": "adaptive",
                                                                          "k": 1, "m": 4}
    assert get_objective("simpo").validate() == {"beta": 2.0, "gamma_beta_ratio": 0.25}
    assert get_objective("nll").validate() == {}


def test_describe_objectives_is_json_and_defaults_validate():
    described = json.loads(json.dumps(describe_objectives()))
    assert [d["name"] for d in described] == list_objectives()
    assert set(list_objectives()) == {"dpo", "ipo", "hinge", "robust", "simpo", "nll", "adpo", "adadpo"}
    for entry in described:
        assert "arXiv" in entry["paper"] or entry["name"] == "nll"
        defaults = {k: v["default"] for k, v in entry["hyperparameters"].items()}
        assert get_objective(entry["name"]).validate(**defaults) == defaults
        assert entry["needs_reference"] == get_objective(entry["name"]).needs_reference
    adpo = next(d for d in described if d["name"] == "adpo")
    assert "2602.09533" in adpo["paper"] and adpo["hyperparameters"]["granularity"]["choices"] == ["static", "adaptive"]
    assert math.isclose(next(d for d in described if d["name"] == "adadpo")["hyperparameters"]["clip"]["default"], 2.0)
