"""perf train: its token count matches what the trainer tokenises; an end-to-end smoke run (slow)."""
from __future__ import annotations

import json

import pytest

from bench.data.records import PreferencePair
from bench.perf.train import _real_tokens, make_pairs
from trainers.tokenize import tokenize_pairs


def test_token_count_is_the_trainers_unpadded_tokens(char_tokenizer):
    rows = make_pairs(20, seed=1)
    data, skipped = tokenize_pairs([PreferencePair(**r) for r in rows], char_tokenizer, max_length=128,
                                   max_prompt_length=64)
    assert skipped == {} and len(data) == 20                      # nothing truncated: both trainers see it all
    expected = sum(2 * len(t.prompt_ids) + len(t.chosen_ids) + len(t.rejected_ids) for t in data)
    assert _real_tokens(rows, char_tokenizer) == expected
    assert make_pairs(20, seed=1) == rows and make_pairs(20, seed=2) != rows


@pytest.mark.slow
def test_cli_prints_json_summary_last():
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "bench.py", "perf", "train", "--steps", "2", "--batch-size", "2"],
                          cwd=repo, capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("harness_tokens_per_s", "trl_tokens_per_s", "trl_precompute_tokens_per_s", "ratio",
                "ratio_vs_precompute", "harness_peak_rss_mb", "trl_peak_rss_mb", "harness_padded_tokens_per_s",
                "ratio_padded"):
        assert summary[key] > 0
    assert summary["ratio"] == pytest.approx(summary["harness_tokens_per_s"] / summary["trl_tokens_per_s"])
    # packing runs each prompt once, so it has fewer real tokens than are counted, in fewer slots than padding
    assert summary["packed_real_tokens"] < summary["tokens"]
    assert summary["packed_real_tokens"] <= summary["packed_slots"] < summary["padded_slots"]


def test_every_side_is_timed_on_the_same_basis():
    """Each worker's timed window imports no module the other side imported before its timer
    (seen failing with the harness worker's `_import_model_modules` call removed: transformers'
    llama modules were then imported inside the harness's timer, TRL's worker had them untimed);
    and the JSON says what each time includes."""
    from bench.perf.train import run

    summary = run(steps=2, batch_size=2, progress=False, raw=True, modes=("harness", "trl"))
    (harness,), (trl,) = summary["raw"]["harness"], summary["raw"]["trl"]
    for mine, other in ((harness, trl), (trl, harness)):
        unfair = set(mine["imported_in_timer"]) & set(other["modules_before_timer"])
        assert not unfair, sorted(unfair)[:20]
    assert "transformers.models.llama.modeling_llama" in harness["modules_before_timer"]
    assert {"timer_starts", "timer_stops", "harness_time_includes", "trl_time_includes"} <= set(summary["basis"])
    for side in ("harness", "trl"):
        assert summary[f"{side}_startup_seconds"] > 0 and summary[f"{side}_save_seconds"] > 0
        assert summary[f"{side}_step_seconds"] > 0


def test_injected_slowdown_makes_each_step_after_the_first_that_many_times_as_long(monkeypatch):
    """perf check's fault: with slowdown 2 a step of 50 ms of work lasts at least 100 ms (a
    sleep never ends early, so this holds on a loaded machine); without it, no sleep is added
    (the timer's sleeps are recorded). Seen failing with the sleep in _Timer.step_done
    switched off, and with it always on."""
    import time

    from bench.perf import train

    slept = []
    real_sleep = time.sleep
    monkeypatch.setattr(train.time, "sleep", lambda s: (slept.append(s), real_sleep(s)))
    for slowdown, at_least in ((2.0, 0.1), (1.0, 0.05)):
        slept.clear()
        timer = train._Timer(slowdown)
        timer.step_done()
        for _ in range(2):
            real_sleep(0.05)          # the step's own work
            timer.step_done()
        assert timer.stop()["step_seconds"] >= at_least
        if slowdown == 1.0:
            assert slept == []                      # no fault: nothing added
        else:
            assert len(slept) == 2 and all(s >= 0.05 for s in slept)   # one sleep per timed step
    assert train._Timer(1.0).stop()["step_seconds"] is None
