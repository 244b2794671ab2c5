"""`python bench.py perf grid`: a suite in-process and on N local workers, side by side.

Both start from the same finished shared stages (data, reference SFT, reward model and
reference log-probs, computed once beforehand in a folder of their own and copied into
two fresh output folders): the figures compare what an executor changes, the fan-out of
the runs (the reference's evaluation, each run's training and evaluation) and the
aggregate, with the process start and imports counted in both. Each is a full
`bench.py run` through the CLI, one after the other, never at the same time, `--repeats`
pairs alternated; the ratio is the medians'. The machine's load average is printed beside
each time: other processes on the machine slow either.

Beside each wall time: the CPU seconds of the command's whole process tree (user + system,
its workers and their forkserver included), and its phases from the folder's
logs/phases.jsonl (bench.run.phases): setup (up to the fan-out), runs, aggregate, and the
rest (interpreter start, imports before the suite is read, exit). An executor can only
shorten what runs side by side; the rest bounds the ratio (Amdahl).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.errors import BenchError
from bench.run.phases import last_phases

REPO = Path(__file__).resolve().parents[2]
CI_SUITE = REPO / "suites" / "ci_smoke.yaml"
SHARED_STAGES = ("data", "init", "sft", "reward", "ref_logps")   # the stages computed before the fan-out


def _bench(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    return subprocess.run([sys.executable, str(REPO / "bench.py"), "run", *map(str, args), "--quiet"], cwd=REPO,
                          env=env, capture_output=True, text=True)


def _cpu_seconds() -> float:
    """User + system seconds of every ended child process tree of this one."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def _first_run(suite: Path) -> str:
    from bench.suite.load import load_suite
    from bench.suite.runs import expand_runs

    return expand_runs(load_suite(suite, []))[0].run_id


def _timed(name: str, suite: Path, folder: Path, shared: Path, extra: list) -> dict:
    """One full `bench.py run` of the suite into a fresh folder holding the shared stages."""
    for stage in SHARED_STAGES:
        shutil.copytree(shared / "stages" / stage, folder / "stages" / stage)
    load = _load()
    cpu, started = _cpu_seconds(), time.perf_counter()
    done = _bench(suite, "--out", folder, *extra)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    if done.returncode != 0:
        raise BenchError(f"perf grid: the {name} run failed: {done.stderr.strip().splitlines()[-1:]}")
    phases = last_phases(folder) or {}
    phases["rest"] = seconds - sum(phases.values())
    return dict(seconds=round(seconds, 1), cpu_seconds=round(cpu, 1), load_before=load,
                phases={key: round(value, 1) for key, value in phases.items()})


def _phases_text(timing: dict) -> str:
    return ", ".join(f"{key} {value:.1f} s" for key, value in timing["phases"].items())


def run(*, suite=CI_SUITE, workers: int = 2, out=None, repeats: int = 3, say=print) -> dict:
    """`repeats` pairs, in-process then local, alternated so that a slower spell of the machine
    falls on both; the ratio is the medians' (each pair's own ratio printed beside it)."""
    suite = Path(suite)
    root = Path(out) if out else Path(tempfile.mkdtemp(prefix="prefbench-perf-grid-"))
    if root.exists() and any(root.iterdir()):
        raise BenchError(f"--out: {root} is not empty; perf grid times fresh folders")
    shared = root / "shared"
    say(f"shared stages once, beforehand, in {shared} ({_load()})")
    warm = _bench(suite, "--out", shared, "--only", _first_run(suite))
    if warm.returncode != 0:
        raise BenchError(f"the shared stages failed: {warm.stderr.strip().splitlines()[-1:]}")
    executors = (("inprocess", ["--executor", "inprocess"]), ("local", ["--executor", "local", "--workers", workers]))
    timings: dict[str, list[dict]] = {name: [] for name, _ in executors}
    for attempt in range(1, repeats + 1):
        for name, extra in executors:
            timing = _timed(name, suite, root / f"{name}-{attempt}", shared, extra)
            timings[name].append(timing)
            say(f"{name:>9} #{attempt}: {timing['seconds']:6.1f} s, {timing['cpu_seconds']:5.1f} s of CPU  "
                f"({_phases_text(timing)}; {timing['load_before']} before it)")
    first = (root / "inprocess-1" / "results.csv").read_bytes()
    same = all((folder / "results.csv").read_bytes() == first for folder in root.glob("*-[0-9]*"))
    median = {name: statistics.median(t["seconds"] for t in runs) for name, runs in timings.items()}
    pairs = [a["seconds"] / b["seconds"] for a, b in zip(timings["inprocess"], timings["local"])]
    ratio = median["inprocess"] / median["local"]
    # The runs phase alone (the fan-out an executor can shorten), beside the whole command's.
    runs_median = {name: statistics.median(t["phases"].get("runs", float("nan")) for t in runs)
                   for name, runs in timings.items()}
    runs_ratio = runs_median["inprocess"] / runs_median["local"] if runs_median["local"] else float("nan")
    say(f"local with {workers} workers is {ratio:.2f}x in-process (medians {median['inprocess']:.1f} s and "
        f"{median['local']:.1f} s over {repeats} alternated pair(s); each pair: "
        f"{', '.join(f'{r:.2f}x' for r in pairs)}); the runs phase alone {runs_ratio:.2f}x (medians "
        f"{runs_median['inprocess']:.1f} s and {runs_median['local']:.1f} s); results.csv identical in all {2 * repeats} runs: {same}; "
        f"folders in {root}")
    result = dict(suite=str(suite), workers=workers, repeats=repeats, ratio=round(ratio, 2),
                  pair_ratios=[round(r, 2) for r in pairs], median_seconds=median,
                  runs_phase_ratio=round(runs_ratio, 2), runs_phase_median_seconds=runs_median, results_identical=same,
                  shared_stages="precomputed once, copied into every run's folder", runs=timings, folders=str(root))
    say(json.dumps(result))
    return result
