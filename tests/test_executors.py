"""The executors' mechanics with stand-in tasks (tests/helpers_executors.py): pinning, a killed
worker, a failing run, Ctrl-C. The same suite's results on every executor: tests/test_executors_e2e.py."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.executors.local_workers import plan, run_local
from tests.helpers_executors import config, fanout, outcome

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the registry: executor.kind -> its module
def test_every_executor_kind_but_inprocess_opens_its_own_session(tmp_path):
    """The suite's `executor.kind` choices are the registry's kinds and `inprocess`; each opens
    the session of its own module (built, not entered: nothing starts)."""
    from typing import get_args

    from bench.executors import EXECUTORS, open_session
    from bench.executors.local_workers import LocalPool
    from bench.executors.ray_tasks import RaySession
    from bench.executors.slurm_jobs import SlurmSession
    from bench.suite.executor import ExecutorSection

    assert set(get_args(ExecutorSection.model_fields["kind"].annotation)) == {"inprocess", *EXECUTORS}
    opened = {kind: open_session(ExecutorSection(kind=kind, workers=1, cpus_per_run=1), tmp_path, print, tasks=3)
              for kind in EXECUTORS}
    assert {kind: type(session) for kind, session in opened.items()} == {
        "local": LocalPool, "ray": RaySession, "slurm": SlurmSession}


# ---------------------------------------------------------------- the plan: who gets which GPUs and threads
def test_each_local_worker_gets_its_own_gpus():
    workers, threads, devices = plan(config(gpus_per_run=2), gpus=[str(i) for i in range(8)], cores=16)
    assert (workers, threads, devices) == (4, 4, [["0", "1"], ["2", "3"], ["4", "5"], ["6", "7"]])
    assert plan(config(workers=3), gpus=["2", "5", "7"], cores=6) == (3, 2, [["2"], ["5"], ["7"]])


def test_too_many_gpus_asked_for_is_one_line():
    with pytest.raises(BenchError, match=r"3 workers x 2 GPU\(s\) per run need 6 GPUs; 4 are visible"):
        plan(config(workers=3, gpus_per_run=2), gpus=["0", "1", "2", "3"], cores=8)
    with pytest.raises(BenchError, match="no GPU is visible"):
        plan(config(gpus_per_run=1), gpus=[], cores=2)


def test_cpu_workers_share_the_cores_and_hide_the_gpus():
    assert plan(config(workers=2), gpus=[], cores=2) == (2, 1, None)     # 2 workers on 2 cores: 1 thread each
    assert plan(config(), gpus=[], cores=4) == (4, 1, None)
    assert plan(config(workers=2, gpus_per_run=0), gpus=["0"], cores=8) == (2, 4, [[], []])


# ---------------------------------------------------------------- the local workers
def test_local_workers_are_pinned_and_results_come_back_in_suite_order(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    fan = fanout({"a": "together", "b": "together"}, ["a", "b", "c", "d"], tmp_path)
    run_local(fan, config(workers=2, gpus_per_run=1, cpus_per_run=1))
    records, store = outcome(fan)
    assert list(records) == ["a", "b", "c", "d"] and all(r.status == "ok" for r in records.values())
    seen = [r.train_summary for r in records.values()]
    assert {s["cuda"] for s in seen} == {"5", "7"}         # one GPU each, never both
    assert len({(s["pid"], s["cuda"]) for s in seen}) == 2  # a worker keeps its GPU
    assert {s["threads"] for s in seen} == {1} and {s["omp"] for s in seen} == {s["rayon"] for s in seen} == {"1"}
    assert len({s["pid"] for s in seen}) == 2              # two workers, reused across runs
    assert store.computed == [f"train/{x}" for x in "abcd"]


def test_cpu_workers_begin_warm_and_each_command_gets_a_fresh_forkserver(tmp_path, monkeypatch):
    """No GPU visible: the workers are forked from a forkserver that imported the stack and
    recorded lm-eval's environment once (bench.executors.worker_warmup), so a first task pays
    neither; the forkserver ends with its command, so the next one sees the environment of
    its own time, as a spawned worker would."""
    from bench.executors.local_workers import LocalPool
    from tests.helpers_executors import WARM_MODULES, warm_state

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert LocalPool(config(workers=2, cpus_per_run=1), tmp_path).mp.get_start_method() == "forkserver"
    for probe in ("first", "second"):
        monkeypatch.setenv("PREFBENCH_TEST_PROBE", probe)
        fan = fanout({}, ["a", "b"], tmp_path, function=warm_state, with_reference=False)
        run_local(fan, config(workers=2, cpus_per_run=1))
        seen = [record.train_summary for record in outcome(fan)[0].values()]
        assert all(s["modules"] == list(WARM_MODULES) and s["recorded"] for s in seen), seen
        assert {s["probe"] for s in seen} == {probe}, seen


def test_the_forkserver_alone_learns_the_suites_generation_backend():
    """start_early hands the suite's generation backend to the forkserver's warm-up (which imports
    the backend's `worker_imports`: vLLM's engine modules; tests/test_vllm.py checks a worker
    holds them) through the forkserver's environment, and leaves this process's as it was."""
    import multiprocessing.forkserver

    from bench.executors import local_workers

    name = local_workers.WARMUP_BACKEND_ENV
    assert name not in os.environ
    local_workers.start_early(config(workers=1, cpus_per_run=1), "vllm")
    try:
        pid = multiprocessing.forkserver._forkserver._forkserver_pid
        environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
        # where an NVIDIA driver is present the forkserver imports no engine (it may touch the GPU)
        assert environ.get(name) == ("" if Path("/dev/nvidiactl").exists() else "vllm")
        assert name not in os.environ
    finally:
        local_workers.stop_forkserver()


def test_the_forkserver_is_stopped_at_once_while_it_imports_or_when_a_worker_is_left(tmp_path):
    """A check failing (or Ctrl-C) while the forkserver still imports must not wait for its
    imports; a worker left out of the pool must not hold the command's end: the forkserver is
    killed, not asked (asked, it waits for every process it forked)."""
    import multiprocessing.forkserver

    from bench.executors import local_workers

    local_workers.start_early(config(workers=1, cpus_per_run=1))
    server = multiprocessing.forkserver._forkserver._forkserver_pid
    started = time.monotonic()
    local_workers.stop_forkserver()
    assert time.monotonic() - started < 2.5            # the warm-up takes longer than that here
    assert not Path(f"/proc/{server}").exists()
    with local_workers.LocalPool(config(workers=1, cpus_per_run=1), tmp_path) as pool:
        left = pool._slot(0)                           # started, never handed to the pool
        left.start()
        deadline = time.time() + 120
        while pool.events.get(timeout=120)[0] != "ready":
            assert time.time() < deadline
        ending = time.monotonic()
    try:
        assert time.monotonic() - ending < 10
    finally:
        with contextlib.suppress(ProcessLookupError):   # it would end with its command, this test process
            os.kill(left.proc.pid, signal.SIGKILL)


def test_every_process_the_forkserver_forked_dies_with_it():
    """A process forked by the warm forkserver that no pool knows about (its start cut short by
    a Ctrl-C) must not outlive the command: it dies with the forkserver, which the command
    kills at its end (seen: such an orphan holding the command's stdout for 300 s)."""
    import multiprocessing.forkserver

    from bench.executors import local_workers

    local_workers.start_early(config(workers=1, cpus_per_run=1))
    orphan = multiprocessing.get_context("forkserver").Process(target=time.sleep, args=(600,), daemon=False)
    orphan.start()                                     # after the warm-up: the forkserver forks it
    try:
        assert orphan.is_alive()
        local_workers.stop_forkserver()
        deadline = time.monotonic() + 5
        while Path(f"/proc/{orphan.pid}").exists() and time.monotonic() < deadline:   # reaped by init once dead
            time.sleep(0.05)
        assert not Path(f"/proc/{orphan.pid}").exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan.pid, signal.SIGKILL)


