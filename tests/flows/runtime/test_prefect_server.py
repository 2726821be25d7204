"""The Prefect server brenier manages (flows/runtime/prefect_server.py): it starts, answers health, serves the UI,
and every ``brenier`` command leaves no process behind: on success, on an error and on Ctrl-C."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from importlib.metadata import version
from pathlib import Path

import httpx
import psutil
import pytest
from packaging.requirements import Requirement

from flows.runtime.prefect_server import free_port, is_healthy
from storage.tables import read_table

REPO = Path(__file__).resolve().parents[3]
MESHES = REPO / "data" / "samples" / "meshes"
SMALL = ["--resolution", "33", "--levels", "2", "--samples", "2000", "--workers", "1"]


def brenier(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("brenier")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "flows.runtime.cli", *args]


def cli_env(home: Path, marker) -> dict[str, str]:
    """The CLI's environment with no Prefect server configured: it must start (and stop) its own under ``home``."""
    env = {**os.environ, **marker.env, "BRENIER_PREFECT_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    return env


def completed_runs(home: Path, flow_name: str) -> int:
    with sqlite3.connect(home / "prefect.db") as db:
        return db.execute(
            "select count(*) from flow_run join flow on flow_run.flow_id = flow.id "
            "where flow.name = ? and flow_run.state_type = 'COMPLETED'", (flow_name,)
        ).fetchone()[0]


def test_server_answers_health_and_serves_the_ui(prefect_server) -> None:
    assert httpx.get(f"{prefect_server.api_url}/health", timeout=10).json() is True
    assert httpx.get(f"{prefect_server.api_url}/admin/version", timeout=10).json().startswith("3.")
    page = httpx.get(prefect_server.url, timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    # The UI's browser code talks to this server, not to Prefect's default port 4200.
    config = httpx.get(f"{prefect_server.url}/ui-settings", timeout=10).json()
    assert config["api_url"] == prefect_server.api_url


def test_fastapi_is_within_the_working_range() -> None:
    """fastapi 0.151+ breaks Prefect's API (docs/architecture.md); pyproject pins it and the installed one obeys."""
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    fastapi = next(Requirement(d) for d in dependencies if Requirement(d).name == "fastapi")
    assert fastapi.specifier.contains("0.150.0") and not fastapi.specifier.contains("0.151.0")
    assert fastapi.specifier.contains(version("fastapi"))


@pytest.mark.slow
def test_cli_starts_its_own_server_and_leaves_no_process(migrated_prefect_home: Path, tmp_path: Path,
                                                         process_marker) -> None:
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    runs_before = completed_runs(migrated_prefect_home, "geometry-images")
    store = tmp_path / "store"
    done = subprocess.run(
        brenier("geometry-images", str(MESHES / "woody.obj"), "--store", str(store), *SMALL),
        env=cli_env(migrated_prefect_home, process_marker), cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "started for this command" in done.stdout
    assert "Error logging to API" not in done.stdout + done.stderr  # logs were flushed before the server stopped
    # The Dask worker process got PREFECT_API_URL: it did not start a temporary API server of its own.
    assert "Starting temporary server" not in done.stdout + done.stderr
    rows = read_table(next(store.glob("*/tables/geometry_images.parquet")))
    assert len(rows) == 4 and set(rows["item_id"]) == {"woody"}  # harmonic + OT, 2 levels each
    # The run was recorded in the database under the chosen PREFECT_HOME (the UI's history).
    assert completed_runs(migrated_prefect_home, "geometry-images") == runs_before + 1
    assert process_marker.leftovers() == []
    assert {p.pid for p in psutil.Process().children(recursive=True)} == children_before


@pytest.mark.slow
def test_cli_error_and_ctrl_c_stop_the_server(migrated_prefect_home: Path, tmp_path: Path, process_marker) -> None:
    env = cli_env(migrated_prefect_home, process_marker)
    # A bad dataset path: refused before any server starts, one line, exit 2, nothing left running.
    failed = subprocess.run(brenier("geometry-images", str(tmp_path / "nothing-here"), "--store", str(tmp_path)),
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 2 and "nothing-here' does not exist" in failed.stdout + failed.stderr
    assert process_marker.leftovers() == []

    # Ctrl-C in a terminal: SIGINT to the command's whole process group while its Dask workers compute.
    process = subprocess.Popen(
        brenier("geometry-images", str(MESHES), "--store", str(tmp_path / "store"), *SMALL),
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    port = None
    try:
        deadline = time.monotonic() + 300
        for line in process.stdout:
            if "Prefect UI: http://127.0.0.1:" in line:
                port = int(line.split("127.0.0.1:")[1].split()[0])
            # the first finished mesh's progress line: tasks are running on the Dask workers
            if "geometry images, run" in line or time.monotonic() > deadline:
                break
        assert port is not None and is_healthy(f"http://127.0.0.1:{port}/api")
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=180)  # raises TimeoutExpired if the command hangs
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # The command ends (usually exit 130 and a "Crashed" run; when Prefect swallows the interrupt, the flow records
    # the interrupted workers' items as failures and ends normally) and leaves nothing running either way.
    assert process_marker.leftovers() == [], rest[-3000:]
    assert not is_healthy(f"http://127.0.0.1:{port}/api")


@pytest.mark.slow
def test_persistent_server_start_status_stop(migrated_prefect_home: Path, process_marker, monkeypatch, capsys) -> None:
    """``brenier server start|status|stop`` (in-process: the server is a separate process either way)."""
    from flows.runtime.cli import app

    def brenier_in_process(*args: str) -> tuple[int, str]:
        try:
            app.meta(list(args), result_action="return_value")
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0
        return code, capsys.readouterr().out

    for name, value in {**process_marker.env, "BRENIER_PREFECT_HOME": str(migrated_prefect_home)}.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    try:
        code, output = brenier_in_process("server", "start", "--port", str(port))
        assert code == 0, output
        # It outlives the command that started it, and `status` finds it.
        assert is_healthy(f"http://127.0.0.1:{port}/api")
        code, output = brenier_in_process("server", "status")
        assert code == 0 and f"127.0.0.1:{port}" in output and "healthy" in output
    finally:
        stopped, output = brenier_in_process("server", "stop")
    assert stopped == 0 and "stopped" in output
    assert process_marker.leftovers() == []
    assert not is_healthy(f"http://127.0.0.1:{port}/api")
    assert brenier_in_process("server", "status")[0] == 1
