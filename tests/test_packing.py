"""The packed, shared-prompt layout gives the padded layout's log-probs with fewer tokens."""
from __future__ import annotations

import json

import pytest
import torch

from bench.data.records import PreferencePair
from trainers.models import load_model
from tests.helpers_trainer import arith_pairs, small_config
from trainers import logps as logps_mod
from trainers.logps import collate_pairs, pair_logps, split_logps, supports_packing
from trainers.reference import compute_reference
from trainers.tokenize import tokenize_pairs
from trainers.trainer import train


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir), dtype=torch.float32, trust_remote_code=False).eval()


@pytest.fixture(scope="module")
def pairs(char_tokenizer):
    # Long prompts (a repeated question) and varied responses, so rows fill unevenly.
    raw = [PreferencePair(id=p.id, prompt=p.prompt * (1 + i % 3), chosen=p.chosen * (1 + i % 2), rejected=p.rejected)
           for i, p in enumerate(arith_pairs(9, seed=5))]
    out, skipped = tokenize_pairs(raw, char_tokenizer, max_length=64, max_prompt_length=40)
    assert not skipped
    return out


def _both(model, pairs, pad_id, pack_to=64):
    padded, packed = collate_pairs(pairs, pad_id), collate_pairs(pairs, pad_id, pack_to=pack_to)
    return (padded, pair_logps(model, padded)), (packed, pair_logps(model, packed))


@torch.no_grad()
def test_packed_values_equal_padded(model, pairs, char_tokenizer):
    (_, a), (packed, b) = _both(model, pairs, char_tokenizer.pad_token_id)
    assert packed.position_ids is not None and packed.input_ids.shape[0] < 2 * len(pairs)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_packed_processes_fewer_tokens(pairs, char_tokenizer):
    padded, packed = collate_pairs(pairs, 0), collate_pairs(pairs, 0, pack_to=64)
    both_sequences = sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    shared_prompt = sum(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    assert packed.num_tokens < both_sequences < padded.num_tokens
    assert packed.num_tokens >= shared_prompt
    assert packed.input_ids.shape[1] <= 64 + max(len(p.chosen_ids) for p in pairs)  # capacity or longest segment


def test_layout_is_deterministic_and_segments_do_not_overlap(pairs):
    a, b = collate_pairs(pairs, 0, pack_to=64), collate_pairs(pairs, 0, pack_to=64)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.position_ids, b.position_ids)
    for i, p in enumerate(pairs):
        rows, cols = (a.segments == i).nonzero(as_tuple=True)
        assert rows.unique().numel() == 1                                   # a segment stays in one row
        assert cols.numel() == len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids)
        assert torch.equal(cols, torch.arange(int(cols[0]), int(cols[0]) + cols.numel()))   # contiguous
        row_ids = a.input_ids[rows[0], cols].tolist()
        assert row_ids == p.prompt_ids + p.chosen_ids + p.rejected_ids


