"""The Prefect UI: every flow run through the CLI publishes keyed artifacts (progress, metrics table, markdown report,
a picture), read back through the Prefect API; headless chromium shows the completed run's page.

All runs report to the session's server (``PREFECT_API_URL`` set), so this also checks that the CLI uses a
configured server and that each command leaves no process behind. The geometry-image flow's artifacts are
checked on its deployed run (tests/flows/runtime/test_deployments.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import printed_paths
from PIL import Image

from storage.tables import read_table

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO / "data" / "samples"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags this machine needs for headless chromium (root, no GPU, no outbound network).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=20000"]

pytestmark = pytest.mark.slow


def run_cli(args: list[str], api_url: str, marker) -> tuple[str, str]:
    """Run ``brenier ARGS`` against the server at ``api_url``; returns (output, flow run id)."""
    script = Path(sys.executable).with_name("brenier")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "flows.runtime.cli"]
    env = {**os.environ, **marker.env, "PREFECT_API_URL": api_url, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, *args, "--workers", "1"], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert f"Prefect API: {api_url} (PREFECT_API_URL)" in output  # the configured server, none started
    assert "Starting temporary server" not in output  # nor by the Dask worker processes
    assert marker.leftovers() == []
    paths = printed_paths(output)
    assert paths and [p for p in paths if not Path(p).exists()] == [], output[-4000:]  # every printed path exists
    return output, re.findall(r"/runs/flow-run/([0-9a-f-]{36})", output)[-1]


@pytest.fixture(scope="module")
def flow_runs(prefect_server, tmp_path_factory, process_marker_factory) -> dict[str, str]:
    """flow -> flow run id of a small run of every CLI flow except geometry-images."""
    store = tmp_path_factory.mktemp("store")
    marker = process_marker_factory()
    horses = str(SAMPLES / "consistent" / "horse-gallop")
    runs = {}
    _, runs["autodecoder"] = run_cli(
        ["autodecoder", horses, "--store", str(store), "--latent-size", "16", "--patches", "8",
         "--points-per-shape", "256", "--shapes-per-step", "4", "--chamfer-epochs", "2", "--qaad-epochs", "2",
         "--leaf-size", "256", "--device", "cpu"], prefect_server.api_url, marker)
    model_run = read_table(next(store.glob("autodecoder-*/tables/autodecoder_models.parquet")))["run_id"].iloc[0]
    _, runs["encode-shapes"] = run_cli(
        ["encode", horses, "--model", f"{model_run}/horse-gallop--neuralqaad", "--store", str(store),
         "--chamfer-steps", "5", "--qaad-steps", "5", "--device", "cpu"], prefect_server.api_url, marker)
    _, runs["gaussian-reduction"] = run_cli(
        ["reduce-gaussians", str(SAMPLES / "gaussians" / "donut-8k.ply"), "--store", str(store), "--ratio", "0.1",
         "--method", "ghap", "--method", "random", "--resolution", "48", "--views", "3", "--train-views", "3",
         "--finetune-steps", "6", "--device", "cpu"], prefect_server.api_url, marker)
    return runs


@pytest.mark.parametrize(("flow", "picture"), [
    ("autodecoder", "autodecoder-plots"),
    ("encode-shapes", "encode-shapes-plots"),
    ("gaussian-reduction", "gaussian-reduction-renders"),
])
def test_flow_run_publishes_keyed_artifacts(prefect_server, flow_runs, check_ui_artifacts, flow: str,
                                            picture: str) -> None:
    check_ui_artifacts(prefect_server.api_url, flow_runs[flow], flow, picture)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install -y chromium)")
def test_browser_shows_the_completed_run(prefect_server, flow_runs, tmp_path: Path) -> None:
    page = f"{prefect_server.url}/runs/flow-run/{flow_runs['autodecoder']}"
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom",
                          page], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Completed" in dom.stdout and "autodecoder" in dom.stdout

    screenshot = tmp_path / "flow-run.png"
    shot = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile-shot'}",
                           "--window-size=1280,800", f"--screenshot={screenshot}", page],
                          capture_output=True, text=True, timeout=180)
    assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.shape == (800, 1280, 3)
    # Not blank: the page has text, the run's green "Completed" badge and the task graph.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200 and pixels.std() > 10
    green = (pixels[..., 1] > 150) & (pixels[..., 0] < 120) & (pixels[..., 2] < 120)
    assert green.sum() > 200
