"""Generation: record shape and order, greedy batched = unbatched, seeded sampling, EOS,
special tokens, the lazy registry, jsonl, and the vLLM record mapping."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from bench.errors import BenchError, DataError
from bench.evaluation.generation.base import (
    Generation,
    GenerationConfig,
    encode_prompt,
    get_generator,
    read_generations,
    write_generations,
)

PROMPTS = [(f"q{i}", "Q: " + "12+" * (i % 5) + f"{i}=? A:") for i in range(9)]


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    return get_generator("hf", tiny_model_dir, progress=False)


def test_records_have_all_fields_in_input_order(generator):
    config = GenerationConfig(max_new_tokens=6, batch_size=4)
    gens = generator.generate(PROMPTS, config)
    assert [g.prompt_id for g in gens] == [pid for pid, _ in PROMPTS]
    for g in gens:
        assert g.sample_index == 0 and isinstance(g.text, str)
        assert g.finish_reason in ("stop", "length")
        assert 1 <= g.num_tokens <= 6
        # a 'length' sample used the whole budget; a 'stop' one counts its EOS
        assert (g.num_tokens == 6) if g.finish_reason == "length" else (len(g.text) == g.num_tokens - 1)


def test_greedy_batched_equals_one_prompt_at_a_time(generator):
    """Left padding + attention mask + KV cache must not change greedy decoding (fp32 model).
    Prompts of 5 different lengths share batches, so most rows are padded."""
    gens = generator.generate(PROMPTS, GenerationConfig(max_new_tokens=12, batch_size=4))
    tok, model = generator.tokenizer, generator.model
    for (pid, text), gen in zip(PROMPTS, gens):
        ids = torch.tensor([encode_prompt(tok, text)])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        assert gen.text == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True), pid


def test_sampling_n_samples_seeded_and_reproducible(generator):
    config = GenerationConfig(max_new_tokens=8, temperature=1.0, top_p=0.9, n=3, seed=7, batch_size=4)
    before = torch.random.get_rng_state()
    first = generator.generate(PROMPTS[:5], config)
    assert torch.equal(before, torch.random.get_rng_state())   # caller's RNG stream untouched
    assert [(g.prompt_id, g.sample_index) for g in first] == [(pid, k) for pid, _ in PROMPTS[:5] for k in range(3)]
    assert generator.generate(PROMPTS[:5], config) == first
    other = generator.generate(PROMPTS[:5], GenerationConfig(**{**config.__dict__, "seed": 8}))
    assert [g.text for g in other] != [g.text for g in first]
    # a random tiny model sampled at temperature 1 gives distinct samples for a prompt
    assert len({g.text for g in first[:3]}) > 1


def test_stops_at_eos_counting_it_and_excluding_it_from_text(generator):
    config = GenerationConfig(max_new_tokens=10, batch_size=3)
    greedy = generator.generate(PROMPTS[:3], config)
    # declare the character the first prompt's greedy text produces at step 4 to be EOS
    char = greedy[0].text[3]
    cut = greedy[0].text.index(char)
    eos_ids = generator.eos_ids
    generator.eos_ids = {generator.tokenizer.convert_tokens_to_ids(char)}
    try:
        stopped = generator.generate(PROMPTS[:3], config)
    finally:
        generator.eos_ids = eos_ids
    assert stopped[0].text == greedy[0].text[:cut]
    assert stopped[0].num_tokens == cut + 1 and stopped[0].finish_reason == "stop"
    for before, after in zip(greedy[1:], stopped[1:]):   # rows that never produce it are unchanged
        if char not in before.text:
            assert after == before


def test_record_cut_ignores_padding_after_eos(generator):
    tok = generator.tokenizer
    ids = tok("ab", add_special_tokens=False)["input_ids"]
    rec = generator._record("p", 1, ids + [tok.eos_token_id, tok.pad_token_id, tok.pad_token_id])
    assert rec == Generation("p", 1, "ab", 3, "stop")
    assert generator._record("p", 0, ids) == Generation("p", 0, "ab", 2, "length")


def test_encode_prompt_adds_bos_once(char_tokenizer):
    from tokenizers.processors import TemplateProcessing

    from bench.models import build_char_tokenizer

    tok = build_char_tokenizer()
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    plain, rendered = encode_prompt(tok, "ab"), encode_prompt(tok, "<s>ab")
    assert plain == rendered == [bos] + tok("ab", add_special_tokens=False)["input_ids"]
    assert encode_prompt(char_tokenizer, "ab") == char_tokenizer("ab")["input_ids"]   # no BOS configured


def test_registry_unknown_backend_and_lazy_vllm(tiny_model_dir):
    with pytest.raises(BenchError, match=r"'sglang'.*choices: hf, vllm"):
        get_generator("sglang", tiny_model_dir)
    # Every backend module registers itself when the registry is first asked (a module is cheap);
    # the vllm package, CUDA-only and slow to import, is imported only when its backend starts.
    code = ("import sys; from bench.evaluation.generation.base import get_generator; "
            f"get_generator('hf', {str(tiny_model_dir)!r}, progress=False); "
            "assert 'vllm' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(_repo_root()))


def test_jsonl_round_trip_and_bad_line(tmp_path):
    gens = [Generation("a", 0, "x\ny é", 4, "stop"), Generation("a", 1, "", 64, "length")]
    path = write_generations(tmp_path / "g.jsonl", gens)
    assert read_generations(path) == gens
    path.write_text(path.read_text() + '{"prompt_id": "b"}\n')
    with pytest.raises(DataError, match="line 3"):
        read_generations(path)


def test_config_from_suite_section():
    from bench.suite.schema import GenerationConfigSection

    section = GenerationConfigSection(max_new_tokens=9, temperature=0.7, n=2, seed=3, batch_size=5)
    assert GenerationConfig.from_section(section) == GenerationConfig(9, 0.7, 1.0, 2, 3, 5)


def test_vllm_request_outputs_map_to_identical_records():
    """The mapping runs without vLLM: fake RequestOutputs with vLLM's fields. The texts are the
    tokenizer's decoding of the ids before EOS (the hf backend's), not vLLM's `text`."""
    from bench.evaluation.generation.vllm_backend import records_of

    words = {5: "4", 6: "2", 9: "7", 2: "<eos>"}

    class Tok:
        def decode(self, ids, skip_special_tokens=False):
            return "".join(words[i] for i in ids if not (skip_special_tokens and i == 2))

    out = SimpleNamespace(outputs=[
        SimpleNamespace(index=1, text="vLLM's", token_ids=[9] * 64, finish_reason="length", stop_reason=None),
        SimpleNamespace(index=0, text="text", token_ids=[5, 6, 2], finish_reason="stop", stop_reason=None),
    ])
    assert records_of("p", out, Tok()) == [Generation("p", 0, "42", 3, "stop"), Generation("p", 1, "7" * 64, 64, "length")]


