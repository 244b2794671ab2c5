"""`executor: {kind: slurm}`: each run a Slurm job (one job array) through submitit.

The command runs on a login node: it computes the shared stages there (or in a job of its
own: `srun ... python bench.py run`), then submits one job per run and waits for them. The
results folder, the suite's context (written once next to submitit's files) and this
package must be on a filesystem every node sees at the same path. `executor.slurm.cluster:
local` runs the same jobs through submitit's local executor (tests, a machine without Slurm).
"""
from __future__ import annotations

import contextlib
import pickle
import signal
import subprocess
import time
from pathlib import Path

from bench.errors import BenchError
from bench.executors.tasks import Fanout, pin_threads

POLL_SECONDS = 2.0


def _slurm_task(function, task, ctx_file: str, out: str, threads: int):
    # scancel and the time limit send SIGTERM: stop as on Ctrl-C (a training saves its state)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    pin_threads(threads)          # GPUs: Slurm has set CUDA_VISIBLE_DEVICES to the job's own
    from bench.run.progress import quiet_library_noise

    quiet_library_noise()
    with open(ctx_file, "rb") as fh:
        ctx = pickle.load(fh)
    return function(task, ctx, out)


def _gpus(config, section) -> int:
    return config.gpus_per_run if config.gpus_per_run is not None else (1 if section.cluster == "slurm" else 0)


def _parameters(config, section) -> dict:
    gpus = _gpus(config, section)
    params = dict(timeout_min=section.timeout_min, cpus_per_task=config.cpus_per_run or 1, name="prefbench",
                  slurm_partition=section.partition, slurm_array_parallelism=config.workers)
    if gpus:
        params["gpus_per_node"] = gpus
    params.update({f"slurm_{key}": value for key, value in section.additional.items()})
    return params


def node_gpus(gres_lines: str) -> int:
    """The most GPUs one node has, from `sinfo -o %G` lines ("gpu:8", "gpu:a100:4(S:0-1)",
    "gpu:a100:2,shard:8", "(null)")."""
    most = 0
    for line in gres_lines.split():
        count = 0
        for item in line.split(","):
            parts = item.split("(")[0].split(":")
            if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
                count += int(parts[-1])
        most = max(most, count)
    return most


def check_gpus(config) -> None:
    """A run asking for more GPUs than any node of the partition has would wait in the queue
    forever: refused in one line, before any stage runs (`sinfo`, on the login node)."""
    section = config.slurm
    gpus = _gpus(config, section)
    if not gpus:
        return
    if section.cluster != "slurm":   # submitit's local executor: this machine's GPUs
        from bench.executors.local_workers import visible_gpus

        have, where = len(visible_gpus()), "this machine has (executor.slurm.cluster: local)"
    else:
        command = ["sinfo", "--noheader", "--format", "%G"] + (["--partition", section.partition]
                                                              if section.partition else [])
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise BenchError("executor.kind: slurm, but sinfo is not found here: run from a Slurm login node "
                             "(or set executor.slurm.cluster: local)") from None
        except subprocess.TimeoutExpired:
            raise BenchError(f"executor.slurm: {' '.join(command)} did not answer in 60 s") from None
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise BenchError(f"executor.slurm: {' '.join(command)} failed: {lines[-1] if lines else done.returncode}")
        have = node_gpus(done.stdout)
        where = (f"a node of Slurm partition {section.partition} has" if section.partition
                 else "a node of this Slurm cluster has")
    if gpus > have:
        raise BenchError(f"executor.gpus_per_run: {gpus}, but {where} at most {have} GPU(s); "
                         "lower executor.gpus_per_run" + ("" if section.cluster != "slurm"
                                                          else " or choose another executor.slurm.partition"))


class SlurmSession:
    """Slurm for one command: the GPU check before the shared stages, then every batch of
    tasks (the shared stages, then the runs) as one job array each."""

    def __init__(self, config, note=lambda text: None):
        self.config, self.note = config, note

    def __enter__(self):
        check_gpus(self.config)
        return self

    def run(self, batch) -> None:
        run_slurm(batch, self.config, self.note)

    def drain(self) -> None:
        pass

    def aggregate_processes(self):
        """None: the parent computes the aggregate alone (a Slurm job per piece would cost more than the piece)."""
        return contextlib.nullcontext()

    def __exit__(self, kind, value, tb):
        return False


def session(config, out, note, *, tasks: int) -> SlurmSession:
    """The registry's opener (bench.executors): one job array per batch, whatever its size."""
    return SlurmSession(config, note)


def run_slurm(fanout: Fanout, config, note=None) -> None:
    try:
        import submitit
    except ImportError:
        raise BenchError("executor.kind: slurm needs submitit; install it with pip install 'prefbench[slurm]'") from None
    section = config.slurm
    note = note or fanout.progress.note
    folder = Path(section.folder) if section.folder else fanout.out / "logs" / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    ctx_file = folder / f"context-{fanout.key}.pkl"      # once, not pickled into every job
    ctx_file.write_bytes(fanout.payload())
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=section.cluster)
        executor.update_parameters(**_parameters(config, section))
    except (NameError, ValueError, RuntimeError, AssertionError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BenchError(f"executor.slurm: {first}") from None
    tasks = fanout.tasks
    n = len(tasks)
    threads = config.cpus_per_run or 1
    try:
        jobs = executor.map_array(_slurm_task, [fanout.function] * n, tasks, [str(ctx_file)] * n, [str(fanout.out)] * n, [threads] * n)
    except (OSError, RuntimeError) as err:   # no sbatch here, or Slurm refused the array
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BenchError(f"executor.slurm: could not submit the jobs: {first}") from None
    note(f"slurm executor ({section.cluster}): {n} jobs submitted ({fanout.key}), logs in {folder}")
    for task in tasks:
        fanout.started(task)
    waiting = dict(zip(range(n), jobs))
    try:
        while waiting:
            for i, job in list(waiting.items()):
                if job.done():
                    del waiting[i]
                    try:
                        fanout.finished(tasks[i], job.result())
                    except Exception as err:  # noqa: BLE001 - a job's failure is its run's, not the suite's
                        fanout.failed(tasks[i], _reason(job, err))
            if waiting:
                time.sleep(POLL_SECONDS)
    except BaseException:
        for job in waiting.values():
            job.cancel(check=False)      # SIGTERM in the job: a training saves its state
        raise


def _reason(job, err) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detail = lines[-1] if lines else type(err).__name__
    return (f"slurm job {job.job_id} failed ({detail[:300]}); log: {job.paths.stderr}; finished stages are "
            "kept, run the same command again to resume it")
