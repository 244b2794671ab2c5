"""The vLLM backend (CUDA): same records as the hf backend, from `vllm.LLM.generate`.

Imported only through the registry when the `vllm` backend is asked for, so machines
without vLLM (CPU, CI) never import it.
"""
from __future__ import annotations

from bench.errors import BenchError
from bench.generation.base import Generation, GenerationConfig, encode_prompt
from bench.models import resolve_model


class VLLMGenerator:
    """Generate with `vllm.LLM` (bf16 by default; `tensor_parallel_size` GPUs)."""

    def __init__(self, model_path: str, *, tensor_parallel_size: int = 1, dtype: str = "bfloat16",
                 seed: int = 0, gpu_memory_utilization: float = 0.85, trust_remote_code: bool = False,
                 progress: bool = True):
        try:
            import vllm
        except ImportError:
            raise BenchError("generation backend 'vllm' needs the vllm package (CUDA only): "
                             "pip install vllm, or set generation.backend: hf") from None
        self._vllm = vllm
        self.progress = progress
        self.llm = vllm.LLM(model=resolve_model(model_path), tensor_parallel_size=tensor_parallel_size,
                            seed=seed, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                            trust_remote_code=trust_remote_code)

    def sampling_params(self, config: GenerationConfig, min_new_tokens: int = 0):
        return self._vllm.SamplingParams(n=config.n, temperature=config.temperature, top_p=config.top_p,
                                         max_tokens=config.max_new_tokens, seed=config.seed,
                                         min_tokens=min_new_tokens)

    def generate(self, prompts: list[tuple[str, str]], config: GenerationConfig, *,
                 min_new_tokens: int = 0) -> list[Generation]:
        """vLLM schedules its own batches (continuous batching); `batch_size` is not used.
        Prompts go in as token ids from `encode_prompt`, so both backends see the same tokens."""
        tokenizer = self.llm.get_tokenizer()
        inputs = [{"prompt_token_ids": encode_prompt(tokenizer, text)} for _, text in prompts]
        outputs = self.llm.generate(inputs, self.sampling_params(config, min_new_tokens), use_tqdm=self.progress)
        return [record for (pid, _), out in zip(prompts, outputs) for record in records_of(pid, out)]


def records_of(prompt_id: str, request_output) -> list[Generation]:
    """`Generation` records of one vLLM `RequestOutput`, one per completion, by index."""
    completions = sorted(request_output.outputs, key=lambda c: c.index)
    return [Generation(prompt_id=prompt_id, sample_index=c.index, text=c.text, num_tokens=len(c.token_ids),
                       finish_reason="stop" if c.finish_reason == "stop" else "length")
            for c in completions]
