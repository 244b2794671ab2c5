"""Drift metrics on hand-worked tensors."""
from __future__ import annotations

import pytest
import torch

from bench.evaluation.scoring.drift import drift_metrics


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


# ---------------------------------------------------------------- compute_drift on real models
def _tokenized(tokenizer):
    from trainers.tokenize import TokenizedPair

    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    eos = [tokenizer.eos_token_id]
    rows = [("Compute 2+3.\n", " Answer: 5", " Answer: 6"),
            ("Compute 4*4-1.\n", " 4*4=16. 16-1=15. Answer: 15", " Answer: 14"),
            ("Compute 9.\n", " Answer: 9", " 9+0=9. Answer: 8")]
    return [TokenizedPair(f"p{i}", enc(p), enc(c) + eos, enc(r) + eos) for i, (p, c, r) in enumerate(rows)]


def _direct_sum_logp(model, prompt_ids, response_ids) -> float:
    # Independent of trainers.logps: full-vocabulary log-softmax on the unpadded sequence.
    ids = torch.tensor([prompt_ids + response_ids])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    start = len(prompt_ids)
    return float(sum(logp[start - 1 + j, tok] for j, tok in enumerate(response_ids)))


def test_compute_drift_matches_direct_log_ratios(tiny_model_dir, char_tokenizer, tmp_path):
    from bench.models import build_tiny_causal_lm
    from trainers.models import load_model
    from bench.evaluation.scoring.drift import compute_drift
    from trainers.reference import compute_reference

    policy_dir = build_tiny_causal_lm(tmp_path / "policy", char_tokenizer, seed=1)
    ref_model = load_model(str(tiny_model_dir), dtype=torch.float32, trust_remote_code=False).eval()
    pairs = _tokenized(char_tokenizer)
    with torch.inference_mode():
        ref = compute_reference(ref_model, pairs, batch_size=2, progress=False)
    m = compute_drift(policy_dir, ref, pairs, batch_size=2, progress=False)

    policy = load_model(str(policy_dir), dtype=torch.float32, trust_remote_code=False).eval()
    with torch.inference_mode():
        want_w = [_direct_sum_logp(policy, p.prompt_ids, p.chosen_ids)
                  - _direct_sum_logp(ref_model, p.prompt_ids, p.chosen_ids) for p in pairs]
        want_l = [_direct_sum_logp(policy, p.prompt_ids, p.rejected_ids)
                  - _direct_sum_logp(ref_model, p.prompt_ids, p.rejected_ids) for p in pairs]
    assert m["per_pair"]["r_w"] == pytest.approx(want_w, abs=1e-4)
    assert m["per_pair"]["r_l"] == pytest.approx(want_l, abs=1e-4)
    assert m["per_pair"]["r_w_per_token"] == pytest.approx(
        [w / len(p.chosen_ids) for w, p in zip(want_w, pairs)], abs=1e-4)
    assert m["chosen_logp_down"] == pytest.approx(sum(w < 0 for w in want_w) / 3)
    assert m["n"] == 3


def test_compute_drift_of_the_reference_itself_is_zero(tiny_model_dir, char_tokenizer):
    from trainers.models import load_model
    from bench.evaluation.scoring.drift import compute_drift
    from trainers.reference import compute_reference

    pairs = _tokenized(char_tokenizer)
    with torch.inference_mode():
        ref = compute_reference(load_model(str(tiny_model_dir), trust_remote_code=False), pairs, batch_size=3, progress=False)
    m = compute_drift(tiny_model_dir, ref, pairs, batch_size=1, progress=False)
    assert max(abs(x) for x in m["per_pair"]["r_w"] + m["per_pair"]["r_l"]) < 1e-4