def test_vllm_record_of_a_reply_cut_inside_a_character_is_hfs():
    """A byte-level BPE reply cut by max_tokens in the middle of a UTF-8 character: vLLM's own
    text holds the incomplete bytes back ("caf"), the hf backend's decode gives "caf\ufffd";
    the vllm backend's record is the latter, so equal tokens give equal records."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from bench.evaluation.generation.vllm_backend import records_of

    core = Tokenizer(models.BPE())
    core.pre_tokenizer, core.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    core.train_from_iterator(["x"], trainer=trainers.BpeTrainer(   # no merges: one token per byte
        vocab_size=260, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=core)
    ids = tok("café", add_special_tokens=False)["input_ids"]
    assert len(ids) == 5                                      # c a f and the two bytes of é
    cut = SimpleNamespace(index=0, text="caf", token_ids=ids[:4], finish_reason="length", stop_reason=None)
    (record,) = records_of("p", SimpleNamespace(outputs=[cut]), tok)
    assert record.text == tok.decode(ids[:4], skip_special_tokens=True) == "caf\ufffd"


def test_vllm_token_ranks_counted_eagerly_equal_the_plain_count():
    """The eager stand-in for vLLM's compiled rank count (bench.evaluation.generation.vllm_backend.
    count_at_least): per row, how many logprobs are >= the token's own, ties counted, in row
    chunks when the rows are many (here 7 rows, 1 and 3 at a time)."""
    from bench.evaluation.generation.vllm_backend import count_at_least

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 50, generator=gen).round(decimals=1)   # rounded: ties occur
    values = x.gather(-1, torch.randint(0, 50, (7, 1), generator=gen))
    expected = torch.tensor([int((row >= v).sum()) for row, v in zip(x, values)])
    for chunk in (64 << 20, 50, 150):
        assert torch.equal(count_at_least(x, values, chunk_elements=chunk), expected), chunk
    assert count_at_least(torch.zeros(0, 3), torch.zeros(0, 1)).shape == (0,)


def test_vllm_backend_matches_hf_greedy(tiny_model_dir):
    pytest.importorskip("vllm", reason="vLLM is not installed (CUDA-only); the vllm backend is tested where it is")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs CUDA")
    config = GenerationConfig(max_new_tokens=8, batch_size=4)
    vllm_gens = get_generator("vllm", tiny_model_dir, dtype="float32", gpu_memory_utilization=0.3,
                              progress=False).generate(PROMPTS, config)
    hf_gens = get_generator("hf", tiny_model_dir, dtype=torch.float32, progress=False).generate(PROMPTS, config)
    assert [(g.prompt_id, g.sample_index) for g in vllm_gens] == [(g.prompt_id, g.sample_index) for g in hf_gens]
    same = sum(v == h for v, h in zip(vllm_gens, hf_gens))
    assert same >= len(PROMPTS) - 1   # different kernels may flip a near-tie argmax on one prompt


def _repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]
