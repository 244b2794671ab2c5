"""Build tiny models and a tokenizer in code (loading is `trainers.models`).

The embedded default must run offline, so its tokenizer (character level, built with the
`tokenizers` library) and its Llama-architecture models are made from a config here and
saved as ordinary Hugging Face directories (safetensors) that transformers, lm-eval and
vLLM load like any other model.
"""
from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)


SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
# Every printable ASCII character is one token: enough for arithmetic and for English text.
CHARACTERS = [c for c in string.printable if c not in "\r\x0b\x0c"]


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer built in code (no download), decoding without spaces."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for ch in CHARACTERS:
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL_TOKENS)
    tok.padding_side = "right"
    tok.model_max_length = 4096
    return tok


# The word-level tokenizer: a pre-token is an optional leading space plus a whole number,
# a word or one other character (or a lone whitespace character). Whole numbers and words
# as single tokens make per-token log-ratios carry the decisions (a step's result is one
# token), where a character tokenizer spreads them thin over formatting characters.
WORD_PATTERN = r" ?(?:[0-9]+|[A-Za-z]+|[^\sA-Za-z0-9])|\s"
WORD_MAX_NUMBER = 999


def build_word_tokenizer(words=()) -> PreTrainedTokenizerFast:
    """A word-level tokenizer built in code: numbers 0..999, `words`, and every printable
    character, each with and without a leading space; anything else is <unk>."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    pieces = [str(n) for n in range(WORD_MAX_NUMBER + 1)] + list(words) + [c for c in CHARACTERS if not c.isspace()]
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
        vocab.setdefault(" " + piece, len(vocab))
    for ch in CHARACTERS:
        if ch.isspace():
            vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL_TOKENS)
    tok.padding_side = "right"
    tok.model_max_length = 4096
    return tok


def build_builtin_tokenizer(kind: str, words=()) -> PreTrainedTokenizerFast:
    """The builtin model's tokenizer by name: "char" or "word" (see the two builders)."""
    if kind == "word":
        return build_word_tokenizer(words)
    if kind == "char":
        return build_char_tokenizer()
    raise ValueError(f"unknown builtin tokenizer {kind!r} (char or word)")


def tiny_llama_config(tokenizer, *, hidden_size=64, layers=2, heads=4, max_positions=512, num_labels=None):
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    if num_labels is not None:
        cfg.num_labels = num_labels
    return cfg


def build_tiny_causal_lm(out_dir, tokenizer, *, hidden_size=64, layers=2, heads=4, seed=0) -> Path:
    """A randomly initialised tiny Llama decoder saved with its tokenizer; returns the dir."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, hidden_size=hidden_size, layers=layers, heads=heads))
    return save_with_tokenizer(model, tokenizer, out_dir)


def build_tiny_reward_model(out_dir, tokenizer, *, hidden_size=64, layers=2, heads=4, seed=0) -> Path:
    """A randomly initialised tiny sequence-classification model (one score) with its tokenizer."""
    torch.manual_seed(seed)
    cfg = tiny_llama_config(tokenizer, hidden_size=hidden_size, layers=layers, heads=heads, num_labels=1)
    return save_with_tokenizer(LlamaForSequenceClassification(cfg), tokenizer, out_dir)


def save_with_tokenizer(model, tokenizer, out_dir) -> Path:
    """`model` (safetensors) and `tokenizer` in one Hugging Face directory; returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
