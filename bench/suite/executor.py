"""The suite's `executor:` section: where the runs train and evaluate (bench.executors).

How a suite is run, not what it computes: no stage key and no result depends on it.
"""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator

from trainers.config import Strict


# what ray.init takes as a cluster's address: "auto", the head's GCS "host:port" (what
# `ray start --head` prints), or a Ray Client "ray://host:port"
RAY_ADDRESS = re.compile(r"auto|(ray://)?[^\s:/]+:\d{1,5}")


class RaySection(Strict):
    # None: start a Ray on this machine for this command; "auto", "head:6379" or
    # "ray://head:10001": a running cluster (bench.executors.ray_tasks)
    address: str | None = None
    # What a Ray started here declares (None: what Ray detects). num_gpus above the real count
    # declares logical GPUs: scheduling by GPU on a machine without them (tests).
    num_cpus: PositiveInt | None = None
    num_gpus: int | None = Field(None, ge=0)

    @field_validator("address")
    @classmethod
    def _a_cluster_address(cls, address):
        if address is not None and not RAY_ADDRESS.fullmatch(address):
            raise ValueError(f"{address!r} is not a Ray cluster address: give auto, host:port "
                             "(the head's, as `ray start --head` prints it) or ray://host:port")
        return address


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
