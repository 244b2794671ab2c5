"""Shared helpers for the trainer tests: random arithmetic-looking pairs."""
from __future__ import annotations

import random

from bench.data.records import PreferencePair


def arith_pairs(n: int, seed: int = 0) -> list[PreferencePair]:
    """Pairs like '12+7=' -> chosen '19', rejected a wrong sum, with varied lengths."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 999)
        wrong = a + b + rng.choice([-11, -1, 1, 10, 100])
        pairs.append(PreferencePair(id=f"arith-{i}", prompt=f"{a}+{b}=", chosen=str(a + b), rejected=str(wrong)))
    return pairs


def small_config(**overrides):
    """A TrainConfig for the tiny model: fp32, no warm-up surprises, a few steps."""
    from bench.suite.schema import TrainConfig

    base = dict(learning_rate=1e-3, max_steps=3, batch_size=4, grad_accum=1, warmup_ratio=0.0,
                scheduler="linear", max_grad_norm=1.0, precision="fp32", max_length=32,
                max_prompt_length=16, seed=0)
    base.update(overrides)
    return TrainConfig(**base)


def tokenized_pairs(tokenizer, n=16, seed=0):
    from trainers.tokenize import tokenize_pairs

    out, _ = tokenize_pairs(arith_pairs(n, seed=seed), tokenizer, max_length=32, max_prompt_length=16)
    return out


def load_params(checkpoint_dir):
    from safetensors.torch import load_file

    (weights,) = list(__import__("pathlib").Path(checkpoint_dir).glob("*.safetensors"))
    return load_file(str(weights))


def ensure_objectives():
    """`trainers.objectives` when it exists; until then a minimal dpo/nll stand-in with its API.

    The stand-in lives only in the tests (it is installed in sys.modules for this process),
    so the trainer is exercised against the documented interface either way.
    """
    import importlib
    import sys
    import types
    from dataclasses import dataclass

    import torch
    import torch.nn.functional as F

    try:
        mod = importlib.import_module("trainers.objectives")
        if hasattr(mod, "build_objective") and hasattr(mod, "pair_metrics"):
            return mod
    except ImportError:
        pass

    @dataclass
    class PairLogps:
        policy_chosen: torch.Tensor
        policy_rejected: torch.Tensor | None
        ref_chosen: torch.Tensor | None
        ref_rejected: torch.Tensor | None
        chosen_mask: torch.Tensor
        rejected_mask: torch.Tensor | None

    @dataclass
    class ObjectiveOutput:
        losses: torch.Tensor
        metrics: dict

    def pair_metrics(p):
        sc, sr = (p.policy_chosen * p.chosen_mask).sum(-1), (p.policy_rejected * p.rejected_mask).sum(-1)
        out = {"logps/chosen": sc, "logps/rejected": sr, "len/chosen": p.chosen_mask.sum(-1),
               "len/rejected": p.rejected_mask.sum(-1)}
        if p.ref_chosen is None:
            return out
        rc, rr = sc - (p.ref_chosen * p.chosen_mask).sum(-1), sr - (p.ref_rejected * p.rejected_mask).sum(-1)
        return {"logps/chosen": sc, "logps/rejected": sr, "logratio/chosen": rc, "logratio/rejected": rr,
                "margin": rc - rr, "accuracy": (rc > rr).float(), "len/chosen": p.chosen_mask.sum(-1),
                "len/rejected": p.rejected_mask.sum(-1)}

    class _Obj:
        def __init__(self, name, beta):
            self.name, self.beta, self.needs_reference = name, beta, name == "dpo"

        def __call__(self, p):
            if self.name == "nll":
                return ObjectiveOutput(-(p.policy_chosen * p.chosen_mask).sum(-1) / p.chosen_mask.sum(-1), {})
            m = pair_metrics(p)["margin"]
            return ObjectiveOutput(-F.logsigmoid(self.beta * m), {})

    def build_objective(spec):
        (term,) = spec
        return _Obj(term["name"], term.get("beta", 0.1))

    stub = types.ModuleType("trainers.objectives")
    stub.PairLogps, stub.ObjectiveOutput, stub.pair_metrics, stub.build_objective = (
        PairLogps, ObjectiveOutput, pair_metrics, build_objective)
    stub.IS_STAND_IN = True
    sys.modules["trainers.objectives"] = stub
    return stub
