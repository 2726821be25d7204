"""The Dask task runner a flow fans out on (a LocalCluster sized to the machine, or an existing scheduler), the
routing of GPU-bound tasks to GPU workers, and the outcome of a task whose workers died."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import dask
import torch
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.states import Crashed
from prefect_dask import DaskTaskRunner

__all__ = ["make_task_runner", "default_workers", "cluster_workers", "gpu_annotation", "task_outcome",
           "BoundedDaskTaskRunner", "GPU_RESOURCE", "GPU_ANNOTATION_ENV", "CLOSE_TIMEOUT_ENV"]

GPU_RESOURCE = "GPU"
"""Name of the Dask worker resource that marks a GPU worker (``dask worker --resources GPU=1``)."""

GPU_ANNOTATION_ENV = "BRENIER_GPU_ANNOTATION"
"""Environment variable: ``auto`` (default), ``always`` or ``never``; see :func:`gpu_annotation`."""

CLOSE_TIMEOUT_ENV = "BRENIER_CLUSTER_CLOSE_TIMEOUT"
"""Environment variable: seconds the flow waits for its Dask client and cluster to close (default 60)."""


class BoundedDaskTaskRunner(DaskTaskRunner):
    """A :class:`prefect_dask.DaskTaskRunner` whose teardown cannot turn a finished flow into an error.

    Closing a LocalCluster on a loaded machine can raise ``TimeoutError`` (``distributed/deploy/spec.py``) or
    take minutes, after the flow's work is done and its tables are written (measured: 5 of 15 runs at load
    average 15-40). Here the client and cluster close in a daemon thread for at most ``BRENIER_CLUSTER_CLOSE_TIMEOUT``
    seconds (default 60); an error or the timeout is logged as a warning and the flow returns its result. What
    is left of the cluster dies with the process (its workers are the process's children, stopped by their
    nannies).
    """

    def __exit__(self, *args: Any) -> None:
        timeout = float(os.environ.get(CLOSE_TIMEOUT_ENV, "60"))
        errors: list[BaseException] = []

        def close() -> None:
            try:
                DaskTaskRunner.__exit__(self, *args)
            except BaseException as error:  # noqa: BLE001 - reported below as a warning
                errors.append(error)

        closer = threading.Thread(target=close, name="close-dask-cluster", daemon=True)
        closer.start()
        closer.join(timeout)
        logger = logging.getLogger(__name__)
        if closer.is_alive():
            logger.warning("the Dask cluster did not close within %.0f s (%s); its result stands, the processes "
                           "left end with this one", timeout, CLOSE_TIMEOUT_ENV)
        elif errors:
            logger.warning("closing the Dask cluster failed after the flow finished (%s: %s); its result stands",
                           type(errors[0]).__name__, errors[0])


def default_workers() -> int:
    """One worker per CPU core available to this process."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def make_task_runner(workers: int | None = None, dask_address: str | None = None) -> DaskTaskRunner:
    """Build the flow's :class:`prefect_dask.DaskTaskRunner`.

    Args:
        workers: LocalCluster workers (default: one per core). Ignored with ``dask_address``.
        dask_address: ``tcp://host:port`` of an existing Dask scheduler (e.g. a SLURM or Kubernetes cluster).

    Without ``PREFECT_API_URL`` the workers are threads of the flow's process: process workers would each start
    their own temporary Prefect API server (measured: 4-5x slower, SQLite locks, stray servers; docs/architecture.md).
    With a Prefect server configured, workers are processes (one thread each).

    Thread workers share one process, so torch's intra-op pool is set to ``cores // workers`` threads: with every
    worker using all cores, the pools oversubscribe the CPU and the torch renderers and solvers run many times
    slower (measured: a 45k-Gaussian render 0.12 s with 1 thread, 4-7 s with 2 threads per worker on 2 cores).
    """
    if dask_address:
        return BoundedDaskTaskRunner(address=dask_address)
    n = workers or default_workers()
    processes = bool(os.environ.get("PREFECT_API_URL"))
    threads = max(1, default_workers() // n)
    if not processes:
        torch.set_num_threads(threads)
    # Process workers: the same split through the BLAS/OpenMP variables they start with (torch reads them at import),
    # unless the user set them.
    env = {name: os.environ.get(name, str(threads)) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    # dashboard on a free port: the default 8787 prints a warning when another cluster of the machine holds it
    return BoundedDaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "processes": processes, "dashboard_address": ":0",
                        **({"env": env} if processes else {})},
    )


