"""The CPU twin of the real suite (`suites/hh_rlhf_tiny.yaml`), run end to end.

The twin is `suites/hh_rlhf.yaml` with its hub parts replaced by local stand-ins built in
code (`bench.suite.twin`) and its sizes shrunk; nothing else differs (checked below), so every
stage and code path of the real suite runs here: the HH-RLHF loader on the sample in data/hh-rlhf/,
SFT on chosen through a ChatML template, a Qwen2 policy with a byte-level BPE tokenizer,
a DeBERTa-v2 (encoder) reward model loaded from a directory, reference log-probs, DPO,
generation, reward scores, KL, drift and two hub-kind lm-eval tasks on local json.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
REAL, TWIN = ROOT / "suites" / "hh_rlhf.yaml", ROOT / "suites" / "hh_rlhf_tiny.yaml"

# Everything the twin may change: sizes (how much data, how many steps, how long, how many
# samples) and paths (local stand-ins for hub parts). Any other difference fails the test.
SIZE_AND_PATH_KEYS = {
    "name", "description",
    "model.policy",                                   # path: the Qwen2 stand-in
    "data.path",                                      # path: the HH sample in data/hh-rlhf/ instead of the hub
    "data.limit", "data.eval_prompts", "data.drift_pairs",
    "reward_model.path",                              # path: the DeBERTa-v2 stand-in
    "reward_model.batch_size",
    "generation.backend",                             # hf here; vllm at head size 32: tests/test_vllm_twin.py
    "generation.max_new_tokens", "generation.batch_size",
    "scoring.lm_eval.tasks",                          # hub tasks -> hub-kind tasks on local json
    "scoring.lm_eval.include_path",                   # path: where those task YAMLs are
    "scoring.lm_eval.limit", "scoring.lm_eval.batch_size", "scoring.bootstrap_samples",
    *(f"{section}.{key}" for section in ("training", "sft.training")
      for key in ("max_steps", "batch_size", "grad_accum", "max_length", "max_prompt_length", "log_every")),
}


def _flat(node, prefix=""):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def test_twin_differs_from_the_real_suite_only_in_size_and_path_keys():
    real, twin = _flat(yaml.safe_load(REAL.read_text())), _flat(yaml.safe_load(TWIN.read_text()))
    differing = {k for k in real.keys() | twin.keys() if real.get(k, "<absent>") != twin.get(k, "<absent>")}
    assert differing <= SIZE_AND_PATH_KEYS, sorted(differing - SIZE_AND_PATH_KEYS)
    assert differing == SIZE_AND_PATH_KEYS, sorted(SIZE_AND_PATH_KEYS - differing)   # the list stays exact


@pytest.fixture(scope="session")
def twin_dir(tmp_path_factory, hh_sample_path) -> Path:
    from bench.suite.twin import build_twin

    return build_twin(tmp_path_factory.mktemp("twin"), data=hh_sample_path)


def twin_overrides(twin_dir: Path, hh_sample_path: Path) -> list[str]:
    return [f"model.policy={twin_dir / 'policy'}", f"reward_model.path={twin_dir / 'rm_encoder'}",
            f"scoring.lm_eval.include_path={twin_dir / 'tasks'}", f"data.path={hh_sample_path}", "seeds=[0]"]


@pytest.fixture(scope="module")
def twin_run(tmp_path_factory, twin_dir, hh_sample_path):
    from bench.run.runner import run_suite

    out = tmp_path_factory.mktemp("twin_run")
    summary = run_suite(TWIN, overrides=twin_overrides(twin_dir, hh_sample_path), out_dir=out,
                        only=["dpo[beta=0.1]"], progress=False)
    return summary, out


def test_twin_suite_runs_every_stage(twin_run):
    summary, out = twin_run
    assert summary.failed == [] and summary.total == 1
    stages = out / "stages"
    for name in ("data", "sft", "ref_logps", "train", "evaluate", "chosen"):
        assert any((stages / name).iterdir()), name
    assert len(list((stages / "evaluate").iterdir())) == 2          # the reference and the DPO policy
    data_info = json.loads(next((stages / "data").iterdir()).joinpath("STAGE_DONE.json").read_text())
    assert data_info["source"].startswith("harmless-base-test-1800")
    results = pd.read_csv(out / "results.csv")
    scorers = set(results["scorer"])
    assert {"reward_model", "kl", "drift", "length", "train",
            "lm_eval:hh_twin_mc", "lm_eval:hh_twin_gen"} <= scorers, scorers
    policy = results[results["objective"] == "dpo"]
    assert policy[policy["scorer"] == "kl"]["value"].notna().all()


def test_twin_sft_reference_is_trained_on_chosen_in_bf16_with_cache_on(twin_run):
    from safetensors import safe_open

    _, out = twin_run
    (ckpt,) = [p / "checkpoint" for p in (out / "stages" / "sft").iterdir()]
    log = [json.loads(line) for line in (ckpt.parent / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2                                             # sft.training.max_steps
    config = json.loads((ckpt / "config.json").read_text())
    assert config["use_cache"] is True                              # off only while gradient checkpointing
    assert config["dtype"] == "bfloat16"
    with safe_open(str(next(ckpt.glob("*.safetensors"))), "pt") as fh:
        assert {str(fh.get_tensor(k).dtype) for k in fh.keys()} == {"torch.bfloat16"}


def test_twin_generation_params_are_the_suites_not_the_checkpoints(twin_run):
    _, out = twin_run
    for folder in (out / "stages" / "evaluate").iterdir():
        params = json.loads((folder / "generation_params.json").read_text())
        assert params["repetition_penalty"] == 1.0 and params["do_sample"] is False
        assert params["checkpoint_generation_config"]["repetition_penalty"] == 1.3   # recorded, overridden
        assert params["max_new_tokens"] == 16 and params["prompts_truncated"] == 0


def test_twin_runs_table_has_checkpoint_fingerprints_and_suite_hash(twin_run, twin_dir):
    import hashlib

    _, out = twin_run
    runs = pd.read_parquet(out / "runs.parquet")
    assert (runs["checkpoint"].str.len() > 0).all()
    policy = runs[runs["objective"] == "dpo"].iloc[0]
    assert (out / policy["checkpoint"] / "config.json").exists()
    fingerprints = json.loads(policy["fingerprints"])
    assert set(fingerprints) == {"policy", "data", "reward_model", "lm_eval_tasks"}
    assert all(v.startswith("sha256:") for v in fingerprints.values())
    text = (out / "suite.resolved.yaml").read_text()
    assert hashlib.sha256(text.encode()).hexdigest() == policy["suite_hash"] == \
        (out / "suite.resolved.sha256").read_text().strip()
    assert yaml.safe_load(text)["model"]["policy"] == str(twin_dir / "policy")


def test_twin_keep_checkpoints_false_deletes_weights_and_rerun_reuses_evaluation(twin_run, twin_dir, hh_sample_path):
    from bench.run.runner import run_suite

    _, out = twin_run
    overrides = twin_overrides(twin_dir, hh_sample_path) + ["keep_checkpoints=false"]
    first = run_suite(TWIN, overrides=overrides, out_dir=out, only=["dpo[beta=0.1]"], progress=False)
    runs = pd.read_parquet(out / "runs.parquet")
    policy = runs[runs["objective"] == "dpo"].iloc[0]
    assert policy["checkpoint_kept"] == "false" and not (out / policy["checkpoint"]).exists()
    assert first.computed == 0                      # keep_checkpoints is not part of any key
    again = run_suite(TWIN, overrides=overrides, out_dir=out, only=["dpo[beta=0.1]"], progress=False)
    assert again.computed == 0 and again.failed == []                 # not trained again
    assert pd.read_csv(out / "results.csv").equals(pd.read_csv(out / "results.csv"))


def test_reward_models_of_both_kinds_load_from_local_dirs(twin_dir):
    """Encoder (DeBERTa-v2): `[CLS] prompt [SEP] response [SEP]`, [CLS] kept when too long;
    decoder (Qwen2 classifier): the chat-templated conversation, its end kept."""
    from bench.evaluation.scoring.reward_model import RewardModelScorer

    enc = RewardModelScorer(twin_dir / "rm_encoder", progress=False)
    tok = enc.tokenizer
    short = enc.encode(["How do I bake bread?"], ["Mix flour and water."])[0]
    assert short == tok("How do I bake bread?", "Mix flour and water.")["input_ids"]   # the model card's call
    long_prompt, long_reply = "Human: tell me a story. " * 200, "Once upon a time there was a baker. " * 200
    (ids,) = enc.encode([long_prompt], [long_reply])
    assert len(ids) == enc.model.config.max_position_embeddings
    assert ids[0] == tok.cls_token_id and ids.count(tok.sep_token_id) == 2 and ids[-1] == tok.sep_token_id
    reply_start = tok(long_reply.strip(), add_special_tokens=False)["input_ids"][:20]
    sep = ids.index(tok.sep_token_id)
    assert ids[sep + 1: sep + 21] == reply_start                   # the response keeps its start
    scores = enc.score([long_prompt, "hi"], [long_reply, "hello"])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)

    dec = RewardModelScorer(twin_dir / "rm_decoder", progress=False)
    messages = [({"role": "user", "content": "How do I bake bread?"},)]
    (ids,) = dec.encode(["\n\nHuman: How do I bake bread?\n\nAssistant:"], [" Mix flour and water."], messages)
    assert dec.tokenizer.decode(ids).startswith("<|im_start|>user\nHow do I bake bread?<|im_end|>")
    assert len(dec.score(["x"], ["y"], [({"role": "user", "content": "x"},)])) == 1
