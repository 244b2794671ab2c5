"""Two processes (torch.distributed.run + accelerate, gloo on CPU) equal one process at the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers_trainer import load_params, small_config, tokenized_pairs
from trainers.trainer import train

SCRIPT = Path(__file__).with_name("accelerate_train_script.py")


def test_two_processes_equal_one(tmp_path, tiny_model_dir, char_tokenizer):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # torch.distributed.run starts the two processes; accelerate inside picks up DDP over gloo.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           str(SCRIPT), str(tiny_model_dir), str(tmp_path / "ddp"), "2", "2", "3"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one process, same global batch (2 per micro-step × 2 accumulation × 2 processes = 8)
    import trainers.objectives as objectives
    single = train(model_path=tiny_model_dir, objective=objectives.build_objective([{"name": "dpo", "weight": 1.0, "beta": 0.1}]),
                   train_data=tokenized_pairs(char_tokenizer, n=16, seed=1), out_dir=tmp_path / "single",
                   progress=False, config=small_config(batch_size=8, grad_accum=1, max_steps=3))
    logs = [[json.loads(ln) for ln in (tmp_path / d / "train_log.jsonl").read_text().splitlines()] for d in ("ddp", "single")]
    assert [r["step"] for r in logs[0]] == [1, 2, 3]
    for a, b in zip(*logs):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["margin"] == pytest.approx(b["margin"], abs=1e-5)
        # Accuracy counts margins > 0. At step 1 policy = reference, so every margin is 0 up
        # to float rounding (micro-batches of 2 vs 8 pairs round differently): it is compared
        # from step 2 on, once margins are away from the tie.
        if a["step"] > 1:
            assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-6)
    pd, ps = load_params(tmp_path / "ddp" / "checkpoint"), load_params(single.checkpoint)
    for k in ps:
        torch.testing.assert_close(pd[k], ps[k], atol=1e-5, rtol=0)
