"""THE training loop, identical for every objective (SFT is this loop with `nll`) and for the
reward model (Bradley–Terry on a sequence-classification head, `trainers.heads`).

One `accelerate.Accelerator` loop: the same code runs on one CPU, one GPU, or several
processes under `accelerate launch` (DDP, or FSDP2 from an accelerate config file:
configs/accelerate/fsdp.yaml). Per optimiser step it takes `global_batch =
batch_size × grad_accum × processes` pairs (see `trainers.data_order`), computes response
log-probs with one forward per micro-batch (by default packed, each prompt run once for
its chosen and rejected response: `trainers.logps`), asks the objective for per-pair
losses and normalises their *sum* by the global batch, so 1×8, 8×1 and 2 processes × 4 all
optimise the same loss. Optimiser, schedule and precision: `trainers.optim`. Resume state is written atomically every `save_every` steps, about
every minute regardless (`trainers.interrupt`), and on Ctrl-C/SIGTERM before stopping; the
final checkpoint is a plain Hugging Face directory (LoRA merged); `trainers.state` gathers
and restores the resume state.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import weakref
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from trainers import devices, state
from trainers.checkpoint import (CorruptStateError, completed_steps, save_checkpoint, saved_log, set_aside,
                                 state_problem)
from trainers.errors import UserError, say
from trainers.heads import head_for
from trainers.interrupt import SaveClock, StopRequest, TrainingInterrupted
from trainers.models import load_model, load_tokenizer
from trainers.optim import adamw, apply_lora, disable_dropout, make_scheduler, mixed_precision
from trainers.reference import cache_key, compute_reference, load_cache, reference_logps, save_cache, sequence_length


@dataclass
class TrainResult:
    status: str                 # 'ok' | 'failed'
    reason: str | None
    checkpoint: Path | None
    log_path: Path
    steps: int
    # None: the finished checkpoint was reused; else the step training began at (0, or where
    # it resumed from saved state)
    started_at: int | None = None


def train(*, model_path, objective, train_data, config, out_dir, reference: dict | None = None,
          progress: bool = True, on_step=None, trust_remote_code: bool = False) -> TrainResult:
    """Train `objective` on `train_data` (TokenizedPairs) from `model_path` into `out_dir`.

    `objective`: one of the objective library (a causal LM is trained) or
    `trainers.heads.BradleyTerry` (a reward model: a one-output sequence-classification head).

    Returns at once when `out_dir/checkpoint` is complete; resumes from `out_dir/state`
    when present. A NaN/inf loss or gradient norm ends the run with status 'failed' (reason
    also in `out_dir/failed.json`) and no checkpoint. `on_step(step)` is called after each
    optimiser step (tests use it to interrupt a run). `trust_remote_code`: the suite's
    `model.trust_remote_code`, for the model and tokenizer loads.
    """
    out_dir = Path(out_dir)
    log_path = out_dir / "train_log.jsonl"
    ckpt_dir = out_dir / "checkpoint"
    try:
        done = completed_steps(ckpt_dir)
    except CorruptStateError as err:   # damaged on disk since it was written: train this run again
        say(f"{err}; training this run again")
        set_aside(ckpt_dir)
        done = None
    if done is not None:
        return TrainResult("ok", None, ckpt_dir, log_path, done)
    if not train_data:
        raise UserError(f"{out_dir}: no training pairs left after tokenisation")
    problem = state_problem(out_dir / "state")
    if problem:
        say(f"resume state {out_dir / 'state'} is damaged ({problem}); this run starts again from step 0")
        set_aside(out_dir / "state")
    run = _Run(model_path, objective, train_data, config, out_dir, reference, progress, on_step, trust_remote_code)
    try:
        return run.run()
    finally:
        run.release()


def _is_finite(x) -> bool:
    return math.isfinite(float(x))


class _Run:
    """One training run's state; methods are the loop's steps."""

    def __init__(self, model_path, objective, data, config, out_dir, reference, progress, on_step, trust_remote_code):
        from accelerate import Accelerator, DistributedType

        self.model_path, self.objective, self.data, self.cfg = str(model_path), objective, data, config
        self.head = head_for(objective)
        self.out_dir, self.reference, self.progress, self.on_step = out_dir, reference, progress, on_step
        self.trust_remote_code = trust_remote_code
        from accelerate.state import AcceleratorState

        # The mixed-precision setting lives in a process-wide singleton: clear it, so an SFT stage
        # in bf16 and runs in fp32 (or lm-eval's own Accelerator) can follow each other in one
        # process. The distributed state (PartialState) is kept.
        AcceleratorState._reset_state()
        # cpu=True without a GPU: accelerate only sets up multi-process CPU (gloo) DDP when told.
        self.acc = Accelerator(mixed_precision=mixed_precision(config.precision), cpu=not torch.cuda.is_available())
        self.procs, self.rank = self.acc.num_processes, self.acc.process_index
        # FSDP (from an accelerate config): parameters are sharded over processes, so the final
        # checkpoint is written from gathered weights, and LoRA (merged on one process) is refused.
        self.sharded = self.acc.distributed_type == DistributedType.FSDP
        self.global_batch = config.batch_size * config.grad_accum * self.procs
        self.order = self.head.data_order(len(data), config, self.global_batch)
        self.total = config.max_steps or self.order.total_steps(config.epochs)
        self.lengths = [sequence_length(p) for p in data]
        self.log_path = out_dir / "train_log.jsonl"
        self.desc = f"train {Path(out_dir).parent.name}/{Path(out_dir).name[:8]}"   # sft/… or train/…: not a bare bar

    def release(self) -> None:
        """Drop the model, optimiser and the accelerator (which holds references to both) and
        return their memory: the next stage (a generation engine) must find the GPU free.

        A full garbage collection (`devices.release_memory`) scans every object of the process:
        ~0.2 s per call in a process that has imported transformers and has not frozen its
        import-time objects (bench.perf's trainer workers; a user calling `train` in a script), 12%
        of a 20-step benchmark run when it was called twice here. So it runs only when it can
        free something: on a GPU (whose cache is emptied too), or when the model or optimiser
        outlived the drop of their references (a reference cycle, e.g. an adapter's). On the CPU
        reference counting frees them at once otherwise (tests/test_trainer.py checks both)."""
        watched = [weakref.ref(self.__dict__[name]) for name in ("model", "optimizer") if name in self.__dict__]
        for name in ("model", "wrapped", "optimizer", "scheduler", "params", "ref", "acc"):
            self.__dict__.pop(name, None)
        if torch.cuda.is_available() or any(ref() is not None for ref in watched):
            devices.release_memory()

    # --- setup ---------------------------------------------------------------------------
    def _build(self):
        torch.manual_seed(self.cfg.seed)        # LoRA initialisation and dropout follow the seed
        self.tokenizer = load_tokenizer(self.model_path, trust_remote_code=self.trust_remote_code)
        # fp32 master weights on the CPU; the Accelerator places them (prepare, below)
        self.model = load_model(self.model_path, trust_remote_code=self.trust_remote_code, head=self.head.auto,
                                dtype=torch.float32, **self.head.load_options())
        disable_dropout(self.model)             # as TRL: dropout noise would also move the reference pass
        self.use_cache = getattr(self.model.config, "use_cache", None)   # restored in the checkpoint
        if self.cfg.gradient_checkpointing:
            self.model.config.use_cache = False
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.cfg.lora is not None:
            if self.sharded:
                raise UserError("training.lora is not supported under FSDP (the merged checkpoint needs the "
                                 "full adapter on one process); use DDP (the default accelerate config) for LoRA")
            if self.head.auto != "causal_lm":
                raise UserError("training.lora is not supported for reward-model training")
            self.model = apply_lora(self.model, self.cfg.lora)
        self.pad_id = self.head.prepare(self.model, self.tokenizer)
        self.pack_to = self.cfg.max_length if self.cfg.packing and self.head.can_pack(self.model) else None
        optimizer = adamw(self.model, self.cfg, self.acc.device)
        # FSDP replaces the parameters by shards in prepare() and points the optimiser at them,
        # so both are prepared together and gradients are clipped on the prepared parameters.
        self.wrapped, self.optimizer = self.acc.prepare(self.head.wrap(self.model), optimizer)
        self.params = [p for p in self.wrapped.parameters() if p.requires_grad]
        self.scheduler = make_scheduler(self.optimizer, self.cfg, self.total)
        self.model.train()

    def _reference(self, start_step: int):
        """Reference log-probs once per run: given, cached in out_dir, or one no-grad pass."""
        if not self.head.needs_reference:
            return None
        if self.reference is not None:
            return self.reference
        cache_file = self.out_dir / "reference" / f"ref_logps-{cache_key(self.model_path, self.data)}.safetensors"
        cached = load_cache(cache_file)
        if cached is not None:
            return cached
        bs = self.cfg.batch_size * 2    # no activations kept: a larger batch fits
        if self.cfg.lora is None and start_step > 0:   # resumed without its cache: load the base weights again
            return reference_logps(self.model_path, self.data, batch_size=bs, cache_dir=cache_file.parent,
                                   progress=self.progress, device=self.acc.device, pack_to=self.pack_to,
                                   trust_remote_code=self.trust_remote_code)
        # Before the first step the policy *is* the reference; with LoRA the reference is the
        # model with its adapter switched off. Through the prepared wrapper: FSDP gathers shards there.
        base = self.model.disable_adapter() if self.cfg.lora is not None else nullcontext()
        with base, self.acc.autocast():
            values = compute_reference(self.model, self.data, batch_size=bs, progress=self.progress,
                                       pack_to=self.pack_to, forward=self.wrapped, inference_mode=not self.sharded)
        if self.acc.is_main_process:
            save_cache(cache_file, values)
        return values

    # --- the loop ------------------------------------------------------------------------
    def run(self) -> TrainResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "failed.json").unlink(missing_ok=True)
        self._build()
        start = self.start = state.resume(self)
        self.ref = self._reference(start)
        self._trim_log(start)
        if start and self.acc.is_main_process:
            say(f"{self.out_dir}: resuming training from step {start} of {self.total} (saved state)")
        bar = tqdm(total=self.total, initial=start, desc=self.desc, unit="step",
                   disable=not self.progress or not self.acc.is_main_process)
        with StopRequest() as stop:
            result = self._loop(start, bar, stop)
        if stop.requested and result.status == "ok":   # stopped on the last step: the checkpoint is written
            raise TrainingInterrupted(f"interrupted ({stop.requested}) after training finished; the checkpoint is "
                                      f"in {result.checkpoint}; run the same command again to go on")
        return result

    def _loop(self, start: int, bar, stop) -> TrainResult:
        clock = SaveClock()
        for step in range(start, self.total):
            loss, metrics = self._accumulate(step)
            norm = self._clip()
            if not (_is_finite(loss) and _is_finite(norm)):
                bar.close()
                return self._fail(step + 1, f"non-finite {'loss' if not _is_finite(loss) else 'gradient norm'} "
                                            f"at step {step + 1} (loss={float(loss)}, grad_norm={float(norm)})")
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            # Step 1 is always logged: the regression gate's golden invariant reads it (the policy
            # is still the reference there, so a DPO-family loss has its closed form, bench.gate.check).
            if step == 0 or (step + 1) % self.cfg.log_every == 0 or step + 1 == self.total:
                self._log(step + 1, loss, norm, lr, metrics)
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.4f}")
            every = bool(self.cfg.save_every) and (step + 1) % self.cfg.save_every == 0
            timed, stopping = self._agree(clock.due(), stop.requested is not None)
            if (every or timed or stopping) and step + 1 < self.total:
                started = time.monotonic()
                state.save(self, step + 1)
                clock.saved(started)
            if stopping and step + 1 < self.total:
                bar.close()
                raise TrainingInterrupted(
                    f"interrupted ({stop.requested or 'by another process'}) at step {step + 1} of {self.total}; "
                    f"training state saved in {self.out_dir / 'state'}; run the same command again to resume "
                    f"from step {step + 1}")
            if self.on_step is not None:
                self.on_step(step + 1)
        bar.close()
        return self._finish()

    def _agree(self, timed: bool, stopping: bool) -> tuple[bool, bool]:
        """Every process saves (a collective) on the same step: the flags are OR-ed across them."""
        if self.procs == 1:
            return timed, stopping
        flags = self.acc.reduce(torch.tensor([int(timed), int(stopping)], device=self.acc.device), "max")
        return bool(flags[0]), bool(flags[1])

    def _accumulate(self, step: int):
        """Forward/backward every micro-batch of the step; returns (global loss, metric sums)."""
        micro = self.order.micro_batches(step, lengths=self.lengths, batch_size=self.cfg.batch_size, rank=self.rank,
                                         procs=self.procs)
        scale = self.procs / self.global_batch      # sum over pairs / global batch, after DDP's mean
        # What this step trained on, logged as `data/batch` (hashed only on logged steps, in
        # _log): the gate's seed-independence invariant compares it between seeds
        # (bench/gate/integrity.py); taken from the micro-batches themselves, so a bug anywhere
        # in the order shows.
        self.micro = micro
        sums = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
        for j, idx in enumerate(micro):
            sync = nullcontext() if j == len(micro) - 1 else self.acc.no_sync(self.wrapped)
            with sync:
                losses, metrics = self.head.forward(self, [self.data[i] for i in idx])
                self.acc.backward(losses.sum() * scale)
            with torch.no_grad():
                sums["loss"] += losses.detach().double().sum().cpu()
                for k, v in metrics().items():
                    sums[k] += _batch_sum(v, len(idx))
        keys = sorted(sums)
        totals = self.acc.reduce(torch.stack([sums[k] for k in keys]).to(self.acc.device), "sum").cpu()
        metrics = {k: float(v) / self.global_batch for k, v in zip(keys, totals)}
        return metrics.pop("loss"), metrics

    def _clip(self):
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm is not None else float("inf")
        return self.acc.clip_grad_norm_(self.params, max_norm)

    # --- outputs ---------------------------------------------------------------------------
    def _log(self, step, loss, norm, lr, metrics):
        if self.acc.is_main_process:
            row = {"step": step, "loss": loss, "grad_norm": float(norm), "lr": lr, **metrics,
                   "data/batch": _digest([str(self.data[i].id) for idx in self.micro for i in idx])}
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    def _trim_log(self, start: int):
        """A resumed run rewrites the steps after its state, so drop their old lines. The lines
        up to the state come from the state's own copy of the log (checked by its manifest),
        so a log cut or deleted since the save is whole again."""
        if not self.acc.is_main_process:
            return
        saved = saved_log(self.out_dir / "state") if start else None
        source = saved if saved is not None else self.log_path
        if not source.exists():
            return
        kept = [ln for ln, row in read_log_lines(source) if row["step"] <= start]
        text = "".join(ln + "\n" for ln in kept)
        tmp = self.log_path.with_name(f"{self.log_path.name}.tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, self.log_path)

    def _fail(self, step: int, reason: str) -> TrainResult:
        if self.acc.is_main_process:
            (self.out_dir / "failed.json").write_text(json.dumps({"step": step, "reason": reason}))
        return TrainResult("failed", reason, None, self.log_path, step, getattr(self, "start", 0))

    def _finish(self) -> TrainResult:
        ckpt = self.out_dir / "checkpoint"
        # Sharded parameters are gathered; otherwise save_pretrained reads the model itself
        # (and a LoRA model is merged first).
        weights = state.gathered_states(self, optimizer=False)[0] if self.sharded else None
        if self.acc.is_main_process:
            # Saved in the dtype it was trained in (bf16 autocast -> bf16 weights, as the model
            # is used downstream), with the KV cache that gradient checkpointing switched off on again.
            if self.use_cache is not None:
                self.model.config.use_cache = self.use_cache
            dtype = torch.bfloat16 if self.acc.mixed_precision == "bf16" else torch.float32
            save_checkpoint(ckpt, model=self.model, tokenizer=self.tokenizer, steps=self.total, state_dict=weights,
                            dtype=dtype, log=self.log_path)
            shutil.rmtree(self.out_dir / "state", ignore_errors=True)   # the checkpoint supersedes it
        self.acc.wait_for_everyone()
        return TrainResult("ok", None, ckpt, self.log_path, self.total, self.start)


def read_log_lines(path: Path) -> list[tuple[str, dict]]:
    """(line, row) of each readable line of a train log; a damaged line (a kill mid-write, a
    cut file) is left out: the log is a record of the run, not what its result depends on."""
    rows = []
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append((line, row))
    return rows


def _digest(ids: list[str]) -> str:
    """12 hex digits naming a sequence of pair ids (a step's batch in the order it was fed)."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]


def _batch_sum(value, n: int) -> torch.Tensor:
    """Per-pair metric [B] -> its sum; a scalar is taken as the batch mean."""
    v = torch.as_tensor(value).detach().double().cpu()
    return v.sum() if v.dim() > 0 else v * n
