"""`executor: {kind: local}`: N worker processes on this machine, one run at a time each.

Each worker is pinned before it loads a model: to its own GPUs through CUDA_VISIBLE_DEVICES,
or to `cpus_per_run` CPU threads (torch.set_num_threads, OMP_NUM_THREADS), so that two
workers on two cores do not oversubscribe them.

The parent hands each idle worker its next task over the worker's own queue, so it always
knows which run a worker holds: a worker that dies (kill -9, out of memory) fails that run
alone, named with the signal, and a fresh worker takes its place for the runs left. Workers
run in their own session, so Ctrl-C reaches the parent only, which stops each worker once
(SIGINT: a training saves its state) and waits for it; nothing finished is lost.

CPU workers (no GPU visible) are forked from a multiprocessing forkserver that has imported
the stack every task needs (bench.executors.worker_warmup): the imports are paid once per command,
beside the parent's own start, instead of once per worker after it. Workers pinned to GPUs
are spawned (a fresh interpreter each): a process that has imported torch must not hand a
CUDA state, or a CUDA_VISIBLE_DEVICES read too early, to its forks.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import queue as queue_lib
import signal
import unittest.mock
from collections import deque
from pathlib import Path

from bench.errors import BenchError
from bench.executors.tasks import Fanout, describe_death, pin_threads, wait_or_kill

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


WARMUP_MODULE = "bench.executors.worker_warmup"
# The suite's generation backend, in the forkserver's environment only (start_early): its warm-up
# imports what the backend lists in `worker_imports`.
WARMUP_BACKEND_ENV = "PREFBENCH_WORKER_BACKEND"


@contextlib.contextmanager
def _sigint_blocked():
    """SIGINT blocked while a child process starts: the mask survives the exec of a new
    interpreter (and a forkserver's forks), until the worker has its own session and handlers
    (_worker); a Ctrl-C meanwhile would print an import's traceback."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _context(devices):
    """forkserver for CPU workers (devices None: no GPU visible), spawn for the others."""
    if devices is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([WARMUP_MODULE])
        return context
    return multiprocessing.get_context("spawn")


def start_early(config, backend: str | None = None) -> None:
    """Start the local executor's forkserver now, unless GPUs per run are asked for: its
    imports (~7 s here) then overlap the parent's own (torch's too: whether a GPU is visible
    is not known before it) and its shared stages. Where GPU workers are planned after all,
    LocalPool spawns them and stops it unused; its imports never touch a GPU. `backend`: the
    suite's generation backend, whose `worker_imports` it adds (worker_warmup), except where an
    NVIDIA driver is present: an engine's import may detect its platform there, touching the GPU
    in a process that forks (GPU workers are spawned and import their engine themselves)."""
    if config.kind != "local" or config.gpus_per_run:
        return
    _context(None)
    warm_backend = "" if Path("/dev/nvidiactl").exists() else (backend or "")
    # the forkserver's environment is this process's at its start: the backend goes in for it only
    with unittest.mock.patch.dict(os.environ, {WARMUP_BACKEND_ENV: warm_backend}), _sigint_blocked():
        multiprocessing.forkserver.ensure_running()


def stop_forkserver() -> None:
    """End the forkserver with the command that started it: the next command (a test's next
    suite, in one process) gets one started with its own environment.

    It is killed, not asked: asked, it ends only once every process it forked has closed its
    copy of the parent's liveness pipe, and reads the request only after its imports; a worker
    left over (its start cut short by Ctrl-C) or a check that failed during the warm-up would
    hold this command for ever or for seconds. It holds nothing worth a clean exit, and every
    process it forked dies with it (bench.executors.worker_warmup sets their parent-death signal)."""
    server = multiprocessing.forkserver._forkserver   # noqa: SLF001 - no public way to stop it
    pid = getattr(server, "_forkserver_pid", None)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    server._stop()   # reaps it and forgets it: the next start makes a new one


def _command_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:    # someone else's process under a reused pid: the command is gone
        return False
    return True


def _worker(slot: int, threads: int, devices, out: str, tasks, events, command: int) -> None:
    """A worker's loop: take a task from its own queue, run it, report; None ends it.

    A task comes as (function, batch key, pickled context or None, task): the context of a
    batch (the shared stages' inputs, then the suite's context for the runs) is sent to a
    worker once and kept, so one pool of workers serves both without starting again."""
    os.setsid()                       # Ctrl-C at the terminal reaches the parent only
    # SIGINT came blocked from the parent (_Slot): a Ctrl-C while this interpreter started would
    # have printed an import's traceback. One that came meanwhile is dropped here; the parent
    # ends a worker without a task by SIGKILL, so none is needed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    pin_threads(threads, devices)
    from bench.run.progress import quiet_library_noise

    quiet_library_noise()
    # The modules every task needs, imported before the worker says it is ready: the parent
    # hands the next task to whichever worker is ready first, not to one still importing.
    import bench.run.one_run  # noqa: F401
    import trainers.trainer  # noqa: F401
    from trainers.devices import settle_memory

    events.put(("ready", slot, None))
    contexts: dict = {}
    try:
        while True:
            try:
                message = tasks.get(timeout=1.0)
            except queue_lib.Empty:
                # The command ended: no one to report to. Watched by pid, not as the parent: a
                # forked worker's parent is the forkserver (on Linux it dies with that anyway:
                # bench.executors.worker_warmup); this is what ends a spawned one, or one elsewhere.
                if not _command_alive(command):
                    return
                continue
            if message is None:
                return
            function, key, payload, task = message
            if payload is not None:       # after pinning: nothing in it may touch a GPU before
                contexts = {key: pickle.loads(payload)}
            settle_memory()               # what the worker holds between tasks is long-lived (trainers.devices)
            try:
                events.put(("done", slot, function(task, contexts[key], out)))
            except KeyboardInterrupt:
                events.put(("stopped", slot, None))
                return
            except BaseException as err:  # noqa: BLE001 - reported as this run's failure, the worker goes on
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                events.put(("error", slot, f"{type(err).__name__}: {first}"))
    except KeyboardInterrupt:
        return


class _Slot:
    def __init__(self, mp, slot, threads, devices, out, events):
        self.tasks = mp.Queue()
        self.task = None
        self.ready = False
        self.drained = False
        self.sent: set[str] = set()       # the batches whose context this worker holds
        self.proc = mp.Process(target=_worker, args=(slot, threads, devices, str(out), self.tasks, events,
                                                     os.getpid()),
                               name=f"prefbench-worker-{slot}", daemon=False)

    def start(self) -> None:
        """Started once the slot is in the pool's list (LocalPool._start), where _stop finds it:
        a Ctrl-C between a start and that list would leave a worker no one ends (a signal mask
        does not defer it: the parent's other threads take the signal)."""
        with _sigint_blocked():
            self.proc.start()


class LocalPool:
    """The local workers, started once per command (when it opens, so their imports overlap
    the parent's first stages) and given every batch of tasks: the shared stages, then the runs."""

    def __init__(self, config, out, note=lambda text: None, *, most: int | None = None):
        self.workers, self.threads, self.devices = plan(config)
        self.workers = min(self.workers, most or self.workers)   # no more workers than tasks
        self.out = out
        self.note = note
        self.mp = _context(self.devices)
        if self.devices is not None:
            stop_forkserver()     # started early (start_early) before GPUs were found here
        self.events = self.mp.Queue()
        self.slots: list[_Slot] = []

    def __enter__(self):
        # Spawned workers start now, so that their imports overlap the parent's first stages.
        # Forked ones start with the first batch: a fork waits for the forkserver's imports,
        # which the parent need not wait for (start_early began them), and then takes no time.
        if self.mp.get_start_method() == "spawn":
            self.start_workers()
        devices = self.devices
        self.note(f"local executor: {self.workers} workers, {self.threads} CPU thread(s) each"
                  + (f", GPUs {' | '.join(','.join(d) or '-' for d in devices)}" if devices and any(devices) else ""))
        return self

    def start_workers(self) -> None:
        if not self.slots:
            self.slots = [self._slot(i) for i in range(self.workers)]
            for slot in self.slots:
                slot.start()

    def _slot(self, i: int) -> _Slot:
        return _Slot(self.mp, i, self.threads, self.devices[i] if self.devices is not None else None,
                     self.out, self.events)

    def run(self, batch) -> None:
        """Every task of `batch` (bench.executors.tasks.Fanout or SharedStages) on the workers,
        each handed to a ready, idle worker; results and failures go to `batch`."""
        self.start_workers()
        slots = self.slots
        key = batch.key
        pending = deque(batch.tasks)
        while pending or any(s.task is not None for s in slots):
            for i, slot in enumerate(slots):
                if slot.task is None and pending and not slot.proc.is_alive():
                    # died between tasks: a fresh one in its place
                    slot.tasks.cancel_join_thread()
                    slots[i] = slot = self._slot(i)
                    slot.start()      # once in the list: see _Slot.start
                if slot.task is None and slot.ready and pending:
                    slot.task = pending.popleft()
                    payload = None if key in slot.sent else batch.payload()
                    slot.sent.add(key)
                    slot.tasks.put((batch.function, key, payload, slot.task))
                    batch.started(slot.task)
            try:
                kind, i, payload = self.events.get(timeout=POLL_SECONDS)
            except queue_lib.Empty:
                for slot in slots:
                    if not slot.proc.is_alive() and (slot.task is not None or not slot.ready):
                        if slot.task is None:     # never ready: it cannot start here at all
                            raise BenchError(f"local executor: worker {slots.index(slot)} exited before "
                                             f"it was ready ({describe_death(slot.proc.exitcode, slot.proc.pid)})")
                        batch.failed(slot.task, describe_death(slot.proc.exitcode, slot.proc.pid))
                        slot.task = None
                continue
            if kind == "ready":
                slots[i].ready = True
                continue
            task, slots[i].task = slots[i].task, None
            if kind == "done":
                batch.finished(task, payload)
            elif kind == "error":
                batch.failed(task, payload)
            else:   # "stopped": SIGINT or SIGTERM sent to that worker alone; that run alone stops
                batch.failed(task, "its worker was interrupted (SIGINT or SIGTERM); a training saved its "
                                   "state, run the same command again to resume it")

    def aggregate_processes(self):
        """A pool of processes for the aggregate's pieces (each run's result rows, the plots,
        drawn while the parent writes the tables): forked from the warm forkserver (CPU
        workers), one per worker, whose work is done by then. None for spawned (GPU) workers:
        a fresh interpreter costs more than the pieces."""
        if self.mp.get_start_method() != "forkserver":
            return contextlib.nullcontext()
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=self.mp)
        # Started now, and nothing imported first: the runs' result rows come first and need only
        # what the forkserver has; matplotlib is imported by the first plot jobs (bench.tables.report).
        for _ in range(self.workers):
            pool.submit(int)
        return pool

    def drain(self) -> None:
        """No more tasks: each worker ends now (an interpreter's exit takes seconds under load),
        while the parent goes on; `__exit__` then waits for them."""
        for slot in self.slots:
            if not slot.drained:
                slot.tasks.put(None)
                slot.drained = True

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.drain()
            wait_or_kill([s.proc for s in self.slots], 60)
            _forget(self.slots)
        else:
            _stop(self.slots)
        stop_forkserver()
        return False


