"""Tokenise preference pairs for training as TRL's DPOTrainer does: prompt and response
together, split at the boundary.

`prompt + response` is tokenised as one text and the prompt's own tokenisation marks where
the response starts (their longest common prefix, the smaller one over chosen and rejected,
as TRL does). Tokenising the response on its own instead gives tokens the model never sees
in running text: a SentencePiece "legacy" tokenizer (Llama-2, Mistral-v0.1) puts an extra
'▁' before every response, and a byte-level BPE splits a leading space differently.

Conversational pairs (with `messages`) on a tokenizer with a chat template are rendered
through it: the prompt with the generation prompt, the response as the assistant turn
(stripped: HH's leading space belongs to the plain "Assistant: ..." format, not to a turn).
Every response ends with exactly one EOS: appended when the text does not already end
with it (a chat template's end-of-turn token that *is* the EOS is not doubled, and what the
template writes after it, such as a newline, is dropped).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tqdm.auto import tqdm


SKIP_TRUNCATED = "response_truncated_away"
SKIP_EMPTY = "empty_response"


@dataclass
class TokenizedPair:
    id: str
    prompt_ids: list[int]
    chosen_ids: list[int]            # response tokens, ending in one EOS unless cut by max_length
    rejected_ids: list[int] | None   # None for SFT demonstrations (chosen only)


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered text, with BOS exactly once: the one encoding rule of training
    and of every generation backend (`bench.evaluation.generation`).

    A chat-template rendering already starts with its BOS string, so it is tokenised
    without special tokens; any other text gets the tokenizer's own special tokens.
    """
    bos = tokenizer.bos_token
    return tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]


def templated(pair, tokenizer) -> bool:
    """Whether the pair is rendered through the chat template (it has messages, the tokenizer a template)."""
    return bool(getattr(pair, "messages", None)) and bool(getattr(tokenizer, "chat_template", None))


def render_prompt(pair, tokenizer) -> str:
    """The prompt text: the chat template when the tokenizer has one and the pair has messages."""
    if templated(pair, tokenizer):
        return tokenizer.apply_chat_template(list(pair.messages), add_generation_prompt=True, tokenize=False)
    return pair.prompt


def render_full(pair, response: str, tokenizer) -> str:
    """Prompt and response as one text, in the same format as `render_prompt`."""
    if templated(pair, tokenizer):
        turn = {"role": "assistant", "content": response.strip()}
        return tokenizer.apply_chat_template([*pair.messages, turn], tokenize=False)
    return pair.prompt + response


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _end_with_one_eos(ids: list[int], eos: int) -> list[int]:
    """Cut after the last EOS when the response has one (the template's end of turn), else append it."""
    if eos in ids:
        last = len(ids) - 1 - ids[::-1].index(eos)
        return ids[: last + 1]
    return ids + [eos]


def _is_demo(pair) -> bool:
    """An SFT demonstration: rejected is None, or the records' convention metadata["sft"]."""
    return getattr(pair, "rejected", None) is None or bool((getattr(pair, "metadata", None) or {}).get("sft"))


def split_pair(pair, tokenizer) -> tuple[list[int], list[int], list[int] | None] | str:
    """(prompt ids, chosen ids, rejected ids or None) untruncated, or a skip reason."""
    rejected_text = None if _is_demo(pair) else pair.rejected
    if not (pair.chosen or "").strip() or (rejected_text is not None and not rejected_text.strip()):
        return SKIP_EMPTY
    prompt = encode_prompt(tokenizer, render_prompt(pair, tokenizer))
    full_chosen = encode_prompt(tokenizer, render_full(pair, pair.chosen, tokenizer))
    full_rejected = None if rejected_text is None else encode_prompt(tokenizer, render_full(pair, rejected_text, tokenizer))
    # Where the response starts: the prompt's tokens may merge with the response's first ones
    # (TRL: the common prefix of prompt and prompt+response, the smaller over the two responses).
    cut = min(_common_prefix(prompt, full) for full in (full_chosen, full_rejected) if full is not None)
    eos = tokenizer.eos_token_id
    chosen = _end_with_one_eos(full_chosen[cut:], eos)
    rejected = None if full_rejected is None else _end_with_one_eos(full_rejected[cut:], eos)
    if chosen == [eos] or (rejected is not None and rejected == [eos]):
        return SKIP_EMPTY
    return prompt[:cut], chosen, rejected


def tokenize_pair(pair, tokenizer, *, max_length: int, max_prompt_length: int) -> TokenizedPair | str:
    """One pair -> TokenizedPair, or the skip reason (a string) when it cannot be trained on."""
    split = split_pair(pair, tokenizer)
    if isinstance(split, str):
        return split
    prompt, chosen, rejected = split
    prompt = prompt[-max_prompt_length:]   # keep the end: it leads into the response
    room = max(max_length - len(prompt), 0)
    chosen = chosen[:room]
    rejected = None if rejected is None else rejected[:room]
    if not chosen or (rejected is not None and not rejected):
        return SKIP_TRUNCATED
    return TokenizedPair(id=str(pair.id), prompt_ids=prompt, chosen_ids=chosen, rejected_ids=rejected)


def tokenize_pairs(pairs, tokenizer, *, max_length: int, max_prompt_length: int, progress: bool = False):
    """Tokenise pairs; returns (tokenized, skipped) with skipped = {reason: count}.

    Truncation (docs/CONTRACTS.md): the prompt keeps its last `max_prompt_length` tokens,
    each response is cut so that prompt + response <= `max_length`; a pair whose chosen or
    rejected response is empty or loses all its tokens is skipped and counted, never trained on.
    An SFT demonstration (`rejected` None or `metadata['sft']`) gets `rejected_ids=None`.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; responses must end with one")
    out, skipped = [], Counter()
    for pair in tqdm(pairs, desc="tokenize", unit="pair", disable=not progress):
        result = tokenize_pair(pair, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)
        if isinstance(result, str):
            skipped[result] += 1
        else:
            out.append(result)
    return out, dict(skipped)
