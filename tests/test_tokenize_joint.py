"""Tokenisation as TRL's DPOTrainer does it: prompt + response tokenised together and split
at the boundary, conversational pairs through the chat template, exactly one EOS.

Two tokenizers built in code: a SentencePiece-style one (Metaspace, prepends '▁' to every
text, as the "legacy" Llama-2/Mistral-v0.1 tokenizers do) and a byte-level BPE with a
ChatML template (the twin suite's, Qwen2 kind).
"""
from __future__ import annotations

import dataclasses

import pytest

from bench.data.records import PreferencePair
from trainers.tokenize import tokenize_pairs

TEXTS = ["\n\nHuman: What is the capital of France?\n\nAssistant: The capital of France is Paris.",
         "\n\nHuman: Can you help me?\n\nAssistant: I can help you with that. 2+2=4",
         "Question: 2+2=4 and 3+3=6. Answer: yes, I can add numbers."] * 20


@pytest.fixture(scope="module")
def sp_tokenizer():
    from tokenizers import SentencePieceBPETokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    core = SentencePieceBPETokenizer()   # Metaspace(prepend_scheme="always"): a '▁' before every text
    core.train_from_iterator(TEXTS, vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    core.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", core.token_to_id("<s>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=core._tokenizer, bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", pad_token="</s>")
    return tok


@pytest.fixture(scope="module")
def bpe_tokenizer():
    from bench.suite.twin import build_chat_tokenizer

    return build_chat_tokenizer(TEXTS, vocab_size=300)


def _one(pair, tok, **kw):
    out, skipped = tokenize_pairs([pair], tok, max_length=kw.get("max_length", 256), max_prompt_length=128)
    assert skipped == {}, skipped
    return out[0]


def test_sentencepiece_response_gets_no_extra_metaspace(sp_tokenizer):
    # In running text "Answer:yes" has no space before "yes"; tokenised alone, "yes" would start
    # with '▁' (Metaspace prepends it to every text), a token sequence the model never sees.
    pair = PreferencePair(id="a", prompt="Question: 2+2=4 and 3+3=6. Answer:", chosen="yes, I can", rejected="no")
    t = _one(pair, sp_tokenizer)
    eos = sp_tokenizer.eos_token_id
    joint = sp_tokenizer(pair.prompt + pair.chosen)["input_ids"]
    assert t.prompt_ids + t.chosen_ids == joint + [eos]            # exactly the running text, plus EOS
    assert t.prompt_ids[0] == sp_tokenizer.bos_token_id           # BOS once, at the start of the prompt
    first = sp_tokenizer.convert_ids_to_tokens(t.chosen_ids[:1])[0]
    assert not first.startswith("▁"), first                       # separately: '▁y'


def test_bytelevel_prompt_plus_response_is_the_running_text(bpe_tokenizer):
    pair = PreferencePair(id="a", prompt="\n\nHuman: Can you help me?\n\nAssistant:",
                          chosen=" I can help you with that.", rejected=" No.")
    t = _one(pair, bpe_tokenizer)
    eos = bpe_tokenizer.eos_token_id
    for response, ids in ((pair.chosen, t.chosen_ids), (pair.rejected, t.rejected_ids)):
        assert t.prompt_ids + ids == bpe_tokenizer(pair.prompt + response)["input_ids"] + [eos]


def test_conversational_pair_rendered_through_chat_template_without_hh_space(bpe_tokenizer):
    messages = ({"role": "user", "content": "Can you help me?"},)
    pair = PreferencePair(id="c", prompt="\n\nHuman: Can you help me?\n\nAssistant:",
                          chosen=" I can help you with that.", rejected=" No.", messages=messages)
    t = _one(pair, bpe_tokenizer)
    text = bpe_tokenizer.decode(t.prompt_ids + t.chosen_ids)
    assert text == ("<|im_start|>user\nCan you help me?<|im_end|>\n<|im_start|>assistant\n"
                    "I can help you with that.<|im_end|>")      # stripped reply, the template's end of turn
    assert bpe_tokenizer.decode(t.rejected_ids) == "No.<|im_end|>"
    # the template's end-of-turn token is the EOS here: it is not appended a second time
    assert t.chosen_ids.count(bpe_tokenizer.eos_token_id) == 1 and t.chosen_ids[-1] == bpe_tokenizer.eos_token_id


def test_response_already_ending_in_eos_gets_no_second_one(sp_tokenizer, char_tokenizer):
    for tok in (sp_tokenizer, char_tokenizer):
        pair = PreferencePair(id="e", prompt="2+2=", chosen="4" + tok.eos_token, rejected="5")
        t = _one(pair, tok)
        assert t.chosen_ids.count(tok.eos_token_id) == 1 and t.chosen_ids[-1] == tok.eos_token_id
        assert t.rejected_ids.count(tok.eos_token_id) == 1


def test_sft_on_chosen_keeps_every_demonstration(char_tokenizer):
    """`sft.data: chosen`: the train pairs' chosen responses are demonstrations, none dropped."""
    from bench.suite.load import load_suite
    from bench.run.prepare import _sft_examples

    pairs = [PreferencePair(id=str(i), prompt=f"{i}+1=", chosen=str(i + 1), rejected=str(i)) for i in range(5)]
    suite = load_suite("suites/smoke.yaml", ["sft.data=chosen"])
    demos = _sft_examples(suite, pairs)
    out, skipped = tokenize_pairs(demos, char_tokenizer, max_length=32, max_prompt_length=16)
    assert skipped == {} and len(out) == 5
    assert all(t.rejected_ids is None for t in out)


def test_no_examples_left_names_the_section_and_skip_reasons(char_tokenizer):
    from bench.errors import BenchError
    from bench.run.prepare import tokenize_for_training
    from bench.suite.schema import TrainConfig

    pairs = [PreferencePair(id=str(i), prompt="1+1=", chosen="2", rejected="") for i in range(3)]
    with pytest.raises(BenchError, match=r"^sft: no training examples left .*skipped empty_response: 3"):
        tokenize_for_training(pairs, char_tokenizer, TrainConfig(max_length=16, max_prompt_length=8), "sft")