def test_a_worker_whose_command_is_gone_ends(tmp_path):
    """A forked worker's parent is the forkserver, which may be gone before the worker looked:
    the worker watches the command's own pid instead."""
    from bench.executors.local_workers import _command_alive

    assert _command_alive(os.getpid())
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not _command_alive(int(done.stdout))


def _wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert time.time() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_a_killed_worker_fails_its_run_alone(tmp_path):
    import threading

    fan = fanout({"b": "wait"}, ["a", "b", "c", "d"], tmp_path)

    def kill_b():
        _wait_for(tmp_path / "b.pid")
        os.kill(int((tmp_path / "b.pid").read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill_b)
    killer.start()
    run_local(fan, config(workers=2, cpus_per_run=1))
    killer.join()
    records, _ = outcome(fan)
    assert [records[x].status for x in "abcd"] == ["ok", "failed", "ok", "ok"]
    assert "was killed by SIGKILL" in records["b"].reason and "run the same command again" in records["b"].reason
    assert "SIGKILL" in (tmp_path / "logs" / "b-0.log").read_text()
    assert ("finished", "b seed=0", False) in fan.progress.events


def test_a_run_that_raises_fails_alone(tmp_path):
    fan = fanout({"a": "raise"}, ["a", "b"], tmp_path)
    run_local(fan, config(workers=1, cpus_per_run=1))
    records, _ = outcome(fan)
    assert records["a"].status == "failed" and records["a"].reason == "RuntimeError: boom in a"
    assert records["b"].status == "ok"


STOPPER = """
import sys
from pathlib import Path
from tests.helpers_executors import config, fanout
from bench.executors.local_workers import run_local
out = Path(sys.argv[1])
fan = fanout({"a": "wait", "b": "wait"}, ["a", "b", "c"], out)
try:
    run_local(fan, config(workers=2, cpus_per_run=1))
except KeyboardInterrupt:
    print("stopped", flush=True)
"""


def test_ctrl_c_stops_every_worker_once(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", STOPPER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    _wait_for(tmp_path / "a.pid")
    _wait_for(tmp_path / "b.pid")
    workers = [int((tmp_path / f"{x}.pid").read_text()) for x in "ab"]
    parent.send_signal(signal.SIGINT)           # the parent only: as Ctrl-C, workers are in their own session
    out, _ = parent.communicate(timeout=120)
    assert out.strip() == "stopped"
    for label in "ab":                          # each saw one KeyboardInterrupt, in its task
        assert (tmp_path / f"{label}.stopped").read_text() == "SIGINT"
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (tmp_path / "c.pid").exists()    # nothing new started after Ctrl-C


def test_a_failed_reference_evaluation_fails_the_suite_after_the_runs(tmp_path):
    fan = fanout({"reference": "raise"}, ["a", "b"], tmp_path)
    run_local(fan, config(workers=1, cpus_per_run=1))
    assert (tmp_path / "a.done").exists() and (tmp_path / "b.done").exists()   # the runs went on
    with pytest.raises(BenchError, match="the reference's evaluation failed: RuntimeError: boom in reference"):
        outcome(fan)


def test_gpus_asked_for_and_absent_is_one_line_before_any_stage(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "bench.py"), "run", str(REPO / "suites" / "ci_smoke.yaml"),
                           "--out", str(tmp_path / "out"), "--executor", "local", "--set", "executor.gpus_per_run=1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: executor.gpus_per_run: 1, but no GPU is visible here; set executor.gpus_per_run: 0 to run on CPU"]
    assert not (tmp_path / "out" / "stages").exists()


# ---------------------------------------------------------------- GPU over-asks: one line before any stage
def _run_ci_suite(out: Path, *settings, env=None):
    command = [sys.executable, str(REPO / "bench.py"), "run", str(REPO / "suites" / "ci_smoke.yaml"), "--out", str(out)]
    for setting in settings:
        command += ["--set", setting]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def test_a_ray_gpu_over_ask_is_one_line_before_any_stage(tmp_path):
    pytest.importorskip("ray")
    done = _run_ci_suite(tmp_path / "out", "executor.kind=ray", "executor.ray.num_cpus=1", "executor.ray.num_gpus=1",
                         "executor.gpus_per_run=2")
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        "error: executor: a run asks for 2 GPU(s) and 1 CPU(s); the Ray cluster offers 1 GPU(s) and 1 CPU(s) "
        "(executor.gpus_per_run, executor.cpus_per_run, executor.ray)"]
    assert not (tmp_path / "out" / "stages").exists()


