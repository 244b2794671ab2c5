"""`perf train`: the harness trainer against TRL's DPOTrainer on the same tiny model and data.

One invocation builds a tiny Llama (hidden 256, 4 layers, character tokenizer) and random
arithmetic-like pairs, then runs, each in its own subprocess (so peak memory is per run):
  harness          trainers.trainer.train with dpo (its one-time reference pass INCLUDED),
                   packed micro-batches with the prompt shared by chosen and rejected;
  harness_padded   the same with `packing: false` (one padded row per sequence, as TRL),
                   an ablation that shows what packing contributes;
  trl              trl.DPOTrainer, library defaults (reference model kept, forward each step);
  trl_precompute   trl.DPOTrainer with precompute_ref_log_probs=True (its pass included).
All runs: same pairs, batch size, max_length, fp32, no
gradient checkpointing (TRL defaults to it; disabled so both do the same work), steps.
Both are timed end to end from raw pairs to a trained model: the harness over
tokenisation + `train()` (model load, its one-time reference pass, the steps, the
checkpoint write); TRL over `DPOTrainer(...)` (model and reference load, tokenisation) +
`trainer.train()` (its precompute pass included when enabled; no checkpoint written).
TRL's `train()`-only time is reported too. tokens/s counts real (unpadded) prompt+response tokens of chosen and rejected sequences.
Peak memory: the worker process's peak resident set size (getrusage ru_maxrss), and the
same minus the RSS measured just before training starts (after imports and model load).
The LAST printed line is a JSON object with the figures.
"""
from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

MODES = ("harness", "harness_padded", "trl", "trl_precompute")
LR = 5e-5


def make_pairs(n: int, seed: int) -> list[dict]:
    """Random arithmetic-like prompt/chosen/rejected strings of varied length (< 48 chars each)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        terms = [rng.randint(0, 10 ** rng.randint(1, 4)) for _ in range(rng.randint(2, 6))]
        prompt = "Q: " + "+".join(map(str, terms)) + " = ?\nA:"
        total = sum(terms)
        steps = " ".join(f"{t}" for t in terms[: rng.randint(0, 4)])
        chosen = f" {steps} so {total}".replace("  ", " ")
        rejected = f" {total + rng.choice([-10, -1, 1, 9, 100])}" + " wrong" * rng.randint(0, 3)
        rows.append({"id": f"p{i}", "prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: kilobytes


# ---- workers (run in a subprocess) ------------------------------------------------------
def _worker_harness(work: Path, cfg: dict, packing: bool = True) -> dict:
    from trainers.models import load_tokenizer
    from bench.suite.schema import TrainConfig
    from trainers.objectives import build_objective
    from trainers.trainer import train

    rows = json.loads((work / "pairs.json").read_text())
    base = _rss_mb()
    start = time.perf_counter()
    data = _tokenize(rows, load_tokenizer(str(work / "model"), trust_remote_code=False), cfg["max_length"])
    config = TrainConfig(learning_rate=LR, max_steps=cfg["steps"], batch_size=cfg["batch_size"], warmup_ratio=0.0,
                         precision="fp32", max_length=cfg["max_length"], max_prompt_length=cfg["max_length"] // 2,
                         seed=cfg["seed"], log_every=cfg["steps"], packing=packing)
    res = train(model_path=work / "model", objective=build_objective([{"name": "dpo", "weight": 1.0, "beta": 0.1}]),
                train_data=data, config=config, out_dir=tempfile.mkdtemp(dir=work, prefix="harness_out_"),
                progress=cfg["progress"])   # a fresh dir: a finished one would return at once
    seconds = time.perf_counter() - start
    assert res.status == "ok", res.reason
    return {"seconds": seconds, "rss_before_mb": base}


def _tokenize(rows: list[dict], tokenizer, max_length: int) -> list:
    """The harness's tokenisation of the benchmark pairs (none may be truncated away)."""
    from bench.data.records import PreferencePair
    from trainers.tokenize import tokenize_pairs

    data, skipped = tokenize_pairs([PreferencePair(**r) for r in rows], tokenizer, max_length=max_length,
                                   max_prompt_length=max_length // 2)
    assert not skipped, skipped
    return data


def token_slots(rows: list[dict], tokenizer, *, steps: int, batch_size: int, max_length: int, seed: int) -> dict:
    """Input positions the harness's training forwards take in each layout, over the run's own
    micro-batches (the trainer's data order and micro-batching), and how many of the packed
    ones hold a real token (each prompt once, both responses)."""
    from trainers.data_order import DataOrder
    from trainers.logps import collate_pairs
    from trainers.reference import sequence_length

    data = _tokenize(rows, tokenizer, max_length)
    order = DataOrder(len(data), batch_size, seed)
    lengths = [sequence_length(p) for p in data]
    slots = {"packed_slots": 0, "padded_slots": 0, "packed_real_tokens": 0}
    for step in range(steps):
        for idx in order.micro_batches(step, lengths=lengths, batch_size=batch_size):
            pairs = [data[i] for i in idx]
            slots["packed_slots"] += collate_pairs(pairs, 0, pack_to=max_length).input_ids.numel()
            slots["padded_slots"] += collate_pairs(pairs, 0).input_ids.numel()
            slots["packed_real_tokens"] += sum(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids)
                                               for p in pairs)
    return slots


