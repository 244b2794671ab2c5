"""`perf mfu`: tokens/s and model-FLOPs utilisation (MFU) of the harness trainer (DPO).

The model is a Qwen2-architecture decoder built from its config with random weights (speed
does not depend on the values; nothing is downloaded): by default the shape of
Qwen2.5-0.5B (hidden 896, 24 layers, 14 query / 2 key-value heads, MLP 4864, vocabulary
151,936, tied embeddings; 494M parameters). Pairs are random token ids, each sequence
(prompt + response) exactly `--seq-len` tokens: half prompt, half response.

Timing: the reference pass (under the same autocast as the trainer's) and the training steps
are timed separately; the first `--warmup-steps` steps (allocator and kernel warm-up) are
not counted.

FLOPs, the 6N/2N convention the issue sets (attention-score FLOPs are not counted):
  forward + backward: 6 * tokens * N_body  +  6 * response_tokens * N_head
  reference forward:  2 * tokens * N_body  +  2 * response_tokens * N_head
where N_body is every parameter but the input embedding (a lookup) and the LM head, N_head
the LM head, and tokens are the tokens the packed layout computes (each prompt once for its
chosen and rejected response). The harness runs the LM head only at response positions, so
counting it there is what it computes; counting it at every token would inflate MFU.
MFU = counted FLOPs / seconds / peak, the peak being this device's measured dense matmul
throughput in the training dtype (bf16 on a GPU, fp32 on a CPU), not a datasheet figure.
The LAST printed line is a JSON object with the figures.
"""
from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

import torch

from bench.errors import BenchError

QWEN2_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1_000_000.0,
                 rms_norm_eps=1e-6, tie_word_embeddings=True)
# The same architecture, small enough for a CPU test of this module.
QWEN2_TINY = dict(QWEN2_05B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512, max_position_embeddings=2048)
SIZES = {"qwen2-0.5b": QWEN2_05B, "qwen2-tiny": QWEN2_TINY}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measured_peak_flops(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 10) -> float:
    """Dense matmul throughput (FLOP/s) of `device` in `dtype`: the best of `repeats` n×n×n products."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def build_model(out_dir: Path, size: str, seed: int) -> Path:
    """A randomly initialised Qwen2 model of `size` saved (fp32) with a tokenizer the trainer can load."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from bench.models import build_char_tokenizer, save_with_tokenizer

    tokenizer = build_char_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2Config(**SIZES[size], pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    return save_with_tokenizer(Qwen2ForCausalLM(config), tokenizer, out_dir)


def random_pairs(n: int, seq_len: int, vocab: int, seed: int) -> list:
    """`n` pairs of random ids: prompt seq_len//2 tokens, each response seq_len - seq_len//2."""
    from trainers.tokenize import TokenizedPair

    rng = random.Random(seed)
    prompt, response = seq_len // 2, seq_len - seq_len // 2
    draw = lambda k: [rng.randrange(3, vocab) for _ in range(k)]  # noqa: E731  (0-2: special ids)
    return [TokenizedPair(id=f"p{i}", prompt_ids=draw(prompt), chosen_ids=draw(response), rejected_ids=draw(response))
            for i in range(n)]


def parameter_counts(model) -> dict:
    """N_body (all but the input embedding and LM head) and N_head, tied weights counted once."""
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())        # a tied head is the embedding, listed once
    body = total - embed.numel() - (0 if head is embed else head.numel())
    return {"total": total, "body": body, "head": head.numel()}