def _flow_dask_runner() -> DaskTaskRunner | None:
    """The running flow's Dask task runner (None outside a flow, or on another task runner)."""
    context = FlowRunContext.get()
    runner = context.task_runner if context is not None else None
    return runner if isinstance(runner, DaskTaskRunner) else None


def cluster_workers() -> int:
    """Workers of the running flow's Dask cluster (1 outside a flow on a :class:`DaskTaskRunner`)."""
    runner = _flow_dask_runner()
    if runner is None:
        return 1
    return max(1, len(runner.client.scheduler_info(n_workers=-1)["workers"]))


def task_outcome(future: PrefectFuture) -> Any:
    """The result of a finished task, or the exception that ended it — never raised.

    ``future.result(raise_on_failure=False)`` returns a failed task's exception, but errors of the Dask layer
    itself are raised: ``distributed.KilledWorker`` when the task's workers died ``allowed-failures`` times
    (e.g. an item that runs its worker out of memory), or a lost scheduler connection. Those are returned too, so
    the flow records the item as failed and carries on with the others, and the task run, which its dead worker
    left "Running" in Prefect, is set to Crashed.

    Args:
        future: a future of a task submitted by the flow.

    Returns:
        The task's return value, or the ``BaseException`` instance that ended it.
    """
    try:
        return future.result(raise_on_failure=False)
    except Exception as error:  # noqa: BLE001 - any error of one item must not end the whole run
        _mark_crashed(getattr(future, "task_run_id", None), error)
        return error


def _mark_crashed(task_run_id: Any, error: BaseException) -> None:
    """Set a task run whose worker died for good to Crashed in Prefect; otherwise the UI shows it Running forever."""
    if task_run_id is None:
        return
    try:
        with get_client(sync_client=True) as client:
            client.set_task_run_state(task_run_id, Crashed(message=f"{type(error).__name__}: {error}"), force=True)
    except Exception as api_error:  # noqa: BLE001 - the failure row is recorded either way
        logging.getLogger(__name__).warning("could not mark task run %s crashed: %s", task_run_id, api_error)


def _cluster_has_gpu_workers(runner: DaskTaskRunner) -> bool:
    workers = runner.client.scheduler_info(n_workers=-1)["workers"].values()
    return any(info.get("resources", {}).get(GPU_RESOURCE, 0) >= 1 for info in workers)


@contextlib.contextmanager
def gpu_annotation() -> Iterator[bool]:
    """Route the tasks submitted inside this block to GPU workers, when the flow's Dask cluster has any.

    Inside a flow running on a :class:`prefect_dask.DaskTaskRunner`, tasks submitted in the block carry the Dask
    annotation ``resources={"GPU": 1}`` if at least one worker of the cluster advertises the ``GPU`` resource
    (``dask worker --resources GPU=1``; dask-cuda workers need the same flag). Such tasks then run only on those
    workers, one per GPU unit at a time. Without GPU workers (a LocalCluster, a CPU-only cluster) nothing is
    annotated: an annotated task would wait forever for a worker that does not exist (docs/architecture.md).

    The check happens when the block is entered. ``BRENIER_GPU_ANNOTATION=always`` annotates regardless (an
    adaptive cluster whose GPU workers start later); ``never`` disables it.

    Yields:
        Whether the block's tasks are annotated.

    Raises:
        ValueError: ``BRENIER_GPU_ANNOTATION`` is set to something else than ``auto``, ``always``, ``never``.
    """
    mode = os.environ.get(GPU_ANNOTATION_ENV, "auto").strip().lower() or "auto"
    if mode not in {"auto", "always", "never"}:
        raise ValueError(f"{GPU_ANNOTATION_ENV}={mode!r}: expected 'auto', 'always' or 'never'")
    runner = _flow_dask_runner()
    annotate = runner is not None and mode != "never" and (
        mode == "always" or _cluster_has_gpu_workers(runner))
    if not annotate:
        yield False
        return
    with dask.annotate(resources={GPU_RESOURCE: 1}):
        yield True


def progress_queue(name: str) -> Any:
    """A ``distributed.Queue`` named ``name`` on the running flow's Dask cluster, for tasks to report finished
    items (:class:`tasks.shared.batching.ItemReporter`); None outside a flow on a :class:`DaskTaskRunner`."""
    runner = _flow_dask_runner()
    if runner is None:
        return None
    from distributed import Queue

    return Queue(name, client=runner.client)