def _worker_trl(work: Path, cfg: dict, precompute: bool) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from trainers.models import load_tokenizer

    rows = json.loads((work / "pairs.json").read_text())
    ds = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    args = DPOConfig(
        output_dir=str(work / f"trl_out_{int(precompute)}"), per_device_train_batch_size=cfg["batch_size"],
        gradient_accumulation_steps=1, max_steps=cfg["steps"], learning_rate=LR, lr_scheduler_type="linear",
        warmup_steps=0, max_length=cfg["max_length"], beta=0.1, bf16=False, fp16=False,
        gradient_checkpointing=False, precompute_ref_log_probs=precompute, logging_steps=cfg["steps"],
        save_strategy="no", report_to="none", seed=cfg["seed"], dataloader_num_workers=0,
        disable_tqdm=not cfg["progress"], use_cpu=not torch.cuda.is_available(),
        model_init_kwargs={"dtype": torch.float32},
    )
    tokenizer = load_tokenizer(str(work / "model"), trust_remote_code=False)
    base = _rss_mb()
    start = time.perf_counter()
    trainer = DPOTrainer(model=str(work / "model"), args=args, train_dataset=ds, processing_class=tokenizer)
    train_start = time.perf_counter()
    trainer.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    end = time.perf_counter()
    return {"seconds": end - start, "train_only_seconds": end - train_start, "rss_before_mb": base}


def _worker(mode: str, work: Path) -> None:
    cfg = json.loads((work / "config.json").read_text())
    torch.manual_seed(cfg["seed"])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if mode.startswith("harness"):
        out = _worker_harness(work, cfg, packing=mode == "harness")
    else:
        out = _worker_trl(work, cfg, precompute=mode == "trl_precompute")
    out["peak_rss_mb"] = _peak_rss_mb()
    out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print("PERF_RESULT " + json.dumps(out), flush=True)


# ---- the driver -------------------------------------------------------------------------
def _real_tokens(rows: list[dict], tokenizer) -> int:
    """Unpadded tokens of prompt+chosen and prompt+rejected (+ EOS each), as both trainers see them."""
    n = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    return sum(2 * n(r["prompt"]) + n(r["chosen"]) + n(r["rejected"]) + 2 for r in rows)


def _run_worker(mode: str, work: Path, progress: bool) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "bench.perf.train", "--worker", mode, str(work)],
                          cwd=Path(__file__).resolve().parents[2], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PERF_RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"perf train: the {mode} run failed (exit {proc.returncode}): {(proc.stderr or '')[-2000:]}")
    return json.loads(lines[-1][len("PERF_RESULT "):])


def run(*, steps: int = 20, batch_size: int = 8, max_length: int = 128, seed: int = 0, progress: bool = True,
        repeats: int = 1) -> dict:
    """Run the three trainers; print a table and, as the LAST line, a JSON summary; return it.

    With `repeats` > 1 the three runs are interleaved round-robin and each keeps its fastest
    time (the least disturbed by other load on the machine) and its largest peak memory.
    """
    from bench.models import build_char_tokenizer, build_tiny_causal_lm

    with tempfile.TemporaryDirectory(prefix="perf_train_") as tmp:
        work = Path(tmp)
        tok = build_char_tokenizer()
        build_tiny_causal_lm(work / "model", tok, hidden_size=256, layers=4, heads=4, seed=seed)
        rows = make_pairs(steps * batch_size, seed)      # one epoch: every pair once
        (work / "pairs.json").write_text(json.dumps(rows))
        (work / "config.json").write_text(json.dumps({"steps": steps, "batch_size": batch_size,
                                                      "max_length": max_length, "seed": seed, "progress": progress}))
        tokens = _real_tokens(rows, tok)
        slots = token_slots(rows, tok, steps=steps, batch_size=batch_size, max_length=max_length, seed=seed)
        runs = {}
        for _ in range(repeats):
            for mode in MODES:
                runs.setdefault(mode, []).append(_run_worker(mode, work, progress))
        runs = {mode: _best(results) for mode, results in runs.items()}
    for r in runs.values():
        r["tokens_per_s"] = tokens / r["seconds"]
        r["peak_above_start_mb"] = r["peak_rss_mb"] - r["rss_before_mb"]
    summary = {**_summary(runs, tokens, steps, batch_size, max_length), **slots}
    _print_table(runs, summary)
    return summary


