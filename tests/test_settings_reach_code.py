"""Every setting of a suite reaches the code (issue 13).

One small suite with every stage (SFT, a trained reward model, reference log-probs, one
policy trained with LoRA, hf generation, reward scoring, KL, drift, lm-eval) runs once, in
this process, while
- transformers' `from_pretrained` entry points record what each load was given and which
  stage's module asked for it: `model.trust_remote_code` must reach every load;
- every suite-schema model records which of its fields the code reads (attribute reads from
  outside the schema's own validators; hashing through `model_dump` is not a read): every
  field must be read, or be listed in NOT_READ_HERE with the path that reads it and the test
  that runs that path.
"""
from __future__ import annotations

import inspect
import shutil
import sys
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[1]

SUITE = {
    "name": "settings_reach_code",
    "description": "every stage, tiny",
    "seeds": [0],
    "model": {"policy": "builtin:tiny-llama", "trust_remote_code": True,
              "builtin": {"hidden_size": 16, "layers": 1, "heads": 2, "tokenizer": "word"}},
    "data": {"source": "arith", "limit": 40, "eval_prompts": 2, "drift_pairs": 2,
             "task_options": {"max_operands": 2, "max_operand": 9, "max_factor": 3}},
    "sft": {"enabled": True, "num_examples": 8,
            "training": {"max_steps": 1, "batch_size": 4, "max_length": 48, "max_prompt_length": 12}},
    "reward_model": {"kind": "train", "batch_size": 4,
                     "training": {"max_steps": 1, "batch_size": 4, "max_length": 48, "max_prompt_length": 12}},
    # Two steps: the log interval is read from the second step on (step 1 is always logged).
    "training": {"max_steps": 2, "batch_size": 4, "max_length": 48, "max_prompt_length": 12},
    "objectives": [{"name": "dpo", "params": {"beta": 0.1}, "training": {"lora": {"r": 2}}},
                   {"label": "rpo", "terms": [{"name": "dpo", "weight": 1.0}, {"name": "nll", "weight": 0.2}]}],
    "generation": {"max_new_tokens": 40, "batch_size": 2},
    "scoring": {"reward_model": True, "gold": "arith", "drift": True, "bootstrap_samples": 10, "compare_to": "dpo",
                "lm_eval": {"tasks": ["arith_qa"], "limit": 2, "batch_size": 2}},
}

# The module (last part of its name) that loads each stage's model; the trainer loads both the
# SFT model and the trained policy, and the reward model (Bradley–Terry) too.
STAGE_MODULES = {"trainer", "reference", "reward_model", "hf", "evaluate", "drift", "huggingface"}

# Fields this run cannot read because their path is not taken here: the path that reads each
# and the test that runs it. Nothing else may be missing.
NOT_READ_HERE = {
    ("DataConfig", "data_dir"): "bench.data.sources, a hub sub-directory (tests/test_data_hh.py)",
    ("DataConfig", "split"): "bench.data.sources, a hub or file split (tests/test_data_sources.py)",
    ("DataConfig", "on_bad_row"): "bench.data.sources, rows of a file (tests/test_data_faults.py)",
    ("RewardModelConfig", "path"): "reward_model.kind: load (tests/test_validate.py)",
    ("AccelerateSection", "num_processes"): "launcher: accelerate (tests/test_trainer_ddp.py)",
    ("AccelerateSection", "config_file"): "launcher: accelerate (tests/test_trainer_fsdp.py)",
    ("GenerationConfigSection", "allow_truncation"): "read when the budget is below the longest answer "
                                                      "(bench.evaluation.budget; tests/test_validate.py, test_e2e.py)",
    ("Suite", "accelerate"): "launcher: accelerate (tests/test_validate.py, test_e2e.py)",
    ("TrainConfig", "epochs"): "read when max_steps is unset (trainers.data_order; tests/test_trainer.py)",
    # executor: local, ray or slurm (this run is in-process): bench.executors.local_workers.plan,
    # ray_tasks and slurm_jobs (tests/test_executors.py, tests/test_executors_e2e.py)
    **{("ExecutorSection", name): "executor: local, ray or slurm (tests/test_executors*.py)"
       for name in ("workers", "cpus_per_run", "gpus_per_run", "ray", "slurm")},
    **{("RaySection", name): "executor: ray (bench.executors.ray_tasks; tests/test_executors_e2e.py)"
       for name in ("address", "num_cpus", "num_gpus")},
    **{("SlurmSection", name): "executor: slurm (bench.executors.slurm_jobs; tests/test_executors_e2e.py)"
       for name in ("cluster", "partition", "timeout_min", "folder", "additional")},
    # scoring.judge needs a judge server: bench.evaluation.judge_client and scoring.judge read
    # each field against the stand-in server of tests/judge_server.py (tests/test_judge.py)
    **{("JudgeConfig", name): "scoring.judge (tests/test_judge.py)"
       for name in ("base_url", "model", "api_key_env", "template", "against", "max_concurrency", "max_requests",
                    "max_retries", "timeout_s", "temperature", "max_tokens")},
}


