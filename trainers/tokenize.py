"""Tokenise preference pairs for training: prompt and responses separately, then concatenated.

Tokenising the prompt and each response on their own and concatenating the ids makes the
prompt/response boundary exact (a joint tokenisation may merge tokens across it), so the
response mask that the objectives see covers exactly the response tokens.
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
    chosen_ids: list[int]            # response tokens, EOS appended
    rejected_ids: list[int] | None   # None for SFT demonstrations (chosen only)


def render_prompt(pair, tokenizer) -> str:
    """The prompt text: the chat template when the tokenizer has one and the pair has messages."""
    messages = getattr(pair, "messages", None)
    if messages and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return pair.prompt


def _prompt_ids(pair, tokenizer) -> list[int]:
    text = render_prompt(pair, tokenizer)
    # A rendered chat template already carries its own special tokens (BOS included).
    templated = text is not pair.prompt
    return tokenizer(text, add_special_tokens=not templated)["input_ids"]


def _response_ids(text: str, tokenizer) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def _is_demo(pair) -> bool:
    """An SFT demonstration: rejected is None, or the records' convention metadata["sft"]."""
    return getattr(pair, "rejected", None) is None or bool((getattr(pair, "metadata", None) or {}).get("sft"))


def tokenize_pair(pair, tokenizer, *, max_length: int, max_prompt_length: int) -> TokenizedPair | str:
    """One pair -> TokenizedPair, or the skip reason (a string) when it cannot be trained on."""
    rejected_text = None if _is_demo(pair) else pair.rejected
    if not pair.chosen or (rejected_text is not None and not rejected_text):
        return SKIP_EMPTY
    prompt = _prompt_ids(pair, tokenizer)[-max_prompt_length:]   # keep the end: it leads into the response
    room = max_length - len(prompt)
    chosen = _response_ids(pair.chosen, tokenizer)[: max(room, 0)]
    rejected = None if rejected_text is None else _response_ids(rejected_text, tokenizer)[: max(room, 0)]
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
