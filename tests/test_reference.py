"""Reference log-probs: live values, on-disk cache equal to them, and no recomputation."""
from __future__ import annotations

import shutil

import torch

from trainers.models import load_model
from tests.helpers_trainer import arith_pairs
from trainers import reference as ref_mod
from trainers.logps import collate_pairs, pair_logps
from trainers.reference import reference_logps
from trainers.tokenize import tokenize_pairs


def _data(char_tokenizer, n=6, seed=0):
    out, _ = tokenize_pairs(arith_pairs(n, seed=seed), char_tokenizer, max_length=64, max_prompt_length=32)
    return out


def _count_forwards(monkeypatch):
    calls = []
    real = ref_mod.flat_logps
    monkeypatch.setattr(ref_mod, "flat_logps", lambda m, b: calls.append(1) or real(m, b))
    return calls


def test_cached_values_equal_live_and_are_not_recomputed(tiny_model_dir, char_tokenizer, tmp_path, monkeypatch):
    data = _data(char_tokenizer)
    calls = _count_forwards(monkeypatch)
    first = reference_logps(tiny_model_dir, data, batch_size=4, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2                                           # ceil(6 / 4) batches
    second = reference_logps(tiny_model_dir, data, batch_size=4, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2                                           # read from the cache
    model = load_model(str(tiny_model_dir), dtype=torch.float32, trust_remote_code=False).eval()
    with torch.no_grad():
        chosen, rejected, cmask, rmask = pair_logps(model, collate_pairs(data, char_tokenizer.pad_token_id))
    for i, t in enumerate(data):
        for got in (first, second):
            c, r = got[t.id]
            assert c.dtype == torch.float32 and c.shape == (len(t.chosen_ids),)
            torch.testing.assert_close(c, chosen[i, : len(t.chosen_ids)], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(r, rejected[i, : len(t.rejected_ids)], atol=1e-5, rtol=1e-5)


def test_key_changes_with_data_and_model(tiny_model_dir, char_tokenizer, tmp_path, monkeypatch):
    data = _data(char_tokenizer)
    calls = _count_forwards(monkeypatch)
    reference_logps(tiny_model_dir, data, batch_size=8, cache_dir=tmp_path, progress=False)
    reference_logps(tiny_model_dir, data[:-1], batch_size=8, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2                                           # different data: a new pass
    other = tmp_path / "model_copy"
    shutil.copytree(tiny_model_dir, other)
    (other / "config.json").write_text((other / "config.json").read_text() + "\n")
    reference_logps(other, data, batch_size=8, cache_dir=tmp_path, progress=False)
    assert len(calls) == 3                                           # different model files: a new pass


def test_corrupt_cache_is_recomputed(tiny_model_dir, char_tokenizer, tmp_path, monkeypatch):
    data = _data(char_tokenizer, n=3)
    good = reference_logps(tiny_model_dir, data, batch_size=8, cache_dir=tmp_path, progress=False)
    (cache_file,) = tmp_path.glob("ref_logps-*.safetensors")
    cache_file.write_bytes(b"not a safetensors file")
    calls = _count_forwards(monkeypatch)
    again = reference_logps(tiny_model_dir, data, batch_size=8, cache_dir=tmp_path, progress=False)
    assert len(calls) == 1
    for k in good:
        torch.testing.assert_close(again[k][0], good[k][0])


def test_inference_mode_pass_gives_the_no_grad_bits_and_runs_in_inference_mode(tiny_model_dir, char_tokenizer,
                                                                                monkeypatch):
    # The trainer's own pass runs under inference_mode (cheaper), FSDP's under no_grad: same bits.
    data = _data(char_tokenizer, n=10, seed=3)
    model = load_model(str(tiny_model_dir), dtype=torch.float32, trust_remote_code=False)
    modes = []
    real = ref_mod.flat_logps
    monkeypatch.setattr(ref_mod, "flat_logps",
                        lambda m, b: modes.append(torch.is_inference_mode_enabled()) or real(m, b))
    fast = ref_mod.compute_reference(model, data, batch_size=4, progress=False, pack_to=64)
    plain = ref_mod.compute_reference(model, data, batch_size=4, progress=False, pack_to=64, inference_mode=False)
    assert modes == [True] * 3 + [False] * 3
    assert torch.is_grad_enabled()                  # the caller's grad mode is restored on return
    for key in plain:
        assert torch.equal(fast[key][0], plain[key][0]) and torch.equal(fast[key][1], plain[key][1])