def _schema_models() -> list[type[BaseModel]]:
    from bench.suite.schema import Suite

    found: list[type[BaseModel]] = []

    def visit(annotation):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.append(annotation)
                for field in annotation.model_fields.values():
                    visit(field.annotation)
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(Suite)
    return found


def _caller() -> str:
    """The module of the stage that asked for the load (the first frame outside the loaders)."""
    for frame in inspect.stack()[2:]:
        module = frame.frame.f_globals.get("__name__", "")
        if module.startswith(("transformers", "trainers.models", "tests.", "test_")) or module == __name__:
            continue
        return module.rsplit(".", 1)[-1]
    return "?"


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """(model loads: (class, stage module, trust_remote_code), field reads: {(model, field)}) of one run."""
    import transformers

    from bench.run.runner import run_suite
    from bench.suite.validate import validate_suite

    loads: list[tuple[str, str, object]] = []
    reads: set[tuple[str, str]] = set()
    models = _schema_models()
    own = tuple(f"{m.__name__}." for m in models)      # the schema's own validators are not readers
    with pytest.MonkeyPatch.context() as mp:
        for cls in (transformers.AutoModelForCausalLM, transformers.AutoModelForSequenceClassification,
                    transformers.AutoTokenizer):
            def spy(*args, _real=cls.from_pretrained, _kind=cls.__name__, **kwargs):
                loads.append((_kind, _caller(), kwargs.get("trust_remote_code")))
                return _real(*args, **kwargs)

            mp.setattr(cls, "from_pretrained", spy)
        for model in models:
            def getattribute(self, name, _model=model, _fields=frozenset(model.model_fields)):
                if name in _fields and not sys._getframe(1).f_code.co_qualname.startswith(own):
                    reads.add((_model.__name__, name))
                return object.__getattribute__(self, name)

            mp.setattr(model, "__getattribute__", getattribute)
        folder = tmp_path_factory.mktemp("suite")
        shutil.copytree(REPO / "suites" / "tasks", folder / "tasks")   # lm-eval's tasks beside the suite
        path = folder / "suite.yaml"
        path.write_text(yaml.safe_dump(SUITE))
        assert SUITE["description"] in str(validate_suite(path))
        summary = run_suite(path, out_dir=folder / "out", progress=False)
    assert not summary.failed
    return loads, reads


def test_every_stage_loads_with_the_suites_trust_remote_code(observed):
    loads, _ = observed
    models = [(kind, where, trust) for kind, where, trust in loads if kind != "AutoTokenizer"]
    assert STAGE_MODULES <= {where for _, where, _ in models}, models
    assert sum(where == "trainer" and kind == "AutoModelForCausalLM" for kind, where, _ in models) >= 2  # SFT, policy
    assert ("AutoModelForSequenceClassification", "trainer", True) in models      # the reward model's training
    wrong = [(kind, where, trust) for kind, where, trust in loads if trust is not True]
    assert not wrong, f"loads without the suite's trust_remote_code: {wrong}"


def test_every_field_of_the_suite_schema_is_read(observed):
    _, reads = observed
    fields = {(m.__name__, f) for m in _schema_models() for f in m.model_fields}
    unread = sorted(fields - reads - NOT_READ_HERE.keys())
    assert not unread, f"suite fields never read by the code: {unread}"
    assert not (NOT_READ_HERE.keys() - fields), "NOT_READ_HERE names a field the schema no longer has"
    print(sorted(r for r in reads if r[0] == "SFTConfig"))
    stale = sorted(NOT_READ_HERE.keys() & reads)
    assert not stale, f"read here after all, drop from NOT_READ_HERE: {stale}"
