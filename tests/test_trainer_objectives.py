"""Every objective trains the tiny model; LoRA (reference = adapter disabled) and SFT via nll."""
from __future__ import annotations

import json
import math

import pytest
import torch

from bench.data.records import PreferencePair
from trainers.models import load_model
from bench.suite.schema import LoraSpec
import trainers.objectives as objectives
from tests.helpers_trainer import load_params, small_config, tokenized_pairs
from trainers.tokenize import tokenize_pairs
from trainers.trainer import train


SPECS = {
    "dpo": [{"name": "dpo", "beta": 0.1}],
    "ipo": [{"name": "ipo", "beta": 0.1}],
    "hinge": [{"name": "hinge", "beta": 0.1}],
    "robust": [{"name": "robust", "beta": 0.1, "epsilon": 0.1}],
    "simpo": [{"name": "simpo", "beta": 2.0}],
    "nll": [{"name": "nll"}],
    "adpo_static": [{"name": "adpo", "beta": 0.1, "granularity": "static", "k": 2}],
    "adpo_adaptive": [{"name": "adpo", "beta": 0.1, "granularity": "adaptive", "m": 2}],
    "adadpo": [{"name": "adadpo", "beta": 0.1}],
    "rpo": [{"name": "dpo", "weight": 1.0, "beta": 0.1}, {"name": "nll", "weight": 0.2}],
}


@pytest.fixture(scope="module")
def data(char_tokenizer):
    return tokenized_pairs(char_tokenizer, n=8, seed=2)


@pytest.fixture(scope="module")
def base_params(tiny_model_dir):
    return {k: v.clone() for k, v in load_model(str(tiny_model_dir), trust_remote_code=False).state_dict().items()}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_objective_trains_and_moves_parameters(name, tmp_path, tiny_model_dir, data, base_params):
    if getattr(objectives, "IS_STAND_IN", False) and name not in ("dpo", "nll"):
        pytest.skip("trainers.objectives is not available yet")
    obj = objectives.build_objective([{"weight": 1.0, **t} for t in SPECS[name]])
    res = train(model_path=tiny_model_dir, objective=obj, train_data=data, config=small_config(max_steps=2),
                out_dir=tmp_path / name, progress=False)
    assert res.status == "ok", res.reason
    rows = [json.loads(ln) for ln in res.log_path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    trained = load_params(res.checkpoint)
    moved = max((trained[k] - base_params[k]).abs().max().item() for k in trained)
    assert moved > 1e-5
    assert (tmp_path / name / "reference").exists() == obj.needs_reference


def test_lora_reference_is_the_base_and_checkpoint_is_merged(tmp_path, tiny_model_dir, data, base_params):
    cfg = small_config(max_steps=2, lora=LoraSpec(r=4, alpha=8.0), learning_rate=1e-2, batch_size=len(data))
    res = train(model_path=tiny_model_dir, objective=objectives.build_objective([{"name": "dpo", "weight": 1.0, "beta": 0.1}]),
                train_data=data, config=cfg, out_dir=tmp_path / "lora", progress=False)
    assert res.status == "ok", res.reason
    first = json.loads(res.log_path.read_text().splitlines()[0])
    # LoRA starts as the identity, so with the adapter disabled the reference equals the policy
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    merged = load_params(res.checkpoint)
    assert set(merged) <= set(base_params) and not any("lora" in k for k in merged)
    assert max((merged[k] - base_params[k]).abs().max().item() for k in merged) > 1e-6
    load_model(str(res.checkpoint), trust_remote_code=False)     # loads as a plain HF model


def test_sft_with_nll_lowers_demo_loss(tmp_path, tiny_model_dir, char_tokenizer):
    demos = [PreferencePair(id=f"d{i}", prompt=f"{i}+1=", chosen=str(i + 1), rejected="", metadata={"sft": True})
             for i in range(8)]
    toks, skipped = tokenize_pairs(demos, char_tokenizer, max_length=32, max_prompt_length=16)
    assert skipped == {} and all(t.rejected_ids is None for t in toks)
    res = train(model_path=tiny_model_dir, objective=objectives.build_objective([{"name": "nll", "weight": 1.0}]),
                train_data=toks, config=small_config(max_steps=8, batch_size=8, learning_rate=1e-2),
                out_dir=tmp_path / "sft", progress=False)
    rows = [json.loads(ln) for ln in res.log_path.read_text().splitlines()]
    assert res.status == "ok" and rows[-1]["loss"] < rows[0]["loss"]
    assert "len/chosen" in rows[0] and "logps/chosen" in rows[0]
