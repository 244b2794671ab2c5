"""Anthropic HH-RLHF rows (`chosen`/`rejected` full conversations) into preference pairs.

A row holds two whole conversations, ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``, that
normally share every turn but the last Assistant reply. The prompt is the text up to and
including the last ``"\\n\\nAssistant:"`` marker, and each response is the rest (with its
leading space), so ``prompt + chosen`` reproduces the original chosen conversation.

Some rows diverge earlier (the two conversations differ before the last reply). Then the
prompt is the longest common prefix *at turn granularity*: the common leading turns,
ending at the ``"\\n\\nAssistant:"`` marker of the first Assistant turn where the two
differ; each response is the remainder of its conversation (which may span several
turns). Such pairs are kept and counted under the note `prompt_from_common_prefix`.
Only when no Assistant marker is shared (nothing to use as a prompt) is the row skipped
(`prompts_differ`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from bench.data.registry import register_rows_source

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_MARKER = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}


@dataclass(frozen=True)
class Turn:
    role: str | None    # "user" | "assistant"; None for text before the first marker
    marker: str         # the marker as written ("" for leading text)
    content: str        # text after the marker, leading space kept


def split_turns(text: str) -> list[Turn]:
    """The conversation as turns; joining marker + content of all turns gives `text` back."""
    turns, starts = [], list(_MARKER.finditer(text))
    if not starts or starts[0].start() > 0:
        turns.append(Turn(None, "", text[: starts[0].start()] if starts else text))
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        turns.append(Turn(_ROLE[m.group(1)], m.group(0), text[m.end() : end]))
    return turns


@dataclass(frozen=True)
class HHParse:
    prompt: str
    chosen: str
    rejected: str
    messages: tuple[dict, ...]
    from_common_prefix: bool


def parse_hh(chosen_text: str, rejected_text: str) -> HHParse | str:
    """A parsed pair, or the skip reason: unparseable | prompts_differ | identical_responses | empty_response."""
    if not isinstance(chosen_text, str) or not isinstance(rejected_text, str):
        return "missing_field"
    if chosen_text == rejected_text:
        return "identical_responses"
    a, b = split_turns(chosen_text), split_turns(rejected_text)
    if not any(t.role == "assistant" for t in a) or not any(t.role == "assistant" for t in b):
        return "unparseable"
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    # the prompt ends at the marker of the last Assistant turn that both have, at or before the split
    cut = next((j for j in range(min(common, len(a) - 1, len(b) - 1), -1, -1)
                if a[j].role == "assistant" and b[j].role == "assistant"), None)
    if cut is None or cut == 0:
        return "prompts_differ"
    prompt = "".join(t.marker + t.content for t in a[:cut]) + a[cut].marker
    chosen = "".join(t.marker + t.content for t in a[cut:])[len(a[cut].marker) :]
    rejected = "".join(t.marker + t.content for t in b[cut:])[len(b[cut].marker) :]
    if not chosen.strip() or not rejected.strip():
        return "empty_response"
    if chosen == rejected:
        return "identical_responses"
    messages = tuple({"role": t.role, "content": t.content.strip()} for t in a[:cut] if t.role)
    divergent = cut < len(a) - 1 or cut < len(b) - 1
    return HHParse(prompt, chosen, rejected, messages, divergent)


@register_rows_source("hh_rlhf", hub_id="Anthropic/hh-rlhf", splits=("train", "test"),
                      reference="Bai et al. 2022, Training a Helpful and Harmless Assistant with RLHF "
                                "(arXiv:2204.05862)")
def hh_row(row: dict):
    """One HH-RLHF row (two whole conversations) as a pair, or the reason it is skipped."""
    if not isinstance(row.get("chosen"), str) or not isinstance(row.get("rejected"), str):
        return "missing_field"
    parsed = parse_hh(row["chosen"], row["rejected"])
    if isinstance(parsed, str):
        return parsed
    note = "prompt_from_common_prefix" if parsed.from_common_prefix else None
    return parsed.prompt, parsed.chosen, parsed.rejected, parsed.messages, note
