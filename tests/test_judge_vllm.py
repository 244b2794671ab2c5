"""`vllm serve` of a tiny local model as the LLM judge, through the same client and stage code as
the stand-in judge (issue 23; `pytest -m vllm` in the vLLM CI environment).

The model is the tests' tiny random Llama with the char tokenizer, built in code, and a chat
template given to the server. It answers noise: the point is the path (the probe lists the
served model, chat completions come back, every answer is stored and its verdict parsed or
counted as unparseable), not the quality of its verdicts.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed here")]

CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
SHORT_TEMPLATE = ("name: tiny\nuser: 'Q: {prompt}\\nA: {answer_a}\\nB: {answer_b}\\nBetter:'\n"
                  "verdict_pattern: '\\[\\[(A|B|C)\\]\\]'\nverdicts: {A: 1, B: -1, C: 0}\nmax_tokens: 8\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_judge(tmp_path_factory):
    from bench.models import build_char_tokenizer, save_with_tokenizer, tiny_llama_config
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("vllm_judge")
    tokenizer = build_char_tokenizer()
    # head_dim 64: vLLM's CPU attention has no kernel for the tests' usual 16.
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, hidden_size=128, layers=1, heads=2, max_positions=1024))
    model_dir = save_with_tokenizer(model, tokenizer, root / "model")
    (root / "chat.jinja").write_text(CHAT_TEMPLATE)
    port = _free_port()
    # `vllm serve`'s server, started as its module with this interpreter: the same OpenAI-compatible
    # server, without depending on the `vllm` script (a venv built from a wheel may lack its metadata).
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "tiny-judge",
            "--max-model-len", "1024", "--chat-template", str(root / "chat.jinja"), "--dtype", "float32",
            # On the CPU backend this fraction is of the machine's memory: a small share is plenty here.
            "--gpu-memory-utilization", "0.1", "--enforce-eager"]
    log = open(root / "vllm.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"})
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 600
    try:
        while True:
            if proc.poll() is not None:
                errors = [line for line in (root / "vllm.log").read_text().splitlines() if "Error:" in line]
                pytest.fail(f"vllm serve exited with {proc.returncode}: {' | '.join(errors[:3])[-2000:]}")
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail("vllm serve did not answer within 600 s")
                time.sleep(2)
        yield url, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_vllm_serve_as_the_judge(vllm_judge, monkeypatch):
    from bench.evaluation.judge_cache import JudgmentCache
    from bench.evaluation.judge_client import JudgeClient, probe
    from bench.evaluation.scoring.judge import Comparison, Judge, load_template
    from bench.errors import BenchError
    from bench.suite.schema import JudgeConfig
    from bench.tables.aggregate import judge_rows

    url, root = vllm_judge
    (root / "tiny.yaml").write_text(SHORT_TEMPLATE)
    monkeypatch.setenv("PREFBENCH_VLLM_JUDGE_KEY", "EMPTY")
    cfg = JudgeConfig(base_url=url, model="tiny-judge", api_key_env="PREFBENCH_VLLM_JUDGE_KEY",
                      template=str(root / "tiny.yaml"), max_concurrency=4)
    assert "answered a probe request" in probe(cfg)
    bad = cfg.model_copy(update={"model": "not-served"})
    with pytest.raises(BenchError, match="does not serve 'not-served'; it serves: tiny-judge"):
        probe(bad)
    judge = Judge(cfg, load_template(cfg.template), JudgmentCache(root / "cache.sqlite"),
                  JudgeClient(cfg, key="EMPTY"))
    items = [Comparison(f"p{i}", 0, "reference", f"{i}+{i}=?", f"{2 * i}", f"{2 * i + 1}", 2, 2) for i in range(6)]
    judge.fill(judge.missing(items))
    table = judge.table(items)
    assert len(table) == 6 and judge.client.requests == 12 and len(judge.cache) == 12
    assert table["tokens_policy_first"].gt(0).all() and table["tokens_policy_second"].gt(0).all()
    # a tiny random model answers noise: each of the 12 answers is either parsed or counted
    # unparseable (0-2 per comparison), and the table's rows carry what the cache holds
    assert table["unparseable"].between(0, 2).all()
    assert table["raw_policy_first"].tolist() == [judge.cache.get(judge.calls(i)[0][0])["text"] for i in items]
