"""Resume state (model, optimiser, scheduler, RNG, step) and the final HF checkpoint, atomically.

Both are written to a temporary sibling directory and renamed into place, so a killed run
leaves either the previous complete directory or none, never a half-written one.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from bench.errors import BenchError

DONE_FILE = "prefbench_train.json"     # written last inside checkpoint/: marks it complete


class CorruptStateError(BenchError):
    """A resume state or checkpoint directory that cannot be read."""


def _replace_dir(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def save_state(state_dir: Path, *, model_state: dict, optimizer_state: dict, scheduler, step: int,
               rng_states: list) -> None:
    """Everything exact resume needs. `model_state` holds the trainable parameters and
    `optimizer_state` the optimiser's, both full (unsharded) on the CPU; `rng_states` has one
    entry per process (gathered)."""
    tmp = state_dir.with_name(state_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model_state, tmp / "model.pt")
    torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_states, tmp / "rng.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step}))
    _replace_dir(tmp, state_dir)


def load_state(state_dir: Path, *, load_model, load_optimizer, scheduler, rank: int) -> int:
    """Restore the state saved by `save_state`; returns the optimiser step to continue from.

    `load_model(params)` and `load_optimizer(state)` put the saved full states into the
    (possibly sharded) model and optimiser; whatever they or the files raise is reported as
    a corrupt state.
    """
    try:
        step = json.loads((state_dir / "trainer_state.json").read_text())["step"]
        load_model(torch.load(state_dir / "model.pt", map_location="cpu"))
        load_optimizer(torch.load(state_dir / "optimizer.pt", map_location="cpu"))
        scheduler.load_state_dict(torch.load(state_dir / "scheduler.pt"))
        rng = torch.load(state_dir / "rng.pt")[rank]
    except Exception as exc:  # any unreadable piece: one line, and how to recover
        raise CorruptStateError(
            f"resume state {state_dir} is corrupt ({type(exc).__name__}: {exc}); delete it to restart the run"
        ) from None
    torch.set_rng_state(rng["cpu"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return int(step)


def rng_state() -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def save_checkpoint(ckpt_dir: Path, *, model, tokenizer, steps: int, state_dict: dict | None = None) -> Path:
    """A standard HF directory (safetensors, config, tokenizer); LoRA adapters are merged first.
    `state_dict`: the full weights when `model`'s own parameters are shards (FSDP)."""
    tmp = ckpt_dir.with_name(ckpt_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()      # lm-eval and vLLM load a plain model, not an adapter
    model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    (tmp / DONE_FILE).write_text(json.dumps({"steps": steps}))
    _replace_dir(tmp, ckpt_dir)
    return ckpt_dir


def completed_steps(ckpt_dir: Path) -> int | None:
    """Steps of a complete checkpoint; None when there is none; an error when it is damaged."""
    if not ckpt_dir.exists():
        return None
    try:
        steps = json.loads((ckpt_dir / DONE_FILE).read_text())["steps"]
        if not (ckpt_dir / "config.json").exists() or not any(ckpt_dir.glob("*.safetensors")):
            raise ValueError("config.json or the safetensors weights are missing")
    except Exception as exc:
        raise CorruptStateError(
            f"checkpoint {ckpt_dir} is incomplete or corrupt ({type(exc).__name__}: {exc}); delete it to retrain"
        ) from None
    return int(steps)
