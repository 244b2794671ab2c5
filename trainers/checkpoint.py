"""Resume state (model, optimiser, scheduler, RNG, step) and the final HF checkpoint, atomically.

Both are written to a temporary sibling directory whose name no other process uses, with a
manifest of their files (sizes and checksums, `trainers.manifest`) written last, and renamed
into place; so a killed run leaves either the previous complete directory or none, and two
processes saving at once each leave a complete one. A file that is later truncated,
emptied or removed is caught by the manifest when the directory is used.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from pathlib import Path

import torch

from trainers.errors import UserError
from trainers.manifest import build_manifest, check_manifest, file_digest

DONE_FILE = "prefbench_train.json"     # written last inside checkpoint/: marks it complete
LOG_FILE = "train_log.jsonl"           # beside checkpoint/ and state/: the run's log, in their manifests


class CorruptStateError(UserError):
    """A resume state or checkpoint directory that cannot be read."""


def unique_suffix() -> str:
    """A name part no other process uses: temporary and set-aside folders here and in `bench`'s stage store."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _tmp_dir(final: Path) -> Path:
    tmp = final.with_name(f"{final.name}.tmp-{unique_suffix()}")
    tmp.mkdir(parents=True)
    return tmp


def _replace_dir(tmp: Path, final: Path) -> None:
    """Put the complete `tmp` at `final`, replacing what is there (a newer state supersedes an
    older one). The old directory is renamed aside, never deleted in place, so a reader sees
    a complete directory or none; if another process puts one there in between, ours replaces
    it in turn."""
    for _ in range(10):
        old = final.with_name(f"{final.name}.old-{unique_suffix()}")
        try:
            os.rename(final, old)
        except FileNotFoundError:
            old = None
        try:
            os.rename(tmp, final)
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            continue
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return
    raise UserError(f"could not put {final} in place: other processes keep replacing it")


def _verify(folder: Path, files: dict | None) -> None:
    if files is not None:
        problems = check_manifest(folder, files)
        if problems:
            raise ValueError(problems[0])


def save_state(state_dir: Path, *, model_state: dict, optimizer_state: dict, scheduler, step: int,
               rng_states: list, log: Path | None = None) -> None:
    """Everything exact resume needs. `model_state` holds the trainable parameters and
    `optimizer_state` the optimiser's, both full (unsharded) on the CPU; `rng_states` has one
    entry per process (gathered). `log`: the train log so far, copied in (and so in the
    state's manifest): a resumed run takes its first steps' lines from here, so a log cut or
    lost since the save does not leave the finished log missing steps."""
    tmp = _tmp_dir(state_dir)
    if log is not None and Path(log).is_file():
        shutil.copyfile(log, tmp / LOG_FILE)
    torch.save(model_state, tmp / "model.pt")
    torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_states, tmp / "rng.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "files": build_manifest(tmp)}))
    _replace_dir(tmp, state_dir)


def saved_log(state_dir: Path) -> Path | None:
    """The train log copied into a resume state (save_state), None when it has none."""
    path = Path(state_dir) / LOG_FILE
    return path if path.is_file() else None


def state_problem(state_dir: Path) -> str | None:
    """None when there is no resume state or it is intact; else what is wrong with it."""
    if not state_dir.exists():
        return None
    try:
        saved = json.loads((state_dir / "trainer_state.json").read_text())
        int(saved["step"])
        _verify(state_dir, saved.get("files"))
    except Exception as exc:  # any unreadable piece
        return f"{type(exc).__name__}: {exc}"
    return None


def load_state(state_dir: Path, *, load_model, load_optimizer, scheduler, rank: int) -> int:
    """Restore the state saved by `save_state`; returns the optimiser step to continue from.

    `load_model(params)` and `load_optimizer(state)` put the saved full states into the
    (possibly sharded) model and optimiser; whatever they or the files raise is reported as
    a corrupt state.
    """
    try:
        saved = json.loads((state_dir / "trainer_state.json").read_text())
        _verify(state_dir, saved.get("files"))
        step = saved["step"]
        load_model(torch.load(state_dir / "model.pt", map_location="cpu"))
        load_optimizer(torch.load(state_dir / "optimizer.pt", map_location="cpu"))
        scheduler.load_state_dict(torch.load(state_dir / "scheduler.pt"))
        rng = torch.load(state_dir / "rng.pt")[rank]
    except Exception as exc:  # any unreadable piece: one line, and how to recover
        raise CorruptStateError(
            f"resume state {state_dir} is damaged ({type(exc).__name__}: {exc})"
        ) from None
    torch.set_rng_state(rng["cpu"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return int(step)


def rng_state() -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def save_checkpoint(ckpt_dir: Path, *, model, tokenizer, steps: int, state_dict: dict | None = None,
                    dtype: torch.dtype | None = None, log: Path | None = None) -> Path:
    """A standard HF directory (safetensors, config, tokenizer); LoRA adapters are merged first.
    `state_dict`: the full weights when `model`'s own parameters are shards (FSDP). `dtype`:
    the weights' dtype on disk (floating-point tensors cast; the model is cast in place)."""
    tmp = _tmp_dir(ckpt_dir)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()      # lm-eval and vLLM load a plain model, not an adapter
    if dtype is not None:
        model.to(dtype)
        if state_dict is not None:
            state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    done = {"steps": steps, "files": build_manifest(tmp)}
    if log is not None and Path(log).is_file():   # the log the results read: checked with the weights
        done["log"] = {LOG_FILE: file_digest(Path(log))}
    (tmp / DONE_FILE).write_text(json.dumps(done))
    _replace_dir(tmp, ckpt_dir)
    return ckpt_dir


def completed_steps(ckpt_dir: Path) -> int | None:
    """Steps of a complete checkpoint; None when there is none; an error when it is damaged."""
    if not ckpt_dir.exists():
        return None
    try:
        done = json.loads((ckpt_dir / DONE_FILE).read_text())
        steps = done["steps"]
        if not (ckpt_dir / "config.json").exists() or not any(ckpt_dir.glob("*.safetensors")):
            raise ValueError("config.json or the safetensors weights are missing")
        _verify(ckpt_dir, done.get("files"))
    except Exception as exc:
        raise CorruptStateError(
            f"checkpoint {ckpt_dir} is incomplete or damaged ({type(exc).__name__}: {exc})"
        ) from None
    problems = check_manifest(ckpt_dir.parent, done.get("log") or {})
    if problems:    # the run's log (its final loss is a result) cut, edited or gone since training
        raise CorruptStateError(f"the train log of {ckpt_dir.parent} is damaged ({problems[0]})")
    return int(steps)


def set_aside(folder: Path) -> None:
    """Remove a damaged checkpoint or state: renamed aside first (atomic), then deleted."""
    aside = folder.with_name(f"{folder.name}.damaged-{unique_suffix()}")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)
