"""What the one training loop sets up before its first step, the same for every objective
and for the reward model: the optimiser, the learning-rate schedule, the precision, dropout
and LoRA."""
from __future__ import annotations

import math

import torch

# The suite's scheduler names -> transformers'. `constant` warms up like the others (a plain
# constant schedule would ignore warmup_ratio).
SCHEDULERS = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def mixed_precision(precision: str) -> str:
    """accelerate's mixed-precision setting for `training.precision`."""
    if precision == "bf16":
        return "bf16"
    if precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def warmup_steps(ratio: float, total: int) -> int:
    """Warm-up steps as transformers' `TrainingArguments.get_warmup_steps` counts them (ceil)."""
    return math.ceil(total * ratio)


def make_scheduler(optimizer, cfg, total: int):
    """The learning-rate schedule of `cfg.scheduler` over `total` optimiser steps."""
    from transformers import get_scheduler

    return get_scheduler(SCHEDULERS[cfg.scheduler], optimizer,
                         num_warmup_steps=warmup_steps(cfg.warmup_ratio, total), num_training_steps=total)


def disable_dropout(model) -> None:
    """Dropout off, as TRL's `disable_dropout_in_model` (every nn.Dropout), and also the attention
    dropout that Llama/Qwen2-style layers apply functionally from a float attribute. A LoRA
    adapter's own dropout (added later, set by the suite) is left as configured."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def decay_parameter_names(model) -> set[str]:
    """Parameters that get weight decay: not biases, not norm weights (transformers' Trainer rule,
    `Trainer.get_decay_parameter_names`)."""
    from transformers.trainer_pt_utils import get_parameter_names

    patterns = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    return set(get_parameter_names(model, [torch.nn.LayerNorm], patterns))


def adamw(model, cfg, device):
    """AdamW over the trainable parameters, weight decay only where transformers applies it; the
    fused kernel (one update for all tensors, not a Python loop over them) where torch has it
    for this device and dtype, which is the same update rule."""
    decay = decay_parameter_names(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if n in decay], "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    fused = device.type in ("cpu", "cuda") and all(p.dtype in (torch.float32, torch.bfloat16) for _, p in named)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=fused or None)


def apply_lora(model, spec):
    from peft import LoraConfig, get_peft_model

    targets = spec.target_modules if spec.target_modules == "all-linear" else list(spec.target_modules)
    cfg = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                     task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)
