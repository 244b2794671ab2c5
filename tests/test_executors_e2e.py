"""The CI suite on every executor gives the in-process results.csv, byte for byte (the
in-process run is conftest's `finished`); a killed worker, Ctrl-C and a rerun lose nothing;
the shared stages that do not depend on each other run side by side on the executor."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "suites" / "ci_smoke.yaml"

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def bench(*args, timeout=900):
    return subprocess.run([sys.executable, str(REPO / "bench.py"), *args], cwd=REPO, env=ENV, timeout=timeout,
                          capture_output=True, text=True)


def _state(pid: int) -> str | None:
    """A process's state letter, None once it is gone (a zombie counts as gone: it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if state == "Z" else state


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        found.append((int(proc.name), ppid, cmdline))
    return found


def _workers(parent: int) -> list[int]:
    """The parent's worker processes: spawned children, or the children of its forkserver
    (CPU workers: bench.executors.local_workers); not its resource tracker."""
    processes = _processes()
    forkservers = {pid for pid, ppid, cmdline in processes if ppid == parent and "forkserver" in cmdline}
    return [pid for pid, ppid, cmdline in processes
            if (ppid == parent and "spawn_main" in cmdline) or ppid in forkservers]


def _missing_stages(out: Path, runs: int) -> int:
    """Stages of the fan-out not finished yet: a rerun must compute these and nothing else."""
    stages = out / "stages"

    def done(name):
        folder = stages / name
        return [d for d in folder.iterdir() if not d.name.startswith(".") and (d / "STAGE_DONE.json").is_file()] \
            if folder.is_dir() else []

    trained = [d for d in (stages / "train").iterdir() if (d / "checkpoint").is_dir()]
    return (runs + 1 - len(done("evaluate"))) + (1 - len(done("chosen"))) + (runs - len(trained))


def _side_by_side(out: Path) -> list[dict]:
    """The reward model and the reference log-probs, each computed once, by two workers at once:
    each started before the other ended (in sequence, one would start after the other's end)."""
    times = [json.loads(line) for line in (out / "logs" / "shared_stages.jsonl").read_text().splitlines()]
    assert sorted(t["stage"] for t in times) == ["ref_logps", "reward"], times
    first, second = times
    assert first["pid"] != second["pid"], times
    assert max(first["started"], second["started"]) < min(first["ended"], second["ended"]), times
    return times


