"""The real suite's CPU twin (`suites/hh_rlhf_tiny.yaml`) through `bench.py run` with
`generation.backend: vllm`, against the same command with the hf backend. Marker `vllm`.

The twin's default policy has attention head size 16 (hidden 64 / 4 heads), which vLLM's CPU
attention does not have; here it is built at hidden 128 (head size 32, one the CPU kernel has).
Everything else is the twin's: Qwen2 with a byte-level BPE and ChatML, SFT in bf16 with gradient
checkpointing, the DeBERTa-v2 reward model, drift, KL and the two hub-kind lm-eval tasks (which
run through vLLM's engine in the vllm run).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.vllm
REPO = Path(__file__).resolve().parents[1]
TWIN = REPO / "suites" / "hh_rlhf_tiny.yaml"


@pytest.fixture(scope="module")
def twin_128(tmp_path_factory, hh_sample_path) -> Path:
    """The twin at hidden 128 / head size 32. The policy's matrices are redrawn with std 0.2:
    at the default init (0.02) every prompt greedily gives the same 16 newlines, with either
    backend and for every policy, and such a comparison could not tell a stale engine from a
    right one. The redrawn weights give prompt-dependent texts."""
    import torch
    from transformers import AutoModelForCausalLM

    from bench.suite.twin import build_twin

    out = build_twin(tmp_path_factory.mktemp("twin128"), data=hh_sample_path, hidden_size=128)
    model, gen = AutoModelForCausalLM.from_pretrained(out / "policy"), torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0, 0.2, generator=gen)
    model.save_pretrained(out / "policy")
    return out


def _run(out: Path, twin: Path, hh_sample_path: Path, backend: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "bench.py", "run", str(TWIN), "--quiet", "--out", str(out), "--only", "dpo[beta=0.1]"]
    for setting in (f"model.policy={twin / 'policy'}", f"reward_model.path={twin / 'rm_encoder'}",
                    f"scoring.lm_eval.include_path={twin / 'tasks'}", f"data.path={hh_sample_path}", "seeds=[0]",
                    # The suite's 5e-7 for 2 steps leaves the DPO policy's greedy texts equal to the
                    # reference's: then a swap that kept the reference's weights would pass unseen.
                    "training.learning_rate=1e-2",
                    f"generation.backend={backend}"):
        cmd += ["--set", setting]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


def _generations(out: Path, backend: str) -> list[str]:
    """The generations.jsonl of every policy this backend evaluated (the reference, the DPO policy)."""
    found = []
    for folder in sorted((out / "stages" / "evaluate").iterdir()):
        if json.loads((folder / "generation_params.json").read_text())["backend"] == backend:
            found.append((folder / "generations.jsonl").read_text())
    return sorted(found)


def test_twin_suite_with_vllm_equals_hf(tmp_path, twin_128, hh_sample_path):
    """One folder, vllm first: the hf run reuses the data, SFT, reference log-probs and DPO
    training (their keys do not hold the backend; only the evaluate stage's does), so both
    backends evaluate the very same checkpoints. Every evaluated policy's greedy generations are
    equal: text, token count and finish reason per prompt (the records keep no token ids; both
    backends decode the ids with one call, so equal texts of equal length are the same tokens
    up to a tokenizer's ambiguous spellings of one string), and every results.csv value (reward model, KL, drift, length, train, both
    lm-eval tasks; the twin has no judge) is equal."""
    from bench.evaluation.generation.vllm_backend import on_cpu

    out = tmp_path / "run"
    tables, trained = {}, {}
    for backend in ("vllm", "hf"):
        done = _run(out, twin_128, hh_sample_path, backend)
        assert done.returncode == 0, done.stderr[-3000:]
        tables[backend] = pd.read_csv(out / "results.csv")
        trained[backend] = {name: sorted(p.name for p in (out / "stages" / name).iterdir())
                            for name in ("data", "sft", "ref_logps", "train")}
    assert trained["hf"] == trained["vllm"]     # the hf command trained nothing again
    engines = [json.loads(p.read_text())["engine"]["path"]
               for p in (out / "stages" / "evaluate").glob("*/generation_params.json")
               if json.loads(p.read_text())["backend"] == "vllm"]
    # on CPU one engine: the reference starts it, the DPO policy is swapped in (the path under
    # test); on a GPU each policy gets a fresh one
    assert sorted(engines) == (["fresh", "swapped"] if on_cpu() else ["fresh", "fresh"])
    gens = {backend: _generations(out, backend) for backend in ("vllm", "hf")}
    assert len(gens["hf"]) == 2 and gens["hf"][0] != gens["hf"][1]          # the two policies answer differently
    texts = [json.loads(line)["text"] for line in gens["hf"][0].splitlines()]
    assert len(set(texts)) > len(texts) // 2                                 # and differently per prompt
    assert gens["vllm"] == gens["hf"]   # text, token count and finish reason of every prompt

    keys = ["run_id", "scorer", "metric"]
    hf, vllm = (tables[b][~tables[b]["scorer"].str.startswith("judge")].sort_values(keys).reset_index(drop=True)
                for b in ("hf", "vllm"))
    assert {"reward_model", "kl", "drift", "length", "lm_eval:hh_twin_mc", "lm_eval:hh_twin_gen"} <= set(hf["scorer"])
    pd.testing.assert_frame_equal(hf, vllm)
