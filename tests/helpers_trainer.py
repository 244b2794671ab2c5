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


def watch_trained_models(monkeypatch, cycle: bool = False):
    """Weak references to every model `train` loads (and, with `cycle`, each made to sit in a
    reference cycle), and a record of every full collection the trainer asks for."""
    import weakref

    import trainers.trainer as trainer_module
    from trainers import devices

    loaded, collections = [], []
    real_load = trainer_module.load_model

    def load(*args, **kwargs):
        model = real_load(*args, **kwargs)
        if cycle:
            model.__dict__["_self_reference"] = model      # not a submodule: a plain attribute
        loaded.append(weakref.ref(model))
        return model

    real_release = devices.release_memory
    monkeypatch.setattr(trainer_module, "load_model", load)
    monkeypatch.setattr(devices, "release_memory", lambda: (collections.append(1), real_release())[1])
    return loaded, collections
