"""The one record every data source produces: a preference pair over a shared prompt."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PreferencePair:
    """A prompt with a preferred (`chosen`) and a dispreferred (`rejected`) response.

    `prompt` is plain text that each response continues directly (for HH-RLHF it ends in
    "\\n\\nAssistant:" and the response keeps its leading space). `messages` is the chat
    form of the prompt (role user|assistant, content) for tokenizers with a chat template.
    SFT demonstrations carry `rejected=""` and `metadata["sft"] = True`.
    """

    id: str
    prompt: str
    chosen: str
    rejected: str
    # dicts are unhashable: leave them out of the hash so pairs can still go in sets
    messages: tuple[dict, ...] | None = field(default=None, hash=False)
    metadata: dict = field(default_factory=dict, hash=False)


@dataclass
class LoadResult:
    """Pairs from one source, and how many rows were skipped (or noted) for which reason."""

    pairs: list[PreferencePair]
    skipped: dict[str, int]
    source: str
    notes: dict[str, int] = field(default_factory=dict)