def counted_flops(pairs, counts: dict, multiplier: int) -> float:
    """multiplier (6 train, 2 reference) × (tokens × N_body + response tokens × N_head) over `pairs`."""
    tokens = sum(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    responses = sum(len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    return multiplier * (tokens * counts["body"] + responses * counts["head"])


def run(*, size: str = "qwen2-0.5b", seq_len: int = 1024, batch_size: int = 8, steps: int = 12,
        warmup_steps: int = 2, gradient_checkpointing: bool = False, seed: int = 0, progress: bool = True) -> dict:
    from trainers.models import load_model
    from bench.suite.schema import TrainConfig
    from trainers.objectives import build_objective
    from trainers.reference import compute_reference
    from trainers.trainer import train

    if steps <= warmup_steps:
        raise BenchError(f"--steps ({steps}) must be larger than --warmup-steps ({warmup_steps})")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with tempfile.TemporaryDirectory(prefix="perf_mfu_") as tmp:
        model_dir = build_model(Path(tmp) / "model", size, seed)
        pairs = random_pairs(steps * batch_size, seq_len, SIZES[size]["vocab_size"], seed)

        model = load_model(str(model_dir), trust_remote_code=False, dtype=torch.float32, device=device)
        counts = parameter_counts(model)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
        with autocast:
            compute_reference(model, pairs[:batch_size], batch_size=batch_size, progress=False, pack_to=seq_len)
            _sync(device)                                    # warm-up, then the timed pass
            start = time.perf_counter()
            reference = compute_reference(model, pairs, batch_size=batch_size, progress=progress, pack_to=seq_len)
            _sync(device)
            reference_seconds = time.perf_counter() - start
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

        stamps = {}

        def on_step(step):
            _sync(device)
            stamps[step] = time.perf_counter()

        config = TrainConfig(learning_rate=1e-5, max_steps=steps, batch_size=batch_size, warmup_ratio=0.0,
                             precision="bf16" if dtype == torch.bfloat16 else "fp32", max_length=seq_len,
                             max_prompt_length=seq_len // 2, gradient_checkpointing=gradient_checkpointing,
                             seed=seed, log_every=steps)
        result = train(model_path=model_dir, objective=build_objective([{"name": "dpo", "weight": 1.0, "beta": 0.1}]),
                       train_data=pairs, config=config, out_dir=Path(tmp) / "out", reference=reference,
                       progress=progress, on_step=on_step)
        if result.status != "ok":
            raise BenchError(f"perf mfu: training failed: {result.reason}")
    train_seconds = stamps[steps] - stamps[warmup_steps]
    # Every pair has the same lengths, so any (steps - warmup) × batch pairs count what the timed steps ran.
    timed_pairs = pairs[: (steps - warmup_steps) * batch_size]
    train_flops = counted_flops(timed_pairs, counts, 6)
    reference_flops = counted_flops(pairs, counts, 2)
    peak = measured_peak_flops(device, dtype)
    tokens_timed = 2 * seq_len * len(timed_pairs)                 # prompt+chosen and prompt+rejected
    summary = {
        "model": size, "parameters": counts["total"], "n_body": counts["body"], "n_head": counts["head"],
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."), "seq_len": seq_len, "batch_size": batch_size, "steps": steps,
        "warmup_steps": warmup_steps, "gradient_checkpointing": gradient_checkpointing,
        "train_seconds": train_seconds, "reference_seconds": reference_seconds,
        "train_tokens_per_s": tokens_timed / train_seconds,
        "peak_tflops_measured": peak / 1e12,
        "mfu_train": train_flops / train_seconds / peak,
        "mfu_reference": reference_flops / reference_seconds / peak,
        # the figure: a forward-backward per pair plus its one reference forward
        "mfu": (train_flops + reference_flops * len(timed_pairs) / len(pairs))
               / (train_seconds + reference_seconds * len(timed_pairs) / len(pairs)) / peak,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "tokens_counted": "prompt+chosen and prompt+rejected per pair for tokens/s; FLOPs count each prompt once "
                          "(what the packed layout computes) and the LM head at response positions only",
    }
    _print(summary)
    return summary


def _print(s: dict) -> None:
    print(f"perf mfu: {s['model']} ({s['parameters'] / 1e6:.0f}M parameters), {s['device']}, {s['dtype']}, "
          f"seq_len {s['seq_len']}, {s['batch_size']} pairs/step, {s['steps'] - s['warmup_steps']} timed steps")
    print(f"train:     {s['train_tokens_per_s']:,.0f} tokens/s   MFU {100 * s['mfu_train']:.1f}%")
    print(f"reference: MFU {100 * s['mfu_reference']:.1f}%")
    print(f"combined (one reference forward per trained pair): MFU {100 * s['mfu']:.1f}% "
          f"of a measured {s['peak_tflops_measured']:.1f} TFLOP/s peak")
    print(json.dumps(s))
