"""`model.trust_remote_code` reaches every model and tokenizer load of every stage.

A small suite with every stage (SFT, a trained reward model, reference log-probs, one
policy trained, hf generation, reward scoring, KL, drift, lm-eval) runs with the setting on
while transformers' `from_pretrained` entry points record what each load was given and
which stage's module asked for it.
"""
from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

SUITE = {
    "name": "trust_remote_code",
    "seeds": [0],
    "model": {"policy": "builtin:tiny-llama", "trust_remote_code": True,
              "builtin": {"hidden_size": 16, "layers": 1, "heads": 2, "tokenizer": "word"}},
    "data": {"source": "arith", "limit": 40, "eval_prompts": 2, "drift_pairs": 2,
             "task_options": {"max_operands": 2, "max_operand": 9, "max_factor": 3}},
    "sft": {"enabled": True, "num_examples": 8,
            "training": {"max_steps": 1, "batch_size": 4, "max_length": 48, "max_prompt_length": 12}},
    "reward_model": {"kind": "train", "batch_size": 4,
                     "training": {"max_steps": 1, "batch_size": 4, "max_length": 48, "max_prompt_length": 12}},
    "training": {"max_steps": 1, "batch_size": 4, "max_length": 48, "max_prompt_length": 12},
    "objectives": [{"name": "dpo"}],
    "generation": {"max_new_tokens": 40, "batch_size": 2},
    "scoring": {"reward_model": True, "gold": "arith", "drift": True, "bootstrap_samples": 10,
                "lm_eval": {"tasks": ["arith_qa"], "limit": 2, "batch_size": 2}},
}

# The module (last part of its name) that loads each stage's model; the trainer loads both the
# SFT model and the trained policy, and the reward model (Bradley–Terry) too.
STAGE_MODULES = {"trainer", "reference", "reward_model", "hf", "evaluate", "drift", "huggingface"}


def _caller() -> str:
    """The module of the stage that asked for the load (the first frame outside the loaders)."""
    for frame in inspect.stack()[2:]:
        module = frame.frame.f_globals.get("__name__", "")
        if module.startswith(("transformers", "trainers.models", "tests.", "test_")) or module == __name__:
            continue
        return module.rsplit(".", 1)[-1]
    return "?"


@pytest.fixture()
def recorded(monkeypatch):
    import transformers

    calls: list[tuple[str, str, object]] = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoModelForSequenceClassification,
                transformers.AutoTokenizer):
        real = cls.from_pretrained

        def spy(*args, _real=real, _kind=cls.__name__, **kwargs):
            calls.append((_kind, _caller(), kwargs.get("trust_remote_code")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    return calls


def test_every_stage_loads_with_the_suites_trust_remote_code(tmp_path, recorded):
    from bench.runner import run_suite

    suite = dict(SUITE)
    shutil.copytree(REPO / "suites" / "tasks", tmp_path / "tasks")   # lm-eval's tasks beside the suite
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    summary = run_suite(path, out_dir=tmp_path / "out", progress=False)
    assert not summary.failed
    models = [(kind, where, trust) for kind, where, trust in recorded if kind != "AutoTokenizer"]
    assert STAGE_MODULES <= {where for _, where, _ in models}, models
    assert sum(where == "trainer" and kind == "AutoModelForCausalLM" for kind, where, _ in models) >= 2  # SFT, policy
    assert ("AutoModelForSequenceClassification", "trainer", True) in models      # the reward model's training
    wrong = [(kind, where, trust) for kind, where, trust in recorded if trust is not True]
    assert not wrong, f"loads without the suite's trust_remote_code: {wrong}"
