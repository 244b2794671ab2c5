"""The vLLM backend (CUDA): same records as the hf backend, from `vllm.LLM.generate`.

Imported only through the registry when the `vllm` backend is asked for, so machines
without vLLM (CPU, CI) never import it.

Lifecycle: one engine per policy, started after the trained policy has been freed
(`trainers.devices.release_memory`) with the suite's `gpu_memory_utilization` and
`max_model_len`, and shut down explicitly by `close()`: `del` alone does not return vLLM's
memory (vLLM issues #6544, #21073), and the next engine reserves its fraction of what is free.
"""
from __future__ import annotations

import contextlib

from bench.errors import BenchError
from bench.evaluation.generation.base import Generation, GenerationConfig, encode_prompt, truncate_prompts
from bench.evaluation.generation.registry import register_backend
from trainers.models import resolve_model
from trainers import devices


@register_backend("vllm", needs_cuda=True, batching=False, lm_eval_model="vllm", package="vllm",
                  install_hint=" (pip install -e '.[vllm]' on a CUDA machine), or use backend: hf",
                  reference="Kwon et al. 2023, PagedAttention (arXiv:2309.06180); lm-eval's VLLM model")
class VLLMGenerator:
    """Generate with `vllm.LLM` (the dtype of `trainers.devices.placement`; `tensor_parallel_size` GPUs)."""

    def __init__(self, model_path: str, *, tensor_parallel_size: int = 1, dtype: str | None = None,
                 seed: int = 0, gpu_memory_utilization: float = 0.85, max_model_len: int | None = None,
                 trust_remote_code: bool = False, progress: bool = True):
        try:
            import vllm
        except ImportError:
            raise BenchError("generation backend 'vllm' needs the vllm package (CUDA only): "
                             "pip install vllm, or set generation.backend: hf") from None
        self._vllm = vllm
        self.progress = progress
        self.truncated = 0
        # generation_config="vllm": vLLM's neutral defaults, not the checkpoint's generation_config
        # (the hf backend overrides it too), so the suite's settings alone decide.
        self.llm = vllm.LLM(model=resolve_model(model_path), tensor_parallel_size=tensor_parallel_size,
                            seed=seed, dtype=dtype or devices.placement("generation").dtype_name,
                            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                            trust_remote_code=trust_remote_code, generation_config="vllm")
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len

    @staticmethod
    def options(section) -> dict:
        """Constructor options from the suite's `generation` section."""
        return {"tensor_parallel_size": section.tensor_parallel_size, "seed": section.seed,
                "gpu_memory_utilization": section.gpu_memory_utilization, "max_model_len": section.max_model_len}

    @staticmethod
    def lm_eval_args(*, tensor_parallel_size: int, gpu_memory_utilization: float,
                     max_model_len: int | None) -> list[str]:
        """lm-eval's VLLM model: tensor parallelism, its memory share and the context limit."""
        args = [f"tensor_parallel_size={tensor_parallel_size}", f"gpu_memory_utilization={gpu_memory_utilization}"]
        return args + ([f"max_model_len={max_model_len}"] if max_model_len else [])

    lm_eval_takes_device = False   # vLLM places itself on its GPUs

    @staticmethod
    def after_lm_eval() -> None:
        """lm-eval's engine is unreferenced now; vLLM's own cleanup returns its memory."""
        with contextlib.suppress(ImportError):
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()

    def sampling_params(self, config: GenerationConfig, min_new_tokens: int = 0):
        # Explicit neutral values for everything the hf backend also pins (bench.evaluation.generation.hf).
        return self._vllm.SamplingParams(n=config.n, temperature=config.temperature, top_p=config.top_p,
                                         top_k=-1, min_p=0.0, repetition_penalty=1.0,
                                         max_tokens=config.max_new_tokens, seed=config.seed,
                                         min_tokens=min_new_tokens)

    def resolved_params(self, config: GenerationConfig) -> dict:
        params = self.sampling_params(config)
        keys = ("n", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_tokens", "seed")
        return {"backend": "vllm", **{k: getattr(params, k) for k in keys}, "max_model_len": self.max_model_len}

    def generate(self, prompts: list[tuple[str, str]], config: GenerationConfig, *,
                 min_new_tokens: int = 0) -> list[Generation]:
        """vLLM schedules its own batches (continuous batching); `batch_size` is not used.
        Prompts go in as token ids from `encode_prompt`, cut by the rule the hf backend uses, so
        both backends see the same tokens and an over-long prompt never fails the request."""
        tokenizer = self.llm.get_tokenizer()
        encoded, self.truncated = truncate_prompts([encode_prompt(tokenizer, text) for _, text in prompts],
                                                   self.max_model_len, config.max_new_tokens, tokenizer.bos_token_id)
        inputs = [{"prompt_token_ids": ids} for ids in encoded]
        outputs = self.llm.generate(inputs, self.sampling_params(config, min_new_tokens), use_tqdm=self.progress)
        return [record for (pid, _), out in zip(prompts, outputs) for record in records_of(pid, out)]

    def close(self) -> None:
        """Shut the engine down and return its GPU memory (LLM.shutdown where this vLLM has it,
        then vLLM's own distributed/memory cleanup)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        if hasattr(llm, "shutdown"):
            llm.shutdown()
        del llm
        with contextlib.suppress(ImportError):
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        devices.release_memory()


def records_of(prompt_id: str, request_output) -> list[Generation]:
    """`Generation` records of one vLLM `RequestOutput`, one per completion, by index."""
    completions = sorted(request_output.outputs, key=lambda c: c.index)
    return [Generation(prompt_id=prompt_id, sample_index=c.index, text=c.text, num_tokens=len(c.token_ids),
                       finish_reason="stop" if c.finish_reason == "stop" else "length")
            for c in completions]
