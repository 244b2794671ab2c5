"""What every local CPU worker needs before its first task, done once per command.

The local executor forks its CPU workers from a multiprocessing forkserver that imports this
module first (bench.executors.local_workers). Its import does what each worker's first task
otherwise paid on its own, twice over on a 2-core machine: ~6 s of imports (torch,
transformers' model and generation code, lm-eval's evaluator, the harness's stages) and
lm-eval's environment record (torch's `collect_env`, which starts subprocesses). The workers
are then forked with all of it in memory, shared copy-on-write, and their first task costs
what any other does.

Nothing here may touch a GPU, a tokenizer's thread pool or torch's intra-op threads: a
forked child inherits none of their threads (the forkserver is only used when no GPU is
visible, and each worker sets its own thread count after the fork).
"""
from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1   # linux/prctl.h
_SERVER = os.getpid()  # this module is imported by the forkserver itself
_forking = None        # the pid of the process about to fork, as its child inherits it


def _note_forking() -> None:
    global _forking
    _forking = os.getpid()


def _die_with_the_forkserver() -> None:
    """In each process the forkserver forks (a worker, an aggregate process): it dies with the
    forkserver. The command kills the forkserver when it ends (local_workers.stop_forkserver),
    and the forkserver ends by itself when the command dies; a child that its pool never
    learned about (a Ctrl-C during its start) would otherwise live on as an orphan, holding the
    command's stdout (seen: a test waiting 300 s on the pipe of a command that had exited).
    Only the forkserver's own children: a worker's own forks are left alone."""
    if _forking != _SERVER:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (AttributeError, OSError):
        return
    if os.getppid() != _SERVER:      # the forkserver died before prctl: the signal will not come
        os._exit(1)


def _imported_by_the_forkserver() -> bool:
    """This module is being imported as the forkserver's preload (by multiprocessing.forkserver.main)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == "multiprocessing.forkserver" and frame.f_code.co_name == "main":
            return True
        frame = frame.f_back
    return False


def _die_with_the_command() -> None:
    """The forkserver dies with the command that started it, however the command dies (kill -9
    of its main process alone included). multiprocessing's own rule, that the forkserver ends
    when its liveness pipe closes, does not hold here: every process it forks keeps a copy of
    that pipe, and each of those dies only with the forkserver (above), so after a kill -9 the
    forkserver, its workers and the resource tracker they hold open lived on for good."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (AttributeError, OSError):
        return
    if os.getppid() == 1:        # the command died before prctl: the signal will not come
        os._exit(1)


if sys.platform.startswith("linux"):
    os.register_at_fork(before=_note_forking, after_in_child=_die_with_the_forkserver)
    if _imported_by_the_forkserver():
        _die_with_the_command()


def warm_up() -> None:
    try:
        _import_and_record()
    except Exception:  # noqa: BLE001 - a worker then imports what it needs itself, and reports what fails
        pass
    # what is imported lives as long as the worker: frozen, gc never scans it again (and never
    # writes to its pages, which stay shared with the other workers)
    gc.collect()
    gc.freeze()


def _import_and_record() -> None:
    from bench.run.progress import quiet_library_noise

    quiet_library_noise()
    # imported here, so that the thread below imports nothing while this one does
    import lm_eval.loggers.utils  # noqa: F401
    import lm_eval.utils  # noqa: F401
    import torch.utils.collect_env  # noqa: F401
    from bench.evaluation.scoring.lm_eval_scorer import _environment_info

    # collect_env spends its time waiting on subprocesses (pip, nvidia-smi...): run beside the
    # imports, and joined before the fork, which copies only the thread that forks.
    record = threading.Thread(target=_environment_info, name="lm-eval-environment-record")
    record.start()
    import bench.evaluation.evaluate  # noqa: F401  generation, scorers, lm-eval's model adapter
    import bench.executors.tasks  # noqa: F401
    import bench.run.one_run  # noqa: F401
    import bench.run.pipeline  # noqa: F401
    import bench.run.shared_stages  # noqa: F401
    import lm_eval.evaluator  # noqa: F401
    import trainers.trainer  # noqa: F401
    import transformers.generation  # noqa: F401
    import transformers.modeling_utils  # noqa: F401  the bulk of any architecture's import
    record.join()
    from bench.executors.local_workers import WARMUP_BACKEND_ENV

    _import_backend_modules(os.environ.get(WARMUP_BACKEND_ENV))


def _import_backend_modules(backend: str | None) -> None:
    """What the suite's generation backend asks its workers to import ahead (its
    `worker_imports`: vLLM's engine modules, ~4 s per worker otherwise). Each module alone: one
    that fails to import is left for the worker, which reports it in its own words."""
    if not backend:
        return
    import importlib

    from bench.evaluation.generation.registry import get_backend

    for module in get_backend(backend).cls.worker_imports:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - the worker imports it again and says what failed
            return


warm_up()
