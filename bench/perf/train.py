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
The same basis for every run: its timer starts after its imports (the interpreter start and
imports are their own column, startup_seconds) and stops when the trained model is on disk.
The harness's window: tokenizer load, tokenisation, `train()` (model load, its one-time
reference pass, the steps, the checkpoint write); TRL's: tokenizer load, `DPOTrainer(...)`
(model and reference load, tokenisation), `trainer.train()` (its precompute pass when
enabled) and `trainer.save_model()`. TRL's `train()`-only time, each side's save time and the
mean optimiser-step time (step_seconds, a like-for-like per-step figure) are reported too.
tokens/s counts real (unpadded) prompt+response tokens of chosen and rejected sequences.
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
# The same basis for every side: each worker first imports what it runs (its own imports, and
# transformers' tokenizer and model modules, which transformers otherwise imports lazily on the
# first load) and only then starts its timer; the timer stops when a trained model is on disk.
# Import and interpreter start-up are reported in their own column (`startup_seconds`, process
# start to timer start). Each worker records the modules imported inside its timed window, so a
# test can check that no side pays for an import the other side paid for before its timer.
TIMER_STARTS = "after imports, before the tokenizer load (process start to here: startup_seconds)"
TIMER_STOPS = "trained model written to disk"


def _import_model_modules(work: Path) -> None:
    """transformers' tokenizer and model modules for the benchmark model, imported (not loaded)
    before the timer by both sides: AutoTokenizer/AutoModel import them lazily on first use."""
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    config = AutoConfig.from_pretrained(str(work / "model"))
    MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]                      # imports modeling_<arch>
    tokenizer_config = json.loads((work / "model" / "tokenizer_config.json").read_text())
    tokenizer_class_from_name(tokenizer_config.get("tokenizer_class", "PreTrainedTokenizerFast"))
    transformers.PreTrainedTokenizerFast                           # noqa: B018 (the fast-tokenizer module)


class _Timer:
    """The timed window: its start and stop, the modules imported inside it, optional
    per-step timestamps (end of each optimiser step) and an injected slowdown for the check."""

    def __init__(self, slowdown: float = 1.0):
        self.slowdown = slowdown
        self.step_ends: list[float] = []
        self.modules_before = set(sys.modules)
        self.startup = time.time() - _process_start()
        self.cpu_start = _cpu_seconds()
        self.start = time.perf_counter()

    def step_done(self) -> None:
        """After each optimiser step. With `slowdown` > 1, each step after the first is made
        that many times as long (a sleep of its own duration times slowdown - 1): a stand-in
        for a slower trainer that the regression check must catch."""
        now = time.perf_counter()
        if self.slowdown > 1 and self.step_ends:
            time.sleep((self.slowdown - 1) * (now - self.step_ends[-1]))
            now = time.perf_counter()
        self.step_ends.append(now)

    def stop(self, **extra) -> dict:
        seconds = time.perf_counter() - self.start
        ends = self.step_ends
        return {"seconds": seconds, "startup_seconds": self.startup, "cpu_seconds": _cpu_seconds() - self.cpu_start,
                "step_seconds": (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else None,
                "modules_before_timer": sorted(self.modules_before),
                "imported_in_timer": sorted(set(sys.modules) - self.modules_before), **extra}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads). Waiting for a core on a busy
    machine adds wall time, not CPU time, so CPU ratios move far less with other load than wall
    ratios (they still include spinning threads and cache misses that load causes)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def _process_start() -> float:
    import psutil

    return psutil.Process().create_time()


