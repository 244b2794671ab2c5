"""`perf all` and `perf check`: the performance table (docs/PERFORMANCE.md) is the committed
output's rendering, and the regression check's logic on ratios (the measurement itself is shown by the command, not timed here)."""
from __future__ import annotations

import copy
import json

import pytest

from bench.perf.all import COMMITTED, readme_table, render_markdown, table_files
from bench.perf.check import FLOORS, check, load_floors


def _committed() -> dict:
    return json.loads(COMMITTED.read_text())


def test_readme_table_is_the_committed_perf_all_output():
    """The performance table of docs/PERFORMANCE.md, docs/perf/perf_all.md and the rendering of
    docs/perf/perf_all.json are one text (seen failing with one figure of the table edited by hand)."""
    committed = _committed()
    rendered = render_markdown(committed)
    assert (COMMITTED.with_suffix(".md")).read_text() == rendered
    docs = table_files()       # docs/PERFORMANCE.md (or README.md, wherever the block is)
    assert docs, "no document holds the generated perf_all block"
    for doc in docs:
        assert readme_table(doc.read_text()) == rendered, doc


def test_committed_output_names_its_basis_and_the_machine_load():
    committed = _committed()
    assert committed["train"]["basis"]["timer_stops"] == "trained model written to disk"
    assert committed["machine"]["load_average_before"] and committed["machine"]["load_average_after"]
    assert committed["commit"] and committed["versions"]["trl"]


def _result(step=3.0, ratio=1.6, generate=8.0) -> dict:
    return {"train": {"step_ratio_vs_precompute": step, "ratio": ratio}, "generate": {"ratio": generate}}


FLOORS_EXAMPLE = {"train": {"step_ratio_vs_precompute": 2.0, "ratio": 1.0}, "generate": {"ratio": 5.0}}


def test_check_passes_clean_and_fails_each_halved_ratio():
    assert check(_result(), FLOORS_EXAMPLE).ok
    assert len(check(_result(), FLOORS_EXAMPLE).passed) == 3
    slow_trainer = check(_result(step=1.5), FLOORS_EXAMPLE)     # a 2x slower step halves the step ratio
    assert [line.split(" ")[0] for line in slow_trainer.failed] == ["train.step_ratio_vs_precompute"]
    slow_generation = check(_result(generate=4.0), FLOORS_EXAMPLE)
    assert [line.split(" ")[0] for line in slow_generation.failed] == ["generate.ratio"]
    assert check(_result(step=2.0), FLOORS_EXAMPLE).ok          # at the floor passes


@pytest.mark.parametrize("broken", [{"generate": None}, {"train": {"ratio": 1.6}}, {"train": {"ratio": float("nan")}}])
def test_check_fails_a_missing_or_non_numeric_figure(broken):
    """A benchmark or figure missing from the result, or not a number, is a failure, not a pass."""
    result = copy.deepcopy(_result())
    result.update(broken)
    assert not check(result, FLOORS_EXAMPLE).ok


def test_the_floors_file_holds_a_floor_for_each_ratio_the_check_measures():
    floors = load_floors(FLOORS)
    assert set(floors) == {"train", "generate"}
    assert {"step_ratio_vs_precompute", "ratio"} <= set(floors["train"]) and "ratio" in floors["generate"]
    assert all(isinstance(v, (int, float)) and v > 0 for figures in floors.values() for v in figures.values())


def test_the_vllm_floors_file_checks_vllm_against_hf():
    # .ci/run's vLLM step: `perf check --floors suites/baselines/perf_vllm.yaml` in the vLLM environment
    floors = load_floors(FLOORS.with_name("perf_vllm.yaml"))
    assert floors == {"generate": {"vllm_vs_hf": floors["generate"]["vllm_vs_hf"]}}
    assert check({"generate": {"vllm_vs_hf": 2.0 * floors["generate"]["vllm_vs_hf"]}}, floors).ok
    assert not check({"generate": {"ratio": 10.0}}, floors).ok        # vLLM absent: a failure, not a pass


def test_vllm_slowdown_reaches_its_timer_and_the_ratio(monkeypatch):
    import bench.perf.generate as gen

    seen = []
    monkeypatch.setattr(gen, "time_hf", lambda *a, **k: (2.0, 100, 0.1))
    monkeypatch.setattr(gen, "time_naive", lambda *a, **k: (10.0, 100, 0.1))
    monkeypatch.setattr(gen, "time_vllm", lambda model_dir, prompts, config, progress, slowdown:
                        seen.append(slowdown) or (0.5 * slowdown, 100, 3.0))
    assert gen.run(num_prompts=2, max_new_tokens=2, progress=False)["vllm_vs_hf"] == 4.0
    assert gen.run(num_prompts=2, max_new_tokens=2, progress=False, slowdown_vllm=2.0)["vllm_vs_hf"] == 2.0
    assert seen == [1.0, 2.0]
