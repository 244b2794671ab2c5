"""The transformers backend: batched, left-padded, KV-cached `model.generate` (the CPU path).

Prompts are sorted by token length (longest first, so an out-of-memory shows at once) and
cut into batches, so a batch pads little; records are returned in input order.

Special tokens: prompts arrive as rendered text; `base.encode_prompt` adds BOS exactly once
(not again to a chat-template rendering that already starts with it).
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig as HFGenerationConfig

from bench.evaluation.generation.base import Generation, GenerationConfig, encode_prompt, truncate_prompts
from bench.evaluation.generation.registry import register_backend
from trainers.models import load_model, load_tokenizer
from trainers import devices


@register_backend("hf", needs_cuda=False, batching=True, lm_eval_model="hf",
                  reference="transformers' GenerationMixin.generate; lm-eval's HFLM")
class HFGenerator:
    """Generate with a transformers causal LM loaded from `model_path` (bf16 on GPU, fp32 on CPU)."""

    def __init__(self, model_path: str, *, device: str | None = None, dtype=None,
                 trust_remote_code: bool = False, progress: bool = True, max_model_len: int | None = None):
        self.tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
        self.model = load_model(model_path, trust_remote_code=trust_remote_code, role="generation", dtype=dtype,
                                device=torch.device(device) if device else None).eval()
        self.device = self.model.device
        self.progress = progress
        self.eos_ids = _eos_ids(self.tokenizer, self.model)
        # The context limit: the suite's max_model_len, else the model's positions.
        self.max_model_len = max_model_len or getattr(self.model.config, "max_position_embeddings", None)
        self.truncated = 0

    @staticmethod
    def options(section) -> dict:
        """Constructor options from the suite's `generation` section."""
        return {"max_model_len": section.max_model_len}

    @staticmethod
    def lm_eval_args(*, tensor_parallel_size: int, gpu_memory_utilization: float,
                     max_model_len: int | None) -> list[str]:
        """lm-eval's HFLM: the model split over the GPUs (its `parallelize`) and the context limit."""
        args = ["parallelize=True"] if tensor_parallel_size > 1 else []
        return args + ([f"max_length={max_model_len}"] if max_model_len else [])

    # lm-eval's HFLM takes the device (trainers.devices.placement's); vLLM places itself.
    lm_eval_takes_device = True

    worker_imports: tuple[str, ...] = ()   # transformers' generation: already in every worker's warm-up

    @staticmethod
    def after_lm_eval() -> None:
        """Nothing beyond trainers.devices.release_memory, which the scorer calls for every backend."""

    def encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    def resolved_params(self, config: GenerationConfig) -> dict:
        """The decoding settings generate() runs with, and the checkpoint's own ones it overrides."""
        return {"backend": "hf", **self._hf_config(config, 0).to_diff_dict(),
                "checkpoint_generation_config": self.model.generation_config.to_diff_dict()}

    def generate(self, prompts: list[tuple[str, str]], config: GenerationConfig, *,
                 min_new_tokens: int = 0) -> list[Generation]:
        """Records for every prompt in input order, samples 0..n-1 each.

        Sampling is seeded once per call (torch's RNG, forked so the caller's stream is left
        alone): the same prompts, batch size and seed give the same texts.
        `min_new_tokens` suppresses EOS before that many tokens (used by `perf generate`).
        """
        encoded, self.truncated = truncate_prompts([self.encode(text) for _, text in prompts], self.max_model_len,
                                                   config.max_new_tokens, self.tokenizer.bos_token_id)
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        hf_config = self._hf_config(config, min_new_tokens)
        results: dict[int, list[Generation]] = {}
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(config.seed)
            for batch in tqdm(batches, desc="generate", unit="batch", disable=not self.progress):
                rows = self._generate_batch([encoded[i] for i in batch], hf_config)
                for j, i in enumerate(batch):
                    results[i] = [self._record(prompts[i][0], k, rows[j * config.n + k])
                                  for k in range(config.n)]
        return [gen for i in range(len(prompts)) for gen in results[i]]

    def close(self) -> None:
        """Free the model (the next stage's engine needs the memory)."""
        self.model = None
        devices.release_memory()

    def _hf_config(self, config: GenerationConfig, min_new_tokens: int) -> HFGenerationConfig:
        # Every setting that changes which token is picked is given explicitly: generate() fills
        # the ones left unset from the checkpoint's generation_config (a released model's
        # repetition_penalty, top_k...), which vLLM does not, so the suite alone decides.
        # top_k=0 disables HF's default top-50 cut, matching vLLM's (no top-k) default.
        return HFGenerationConfig(
            max_new_tokens=config.max_new_tokens, min_new_tokens=min_new_tokens or None,
            do_sample=not config.greedy, num_return_sequences=config.n, use_cache=True, num_beams=1,
            temperature=1.0 if config.greedy else config.temperature, top_p=1.0 if config.greedy else config.top_p,
            top_k=0, min_p=0.0, typical_p=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0, length_penalty=1.0,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=sorted(self.eos_ids))

    def _generate_batch(self, batch: list[list[int]], hf_config) -> list[list[int]]:
        """Left-pad a batch, generate, return each row's new tokens (prompt removed)."""
        width = max(len(ids) for ids in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=self.device)
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=hf_config)
        return out[:, width:].tolist()

    def _record(self, prompt_id: str, sample_index: int, new_tokens: list[int]) -> Generation:
        """Cut at the first EOS (what follows is padding of an early-finished row)."""
        stop = next((k for k, tok in enumerate(new_tokens) if tok in self.eos_ids), None)
        tokens = new_tokens if stop is None else new_tokens[:stop]
        return Generation(
            prompt_id=prompt_id, sample_index=sample_index,
            text=self.tokenizer.decode(tokens, skip_special_tokens=True),
            num_tokens=len(new_tokens) if stop is None else stop + 1,
            finish_reason="length" if stop is None else "stop",
        )


def _eos_ids(tokenizer, model) -> set[int]:
    """The tokenizer's EOS and any the model's generation config adds (e.g. chat end-of-turn)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if configured is not None:
        ids |= set(configured) if isinstance(configured, (list, tuple)) else {configured}
    return ids