def _worker_harness(work: Path, cfg: dict, packing: bool = True) -> dict:
    # What the harness's path imports lazily, here before its timer as TRL's worker imports
    # trl (which imports peft, transformers' Trainer utilities and datasets) before its own.
    import peft  # noqa: F401  (accelerate and transformers' save path import it when installed)
    import transformers.optimization  # noqa: F401
    import transformers.trainer_pt_utils  # noqa: F401

    import bench.data.records  # noqa: F401
    import trainers.tokenize  # noqa: F401
    import trainers.trainer
    from bench.suite.schema import TrainConfig
    from trainers.models import load_tokenizer
    from trainers.objectives import build_objective
    from trainers.trainer import train

    _import_model_modules(work)
    saving = {"seconds": 0.0}
    save_checkpoint = trainers.trainer.save_checkpoint

    def timed_save(*args, **kwargs):   # the checkpoint write, timed for its own column
        started = time.perf_counter()
        try:
            return save_checkpoint(*args, **kwargs)
        finally:
            saving["seconds"] += time.perf_counter() - started

    trainers.trainer.save_checkpoint = timed_save
    rows = json.loads((work / "pairs.json").read_text())
    base = _rss_mb()
    timer = _Timer(cfg.get("slowdown", 1.0))
    data = _tokenize(rows, load_tokenizer(str(work / "model"), trust_remote_code=False), cfg["max_length"])
    config = TrainConfig(learning_rate=LR, max_steps=cfg["steps"], batch_size=cfg["batch_size"], warmup_ratio=0.0,
                         precision="fp32", max_length=cfg["max_length"], max_prompt_length=cfg["max_length"] // 2,
                         seed=cfg["seed"], log_every=cfg["steps"], packing=packing)
    profiler = _profiler(cfg)
    res = train(model_path=work / "model", objective=build_objective([{"name": "dpo", "weight": 1.0, "beta": 0.1}]),
                train_data=data, config=config, out_dir=tempfile.mkdtemp(dir=work, prefix="harness_out_"),
                progress=cfg["progress"], on_step=lambda step: timer.step_done())   # a fresh dir: a finished one would return at once
    assert res.status == "ok", res.reason
    out = timer.stop(rss_before_mb=base, save_seconds=saving["seconds"])
    if profiler is not None:
        profiler.disable()
        out["profile"] = profile_phases(profiler, Path(cfg["profile"]) / f"harness-{os.getpid()}.prof")
    return out


# Where the harness's time goes: cumulative seconds of the trainer's own phases (cProfile).
PHASES = {
    "tokenizer load + tokenisation": ("bench/perf/train.py", "_tokenize"),
    "model load, optimiser, accelerate prepare": ("trainers/trainer.py", "_build"),
    "reference pass (one, no grad)": ("trainers/trainer.py", "_reference"),
    "steps: forward + backward": ("trainers/trainer.py", "_accumulate"),
    "steps: gradient clipping": ("trainers/trainer.py", "_clip"),
    "steps: optimiser step": ("accelerate/optimizer.py", "step"),
    "resume-state writes (timed, about every minute)": ("trainers/state.py", "save"),
    "checkpoint write": ("trainers/checkpoint.py", "save_checkpoint"),
}


def _profiler(cfg: dict):
    """A running cProfile when `perf train --profile DIR` asked for one (the harness worker only)."""
    if not cfg.get("profile"):
        return None
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def profile_phases(profiler, path: Path) -> dict:
    """Seconds per phase (PHASES) and the profiled total; the full profile is written to `path`."""
    import pstats

    path.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(str(path))
    stats = pstats.Stats(str(path)).stats
    out = {"file": str(path), "total": 0.0}
    for name, (file, function) in PHASES.items():
        out[name] = sum(v[3] for (f, _, fn), v in stats.items() if f.endswith(file) and fn == function)
    out["total"] = max(v[3] for v in stats.values())
    return out


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
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from trainers.models import load_tokenizer

    _import_model_modules(work)

    class StepEnds(TrainerCallback):   # the same per-step timestamps as the harness's on_step
        def on_step_end(self, args, state, control, **kwargs):
            timer.step_done()

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
    base = _rss_mb()
    timer = _Timer()                   # an injected slowdown is the harness's only
    tokenizer = load_tokenizer(str(work / "model"), trust_remote_code=False)
    trainer = DPOTrainer(model=str(work / "model"), args=args, train_dataset=ds, processing_class=tokenizer,
                         callbacks=[StepEnds()])
    train_start = time.perf_counter()
    trainer.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    save_start = time.perf_counter()
    # The harness ends with its checkpoint on disk; TRL's end point is the same: its trained
    # model saved (save_pretrained of model and tokenizer, as the harness writes).
    trainer.save_model(tempfile.mkdtemp(dir=work, prefix="trl_model_"))
    end = time.perf_counter()
    return timer.stop(rss_before_mb=base, train_only_seconds=save_start - train_start, save_seconds=end - save_start)


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
        repeats: int = 1, slowdown: float = 1.0, modes=MODES, raw: bool = False, profile=None) -> dict:
    """Run the trainers; print a table and, as the LAST line, a JSON summary; return it.

    With `repeats` > 1 the runs are interleaved round-robin and each keeps its fastest
    time (the least disturbed by other load on the machine) and its largest peak memory;
    each round's own ratios are kept too (`round_ratios`: the noise between rounds).
    `slowdown` > 1 makes each harness training step that many times as long (the regression
    check's injected fault). `raw`: also return every worker's own record (tests). `profile`: a
    folder; the harness runs under cProfile (slower: its times are then not comparable) and its
    phases are printed and returned (`profile`).
    """
    from bench.models import build_char_tokenizer, build_tiny_causal_lm

    modes = modes or MODES
    with tempfile.TemporaryDirectory(prefix="perf_train_") as tmp:
        work = Path(tmp)
        tok = build_char_tokenizer()
        build_tiny_causal_lm(work / "model", tok, hidden_size=256, layers=4, heads=4, seed=seed)
        rows = make_pairs(steps * batch_size, seed)      # one epoch: every pair once
        (work / "pairs.json").write_text(json.dumps(rows))
        (work / "config.json").write_text(json.dumps({"steps": steps, "batch_size": batch_size, "slowdown": slowdown,
                                                      "profile": str(profile) if profile else None,
                                                      "max_length": max_length, "seed": seed, "progress": progress}))
        tokens = _real_tokens(rows, tok)
        slots = token_slots(rows, tok, steps=steps, batch_size=batch_size, max_length=max_length, seed=seed)
        records: dict[str, list[dict]] = {}
        for _ in range(repeats):
            for mode in modes:
                records.setdefault(mode, []).append(_run_worker(mode, work, progress))
        runs = {mode: _best(results) for mode, results in records.items()}
    for r in runs.values():
        r["tokens_per_s"] = tokens / r["seconds"]
        r["peak_above_start_mb"] = r["peak_rss_mb"] - r["rss_before_mb"]
    summary = {**_summary(runs, tokens, steps, batch_size, max_length), **slots, "slowdown": slowdown,
               "round_ratios": _round_ratios(records), "load_average": list(os.getloadavg()),
               "cpu_count": os.cpu_count()}
    _print_table(runs, summary)
    if profile and "harness" in runs:
        summary["harness_profile"] = runs["harness"]["profile"]
        _print_profile(runs["harness"]["profile"])
    if raw:
        summary["raw"] = records
    return summary