def test_a_ray_address_with_no_cluster_or_no_port_is_one_line_before_any_stage(tmp_path):
    """Without the reachability check, ray.init retried an address with no head for over 5
    minutes, printing C++ warnings; a malformed address is the suite file's error."""
    pytest.importorskip("ray")
    import socket

    with socket.socket() as sock:      # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = _run_ci_suite(tmp_path / "out", "executor.kind=ray", f"executor.ray.address=127.0.0.1:{port}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f"error: executor.ray.address: no Ray cluster answers at 127.0.0.1:{port} (Connection refused); start one "
        "with `ray start --head`, or leave the address out to start Ray for this command"]
    assert not (tmp_path / "out" / "stages").exists()
    done = _run_ci_suite(tmp_path / "out", "executor.kind=ray", "executor.ray.address=headnode")
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f"error: {REPO / 'suites' / 'ci_smoke.yaml'}: executor.ray.address: 'headnode' is not a Ray cluster address: give auto, "
        "host:port (the head's, as `ray start --head` prints it) or ray://host:port"]


def test_node_gpus_reads_sinfo_gres():
    from bench.executors.slurm_jobs import node_gpus

    assert node_gpus("gpu:8\n(null)\n") == 8
    assert node_gpus("gpu:a100:4(S:0-1)\ngpu:h100:2,gpu:a100:1,shard:8\n") == 4
    assert node_gpus("(null)\n") == 0


def test_a_slurm_gpu_over_ask_is_one_line_before_any_stage(tmp_path):
    """`sinfo` on the login node says what a node of the partition has; a stand-in sinfo here."""
    pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sinfo").write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\nprintf 'gpu:a100:2(S:0-1)\\n(null)\\n'\n")
    (bin_dir / "sinfo").chmod(0o755)
    done = _run_ci_suite(tmp_path / "out", "executor.kind=slurm", "executor.slurm.partition=gpu",
                         "executor.gpus_per_run=4", env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        "error: executor.gpus_per_run: 4, but a node of Slurm partition gpu has at most 2 GPU(s); "
        "lower executor.gpus_per_run or choose another executor.slurm.partition"]
    assert "--partition gpu" in (bin_dir / "args").read_text()
    assert not (tmp_path / "out" / "stages").exists()


