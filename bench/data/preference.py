"""`preference`: rows with prompt/chosen/rejected columns, UltraFeedback-binarized style.

Values are strings, or chat-message lists whose last assistant message is the response
(the prompt column then holds the context when the lists hold the responses only). Rows
are read from `data.path` or `data.hub_id` by `bench.data.sources`; this module turns one
row into a pair or names why it is skipped.
"""
from __future__ import annotations

from bench.data.hh_rlhf import ASSISTANT
from bench.data.registry import register_rows_source


@register_rows_source("preference", reference="prompt/chosen/rejected columns as in TRL's preference datasets; "
                     "HuggingFaceH4/ultrafeedback_binarized (Tunstall et al. 2023, Zephyr, arXiv:2310.16944)")
def preference_row(row: dict):
    """prompt/chosen/rejected as strings, or chat-message lists (last assistant message = response)."""
    chosen, rejected, prompt = row.get("chosen"), row.get("rejected"), row.get("prompt")
    if chosen is None or rejected is None:
        return "missing_field"
    if isinstance(chosen, str) and isinstance(rejected, str) and isinstance(prompt, str):
        return _string_pair(prompt, chosen, rejected)
    return _chat_pair(prompt, chosen, rejected)


def _string_pair(prompt: str, chosen: str, rejected: str):
    # some exports repeat the prompt at the start of each response: keep only the continuation
    if prompt and chosen.startswith(prompt) and rejected.startswith(prompt):
        chosen, rejected = chosen[len(prompt) :], rejected[len(prompt) :]
    return _checked(prompt, chosen, rejected, None)


def _chat_pair(prompt, chosen, rejected):
    if isinstance(chosen, str) and isinstance(rejected, str):
        if not _is_messages(prompt):
            return "missing_field" if prompt is None else "unparseable"
        return _checked(render_plain(prompt), _space(chosen), _space(rejected), _freeze(prompt))
    if not (_is_messages(chosen) and _is_messages(rejected)) or not chosen or not rejected:
        return "unparseable"
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        return "unparseable"
    head_c, head_r = chosen[:-1], rejected[:-1]
    if head_c and head_r and head_c != head_r:
        return "prompts_differ"
    context = head_c or head_r
    if not context:  # responses only: the prompt column holds the context
        if isinstance(prompt, str):
            context = [{"role": "user", "content": prompt}]
        elif _is_messages(prompt):
            context = prompt
        else:
            return "missing_field"
    return _checked(render_plain(context), _space(chosen[-1]["content"]), _space(rejected[-1]["content"]), _freeze(context))


def _checked(prompt, chosen, rejected, messages):
    if not chosen.strip() or not rejected.strip():
        return "empty_response"
    if chosen == rejected:
        return "identical_responses"
    return prompt, chosen, rejected, messages, None


def _is_messages(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    )


def _freeze(messages) -> tuple[dict, ...]:
    return tuple({"role": m["role"], "content": m["content"]} for m in messages)


def _space(text: str) -> str:
    return text if text.startswith((" ", "\n")) else " " + text


_LABEL = {"user": "Human", "assistant": "Assistant", "system": "System"}


def render_plain(messages) -> str:
    """Chat messages as HH-style plain text ending in the Assistant marker, for models without a chat template."""
    turns = "".join(f"\n\n{_LABEL.get(m['role'], m['role'].title())}: {m['content']}" for m in messages)
    return turns + ASSISTANT
