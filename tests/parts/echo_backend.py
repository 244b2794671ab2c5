"""A one-file generation backend, as a contributor writes one (the README's example).

It "generates" the last `max_new_tokens` characters of the prompt, reversed: no model, so
tests run it through the real evaluate and validate paths in milliseconds.
"""
from __future__ import annotations

from bench.evaluation.generation.base import Generation, GenerationConfig
from bench.evaluation.generation.registry import register_backend


@register_backend("echo", needs_cuda=False, batching=False, lm_eval_model=None,
                  reference="none: a test backend that reverses the prompt's tail")
class EchoGenerator:
    def __init__(self, model_path: str, *, progress: bool = True, trust_remote_code: bool = False,
                 max_model_len: int | None):
        self.model_path, self.max_model_len, self.truncated = model_path, max_model_len, 0

    @staticmethod
    def options(section) -> dict:          # what it takes from the suite's generation section
        return {"max_model_len": section.max_model_len}

    def generate(self, prompts: list[tuple[str, str]], config: GenerationConfig) -> list[Generation]:
        return [Generation(pid, k, text[::-1][:config.max_new_tokens], min(len(text), config.max_new_tokens),
                           "stop" if len(text) <= config.max_new_tokens else "length")
                for pid, text in prompts for k in range(config.n)]

    def resolved_params(self, config: GenerationConfig) -> dict:
        return {"backend": "echo", "max_new_tokens": config.max_new_tokens, "max_model_len": self.max_model_len}

    def close(self) -> None:
        pass
