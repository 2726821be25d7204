"""The Dask task runner a flow fans out on: a LocalCluster sized to the machine, or an existing scheduler."""

from __future__ import annotations

import os

import torch
from prefect_dask import DaskTaskRunner

__all__ = ["make_task_runner", "default_workers"]


def default_workers() -> int:
    """One worker per CPU core available to this process."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def make_task_runner(workers: int | None = None, dask_address: str | None = None) -> DaskTaskRunner:
    """Build the flow's :class:`prefect_dask.DaskTaskRunner`.

    Args:
        workers: LocalCluster workers (default: one per core). Ignored with ``dask_address``.
        dask_address: ``tcp://host:port`` of an existing Dask scheduler (e.g. a SLURM or Kubernetes cluster).

    Without ``PREFECT_API_URL`` the workers are threads of the flow's process: process workers would each start
    their own temporary Prefect API server (measured: 4-5x slower, SQLite locks, stray servers; DESIGN.md).
    With a Prefect server configured, workers are processes (one thread each).

    Thread workers share one process, so torch's intra-op pool is set to ``cores // workers`` threads: with every
    worker using all cores, the pools oversubscribe the CPU and the torch renderers and solvers run many times
    slower (measured: a 45k-Gaussian render 0.12 s with 1 thread, 4-7 s with 2 threads per worker on 2 cores).
    """
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    n = workers or default_workers()
    processes = bool(os.environ.get("PREFECT_API_URL"))
    if not processes:
        torch.set_num_threads(max(1, default_workers() // n))
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "processes": processes, "dashboard_address": None},
    )
