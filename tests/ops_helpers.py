"""Test helpers of the operations tests: a real Prefect server and a real Dask cluster as separate processes.

Both are started the way a lab would start them by hand (``prefect server start``, ``dask scheduler``,
``dask worker``), each in its own process group so that teardown (or a fault test) can kill a whole process tree
by its id, and nothing outlives the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.runtime.prefect_server import free_port, prefect_api, stop_process_tree

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _executable(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name) or name


def stop(process: subprocess.Popen) -> None:
    """Stop ``process`` (started with ``start_new_session``), its group and its descendants; reap it."""
    stop_process_tree(process.pid, timeout=5.0)
    process.wait()


def worker_env(api_url: str | None, home: Path) -> dict[str, str]:
    """Environment of a process of the cluster: the Prefect API to report to, one torch/BLAS thread."""
    env = {**os.environ, "PREFECT_HOME": str(home), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """A ``prefect server start`` on 127.0.0.1 with its SQLite database under ``home``; yields the API URL.

    :func:`flows.runtime.prefect_server.prefect_api` with ``PREFECT_API_URL`` cleared first, so it starts its own
    server:
    while it runs, ``PREFECT_API_URL`` is set in ``os.environ`` and this process's Prefect settings (restored
    afterwards), queued logs and events are flushed before it stops, and no process outlives it.
    """
    previous = os.environ.pop("PREFECT_API_URL", None)
    try:
        with temporary_settings(restore_defaults={PREFECT_API_URL}), prefect_api(home) as url:
            yield url
    finally:
        if previous is not None:
            os.environ["PREFECT_API_URL"] = previous


@dataclass
class DaskCluster:
    """A ``dask scheduler`` and ``dask worker`` processes started by :func:`dask_cluster`."""

    address: str
    scheduler: subprocess.Popen
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)  # worker name -> `dask worker` process

    def client(self):
        """A ``distributed.Client`` of the scheduler (close it after use)."""
        from distributed import Client

        return Client(self.address, timeout=30)

    def worker_addresses(self) -> dict[str, str]:
        """Worker name -> address, as the scheduler sees them now."""
        with self.client() as client:
            return {info["name"]: address for address, info in client.scheduler_info()["workers"].items()}

    def kill_worker(self, name: str) -> None:
        """SIGKILL a worker's whole process group (nanny and worker process): it is gone for good."""
        os.killpg(self.workers[name].pid, signal.SIGKILL)
        self.workers[name].wait()


@contextmanager
def dask_cluster(workers: dict[str, list[str]], env: dict[str, str], logs: Path,
                 timeout: float = 90.0) -> Iterator[DaskCluster]:
    """A scheduler and one ``dask worker`` per entry of ``workers`` (name -> extra CLI args), all on 127.0.0.1.

    Every worker has one thread (``--nthreads 1``) and no dashboard; ``env`` is the workers' environment
    (see :func:`worker_env`). Everything is killed on exit.
    """
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = _executable("dask")
    opened = []

    def start(args: list[str], name: str) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed below
        opened.append(log)
        return subprocess.Popen([dask, *args], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    cluster = DaskCluster(address, start(["scheduler", "--host", "127.0.0.1", "--port", str(port),
                                          "--no-dashboard"], "scheduler"))
    try:
        for name, extra in workers.items():
            cluster.workers[name] = start(["worker", address, "--name", name, "--nthreads", "1", "--no-dashboard",
                                           "--host", "127.0.0.1", *extra], name)
        deadline = time.monotonic() + timeout
        while len(cluster.worker_addresses() if _reachable(cluster) else {}) < len(workers):
            if time.monotonic() > deadline:
                raise TimeoutError(f"dask cluster not up after {timeout} s; logs in {logs}")
            time.sleep(0.5)
        yield cluster
    finally:
        for process in cluster.workers.values():
            stop(process)
        stop(cluster.scheduler)
        for log in opened:
            log.close()


def _reachable(cluster: DaskCluster) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        host, port = cluster.address.removeprefix("tcp://").split(":")
        return s.connect_ex((host, int(port))) == 0