@torch.no_grad()
def test_rejected_tokens_do_not_see_the_chosen_response(model, pairs, char_tokenizer):
    """Changing every chosen response leaves every rejected log-prob unchanged (the mask
    hides the chosen part), while the chosen log-probs do change."""
    altered = [type(p)(id=p.id, prompt_ids=p.prompt_ids, chosen_ids=[t + 1 for t in p.chosen_ids],
                       rejected_ids=p.rejected_ids) for p in pairs]
    pad = char_tokenizer.pad_token_id
    base = pair_logps(model, collate_pairs(pairs, pad, pack_to=64))
    other = pair_logps(model, collate_pairs(altered, pad, pack_to=64))
    torch.testing.assert_close(base[1], other[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(base[0], other[0])


@torch.no_grad()
def test_sft_batch_packs_prompt_and_demo(model, char_tokenizer):
    demos = [PreferencePair(id=f"d{i}", prompt="1+2=" * (i + 1), chosen="3" * (i + 2), rejected="",
                            metadata={"sft": True}) for i in range(4)]
    toks, _ = tokenize_pairs(demos, char_tokenizer, max_length=32, max_prompt_length=16)
    (_, a), (packed, b) = _both(model, toks, char_tokenizer.pad_token_id, pack_to=32)
    assert b[1] is None and packed.input_ids.shape[0] < len(toks)
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)


def test_packed_gradient_equals_padded(model, pairs, char_tokenizer):
    grads = []
    for pack_to in (None, 64):
        model.zero_grad()
        chosen, rejected, *_ = pair_logps(model, collate_pairs(pairs, char_tokenizer.pad_token_id, pack_to=pack_to))
        (chosen.sum() - 0.5 * rejected.sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    model.zero_grad()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_eager_attention_gets_an_additive_mask(tiny_model_dir, pairs, char_tokenizer):
    eager = load_model(str(tiny_model_dir), dtype=torch.float32, trust_remote_code=False).eval()
    eager.config._attn_implementation = "eager"
    eager.set_attn_implementation("eager")
    assert supports_packing(eager)
    (_, a), (_, b) = _both(eager, pairs, char_tokenizer.pad_token_id)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_a_model_that_ignores_the_mask_is_detected_and_runs_padded(tiny_model_dir, pairs, char_tokenizer,
                                                                   monkeypatch):
    """A decoder that drops the attention mask (as a kernel without custom-mask support
    would) attends across segments: `supports_packing` says so and the reference pass
    falls back to the padded layout, so its values stay right."""
    blind = load_model(str(tiny_model_dir), dtype=torch.float32, trust_remote_code=False).eval()
    body = blind.get_decoder()
    real_forward = body.forward
    monkeypatch.setattr(body, "forward", lambda *a, attention_mask=None, **k: real_forward(*a, **k))
    assert not supports_packing(blind)
    seen = []
    real_collate = logps_mod.collate_pairs
    monkeypatch.setattr("trainers.reference.collate_pairs",
                        lambda *a, **k: seen.append(k.get("pack_to")) or real_collate(*a, **k))
    values = compute_reference(blind, pairs, batch_size=4, progress=False, pack_to=64)
    assert seen and all(p is None for p in seen)
    clean = load_model(str(tiny_model_dir), dtype=torch.float32, trust_remote_code=False).eval()
    expected = split_logps(logps_mod.flat_logps(clean, collate_pairs(pairs[:1], 0)), collate_pairs(pairs[:1], 0))
    torch.testing.assert_close(values[pairs[0].id][0], expected[0][0], atol=1e-5, rtol=1e-5)


def test_trainer_packed_equals_padded(tmp_path, tiny_model_dir, char_tokenizer):
    import trainers.objectives as objectives
    data, _ = tokenize_pairs(arith_pairs(16, seed=2), char_tokenizer, max_length=32, max_prompt_length=16)
    logs = []
    for packing in (False, True):
        res = train(model_path=tiny_model_dir, objective=objectives.build_objective([{"name": "dpo", "beta": 0.1}]),
                    train_data=data, config=small_config(packing=packing, batch_size=8, max_steps=3),
                    out_dir=tmp_path / f"packing_{packing}", progress=False)
        assert res.status == "ok"
        logs.append([json.loads(ln) for ln in res.log_path.read_text().splitlines()])
    for a, b in zip(*logs):
        for key in ("loss", "grad_norm", "logps/chosen", "logps/rejected", "margin"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), key


@pytest.mark.parametrize("lengths,capacity", [([5, 5, 5, 5, 4, 4], 10), ([30, 2, 2, 2, 9, 17, 11, 4], 32),
                                              ([7], 7), ([3, 3, 3], 100)])
def test_pack_fits_balances_and_does_not_overlap(lengths, capacity):
    placement, fill = logps_mod._pack(lengths, capacity)
    assert max(fill) <= capacity and sum(fill) == sum(lengths)
    assert len(fill) == -(-sum(lengths) // capacity)          # as few rows as the tokens need here
    for row in range(len(fill)):
        spans = sorted((at, at + lengths[i]) for i, (r, at) in enumerate(placement) if r == row)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))   # no overlap
        assert spans[-1][1] == fill[row]
    assert logps_mod._pack(lengths, capacity) == (placement, fill)


def test_pack_balances_rows_to_cut_padding():
    # 4 items of 6 and 4 of 4, capacity 20: two full rows. First-fit-decreasing would make
    # three rows [18, 18, 4], i.e. a 3 x 18 tensor (54 slots for 40 tokens).
    placement, fill = logps_mod._pack([6, 6, 6, 6, 4, 4, 4, 4], 20)
    assert fill == [20, 20]
