"""The generation interface: settings, records, the prompt-truncation rule, jsonl helpers.

A backend turns `(prompt_id, prompt_text)` pairs into `Generation` records, identical in
shape whichever backend produced them (lm-eval's narrow `LM` interface is the model).
Backends register themselves in `bench.evaluation.generation.registry` (`get_generator`
is re-exported here); `vllm` (CUDA-only) is imported only when its backend starts.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal, Protocol

from bench.errors import BenchError, DataError
from bench.io import atomic_write
from bench.evaluation.generation.registry import get_generator  # noqa: F401  (the interface's entry point)
# Prompts are encoded by training's rule (BOS exactly once) in every backend.
from trainers.tokenize import encode_prompt  # noqa: F401


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings shared by every backend (temperature 0 = greedy)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    batch_size: int = 64

    @classmethod
    def from_section(cls, section) -> GenerationConfig:
        """From a suite's `bench.suite.schema.GenerationConfigSection` (backend options stay there)."""
        return cls(**{f.name: getattr(section, f.name) for f in fields(cls)})

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Generation:
    """One sampled response: `text` excludes EOS and special tokens; `num_tokens` counts the
    generated tokens up to and including EOS; `finish_reason` is 'stop' when EOS was produced."""

    prompt_id: str
    sample_index: int
    text: str
    num_tokens: int
    finish_reason: Literal["stop", "length"]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> Generation:
        return cls(prompt_id=str(row["prompt_id"]), sample_index=int(row["sample_index"]), text=row["text"],
                   num_tokens=int(row["num_tokens"]), finish_reason=row["finish_reason"])


class Generator(Protocol):
    def generate(self, prompts: list[tuple[str, str]], config: GenerationConfig) -> list[Generation]:
        """Records for every prompt, prompts in input order, samples 0..n-1 within a prompt."""


def truncate_prompts(encoded: list[list[int]], max_model_len: int | None, max_new_tokens: int,
                     bos_id: int | None = None) -> tuple[list[list[int]], int]:
    """The one prompt-truncation rule of every backend: a prompt longer than
    `max_model_len - max_new_tokens` keeps its last tokens (they lead into the response; a
    leading BOS is kept too), so prompt plus generation fit the context and no request fails.
    Returns (prompts, how many were cut); no limit (None) cuts nothing."""
    if max_model_len is None:
        return encoded, 0
    room = max_model_len - max_new_tokens
    if room < 1:
        raise BenchError(f"generation.max_new_tokens ({max_new_tokens}) leaves no room for a prompt in the "
                         f"context of {max_model_len} tokens (generation.max_model_len or the model's)")
    out, cut = [], 0
    for ids in encoded:
        if len(ids) > room:
            cut += 1
            keep_bos = bos_id is not None and ids[0] == bos_id
            ids = ([bos_id] + ids[len(ids) - room + 1:]) if keep_bos else ids[len(ids) - room:]
        out.append(ids)
    return out, cut


def write_generations(path, generations) -> Path:
    """One JSON object per line; written to a temporary name, then renamed (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(gen.to_dict(), ensure_ascii=False) + "\n" for gen in generations)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_generations(path) -> list[Generation]:
    out = []
    with Path(path).open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(Generation.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{path}: line {line_no}: not a generation record ({exc})") from None
    return out