def test_an_error_while_the_local_workers_start_is_still_one_line(tmp_path):
    """The workers start before the shared stages; an error found there (a batch larger than
    the data, after the data stage) ends them while they still import torch: one line, no
    worker's traceback (a SIGINT then printed one per worker)."""
    done = _run_ci_suite(tmp_path / "out", "executor.kind=local", "executor.workers=2", "training.batch_size=1000")
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("[")]   # progress lines
    assert len(lines) == 1 and lines[0].startswith("error: ") and "training.batch_size: 1000 pairs" in lines[0], lines


def test_a_shared_stage_failing_on_a_worker_fails_the_suite_in_one_line(tmp_path):
    """Both side-by-side stages fail on their workers (no training pairs, no reference model
    where it is said to be): one line naming each stage and why, a traceback in a log."""
    from bench.executors.local_workers import LocalPool
    from bench.run.progress import StageProgress
    from bench.run.shared_stages import run_side_by_side
    from bench.run.store import StageStore
    from bench.suite.load import load_suite

    suite = load_suite(REPO / "suites" / "ci_smoke.yaml", [])
    inputs = dict(suite=suite, data_key="d", base_key="b", reference_dir=tmp_path / "no-such-model", train_pairs=[],
                  train_data=None, drift_data=[object()])
    with pytest.raises(BenchError) as info:
        with LocalPool(config(workers=2, cpus_per_run=1), tmp_path, most=2) as pool:
            run_side_by_side(pool, ["reward", "ref_logps"], inputs, StageStore(tmp_path),
                             StageProgress(total_runs=0, enabled=False))
    text = str(info.value)
    log = tmp_path / "logs" / "shared-ref_logps.log"
    assert "\n" not in text and text.startswith(
        "the reward stage failed: reward model training got no preference pairs; the ref_logps stage failed: "), text
    assert text.endswith(f"(traceback in {log}); finished stages are kept"), text
    assert "Traceback" in log.read_text()


UNREAD = """
import os, signal, sys, time
from pathlib import Path
from bench.executors.local_workers import LocalPool
from tests.helpers_executors import config
with LocalPool(config(workers=1, cpus_per_run=1), Path(sys.argv[1])) as pool:
    pool.start_workers()        # a forked worker starts with the first batch otherwise
    slot = pool.slots[0]
    while pool.events.get(timeout=120)[0] != "ready":
        pass
    os.kill(slot.proc.pid, signal.SIGKILL)       # ended before it read what is sent next
    slot.proc.join()
    slot.tasks.put(b"x" * (1 << 20))             # more than a pipe holds: the feeder thread waits
print("left", flush=True)
"""


def test_a_context_never_read_by_an_ended_worker_does_not_hold_the_exit(tmp_path):
    done = subprocess.run([sys.executable, "-c", UNREAD, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=90)     # without dropping it, the process never exits
    assert done.returncode == 0 and done.stdout.strip() == "left", done.stderr[-2000:]


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, their children...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_kill_9_of_the_main_process_alone_leaves_no_process_behind(tmp_path):
    """kill -9 of only a command's main process (not its group): the forkserver, the workers it
    forked and the resource tracker end too, within seconds (seen: all four alive for good)."""
    script = ("import sys\nfrom pathlib import Path\nfrom bench.executors.local_workers import LocalPool\n"
              "from tests.helpers_executors import config, fanout\nout = Path(sys.argv[1])\n"
              "with LocalPool(config(workers=2, cpus_per_run=1), out) as pool:\n"
              "    pool.run(fanout({'a': 'wait', 'b': 'wait'}, ['a', 'b'], out, with_reference=False))\n")
    main = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    below: set[int] = set()
    try:
        deadline = time.time() + 240
        while not ((tmp_path / "a.pid").exists() and (tmp_path / "b.pid").exists()):
            assert time.time() < deadline and main.poll() is None, "the workers never started"
            time.sleep(0.1)
        below = _descendants(main.pid)
        workers = {int((tmp_path / f"{name}.pid").read_text()) for name in "ab"}
        assert workers <= below and len(below) >= 4, below      # forkserver, 2 workers, resource tracker
        os.kill(main.pid, signal.SIGKILL)
        main.wait()
        deadline = time.time() + 15
        while not all(_gone(pid) for pid in below) and time.time() < deadline:
            time.sleep(0.1)
        left = sorted(pid for pid in below if not _gone(pid))
        assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in left]
    finally:
        for pid in [main.pid, *below]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
