"""A dataset run as a user runs it: the ``brenier`` command on the default LocalCluster (process workers with
nannies, reporting to the session's Prefect server), its exit codes, and what survives a slow teardown, a killed
worker and a killed command (issue 17).

Exit codes: 0 every item succeeded, 3 some failed, 1 all failed (``flows/runtime/cli.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from flows.runtime.cli import EXIT_FAILED, EXIT_OK, EXIT_SOME_FAILED, exit_code
from tasks.geometry_images import GeometryImageConfig

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO / "data" / "samples" / "meshes"
FAST = ["--resolution", "33", "--levels", "2", "--samples", "1000"]
SLOWER = ["--resolution", "129", "--levels", "2", "--samples", "5000"]  # a few seconds per mesh: time to act


def test_exit_code_rules() -> None:
    assert exit_code(8, 0) == EXIT_OK == 0
    assert exit_code(0, 0) == EXIT_OK
    assert exit_code(9, 7) == EXIT_SOME_FAILED == 3
    assert exit_code(9, 9) == exit_code(1, 1) == EXIT_FAILED == 1


def _env(prefect_server, **extra: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": prefect_server.api_url, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            **extra}


def _dataset(folder: Path, names: list[str], broken: int = 0) -> Path:
    folder.mkdir()
    for name in names:
        shutil.copy(SAMPLES / f"{name}.obj", folder)
    for i in range(broken):
        (folder / f"broken-{i}.obj").write_text("v 0 0 0\nthis is not an OBJ face line\nf 1 2 3\n")
    return folder


def _fragments(table: Path) -> list[Path]:
    return sorted(table.glob("item-*.parquet")) if table.is_dir() else []


def _worker_processes(command: psutil.Process) -> set[int]:
    """pids of the LocalCluster's worker processes (spawned children of the command)."""
    found = set()
    for child in command.children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.add(child.pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            output = process.stdout.read()[-3000:]
            pytest.fail(f"the command ended (code {process.returncode}) before {what}:\n{output}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def test_all_failed_exits_1_and_some_failed_exits_3_with_the_summary(prefect_server, tmp_path: Path) -> None:
    broken = _dataset(tmp_path / "broken", [], broken=2)
    run = subprocess.run([sys.executable, "-m", "flows.runtime.cli", "geometry-images", str(broken), "--store",
                          str(tmp_path / "store"), *FAST], cwd=REPO, env=_env(prefect_server), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == EXIT_FAILED, run.stdout[-3000:] + run.stderr[-3000:]
    assert "failures" in run.stdout and "broken-0" in run.stdout and "broken-1" in run.stdout


def test_slow_cluster_close_still_exits_with_the_flows_code_and_prints_the_summary(prefect_server,
                                                                                     tmp_path: Path) -> None:
    """The LocalCluster's close hangs (simulated: it sleeps 10 minutes, as a loaded machine's close can time out);
    the command prints its summary and exits 3 (one of two meshes is broken) within the bounded teardown."""
    dataset = _dataset(tmp_path / "meshes", ["woody"], broken=1)
    hang = ("import time, distributed\n"
            "def close(self, *args, **kwargs):\n"
            "    time.sleep(600)\n"
            "distributed.LocalCluster.close = close\n"
            "distributed.deploy.spec.SpecCluster.close = close\n"
            "from flows.runtime.cli import main\n"
            "main()\n")
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-c", hang, "geometry-images", str(dataset), "--store",
                          str(tmp_path / "store"), *FAST], cwd=REPO,
                         env=_env(prefect_server, BRENIER_CLUSTER_CLOSE_TIMEOUT="5", BRENIER_EXIT_GRACE="20"),
                         capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    output = run.stdout + run.stderr
    assert run.returncode == EXIT_SOME_FAILED, output[-4000:]
    assert "harmonic vs OT" in run.stdout and "woody" in run.stdout and "broken-0" in run.stdout
    assert "did not close within 5 s" in output
    print(f"\nslow close: exit {run.returncode} after {seconds:.0f} s")


def test_killed_localcluster_worker_is_replaced_and_every_item_lands_once(prefect_server, tmp_path: Path) -> None:
    """kill -9 one of the two LocalCluster workers after the first mesh finished: its nanny starts a new worker
    process, the run keeps two workers, completes every mesh once and exits 0."""
    names = ["woody", "spot", "fandisk", "rocker-arm", "alligator", "homer"]
    dataset = _dataset(tmp_path / "meshes", names)
    store = tmp_path / "store"
    run_id = GeometryImageConfig(resolution=129, levels=2, samples=5000).default_run_id()
    table = store / run_id / "tables" / "geometry_images.parquet"
    run = subprocess.Popen([sys.executable, "-m", "flows.runtime.cli", "geometry-images", str(dataset), "--store",
                            str(store), "--workers", "2", *SLOWER], cwd=REPO, env=_env(prefect_server),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        command = psutil.Process(run.pid)
        def workers(exclude: int | None = None):
            found = _worker_processes(command)
            return found if len(found) == 2 and exclude not in found else None

        before = _wait_for(workers, 300, "two worker processes", run)
        _wait_for(lambda: _fragments(table), 300, "the first finished mesh", run)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        after = _wait_for(lambda: workers(exclude=victim), 120, "a replacement worker process", run)
        output, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == EXIT_OK, output[-4000:]
    assert len(after - before) == 1
    rows = pd.read_parquet(table)
    assert sorted(rows["item_id"].unique()) == sorted(names)
    assert not rows.duplicated(["item_id", "parameterization", "level"]).any()
    assert len(_fragments(table)) == 0  # compacted at the end


def test_killed_command_leaves_the_finished_items_rows_readable(prefect_server, tmp_path: Path) -> None:
    """SIGKILL the whole command (its process group) once two meshes finished: pandas reads their rows from
    ``tables/`` before any re-run, each once; a re-run completes the rest and exits 0."""
    names = ["woody", "spot", "fandisk", "rocker-arm", "alligator", "homer", "cheburashka"]
    dataset = _dataset(tmp_path / "meshes", names)
    store = tmp_path / "store"
    run_id = GeometryImageConfig(resolution=129, levels=2, samples=5000).default_run_id()
    tables = store / run_id / "tables"
    args = [sys.executable, "-m", "flows.runtime.cli", "geometry-images", str(dataset), "--store", str(store),
            "--workers", "1", *SLOWER]
    run = subprocess.Popen(args, cwd=REPO, env=_env(prefect_server), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_for(lambda: len(_fragments(tables / "geometry_images.parquet")) >= 2, 600, "two finished meshes", run)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    rows = pd.read_parquet(tables / "geometry_images.parquet")
    finished = sorted(rows["item_id"].unique())
    assert len(finished) >= 2 and set(finished) < set(names)
    assert not rows.duplicated(["item_id", "parameterization", "level"]).any()
    assert rows.groupby("item_id").size().eq(4).all()  # harmonic + OT, 2 levels each
    assert set(pd.read_parquet(tables / "rate_distortion.parquet")["item_id"]) == set(finished)

    again = subprocess.run(args, cwd=REPO, env=_env(prefect_server), capture_output=True, text=True, timeout=900)
    assert again.returncode == EXIT_OK, again.stdout[-3000:] + again.stderr[-3000:]
    rows = pd.read_parquet(tables / "geometry_images.parquet")
    assert sorted(rows["item_id"].unique()) == sorted(names)
    assert not rows.duplicated(["item_id", "parameterization", "level"]).any()
