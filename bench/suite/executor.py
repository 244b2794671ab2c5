"""The suite's `executor:` section: where the runs train and evaluate (bench.executors).

How a suite is run, not what it computes: no stage key and no result depends on it.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt

from trainers.config import Strict


class RaySection(Strict):
    # None: start a Ray on this machine for this command; "auto" or "ray://head:10001": a cluster
    address: str | None = None
    # What a Ray started here declares (None: what Ray detects). num_gpus above the real count
    # declares logical GPUs: scheduling by GPU on a machine without them (tests).
    num_cpus: PositiveInt | None = None
    num_gpus: int | None = Field(None, ge=0)


class SlurmSection(Strict):
    # submitit's cluster: slurm; or local / debug (submitit's executors on this machine, for tests)
    cluster: Literal["slurm", "local", "debug"] = "slurm"
    partition: str | None = None
    timeout_min: PositiveInt = 24 * 60
    # submitit's job folder (logs, pickles); None: <out>/logs/slurm. On the shared filesystem.
    folder: str | None = None
    # any other submitit Slurm parameter, without the slurm_ prefix (account, qos, mem_gb, constraint...)
    additional: dict[str, Any] = Field(default_factory=dict)


class ExecutorSection(Strict):
    kind: Literal["inprocess", "local", "ray", "slurm"] = "inprocess"
    # local: worker processes (default: the GPUs over gpus_per_run, else the CPU cores over
    # cpus_per_run); ray and slurm: runs at once (default: as many as the cluster fits)
    workers: PositiveInt | None = None
    # per run: CPU threads (default: the cores shared out among the local workers; 1 on ray/slurm)
    cpus_per_run: PositiveInt | None = None
    # per run: GPUs (default: 1 when this machine has GPUs, else 0)
    gpus_per_run: int | None = Field(None, ge=0)
    ray: RaySection = RaySection()
    slurm: SlurmSection = SlurmSection()
