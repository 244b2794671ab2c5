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


def _launcher(options) -> list[str]:
    """`accelerate launch` on GPUs; on a CPU-only machine `torch.distributed.run` (gloo),
    because `accelerate launch --cpu` starts a single process there. Either way every
    process runs the same `train()`, which builds its Accelerator from the environment."""
    if not torch.cuda.is_available():
        return ["torch.distributed.run", "--nproc_per_node", str(options.num_processes)]
    command = ["accelerate.commands.launch", "--num_processes", str(options.num_processes)]
    if options.config_file:
        command += ["--config_file", str(options.config_file)]
    return command


def train_with_accelerate(run, ctx, out_dir: Path):
    out_dir = Path(out_dir)
    data_file = out_dir / "train_data.json"
    if not data_file.exists():
        data_file.write_text(json.dumps([dataclasses.asdict(p) for p in ctx.train_data]))
    reference_file = None
    if run.needs_reference:
        reference_file = out_dir / "reference_logps.pt"
        if not reference_file.exists():
            torch.save(ctx.ref_logps, reference_file)
    spec = {"model_path": str(ctx.reference_dir), "objective_spec": run.objective_spec,
            "config": run.training.model_dump(mode="json"), "train_data": str(data_file),
            "reference": str(reference_file) if reference_file else None, "out_dir": str(out_dir),
            "progress": ctx.progress}
    spec_file = out_dir / "launch_spec.json"
    spec_file.write_text(json.dumps(spec, sort_keys=True))
    command = [sys.executable, "-m", *_launcher(ctx.suite.accelerate), "-m", "trainers.launch", str(spec_file)]
    completed = subprocess.run(command, cwd=Path(__file__).resolve().parents[1])
    result_file = out_dir / "result.json"
    if completed.returncode != 0 or not result_file.exists():
        raise BenchError(f"accelerate launch exited with code {completed.returncode} (command: {' '.join(command)})")
    result = json.loads(result_file.read_text())
    return SimpleNamespace(**result)
