"""`perf mfu`: the FLOP accounting by hand, and the benchmark end to end on a tiny Qwen2 (CPU)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.perf.mfu import counted_flops, parameter_counts, run


def test_counted_flops_by_hand():
    pairs = [SimpleNamespace(prompt_ids=[1, 2, 3], chosen_ids=[4, 5], rejected_ids=[6, 7, 8, 9])]
    counts = {"body": 10, "head": 5}
    # 9 tokens computed (prompt once) × N_body + 6 response tokens × N_head, times 6 (fwd+bwd) or 2 (fwd)
    assert counted_flops(pairs, counts, 6) == 6 * (9 * 10 + 6 * 5)
    assert counted_flops(pairs * 2, counts, 2) == 2 * 2 * (9 * 10 + 6 * 5)


@pytest.mark.parametrize("tied", [True, False])
def test_parameter_counts_leave_out_the_embedding_and_count_a_tied_head_once(tied):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=100, tie_word_embeddings=tied)
    model = Qwen2ForCausalLM(cfg)
    counts = parameter_counts(model)
    assert counts["head"] == 100 * 16
    layer = sum(p.numel() for p in model.model.layers.parameters()) + model.model.norm.weight.numel()
    assert counts["body"] == layer
    assert counts["total"] == layer + 100 * 16 * (1 if tied else 2)


def test_perf_mfu_runs_and_reports(capsys):
    s = run(size="qwen2-tiny", seq_len=64, batch_size=2, steps=4, warmup_steps=1, progress=False)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("{") and '"mfu"' in last
    assert s["train_tokens_per_s"] > 0 and s["peak_tflops_measured"] > 0
    for key in ("mfu", "mfu_train", "mfu_reference"):
        assert 0 < s[key] < 1, (key, s[key])
    # the combined figure lies between its two parts
    assert min(s["mfu_train"], s["mfu_reference"]) <= s["mfu"] <= max(s["mfu_train"], s["mfu_reference"])


def test_more_warmup_than_steps_is_one_line():
    from click.testing import CliRunner

    from bench.cli import main

    result = CliRunner().invoke(main, ["perf", "mfu", "--size", "qwen2-tiny", "--steps", "2", "--warmup-steps", "2"])
    assert result.exit_code != 0
    assert result.output.strip().count("\n") == 0 and "--steps (2) must be larger than --warmup-steps (2)" in result.output
