"""Run by tests/test_trainer_ddp.py under `python -m torch.distributed.run --nproc_per_node 2`.

argv: model_dir out_dir batch_size grad_accum max_steps
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.models import load_tokenizer  # noqa: E402
from tests.helpers_trainer import ensure_objectives, small_config, tokenized_pairs  # noqa: E402
from trainers.trainer import train  # noqa: E402

torch.set_num_threads(1)


def main(model_dir, out_dir, batch_size, grad_accum, max_steps):
    objectives = ensure_objectives()
    data = tokenized_pairs(load_tokenizer(model_dir), n=16, seed=1)
    res = train(model_path=model_dir, objective=objectives.build_objective([{"name": "dpo", "weight": 1.0, "beta": 0.1}]),
                train_data=data, out_dir=out_dir, progress=False,
                config=small_config(batch_size=int(batch_size), grad_accum=int(grad_accum), max_steps=int(max_steps)))
    assert res.status == "ok", res.reason
    from accelerate import PartialState

    assert PartialState().num_processes == 2, "the run was not distributed"


if __name__ == "__main__":
    main(*sys.argv[1:])
