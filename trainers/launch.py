"""Entry point of one training run in every process of `accelerate launch`.

    accelerate launch --num_processes N -m trainers.launch SPEC.json

SPEC.json names the model, the objective spec, the TrainConfig, the tokenized data file
and (optionally) the reference log-probs file; each process calls the same `train`, so a
multi-GPU run takes exactly the code path of an in-process run. The main process writes
`result.json` into the run's output folder.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(spec_path: str) -> None:
    from accelerate import PartialState

    from trainers.config import TrainConfig
    from trainers.objectives import build_objective
    from trainers.tokenize import TokenizedPair
    from trainers.trainer import train

    spec = json.loads(Path(spec_path).read_text())
    data = [TokenizedPair(**row) for row in json.loads(Path(spec["train_data"]).read_text())]
    reference = torch.load(spec["reference"]) if spec.get("reference") else None
    result = train(model_path=spec["model_path"], objective=build_objective(spec["objective_spec"]),
                   train_data=data, config=TrainConfig(**spec["config"]), out_dir=spec["out_dir"],
                   reference=reference, progress=spec.get("progress", True),
                   trust_remote_code=spec.get("trust_remote_code", False))
    if PartialState().is_main_process:
        summary = {"status": result.status, "reason": result.reason, "steps": result.steps,
                   "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                   "log_path": str(result.log_path), "started_at": result.started_at}
        (Path(spec["out_dir"]) / "result.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1])
