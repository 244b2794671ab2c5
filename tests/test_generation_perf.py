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


def test_repeats_keep_each_sides_fastest_round(monkeypatch):
    # perf check measures generation as the best of alternated rounds: each side's fastest.
    import bench.perf.generate as gen

    hf_times, naive_times = iter([3.0, 1.0, 2.0]), iter([10.0, 12.0, 8.0])
    monkeypatch.setattr(gen, "time_hf", lambda *a, **k: (next(hf_times), 100, 0.1))
    monkeypatch.setattr(gen, "time_naive", lambda *a, **k: (next(naive_times), 100, 0.1))
    monkeypatch.setattr(gen, "time_vllm", lambda *a, **k: None)
    result = run(num_prompts=2, max_new_tokens=2, batch_size=2, progress=False, repeats=3)
    assert result["seconds"] == {"hf": 1.0, "naive": 8.0}
    assert result["ratio"] == 8.0
    assert result["round_ratios"] == [round(10 / 3, 3), 12.0, 4.0]
