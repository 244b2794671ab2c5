"""`executor: {kind: local}`: N worker processes on this machine, one run at a time each.

Each worker is pinned before it loads a model: to its own GPUs through CUDA_VISIBLE_DEVICES,
or to `cpus_per_run` CPU threads (torch.set_num_threads, OMP_NUM_THREADS), so that two
workers on two cores do not oversubscribe them.

The parent hands each idle worker its next task over the worker's own queue, so it always
knows which run a worker holds: a worker that dies (kill -9, out of memory) fails that run
alone, named with the signal, and a fresh worker takes its place for the runs left. Workers
run in their own session, so Ctrl-C reaches the parent only, which stops each worker once
(SIGINT: a training saves its state) and waits for it; nothing finished is lost.
"""
from __future__ import annotations

import os
import pickle
import queue as queue_lib
import signal
from collections import deque

from bench.errors import BenchError
from bench.run.executors import Fanout, describe_death, pin_threads, wait_or_kill

POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 120      # a stopping training finishes its step and saves its state


def visible_gpus() -> list[str]:
    """The GPU ids this process may hand out: CUDA_VISIBLE_DEVICES's entries, else all."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def plan(config, gpus: list[str] | None = None, cores: int | None = None):
    """(workers, threads per worker, GPU ids per worker or None to leave them as they are)."""
    gpus = visible_gpus() if gpus is None else gpus
    cores = cores or len(os.sched_getaffinity(0))
    per_run = config.gpus_per_run if config.gpus_per_run is not None else (1 if gpus else 0)
    if per_run:
        if not gpus:
            raise BenchError(f"executor.gpus_per_run: {per_run}, but no GPU is visible here; "
                             "set executor.gpus_per_run: 0 to run on CPU")
        workers = config.workers or max(1, len(gpus) // per_run)
        if workers * per_run > len(gpus):
            raise BenchError(f"executor: {workers} workers x {per_run} GPU(s) per run need {workers * per_run} GPUs; "
                             f"{len(gpus)} are visible ({','.join(gpus)}); lower executor.workers")
        devices = [gpus[i * per_run:(i + 1) * per_run] for i in range(workers)]
    else:
        workers = config.workers or max(1, cores // (config.cpus_per_run or 1))
        devices = [[] for _ in range(workers)] if gpus else None   # CPU runs asked for: GPUs hidden
    threads = config.cpus_per_run or max(1, cores // workers)
    return workers, threads, devices


def _worker(slot: int, threads: int, devices, function, payload: bytes, out: str, tasks, events) -> None:
    """A worker's loop: take a task from its own queue, run it, report; None ends it."""
    os.setsid()                       # Ctrl-C at the terminal reaches the parent only
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    pin_threads(threads, devices)
    ctx = pickle.loads(payload)       # after pinning: nothing in it may touch a GPU before
    from bench.run.progress import quiet_library_noise

    quiet_library_noise()
    parent = os.getppid()
    try:
        while True:
            try:
                task = tasks.get(timeout=1.0)
            except queue_lib.Empty:
                if os.getppid() != parent:    # the parent died: no one to report to
                    return
                continue
            if task is None:
                return
            try:
                events.put(("done", slot, function(task, ctx, out)))
            except KeyboardInterrupt:
                events.put(("stopped", slot, None))
                return
            except BaseException as err:  # noqa: BLE001 - reported as this run's failure, the worker goes on
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                events.put(("error", slot, f"{type(err).__name__}: {first}"))
    except KeyboardInterrupt:
        return


class _Slot:
    def __init__(self, mp, slot, threads, devices, fanout, events):
        self.tasks = mp.Queue()
        self.task = None
        self.proc = mp.Process(target=_worker, args=(slot, threads, devices, fanout.function, fanout.payload(),
                                                     str(fanout.out), self.tasks, events),
                               name=f"prefbench-worker-{slot}", daemon=False)
        self.proc.start()


def run_local(fanout: Fanout, config) -> None:
    import multiprocessing

    workers, threads, devices = plan(config)
    workers = min(workers, len(fanout.tasks)) or 1
    # spawn: a fresh interpreter (no forked torch or CUDA state), and this checkout's sys.path
    mp = multiprocessing.get_context("spawn")
    events = mp.Queue()
    pinned = (lambda i: devices[i]) if devices is not None else (lambda i: None)
    slots = [_Slot(mp, i, threads, pinned(i), fanout, events) for i in range(workers)]
    fanout.progress.note(f"local executor: {workers} workers, {threads} CPU thread(s) each"
                         + (f", GPUs {' | '.join(','.join(d) or '-' for d in devices)}" if devices and any(devices) else ""))
    pending = deque(fanout.tasks)
    try:
        while pending or any(s.task is not None for s in slots):
            for i, slot in enumerate(slots):
                if slot.task is None and pending:
                    if not slot.proc.is_alive():     # died between tasks: a fresh one in its place
                        slots[i] = slot = _Slot(mp, i, threads, pinned(i), fanout, events)
                    slot.task = pending.popleft()
                    slot.tasks.put(slot.task)
                    fanout.started(slot.task)
            try:
                kind, i, payload = events.get(timeout=POLL_SECONDS)
            except queue_lib.Empty:
                for slot in slots:
                    if slot.task is not None and not slot.proc.is_alive():
                        fanout.failed(slot.task, describe_death(slot.proc.exitcode, slot.proc.pid))
                        slot.task = None
                continue
            task, slots[i].task = slots[i].task, None
            if kind == "done":
                fanout.finished(task, payload)
            elif kind == "error":
                fanout.failed(task, payload)
            else:   # "stopped": SIGINT or SIGTERM sent to that worker alone; that run alone stops
                fanout.failed(task, "its worker was interrupted (SIGINT or SIGTERM); a training saved its state, "
                                    "run the same command again to resume it")
    except BaseException:
        _stop(slots)
        raise
    for slot in slots:
        slot.tasks.put(None)
    wait_or_kill([s.proc for s in slots], 60)


def _stop(slots) -> None:
    """Ctrl-C, SIGTERM or an error in the parent: SIGINT to every live worker once (a training
    finishes its step and saves its state), wait for them, kill what is left."""
    for slot in slots:
        if slot.proc.is_alive():
            try:
                os.kill(slot.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
    wait_or_kill([s.proc for s in slots], STOP_GRACE_SECONDS)


