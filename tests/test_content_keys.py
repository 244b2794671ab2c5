"""Stage keys follow contents: a local model or data file by its bytes, a hub id by the commit
it resolves to; new weights at the same path recompute what depends on them. And the
trained checkpoint is saved as it was trained (dtype, use_cache)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from bench.suite.load import load_suite
from bench.run.fingerprint import fingerprint, suite_fingerprints
from bench.run.store import StageStore


def _suite(tmp_path, model_dir, data_file):
    return load_suite("suites/smoke.yaml", [f"model.policy={model_dir}", "sft.enabled=false", "data.source=preference",
                                            "data.task_options={}", f"data.path={data_file}", "data.eval_prompts=1", "data.drift_pairs=1",
                                            "scoring.gold=null", "scoring.lm_eval.tasks=[]"])


@pytest.fixture
def inputs(tmp_path, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+1=", "chosen": str(i + 1), "rejected": str(i)}) + "\n"
                            for i in range(6)))
    return model, data


def test_new_weights_at_the_same_path_give_new_keys(tmp_path, inputs, char_tokenizer):
    from bench.models import build_tiny_causal_lm
    from bench.run.prepare import base_stage

    model, data = inputs
    suite = _suite(tmp_path, model, data)
    store = StageStore(tmp_path / "out")
    key_a, _ = base_stage(suite, store, "d", [], progress=False)
    assert base_stage(suite, store, "d", [], progress=False)[0] == key_a        # same bytes: same key
    build_tiny_causal_lm(model, char_tokenizer, seed=1)                          # new weights, same path
    key_b, _ = base_stage(_suite(tmp_path, model, data), store, "d", [], progress=False)
    assert key_b != key_a


def test_data_edited_in_place_is_loaded_again(tmp_path, inputs):
    from bench.run.prepare import data_stage

    model, data = inputs
    store = StageStore(tmp_path / "out")
    key_a, pairs_a, _ = data_stage(_suite(tmp_path, model, data), store)
    data.write_text(data.read_text().replace('"1+1="', '"one plus one="'))
    key_b, pairs_b, _ = data_stage(_suite(tmp_path, model, data), store)
    assert key_b != key_a and len(store.computed) == 2
    assert any(p.prompt == "one plus one=" for split in pairs_b.values() for p in split)


def test_hub_id_is_fingerprinted_by_its_resolved_commit(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    from trainers import net

    monkeypatch.setattr(net, "network_available", lambda *a, **k: False)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    refs = tmp_path / "models--Org--model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("abc123\n")
    assert fingerprint("Org/model") == "hub:Org/model@abc123"
    (refs / "main").write_text("def456\n")                    # the hub moved on: a new key
    assert fingerprint("Org/model") == "hub:Org/model@def456"
    assert fingerprint("Org/absent") == "hub:Org/absent@unresolved"
    assert fingerprint("builtin:tiny-llama") == "builtin:tiny-llama"


def test_suite_fingerprints_cover_policy_data_reward_model_and_tasks(tmp_path, inputs, tiny_reward_model_dir):
    model, data = inputs
    suite = load_suite("suites/smoke.yaml", [f"model.policy={model}", "data.source=preference", "data.task_options={}",
                                             f"data.path={data}",
                                             "reward_model.kind=load", f"reward_model.path={tiny_reward_model_dir}"])
    fps = suite_fingerprints(suite)
    assert set(fps) == {"policy", "data", "reward_model", "lm_eval_tasks"}
    assert all(v.startswith("sha256:") for v in fps.values())
    assert fps["policy"] != fps["reward_model"]
    # byte-code written beside a task's utils.py (lm-eval imports it) is not content
    tasks = tmp_path / "tasks"
    shutil.copytree("suites/tasks", tasks, ignore=shutil.ignore_patterns("__pycache__"))
    before = fingerprint(str(tasks))
    (tasks / "__pycache__").mkdir()
    (tasks / "__pycache__" / "arith_qa_utils.cpython-311.pyc").write_bytes(b"\0")
    assert fingerprint(str(tasks)) == before
    (tasks / "arith_qa.yaml").write_text((tasks / "arith_qa.yaml").read_text() + "\n# edited\n")
    assert fingerprint(str(tasks)) != before


def test_checkpoint_saved_in_training_dtype_with_use_cache_restored(tmp_path, tiny_model_dir, char_tokenizer):
    from safetensors import safe_open

    from tests.helpers_trainer import small_config, tokenized_pairs
    from trainers.objectives import build_objective
    from trainers.trainer import train

    objective = build_objective([{"name": "nll", "weight": 1.0}])
    data = tokenized_pairs(char_tokenizer, n=4)
    for precision, dtype in (("bf16", "bfloat16"), ("fp32", "float32")):
        res = train(model_path=tiny_model_dir, objective=objective, train_data=data, out_dir=tmp_path / precision,
                    config=small_config(max_steps=1, precision=precision, gradient_checkpointing=True), progress=False)
        config = json.loads((res.checkpoint / "config.json").read_text())
        assert config["use_cache"] is True and config["dtype"] == dtype
        with safe_open(str(next(res.checkpoint.glob("*.safetensors"))), "pt") as fh:
            assert {str(fh.get_tensor(k).dtype) for k in fh.keys()} == {f"torch.{dtype}"}
