"""The default console of a flow command: progress per item, the flow run's UI link and the results; no library
INFO line and no warning (issue 21). ``--verbose`` brings Prefect's and Dask's lines back."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import printed_paths

from flows.runtime.console import ConsoleFilter
from tasks.shared.progress import report_progress

REPO = Path(__file__).resolve().parents[3]
MESHES = REPO / "data" / "samples" / "meshes"
LOG_LINE = re.compile(r"\|\s*(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s*\|")


def record(name: str, level: int, message: str, **extra) -> logging.LogRecord:
    made = logging.LogRecord(name, level, __file__, 1, message, (), None)
    made.__dict__.update(extra)
    return made


def test_console_filter_passes_progress_warnings_and_the_flow_run_link_only() -> None:
    keep = ConsoleFilter().filter
    assert keep(record("distributed.scheduler", logging.WARNING, "worker lost"))
    assert keep(record("prefect.flow_runs", logging.INFO, "View at http://127.0.0.1:4200/runs/flow-run/x"))
    assert keep(record("prefect.task_runs", logging.INFO, "spot: OT iteration 3", console=True))
    assert not keep(record("prefect.flow_runs", logging.INFO, "Finished in state Completed()"))
    assert not keep(record("prefect.task_runs", logging.INFO, "[1/1] spot: 4 rows (2.0 s)"))
    assert not keep(record("distributed.nanny", logging.INFO, "Start Nanny at: 'tcp://127.0.0.1:1'"))


def test_report_progress_marks_its_record_for_the_console(caplog) -> None:
    logger = logging.getLogger("tests.progress")
    with caplog.at_level(logging.INFO, logger="tests.progress"):
        report_progress(logger, "%s: OT iteration %d", "spot", 3)
    (made,) = caplog.records
    assert made.getMessage() == "spot: OT iteration 3" and ConsoleFilter().filter(made)


@pytest.mark.slow
def test_a_run_prints_progress_per_mesh_and_no_library_line(prefect_server, tmp_path: Path) -> None:
    folder = tmp_path / "meshes"
    folder.mkdir()
    for name in ("woody", "spot"):
        shutil.copy(MESHES / f"{name}.obj", folder)
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url, "OMP_NUM_THREADS": "1",
           "BRENIER_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_LOGGING_SETTINGS_PATH", None)
    command = [sys.executable, "-c", "from flows.runtime.cli import main; main()", "geometry-images", str(folder),
               "--store", str(tmp_path / "store"), "--resolution", "33", "--levels", "2", "--samples", "1000",
               "--workers", "2"]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(lines[-40:])
    logged = [line for line in lines if LOG_LINE.search(line)]
    assert len(logged) == 1 and "View at " in logged[0], logged  # the flow run's UI link, nothing else logged
    assert not [line for line in lines if "Warning" in line or "distributed." in line], lines
    progress = [line for line in lines if re.match(r"\[[12]/2\] geometry images", line)]
    assert sorted(line.rsplit(": ", 1)[1] for line in progress) == ["spot", "woody"], lines  # one line per mesh
    assert any(line.startswith("run geometry-images-") for line in lines)
    paths = printed_paths("\n".join(lines))
    assert len(paths) >= 6 and [p for p in paths if not Path(p).exists()] == []  # store, pyramids, tables
    verbose = subprocess.run([*command[:3], "--verbose", *command[3:]], env=env, cwd=REPO, capture_output=True,
                             text=True, timeout=600)  # finished earlier: both meshes are skipped
    assert verbose.returncode == 0
    assert len([line for line in (verbose.stdout + verbose.stderr).splitlines() if LOG_LINE.search(line)]) > 3
