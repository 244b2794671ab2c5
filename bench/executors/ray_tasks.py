"""`executor: {kind: ray}`: each run a Ray task asking for `gpus_per_run` GPUs and
`cpus_per_run` CPUs; Ray places it on a node that has them and sets its CUDA_VISIBLE_DEVICES.

`executor.ray.address` names a running cluster ("auto", or "ray://head:10001"); without it the
command starts a Ray on this machine and stops it at the end (`ray.num_cpus`/`ray.num_gpus`
declare what it offers: logical GPUs schedule by GPU on a machine without any, as the test
does). Every node must import this package and see the results folder at the same path
(a shared filesystem). A task whose worker dies is not retried by Ray (max_retries=0): its
run is reported failed, and the next `run` resumes it from its saved state.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import socket
from collections import deque
from pathlib import Path

from bench.errors import BenchError
from bench.executors.tasks import Fanout, pin_threads

POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 120
REACH_SECONDS = 10       # a cluster's head answers a TCP connection at once; ray.init would retry for minutes
PLACES_FILE = "ray_tasks.jsonl"   # under <out>/logs: which node ran which task


def _ray_task(function, task, payload: bytes, out: str, threads: int):
    """(the node that ran it, the task's result): the parent logs where each task ran."""
    pin_threads(threads)          # GPUs: Ray has set CUDA_VISIBLE_DEVICES to this task's own
    import ray

    from bench.run.progress import quiet_library_noise

    quiet_library_noise()
    return ray.get_runtime_context().get_node_id(), function(task, pickle.loads(payload), out)   # unpickled after pinning


def _package_root() -> str:
    import bench

    return str(Path(bench.__file__).resolve().parent.parent)


def _head(address: str) -> tuple[str, int] | None:
    """(host, port) of the head an address names: "host:port", "ray://host:port", or "auto"
    resolved as Ray resolves it (RAY_ADDRESS, else the last `ray start` here); None when Ray
    cannot say (ray.init then reports it)."""
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            address = canonicalize_bootstrap_address("auto") or ""
        except Exception:  # noqa: BLE001 - a private helper: without it ray.init reports what is missing
            return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def _check_reachable(address: str) -> None:
    """One line when nothing answers at the cluster's address: ray.init would otherwise retry for
    minutes, printing its C++ warnings (seen: over 5 minutes for an address with no head)."""
    head = _head(address)
    if head is None:
        return
    try:
        socket.create_connection(head, timeout=REACH_SECONDS).close()
    except OSError as err:
        why = "no answer in %d s" % REACH_SECONDS if isinstance(err, socket.timeout) else (err.strerror or str(err))
        raise BenchError(f"executor.ray.address: no Ray cluster answers at {head[0]}:{head[1]} ({why}); "
                         "start one with `ray start --head`, or leave the address out to start Ray for "
                         "this command") from None


def _start(ray, config) -> bool:
    """Connect to the cluster, or start a local Ray; True when this command started it."""
    section = config.ray
    if section.address is not None:
        _check_reachable(section.address)
    # The workers import this checkout (a local Ray) or the installed package (a cluster).
    path = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH", "")) if p)
    options = dict(include_dashboard=False, log_to_driver=False, logging_level="error",
                   runtime_env={"env_vars": {"PYTHONPATH": path, "TRANSFORMERS_VERBOSITY": "error"}})
    try:
        if section.address is None:
            ray.init(num_cpus=section.num_cpus, num_gpus=section.num_gpus, **options)
            return True
        options["runtime_env"]["env_vars"].pop("PYTHONPATH")
        ray.init(address=section.address, **options)
        return False
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as err:   # RayError: a token refused
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BenchError(f"executor.ray: could not start or reach Ray "
                         f"(address {section.address or 'local'}): {first}") from None


class RaySession:
    """Ray for one command: started (or reached) before the shared stages, so that a run asking
    for more than the cluster offers is refused before any of them; then given every batch of
    tasks (the shared stages, then the runs); stopped at the end when this command started it."""

    def __init__(self, config, note=lambda text: None):
        self.config, self.note = config, note
        self.ray, self.started_here = None, False

    def __enter__(self):
        try:
            import ray
        except ImportError:
            raise BenchError("executor.kind: ray needs Ray; install it with pip install 'prefbench[ray]'") from None
        self.started_here = _start(ray, self.config)
        self.ray = ray
        try:
            self.gpus, self.threads = _fits(ray, self.config)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        offered = ray.cluster_resources()
        self.note(f"ray executor: {offered.get('CPU', 0):g} CPUs, {offered.get('GPU', 0):g} GPUs; "
                  f"each run {self.threads} CPU(s), {self.gpus} GPU(s)")
        return self

    def run(self, batch) -> None:
        _fan_out(self.ray, batch, self.config, self.gpus, self.threads)

    def drain(self) -> None:
        pass

    def aggregate_processes(self):
        """None: the parent computes the aggregate alone (a Ray task per piece would cost more than the piece)."""
        return contextlib.nullcontext()

    def __exit__(self, kind, value, tb):
        if self.started_here:
            self.ray.shutdown()
            self.started_here = False
        return False


def session(config, out, note, *, tasks: int) -> RaySession:
    """The registry's opener (bench.executors): Ray places the tasks, whatever their number."""
    return RaySession(config, note)


def run_ray(fanout: Fanout, config) -> None:
    with RaySession(config, fanout.progress.note) as session:
        session.run(fanout)


def _fits(ray, config) -> tuple[int, int]:
    """(GPUs, CPUs) per task; one line when a task asks for more than any cluster offers."""
    offered = ray.cluster_resources()
    gpus = config.gpus_per_run if config.gpus_per_run is not None else (1 if offered.get("GPU", 0) >= 1 else 0)
    threads = config.cpus_per_run or 1
    if gpus > offered.get("GPU", 0) or threads > offered.get("CPU", 0):
        # Ray would wait forever for a node that can take the task: say so now.
        raise BenchError(f"executor: a run asks for {gpus} GPU(s) and {threads} CPU(s); the Ray cluster offers "
                         f"{offered.get('GPU', 0):g} GPU(s) and {offered.get('CPU', 0):g} CPU(s) "
                         "(executor.gpus_per_run, executor.cpus_per_run, executor.ray)")
    return gpus, threads


def _note_place(out: Path, batch, task, node: str) -> None:
    """One line of <out>/logs/ray_tasks.jsonl: which node ran this task (several nodes: the
    record that the cluster was used, and where to look for a task's Ray logs). Written by the
    parent alone: the nodes need not write to one file at once."""
    logs = Path(out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / PLACES_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"batch": batch.key, "task": task.name, "node": node}) + "\n")


