"""Benchmark: what the Prefect + Dask path costs per mesh, and items per minute on 1 vs 2 Dask workers.

The geometry-image job on real meshes is run three ways, each on a fresh store (nothing skipped):

1. **plain loop**: ``parameterize_mesh.fn`` then ``encode_geometry_images.fn`` per mesh in this process, no
   Prefect and no Dask: the work itself.
2. **flow on 1 worker**: ``geometry_images`` with ``--dask-address`` of a ``distributed.LocalCluster`` with one
   single-thread process worker, reporting to a local ``prefect server`` (started here, SQLite in a temporary
   ``PREFECT_HOME``): the same task functions, serially, plus task submission, Prefect state reporting,
   serialisation, the tables and the artifacts.
3. **flow on 2 workers**: the same on a 2-worker cluster.

Overhead per mesh = (flow on 1 worker - plain loop) / meshes (a handful of meshes runs one mesh per batch
task; ``bench/dataset_scale.py`` measures batches of up to 64 at 2,000 meshes); ratio = flow / loop. The
clusters are started and warmed (modules imported on every worker) before the clock starts, so cluster start-up
is not counted; the Prefect server start is not counted either. Every process uses one torch/BLAS thread. The
load average is printed: on a shared machine other processes slow everything, and 2 workers only help with 2 idle
cores.

Run: ``.venv/bin/python bench/overhead.py [--meshes data/samples/meshes] [--only woody cow spot] [--resolution 33]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported, here and in the spawned workers
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from prefect.logging import disable_run_logger  # noqa: E402
from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402

from flows.geometry_images import geometry_images  # noqa: E402
from flows.runtime.task_runner import make_task_runner  # noqa: E402
from storage.meshes import list_mesh_items  # noqa: E402
from tasks.geometry_images import GeometryImageConfig, encode_geometry_images, parameterize_mesh  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def start_prefect_server(home: Path, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """``prefect server start`` on a free port of 127.0.0.1 with its database under ``home``; returns it and its
    API URL."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).parent / "prefect"
    process = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise TimeoutError("prefect server did not become healthy")


def _warm() -> bool:
    import flows.geometry_images  # noqa: F401  (imports torch, trimesh, libigl, prefect on the worker)

    return True


def plain_loop(items, store: str, config: GeometryImageConfig) -> float:
    start = time.perf_counter()
    with disable_run_logger():
        for item in items:
            encode_geometry_images.fn(parameterize_mesh.fn(item, store, "loop", config), store, "loop", config)
    return time.perf_counter() - start


def flow_on(workers: int, path: str, store: str, config: GeometryImageConfig) -> float:
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.run(_warm)
        runner = make_task_runner(dask_address=cluster.scheduler_address)
        start = time.perf_counter()
        result = geometry_images.with_options(task_runner=runner)(path, store, config, f"flow-{workers}")
        seconds = time.perf_counter() - start
    assert result["skipped_items"] == 0
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meshes", type=Path, default=REPO / "data" / "samples" / "meshes")
    parser.add_argument("--only", nargs="*", default=None, help="mesh ids to use (default: every mesh)")
    parser.add_argument("--resolution", type=int, default=33)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = GeometryImageConfig(resolution=args.resolution, levels=args.levels, samples=args.samples)
    work = Path(tempfile.mkdtemp(prefix="brenier-overhead-"))
    data = work / "meshes"
    data.mkdir()
    for item in list_mesh_items(str(args.meshes)):
        if args.only is None or item.item_id in args.only:
            shutil.copy(item.uri, data)
    items = list_mesh_items(str(data))
    server, url = start_prefect_server(work / "prefect-home")
    os.environ["PREFECT_API_URL"] = url  # inherited by the cluster's worker processes
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            loadavg = [os.getloadavg()[0]]
            loop = plain_loop(items, str(work / "loop"), config)
            loadavg.append(os.getloadavg()[0])
            one = flow_on(1, str(data), str(work / "one"), config)
            loadavg.append(os.getloadavg()[0])
            two = flow_on(2, str(data), str(work / "two"), config)
            loadavg.append(os.getloadavg()[0])
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)

    print(f"geometry-images on {len(items)} meshes ({', '.join(i.item_id for i in items)}), "
          f"resolution {args.resolution}, {args.levels} levels, {args.samples} samples; {os.cpu_count()} CPUs, "
          f"load average {' / '.join(f'{x:.1f}' for x in loadavg)} (before / after each run)\n")
    rows = [("plain loop (task .fn, no Prefect/Dask)", loop), ("flow, Dask 1 worker + Prefect server", one),
            ("flow, Dask 2 workers + Prefect server", two)]
    print(f"| {'path':<38} | {'seconds':>7} | {'items / min':>11} | {'vs loop':>7} |")
    print(f"|{'-' * 40}|{'-' * 9}|{'-' * 13}|{'-' * 9}|")
    for name, seconds in rows:
        print(f"| {name:<38} | {seconds:7.1f} | {60 * len(items) / seconds:11.1f} | {seconds / loop:6.2f}x |")
    print(f"\noverhead per mesh of the Prefect + Dask path (1 worker): {(one - loop) / len(items):.2f} s "
          f"(ratio {one / loop:.2f}); speed-up 2 vs 1 workers: {one / two:.2f}x")


if __name__ == "__main__":
    main()
