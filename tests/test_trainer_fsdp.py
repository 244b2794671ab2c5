"""FSDP (accelerate's FSDP2, parameters sharded over 2 processes, gloo on CPU) trains exactly
as one unsharded process does, writes a full Hugging Face checkpoint, and resumes exactly.

The run uses the shipped `configs/accelerate/fsdp.yaml` through `accelerate launch`; see
tests/accelerate_train_script.py for how FSDP is switched on on a CPU.
"""
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

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("accelerate_train_script.py")
FSDP_CONFIG = ROOT / "configs" / "accelerate" / "fsdp.yaml"


def _launch_fsdp(model_dir, out_dir, port, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
           "--num_processes", "2", "--main_process_port", str(port),
           str(SCRIPT), str(model_dir), str(out_dir), "2", "2", "3", "fsdp", *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _log(out_dir):
    return [json.loads(ln) for ln in (Path(out_dir) / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("fsdp") / "run"
    _launch_fsdp(tiny_model_dir, out, 29561)
    return out


def test_fsdp_two_processes_equal_one_unsharded_process(fsdp_run, tmp_path, tiny_model_dir, char_tokenizer):
    import trainers.objectives as objectives
    single = train(model_path=tiny_model_dir, objective=objectives.build_objective([{"name": "dpo", "weight": 1.0, "beta": 0.1}]),
                   train_data=tokenized_pairs(char_tokenizer, n=16, seed=1), out_dir=tmp_path / "single",
                   progress=False, config=small_config(batch_size=8, grad_accum=1, max_steps=3))
    sharded, plain = _log(fsdp_run), _log(tmp_path / "single")
    assert [r["step"] for r in sharded] == [1, 2, 3]
    assert sharded[0]["loss"] == pytest.approx(0.6931472, abs=1e-6)    # the reference pass saw the full weights
    for a, b in zip(sharded, plain):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["margin"] == pytest.approx(b["margin"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)   # clipped over all shards
    # The checkpoint holds every full (gathered) weight, equal to the unsharded run's.
    ps, pf = load_params(single.checkpoint), load_params(fsdp_run / "checkpoint")
    assert sorted(pf) == sorted(ps)
    for k in ps:
        assert pf[k].shape == ps[k].shape, k
        torch.testing.assert_close(pf[k], ps[k], atol=1e-5, rtol=0)
    initial = load_params(tiny_model_dir)
    moved = max(float((pf[k] - initial[k]).abs().max()) for k in ps)
    assert moved > 1e-4                                                  # it trained


def test_fsdp_checkpoint_loads_with_transformers(fsdp_run):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(fsdp_run / "checkpoint")
    weights = load_params(fsdp_run / "checkpoint")
    params = dict(model.named_parameters())          # a tied lm_head is listed once, as it is stored
    assert set(weights) == set(params)               # every weight stored under the name transformers reads
    for name, p in params.items():
        torch.testing.assert_close(p.detach(), weights[name], atol=0, rtol=0)


def test_fsdp_resumed_equals_uninterrupted(fsdp_run, tmp_path, tiny_model_dir):
    out = tmp_path / "resumed"
    _launch_fsdp(tiny_model_dir, out, 29563, "1", "2")      # state every step; stop after step 2
    state = out / "state"
    assert json.loads((state / "trainer_state.json").read_text())["step"] == 2
    assert not (out / "checkpoint").exists()
    saved = torch.load(state / "model.pt")
    full = load_params(tiny_model_dir)
    assert all(saved[k].shape == full[k].shape for k in full if k in saved)   # gathered, not one shard
    _launch_fsdp(tiny_model_dir, out, 29565)                 # resumes at step 3
    assert [r["step"] for r in _log(out)] == [1, 2, 3]
    assert [r["loss"] for r in _log(out)] == pytest.approx([r["loss"] for r in _log(fsdp_run)], abs=1e-6)
    pr, pf = load_params(out / "checkpoint"), load_params(fsdp_run / "checkpoint")
    for k in pf:
        torch.testing.assert_close(pr[k], pf[k], atol=1e-6, rtol=0)
