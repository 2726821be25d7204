"""A usage or input error of a flow command: one ``error:`` line naming the item, exit code 2, checked before any
Prefect server or Dask cluster starts (issue 21). The whole traceback only with ``--debug``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BRENIER = [sys.executable, "-c", "from flows.runtime.cli import main; main()"]


def run_brenier(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["BRENIER_PREFECT_HOME"] = str(home)  # where a started server would put its database
    return subprocess.run([*BRENIER, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("args", "named"), [
    (["geometry-images", "/nonexistent/path"], "/nonexistent/path"),
    (["geometry-images", "data/samples/meshes/*.xyz"], "data/samples/meshes/*.xyz"),
    (["geometry-images", "data/samples/meshes", "--domain", "cube"], "--domain"),
    (["geometry-images", "data/samples/meshes", "--resolution", "-3"], "--resolution"),
    (["geometry-images", "data/samples/meshes", "--store", "README.md"], "README.md"),
    (["reduce-gaussians", "/nonexistent/scene.ply"], "/nonexistent/scene.ply"),
    (["autodecoder", "/nonexistent/crane.npz"], "/nonexistent/crane.npz"),
    (["geometry-images", "foo://bucket/meshes"], "foo://bucket/meshes"),
])
def test_usage_error_is_one_line_exit_2_and_starts_nothing(tmp_path: Path, args: list[str], named: str) -> None:
    home = tmp_path / "prefect-home"
    if "--store" not in args:
        args = [*args, "--store", str(tmp_path / "store")]
    done = run_brenier(args, home)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2, lines
    assert 1 <= len(lines) <= 3 and lines[0].startswith("error: ") and named in lines[0], lines
    assert not home.exists() or not any(home.iterdir())  # no server started: no database written
    assert not (tmp_path / "store").exists()  # no run began


def test_debug_prints_the_traceback(tmp_path: Path) -> None:
    done = run_brenier(["geometry-images", "/nonexistent/path", "--store", str(tmp_path), "--debug"],
                       tmp_path / "home")
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" in output and "DatasetNotFoundError" in output