def _fan_out(ray, batch, config, gpus: int, threads: int) -> None:
    remote = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0)(_ray_task)
    ctx = ray.put(batch.payload())     # sent to the object store once, not once per task
    pending, inflight = deque(batch.tasks), {}
    try:
        while pending or inflight:
            while pending and (config.workers is None or len(inflight) < config.workers):
                task = pending.popleft()
                inflight[remote.remote(batch.function, task, ctx, str(batch.out), threads)] = task
                batch.started(task)
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                task = inflight.pop(ref)
                try:
                    node, result = ray.get(ref)
                except ray.exceptions.RayError as err:
                    batch.failed(task, _reason(err))
                    continue
                _note_place(batch.out, batch, task, node)
                batch.finished(task, result)
    except BaseException:
        _stop(ray, inflight)
        raise


def _reason(err) -> str:
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return (f"its Ray task failed ({type(err).__name__}: {first[:300]}); finished stages are kept, "
            "run the same command again to resume it")


def _stop(ray, inflight: dict) -> None:
    """Ctrl-C or an error here: cancel the runs in flight (KeyboardInterrupt in each: a training
    saves its state) and wait for them a while; finished stages are already in place."""
    for ref in inflight:
        ray.cancel(ref)
    if inflight:
        ray.wait(list(inflight), num_returns=len(inflight), timeout=STOP_GRACE_SECONDS)
