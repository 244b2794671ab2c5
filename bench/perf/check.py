"""`python bench.py perf check`: the performance regression check, on ratios, never on times.

Every figure it checks is a ratio of two runs measured side by side in one invocation on the
same machine (the harness's trainer against TRL's, the hf backend against a one-prompt loop),
so a slower or busier machine moves both sides; absolute times are not checked at all. The
floors live with the regression baselines (suites/baselines/perf.yaml) and are set below the
spread seen between clean runs on the project's loaded 2-core machine, and above what a 2x
slower trainer step or 2x slower generation gives. `--slowdown-trainer 2` /
`--slowdown-generate 2` inject exactly that fault (a sleep as long as the work itself), to
show the check catches it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
FLOORS = REPO / "suites" / "baselines" / "perf.yaml"


@dataclass
class PerfCheck:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def load_floors(path=FLOORS) -> dict:
    """{benchmark: {figure: floor}} from the YAML file (its `floors` mapping)."""
    data = yaml.safe_load(Path(path).read_text())
    floors = data.get("floors") if isinstance(data, dict) else None
    if not isinstance(floors, dict) or not floors:
        raise ValueError(f"{path}: no `floors` mapping")
    return floors


def check(result: dict, floors: dict) -> PerfCheck:
    """Every floor against `result` ({benchmark: summary}, e.g. perf_all.json): a figure below
    its floor, missing, or not a number fails."""
    out = PerfCheck()
    for bench, figures in floors.items():
        for key, floor in figures.items():
            value = (result.get(bench) or {}).get(key)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                out.failed.append(f"{bench}.{key}: missing from the result (floor {floor})")
            elif value < floor:
                out.failed.append(f"{bench}.{key} = {value:.2f}x is below its floor {floor}x")
            else:
                out.passed.append(f"{bench}.{key} = {value:.2f}x (floor {floor}x)")
    return out


def measure(*, floors: dict, repeats: int = 3, slowdown_trainer: float = 1.0, slowdown_generate: float = 1.0,
            slowdown_vllm: float = 1.0, say=print) -> dict:
    """Run the benchmarks the floors name, side by side, and return {benchmark: summary}."""
    result = {}
    if "train" in floors:
        from bench.perf.train import run as run_train

        # the padded ablation has no floor: left out, so the check costs three runs a round
        result["train"] = run_train(repeats=repeats, progress=False, slowdown=slowdown_trainer,
                                    modes=("harness", "trl", "trl_precompute"))
    if "generate" in floors:
        from bench.perf.generate import run as run_generate

        # best of `repeats` alternated rounds, as the trainer's: one round's ratio moves ±20% here
        result["generate"] = run_generate(progress=False, slowdown=slowdown_generate, repeats=repeats,
                                          slowdown_vllm=slowdown_vllm)
    return result
