"""`launcher: accelerate`: run one training through `accelerate launch` (several GPUs or nodes).

The runner's in-process path calls `trainers.trainer.train` directly; this path writes the
same inputs to files and starts `trainers.launch` under accelerate, which calls the same
function in every process.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from bench.errors import BenchError
from bench.io import atomic_write
from bench.hashing import content_hash


def _launcher(options) -> list[str]:
    """`accelerate launch` on GPUs; on a CPU-only machine `torch.distributed.run` (gloo),
    because `accelerate launch --cpu` starts a single process there. Either way every
    process runs the same `train()`, which builds its Accelerator from the environment."""
    if not torch.cuda.is_available():
        return ["torch.distributed.run", "--nproc_per_node", str(options.num_processes)]
    command = ["accelerate.commands.launch", "--num_processes", str(options.num_processes)]
    if options.config_file:   # relative to where bench.py runs; accelerate starts in the repository root
        command += ["--config_file", str(Path(options.config_file).resolve())]
    return command


def _shared_inputs(ctx, out_dir: Path) -> tuple[Path, Path | None]:
    """The tokenized train data and reference log-probs as files, written once per suite
    (every run of a suite trains on the same data against the same reference)."""
    folder = out_dir.parent.parent / "launch_inputs"
    folder.mkdir(parents=True, exist_ok=True)
    training = ctx.suite.training   # the tokenisation lengths prepare() used for ctx.train_data
    key = content_hash(ctx.data_key, ctx.base_key, training.max_length, training.max_prompt_length)
    data_file = folder / f"train_data-{key}.json"
    if not data_file.exists():
        atomic_write(data_file, lambda tmp: tmp.write_text(json.dumps([dataclasses.asdict(p)
                                                                            for p in ctx.train_data])))
    if ctx.ref_logps is None:
        return data_file, None
    reference_file = folder / f"reference_logps-{key}.pt"
    if not reference_file.exists():
        atomic_write(reference_file, lambda tmp: torch.save(ctx.ref_logps, tmp))
    return data_file, reference_file


def train_with_accelerate(run, ctx, out_dir: Path):
    out_dir = Path(out_dir)
    data_file, shared_reference = _shared_inputs(ctx, out_dir)
    reference_file = shared_reference if run.needs_reference else None
    spec = {"model_path": str(ctx.reference_dir), "objective_spec": run.objective_spec,
            "config": run.training.model_dump(mode="json"), "train_data": str(data_file),
            "reference": str(reference_file) if reference_file else None, "out_dir": str(out_dir),
            "progress": ctx.progress, "trust_remote_code": ctx.suite.model.trust_remote_code}
    spec_file = out_dir / "launch_spec.json"
    spec_file.write_text(json.dumps(spec, sort_keys=True))
    command = [sys.executable, "-m", *_launcher(ctx.suite.accelerate), "-m", "trainers.launch", str(spec_file)]
    completed = subprocess.run(command, cwd=Path(__file__).resolve().parents[2])
    result_file = out_dir / "result.json"
    if completed.returncode != 0 or not result_file.exists():
        raise BenchError(f"accelerate launch exited with code {completed.returncode} (command: {' '.join(command)})")
    result = json.loads(result_file.read_text())
    return SimpleNamespace(**result)
