"""`perf generate` on a small setting: both sides do exactly the same work."""
from __future__ import annotations

from bench.perf.generate import make_prompts, run


def test_prompts_vary_in_length_and_are_seeded():
    prompts = make_prompts(64, seed=0)
    assert len({len(text) for _, text in prompts}) > 10
    assert make_prompts(64, seed=0) == prompts != make_prompts(64, seed=1)


def test_run_counts_equal_tokens_and_reports_ratio(capsys):
    result = run(num_prompts=4, max_new_tokens=5, batch_size=4, progress=False)
    # min_new_tokens = max_new_tokens: every sample has exactly 5 tokens on both sides
    assert result["hf_tokens"] == result["naive_tokens"] == 20
    assert result["ratio"] == result["hf_tokens_per_s"] / result["naive_tokens_per_s"] > 0
    table = capsys.readouterr().out
    assert "hf" in table and "naive" in table