def _round_ratios(records: dict) -> dict:
    """Each round's harness-vs-peer ratios (end to end and per step): their spread is the noise."""
    out = {}
    for peer in ("trl", "trl_precompute"):
        if "harness" in records and peer in records:
            pairs = list(zip(records["harness"], records[peer]))
            out[peer] = [round(p["seconds"] / h["seconds"], 3) for h, p in pairs]
            out[f"{peer}_cpu"] = [round(p["cpu_seconds"] / h["cpu_seconds"], 3) for h, p in pairs]
            if all(h["step_seconds"] and p["step_seconds"] for h, p in pairs):
                out[f"{peer}_step"] = [round(p["step_seconds"] / h["step_seconds"], 3) for h, p in pairs]
    return out


def _best(results: list[dict]) -> dict:
    best = dict(min(results, key=lambda r: r["seconds"]))
    for key in ("startup_seconds", "step_seconds", "save_seconds", "cpu_seconds"):   # each part's fastest, like the whole
        values = [r[key] for r in results if r.get(key) is not None]
        best[key] = min(values) if values else None
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    best["rss_before_mb"] = min(r["rss_before_mb"] for r in results)
    best["repeats"] = len(results)
    best["imported_in_timer"] = sorted(set().union(*(r["imported_in_timer"] for r in results)))
    best.pop("modules_before_timer", None)
    return best


HARNESS_INCLUDES = ("tokenizer load, tokenisation, model load, one-time reference pass, the training steps, "
                    "checkpoint write (save_seconds)")
TRL_INCLUDES = ("tokenizer load, DPOTrainer construction (model and reference load, tokenisation), "
                "trainer.train() (train_only_seconds; its precompute pass when enabled), "
                "trainer.save_model (save_seconds)")