def test_local_workers_killed_and_stopped_then_resumed_give_the_inprocess_results(finished, tmp_path):
    reference, _ = finished
    out, errors = tmp_path / "local", tmp_path / "stderr.txt"
    with open(errors, "w") as err:
        proc = subprocess.Popen([sys.executable, str(REPO / "bench.py"), "run", str(SUITE), "--out", str(out),
                                 "--quiet", "--executor", "local", "--workers", "2"], cwd=REPO, env=ENV,
                                stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    try:
        deadline = time.time() + 600
        train = out / "stages" / "train"
        chosen = out / "stages" / "chosen"      # written last by the reference's task: both workers now train
        while not (chosen.is_dir() and any((d / "STAGE_DONE.json").is_file() for d in chosen.iterdir())
                   and train.is_dir() and len(list(train.iterdir())) >= 3):
            assert proc.poll() is None and time.time() < deadline, errors.read_text()[-3000:]
            time.sleep(0.1)
        workers = _workers(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)           # a worker dies mid-run
        while "was killed by SIGKILL" not in errors.read_text():
            assert proc.poll() is None and time.time() < deadline, errors.read_text()[-3000:]
            time.sleep(0.1)
        assert f"its worker (pid {workers[0]}) was killed by SIGKILL" in errors.read_text()
        proc.send_signal(signal.SIGINT)               # Ctrl-C: reaches the parent alone, as at a terminal
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, errors.read_text()[-3000:]
    assert "stopped:" in errors.read_text()
    assert all(_state(pid) is None for pid in _workers(proc.pid) + workers)   # every worker stopped
    assert not (out / "results.csv").exists()
    missing = _missing_stages(out, runs=len(pd.read_parquet(reference / "runs.parquet")) - 1)
    assert 0 < missing < 21
    again = bench("run", str(SUITE), "--out", str(out), "--quiet", "--executor", "local", "--workers", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"({missing} stages computed" in again.stdout      # nothing finished was redone
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
    _side_by_side(out)      # in the first command; the rerun found them finished
    # A rerun of the finished suite reads every run in the parent: no task goes to a worker.
    third = bench("run", str(SUITE), "--out", str(out), "--executor", "local", "--workers", "2")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "(0 stages computed" in third.stdout
    runs = len(pd.read_parquet(reference / "runs.parquet")) - 1
    assert f"{runs} run(s) already finished in the results folder" in third.stderr
    assert "started " not in third.stderr, third.stderr[-3000:]


def _same_rows(out: Path, reference: Path, runs: int) -> None:
    """out's results.csv rows are the in-process ones of the same runs (and the reference's)."""
    ids = set(pd.read_parquet(out / "runs.parquet").run_id)
    assert len(ids) == runs + 1
    expected = [line for line in (reference / "results.csv").read_text().splitlines(keepends=True)[1:]
                if line.split(",")[1] in ids]
    assert (out / "results.csv").read_text().splitlines(keepends=True)[1:] == expected


def test_ray_on_a_local_cluster_with_logical_gpus_gives_the_inprocess_rows(finished, tmp_path):
    """2 CPUs and 2 logical GPUs declared, one GPU per run: Ray schedules the tasks by GPU (at
    most two at once) on a machine that has none, and sets each task's CUDA_VISIBLE_DEVICES.
    From a copy of the data and SFT stages, so that the reward model and the reference
    log-probs are two Ray tasks side by side; two runs (ipo needs the reference log-probs,
    simpo does not) to keep it short: each Ray GPU task is a fresh process (Ray's default for
    GPU tasks), so every task pays the imports (the local test runs the whole suite)."""
    reference, _ = finished
    out = tmp_path / "ray"
    for stage in ("data", "init", "sft"):
        shutil.copytree(reference / "stages" / stage, out / "stages" / stage)
    done = bench("run", str(SUITE), "--out", str(out), "--executor", "ray", "--set", "executor.ray.num_cpus=2",
                 "--set", "executor.ray.num_gpus=2", "--set", "executor.gpus_per_run=1", "--only", "ipo",
                 "--only", "simpo")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[grid] ray executor: 2 CPUs, 2 GPUs; each run 1 CPU(s), 1 GPU(s)" in done.stderr
    assert "[grid] 2/2 done, 0 running, 0 failed" in done.stderr
    _same_rows(out, reference, runs=2)
    _side_by_side(out)


def test_slurm_jobs_through_submitit_give_the_inprocess_rows(finished, tmp_path):
    """submitit's local executor stands in for Slurm: the same pickled jobs, run on this machine.
    From a copy of the data and SFT stages (the reward model and the reference log-probs are
    two jobs side by side), and one run, to keep it short: each job is a fresh process that
    pays the imports."""
    reference, _ = finished
    out = tmp_path / "slurm"
    for stage in ("data", "init", "sft"):
        shutil.copytree(reference / "stages" / stage, out / "stages" / stage)
    done = bench("run", str(SUITE), "--out", str(out), "--quiet", "--executor", "slurm", "--only", "ipo",
                 "--set", "executor.slurm.cluster=local", "--set", "executor.cpus_per_run=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1/1 runs ok" in done.stdout
    _same_rows(out, reference, runs=1)
    _side_by_side(out)
    assert len(list((out / "logs" / "slurm").glob("*_log.err"))) == 4   # one job per task: submitit's logs


# ---------------------------------------------------------------- a Ray cluster of two nodes on this machine
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_node(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    """One node, `ray start --block` in a process group of its own: Ray's reaper ends the node's
    processes with that command, and the teardown signals the group, so nothing outlives the test
    (never `ray stop`: it would stop every Ray of this user on the machine)."""
    ports = ["--dashboard-agent-listen-port", str(_free_port()),   # fixed by default: two nodes here collide
             "--metrics-export-port", str(_free_port())]
    return subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--num-cpus", "1",
                             "--num-gpus", "0", "--node-ip-address", "127.0.0.1", "--object-store-memory",
                             str(200 * 2**20), "--disable-usage-stats", *ports, *args],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_started(node: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while "Ray runtime started" not in log.read_text(errors="replace"):
        assert node.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.5)


def _end_group(node: subprocess.Popen) -> None:
    """SIGTERM to the node's process group (its raylet, GCS, workers), then SIGKILL what is left
    (a node drains for up to 30 s on SIGTERM; this one runs nothing that needs it)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(node.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(node.pid, 0)
            except ProcessLookupError:
                return
            node.poll()          # reap the leader, whose zombie would keep the group alive
            time.sleep(0.2)


@pytest.fixture
def two_node_ray(tmp_path):
    """A head node (`ray start --head`, resource node_a) and a second node (node_b) joining it,
    1 CPU each, both on this machine; their session files in a temporary folder of their own.
    Yields the head's address; both are ended at teardown, whatever the test did."""
    pytest.importorskip("ray")
    # short: Ray's unix sockets live under it (at most 107 bytes a path)
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    # The tasks import this checkout: a cluster's nodes import what their own environment has
    env = {**ENV, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}   # a head's token would need sharing
    env.pop("RAY_ADDRESS", None)
    port, nodes = _free_port(), []
    try:
        nodes.append(_ray_node(["--head", "--port", str(port), "--temp-dir", str(temp), "--include-dashboard=false",
                                "--resources", '{"node_a": 1}'], tmp_path / "head.log", env))
        _wait_started(nodes[0], tmp_path / "head.log")
        nodes.append(_ray_node(["--address", f"127.0.0.1:{port}", "--resources", '{"node_b": 1}'],
                               tmp_path / "node_b.log", env))
        _wait_started(nodes[1], tmp_path / "node_b.log")
        yield f"127.0.0.1:{port}"
    finally:
        for node in reversed(nodes):
            _end_group(node)
        left = [pid for node in nodes for pid, _, _ in _processes() if _pgid(pid) == node.pid]
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left after the test: {left}"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_a_ray_cluster_of_two_nodes_gives_the_inprocess_rows_on_both_nodes(finished, tmp_path, two_node_ray):
    """The CI suite's shared stages and two runs on a running cluster of two nodes
    (executor.ray.address), 1 CPU each: the in-process rows, and tasks on both nodes. The
    reward model and the reference log-probs are two tasks at once on 2 CPUs, one per node.
    From a copy of the data and SFT stages, and two runs, to keep it short."""
    reference, _ = finished
    out = tmp_path / "cluster"
    for stage in ("data", "init", "sft"):
        shutil.copytree(reference / "stages" / stage, out / "stages" / stage)
    done = bench("run", str(SUITE), "--out", str(out), "--executor", "ray", "--set",
                 f"executor.ray.address={two_node_ray}", "--set", "executor.cpus_per_run=1", "--only", "ipo",
                 "--only", "simpo")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[grid] ray executor: 2 CPUs, 0 GPUs; each run 1 CPU(s), 0 GPU(s)" in done.stderr
    places = [json.loads(line) for line in (out / "logs" / "ray_tasks.jsonl").read_text().splitlines()]
    assert sorted(p["task"] for p in places) == ["ipo seed=0", "ref_logps", "reference", "reward", "simpo seed=0"]
    assert len({p["node"] for p in places}) == 2, places      # the cluster has two: both were used
    _same_rows(out, reference, runs=2)
    _side_by_side(out)