def _best(results: list[dict]) -> dict:
    best = dict(min(results, key=lambda r: r["seconds"]))
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    best["rss_before_mb"] = min(r["rss_before_mb"] for r in results)
    best["repeats"] = len(results)
    return best


def _summary(runs, tokens, steps, batch_size, max_length) -> dict:
    h, t, p, hp = runs["harness"], runs["trl"], runs["trl_precompute"], runs["harness_padded"]
    return {
        "repeats": runs["harness"]["repeats"], "steps": steps, "batch_size": batch_size, "max_length": max_length, "tokens": tokens,
        "device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": torch.get_num_threads(),
        "harness_tokens_per_s": h["tokens_per_s"], "trl_tokens_per_s": t["tokens_per_s"],
        "trl_precompute_tokens_per_s": p["tokens_per_s"], "harness_padded_tokens_per_s": hp["tokens_per_s"],
        "ratio_padded": hp["tokens_per_s"] / t["tokens_per_s"],
        "ratio": h["tokens_per_s"] / t["tokens_per_s"], "ratio_vs_precompute": h["tokens_per_s"] / p["tokens_per_s"],
        "harness_peak_rss_mb": h["peak_rss_mb"], "trl_peak_rss_mb": t["peak_rss_mb"],
        "trl_precompute_peak_rss_mb": p["peak_rss_mb"],
        "harness_peak_above_start_mb": h["peak_above_start_mb"], "trl_peak_above_start_mb": t["peak_above_start_mb"],
        "trl_precompute_peak_above_start_mb": p["peak_above_start_mb"],
        "harness_peak_gpu_mb": h["peak_gpu_mb"], "trl_peak_gpu_mb": t["peak_gpu_mb"],
        "trl_precompute_peak_gpu_mb": p["peak_gpu_mb"],
        "memory_measure": "peak RSS of each run's own process (getrusage ru_maxrss); above_start = peak minus RSS just before training",
        "harness_time_includes": "tokenisation, model load, one-time reference pass, training, checkpoint write",
        "tokens_counted": "prompt+chosen and prompt+rejected tokens (+EOS), unpadded, the same for every run; "
                          "the packed harness runs each prompt once, so it computes fewer tokens than it counts",
        "trl_time_includes": "DPOTrainer construction (model/reference load, tokenisation) + trainer.train()",
        "trl_train_only_seconds": t["train_only_seconds"], "trl_precompute_train_only_seconds": p["train_only_seconds"],
        "harness_seconds": h["seconds"], "trl_seconds": t["seconds"], "trl_precompute_seconds": p["seconds"],
    }


def _print_table(runs, s) -> None:
    print(f"\nperf train: {s['steps']} steps × {s['batch_size']} pairs, max_length {s['max_length']}, fp32, "
          f"{s['device']}, {s['tokens']} real tokens per run")
    print(f"{'run':<16}{'seconds':>9}{'train() s':>11}{'tokens/s':>11}{'peak RSS MB':>13}{'above start':>13}")
    for mode, r in runs.items():
        train_only = f"{r['train_only_seconds']:.2f}" if "train_only_seconds" in r else "-"
        print(f"{mode:<16}{r['seconds']:>9.2f}{train_only:>11}{r['tokens_per_s']:>11.0f}{r['peak_rss_mb']:>13.0f}"
              f"{r['peak_above_start_mb']:>13.0f}")
    print(f"harness / trl = {s['ratio']:.2f}×   harness / trl_precompute = {s['ratio_vs_precompute']:.2f}×   "
          f"harness_padded / trl = {s['ratio_padded']:.2f}×")
    print(f"harness forward positions per epoch: packed {s['packed_slots']:,} "
          f"({s['packed_real_tokens'] / s['packed_slots']:.0%} real tokens), padded {s['padded_slots']:,}; "
          f"tokens counted for tokens/s: {s['tokens']:,}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], Path(sys.argv[3]))
    else:
        reps = [int(a.split("=")[1]) for a in sys.argv if a.startswith("--repeats=")]
        print(json.dumps(run(progress="--quiet" not in sys.argv, repeats=reps[0] if reps else 1)))
