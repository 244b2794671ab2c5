"""The training loop's settings as TRL and transformers set them: dropout off, warm-up steps
by ceil, no weight decay on norm weights and biases."""
from __future__ import annotations

import json
import math

import pytest
import torch

import trainers.objectives as objectives
from tests.helpers_trainer import small_config, tokenized_pairs
from trainers.optim import adamw, disable_dropout, warmup_steps
from trainers.trainer import train

DPO = [{"name": "dpo", "weight": 1.0, "beta": 0.1}]


@pytest.fixture(scope="module")
def data(char_tokenizer):
    return tokenized_pairs(char_tokenizer, n=8, seed=1)


def _log(result):
    return [json.loads(ln) for ln in result.log_path.read_text().splitlines()]


def test_dropout_is_off_in_training(tmp_path, char_tokenizer, data):
    """With attention dropout 0.5 in the config, step 1 of DPO still sees policy == reference
    (loss ln 2): dropout noise would make the two passes differ."""
    from bench.models import save_with_tokenizer, tiny_llama_config
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    cfg = tiny_llama_config(char_tokenizer)
    cfg.attention_dropout = 0.5
    model_dir = save_with_tokenizer(LlamaForCausalLM(cfg), char_tokenizer, tmp_path / "model")
    res = train(model_path=model_dir, objective=objectives.build_objective(DPO), train_data=data,
                config=small_config(max_steps=1, batch_size=len(data)), out_dir=tmp_path / "run", progress=False)
    assert _log(res)[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_disable_dropout_zeroes_every_dropout_module():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=1, n_head=2, resid_pdrop=0.3,
                                       embd_pdrop=0.3, attn_pdrop=0.3))
    assert any(m.p > 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    disable_dropout(model)
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


@pytest.mark.parametrize("ratio,total", [(0.1, 12), (0.1, 25), (0.03, 100), (0.5, 3), (0.0, 7)])
def test_warmup_steps_equal_transformers(ratio, total):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir="/tmp/unused", warmup_steps=ratio, report_to=[])
    assert warmup_steps(ratio, total) == args.get_warmup_steps(total)


def test_trainer_warms_up_over_ceil_steps(tmp_path, tiny_model_dir, data):
    # 0.1 x 12 steps = 1.2 -> 2 warm-up steps (rounding gave 1): the lr of step 2 is half the peak.
    res = train(model_path=tiny_model_dir, objective=objectives.build_objective(DPO), train_data=data,
                config=small_config(max_steps=12, batch_size=8, warmup_ratio=0.1, learning_rate=1e-3),
                out_dir=tmp_path / "run", progress=False)
    lrs = [row["lr"] for row in _log(res)]
    assert lrs[:3] == pytest.approx([0.0, 0.5e-3, 1e-3])


def test_no_weight_decay_on_norms_and_biases(tiny_model_dir):
    """The optimiser's groups are transformers' Trainer's: decay exactly on its decay names."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Trainer

    from trainers.models import load_model

    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1))   # Qwen2 has q/k/v biases
    for model in (load_model(str(tiny_model_dir), trust_remote_code=False), qwen):
        opt = adamw(model, small_config(weight_decay=0.1), torch.device("cpu"))
        names = {id(p): n for n, p in model.named_parameters()}
        decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
        not_decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
        # (a tied lm_head is the embedding's parameter: named_parameters lists it once)
        assert decayed == set(Trainer.get_decay_parameter_names(None, model)) & set(names.values())
        assert decayed | not_decayed == set(names.values())
        assert any("norm" in n for n in not_decayed)
        assert model is not qwen or any(n.endswith("bias") for n in not_decayed)
