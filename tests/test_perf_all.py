"""`perf all` and `perf check`: the README's table is the committed output's rendering, and the
regression check's logic on ratios (the measurement itself is shown by the command, not timed here)."""
from __future__ import annotations

import copy
import json

import pytest

from bench.perf.all import COMMITTED, readme_table, render_markdown, table_files
from bench.perf.check import FLOORS, check, load_floors


def _committed() -> dict:
    return json.loads(COMMITTED.read_text())


def test_readme_table_is_the_committed_perf_all_output():
    """The README's performance table, docs/perf/perf_all.md and the rendering of
    docs/perf/perf_all.json are one text (seen failing with one figure of the README's table edited
    by hand, and with a row added to render_markdown without regenerating the files)."""
    committed = _committed()
    rendered = render_markdown(committed)
    assert (COMMITTED.with_suffix(".md")).read_text() == rendered
    docs = table_files()       # README.md, or docs/ if the performance section moves there
    assert docs, "no document holds the generated perf_all block"
    for doc in docs:
        assert readme_table(doc.read_text()) == rendered, doc


def test_committed_figures_meet_the_floors_and_name_their_basis():
    committed = _committed()
    outcome = check(committed, load_floors(FLOORS))
    assert outcome.ok, outcome.failed
    assert committed["train"]["basis"]["timer_stops"] == "trained model written to disk"
    assert committed["machine"]["load_average_before"] and committed["commit"]


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


def test_floors_are_below_every_clean_round_of_the_committed_run():
    """A clean rerun like the committed one passes: each train floor is below the lowest round
    the committed run saw, and the generation floor below its figure."""
    committed, floors = _committed(), load_floors(FLOORS)
    rounds = committed["train"]["round_ratios"]
    assert floors["train"]["step_ratio_vs_precompute"] <= min(rounds["trl_precompute_step"])
    assert floors["train"]["ratio"] <= min(rounds["trl"])
    assert floors["generate"]["ratio"] <= committed["generate"]["ratio"]