def _summary(runs, tokens, steps, batch_size, max_length) -> dict:
    out = {"repeats": next(iter(runs.values()))["repeats"], "steps": steps, "batch_size": batch_size,
           "max_length": max_length, "tokens": tokens, "device": "cuda" if torch.cuda.is_available() else "cpu",
           "torch_threads": torch.get_num_threads(),
           "basis": {"timer_starts": TIMER_STARTS, "timer_stops": TIMER_STOPS,
                     "harness_time_includes": HARNESS_INCLUDES, "trl_time_includes": TRL_INCLUDES,
                     "step_seconds": "mean time of one optimiser step, end of step 1 to end of the last "
                                     "(harness: its on_step callback; TRL: a TrainerCallback's on_step_end)",
                     "startup_seconds": "process start to timer start: interpreter, imports (not in seconds)"},
           "memory_measure": "peak RSS of each run's own process (getrusage ru_maxrss); above_start = peak minus "
                             "RSS just before the timer",
           "tokens_counted": "prompt+chosen and prompt+rejected tokens (+EOS), unpadded, the same for every run; "
                             "the packed harness runs each prompt once, so it computes fewer tokens than it counts"}
    for mode in runs:
        for key in ("tokens_per_s", "seconds", "cpu_seconds", "startup_seconds", "step_seconds", "save_seconds", "peak_rss_mb",
                    "peak_above_start_mb", "peak_gpu_mb", "train_only_seconds", "imported_in_timer"):
            if key in runs[mode]:
                out[f"{mode}_{key}"] = runs[mode][key]
    h = "harness"
    for name, peer in (("", "trl"), ("_vs_precompute", "trl_precompute")):
        if h in runs and peer in runs:
            out[f"ratio{name}"] = runs[h]["tokens_per_s"] / runs[peer]["tokens_per_s"]
            # one step only (--steps 1): no step time, so no step ratio (as in _round_ratios)
            if runs[h]["step_seconds"] and runs[peer]["step_seconds"]:
                out[f"step_ratio{name}"] = runs[peer]["step_seconds"] / runs[h]["step_seconds"]
            out[f"memory_ratio{name}"] = runs[h]["peak_rss_mb"] / runs[peer]["peak_rss_mb"]
            out[f"cpu_ratio{name}"] = runs[peer]["cpu_seconds"] / runs[h]["cpu_seconds"]
    if "harness_padded" in runs and "trl" in runs:
        out["ratio_padded"] = runs["harness_padded"]["tokens_per_s"] / runs["trl"]["tokens_per_s"]
    return out


def _print_profile(p: dict) -> None:
    print(f"harness under cProfile: {p['total']:.2f} s in train()'s caller; by phase (profile: {p['file']}):")
    for name in PHASES:
        print(f"  {name:<50}{p[name]:>8.2f} s {p[name] / p['total']:>6.1%}")


def _print_table(runs, s) -> None:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    print(f"\nperf train: {s['steps']} steps × {s['batch_size']} pairs, max_length {s['max_length']}, fp32, "
          f"{s['device']}, {s['tokens']} real tokens per run; load average {s['load_average'][0]:.2f} on "
          f"{s['cpu_count']} cores at the end")
    print(f"timed from {TIMER_STARTS} to {TIMER_STOPS}, the same points for every run")
    print(f"{'run':<16}{'start-up s':>11}{'seconds':>9}{'train() s':>11}{'save s':>8}{'step s':>8}{'tokens/s':>10}"
          f"{'peak RSS MB':>13}{'above start':>13}")
    for mode, r in runs.items():
        print(f"{mode:<16}{r['startup_seconds']:>11.2f}{r['seconds']:>9.2f}{fmt(r.get('train_only_seconds'), '.2f'):>11}"
              f"{fmt(r.get('save_seconds'), '.2f'):>8}{fmt(r.get('step_seconds'), '.3f'):>8}{r['tokens_per_s']:>10.0f}"
              f"{r['peak_rss_mb']:>13.0f}{r['peak_above_start_mb']:>13.0f}")
    parts = [f"{label} = {s[key]:.2f}×" for key, label in
             (("ratio", "harness / trl"), ("ratio_vs_precompute", "harness / trl_precompute"),
              ("step_ratio", "per step vs trl"), ("step_ratio_vs_precompute", "per step vs trl_precompute"),
              ("cpu_ratio", "CPU seconds vs trl"), ("cpu_ratio_vs_precompute", "CPU seconds vs trl_precompute"),
              ("ratio_padded", "harness_padded / trl"), ("memory_ratio", "peak RSS vs trl")) if key in s]
    print("   ".join(parts))
    if s["round_ratios"]:
        print("each round: " + "; ".join(f"{k} {', '.join(f'{v:.2f}' for v in vs)}" for k, vs in s["round_ratios"].items()))
    print(f"harness forward positions per epoch: packed {s['packed_slots']:,} "
          f"({s['packed_real_tokens'] / s['packed_slots']:.0%} real tokens), padded {s['padded_slots']:,}; "
          f"tokens counted for tokens/s: {s['tokens']:,}")
    for mode, r in runs.items():
        if r["imported_in_timer"]:
            print(f"{mode}: {len(r['imported_in_timer'])} modules imported inside the timer: "
                  f"{', '.join(r['imported_in_timer'][:12])}{' …' if len(r['imported_in_timer']) > 12 else ''}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], Path(sys.argv[3]))
    else:
        reps = [int(a.split("=")[1]) for a in sys.argv if a.startswith("--repeats=")]
        print(json.dumps(run(progress="--quiet" not in sys.argv, repeats=reps[0] if reps else 1)))