def session(config, out, note, *, tasks: int) -> LocalPool:
    """The registry's opener (bench.executors): no more workers than tasks."""
    return LocalPool(config, out, note, most=tasks)


def run_local(fanout: Fanout, config) -> None:
    """One batch on a pool of its own (the executors' tests)."""
    with LocalPool(config, fanout.out, fanout.progress.note, most=len(fanout.tasks)) as pool:
        pool.run(fanout)


def _stop(slots) -> None:
    """Ctrl-C, SIGTERM or an error in the parent: SIGINT to every worker running a task, once (a
    training finishes its step and saves its state), wait for them, kill what is left. A worker
    without a task (still starting, or idle) has nothing to save: it is killed at once."""
    for slot in slots:
        if slot.proc.is_alive():
            try:
                os.kill(slot.proc.pid, signal.SIGINT if slot.task is not None else signal.SIGKILL)
            except ProcessLookupError:
                pass
    wait_or_kill([s.proc for s in slots], STOP_GRACE_SECONDS)
    _forget(slots)


def _forget(slots) -> None:
    """What is still queued for a worker that has ended is dropped: a batch's context (larger
    than a pipe's buffer) sent to a worker stopped before it read it would otherwise keep the
    queue's feeder thread, and so this process's exit, waiting for a reader forever."""
    for slot in slots:
        slot.tasks.cancel_join_thread()


