"""Response log-probs: equal to a naive full log-softmax on each unpadded sequence."""
from __future__ import annotations

import pytest
import torch

from trainers.models import load_model
from tests.helpers_trainer import arith_pairs
from trainers import logps as logps_mod
from trainers.logps import collate_pairs, pair_logps
from trainers.tokenize import tokenize_pairs


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    torch.manual_seed(0)
    return load_model(str(tiny_model_dir), dtype=torch.float32, trust_remote_code=False).eval()


@pytest.fixture(scope="module")
def tokenized(char_tokenizer):
    out, _ = tokenize_pairs(arith_pairs(5, seed=3), char_tokenizer, max_length=64, max_prompt_length=32)
    return out


def _naive(model, prompt, resp):
    """log softmax over the whole vocabulary of one unpadded sequence, response positions only."""
    ids = torch.tensor([prompt + resp])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    pos = torch.arange(len(prompt) - 1, len(prompt) + len(resp) - 1)
    return logp[pos, torch.tensor(resp)]


@torch.no_grad()
def test_matches_naive_per_sequence_log_softmax(model, tokenized, char_tokenizer):
    batch = collate_pairs(tokenized, char_tokenizer.pad_token_id)
    assert batch.input_ids.shape[0] == 2 * len(tokenized)          # one concatenated forward
    chosen, rejected, cmask, rmask = pair_logps(model, batch)
    assert chosen.dtype == torch.float32
    for i, t in enumerate(tokenized):
        n, m = len(t.chosen_ids), len(t.rejected_ids)
        torch.testing.assert_close(chosen[i, :n], _naive(model, t.prompt_ids, t.chosen_ids), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rejected[i, :m], _naive(model, t.prompt_ids, t.rejected_ids), atol=1e-5, rtol=1e-5)
        assert cmask[i].sum() == n and rmask[i].sum() == m
        assert torch.all(chosen[i, n:] == 0) and torch.all(cmask[i, n:] == 0)   # padding masked


@torch.no_grad()
def test_chunking_does_not_change_values(model, tokenized, char_tokenizer, monkeypatch):
    batch = collate_pairs(tokenized, char_tokenizer.pad_token_id)
    whole = pair_logps(model, batch)[0]
    monkeypatch.setattr(logps_mod, "CHUNK_POSITIONS", 3)
    torch.testing.assert_close(pair_logps(model, batch)[0], whole)


def test_chunked_gradient_equals_unchunked(model, tokenized, char_tokenizer, monkeypatch):
    batch = collate_pairs(tokenized, char_tokenizer.pad_token_id)
    grads = []
    for chunk in (10_000, 4):
        monkeypatch.setattr(logps_mod, "CHUNK_POSITIONS", chunk)
        model.zero_grad()
        chosen, rejected, *_ = pair_logps(model, batch)
        (chosen.sum() - 0.5 * rejected.sum()).backward()
        grads.append(model.get_output_embeddings().weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-5)
    model.zero_grad()


@torch.no_grad()
def test_sft_batch_runs_chosen_only(model, char_tokenizer):
    from bench.data.records import PreferencePair

    demo = [PreferencePair(id="d", prompt="1+2=", chosen="3", rejected="", metadata={"sft": True})]
    toks, _ = tokenize_pairs(demo, char_tokenizer, max_length=16, max_prompt_length=8)
    batch = collate_pairs(toks, char_tokenizer.pad_token_id)
    assert batch.input_ids.shape[0] == 1
    chosen, rejected, cmask, rmask = pair_logps(model, batch)
    assert rejected is None and rmask is None and chosen.shape == (1, 2)
    torch.testing.assert_close(chosen[0], _naive(model, toks[0].prompt_ids, toks[0].chosen_ids), atol=1e-5, rtol=1e-5)
