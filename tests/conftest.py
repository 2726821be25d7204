"""Shared test fixtures: the sample mesh folder and normalised sample meshes (loaded once per session)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from otcore.mesh.metrics import normalize_to_unit_diagonal
from storage.meshes import MeshItem, read_mesh

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples" / "meshes"


class SampleMesh(NamedTuple):
    """A sample mesh normalised to a unit bounding-box diagonal: ``[V, 3]`` float64, ``[F, 3]`` int64."""

    vertices: np.ndarray
    faces: np.ndarray


@cache
def _load(name: str) -> SampleMesh:
    mesh = read_mesh(MeshItem(name, str(SAMPLES_DIR / f"{name}.obj")))
    vertices, _, _ = normalize_to_unit_diagonal(mesh.vertices)
    vertices.setflags(write=False)
    faces = mesh.faces
    faces.setflags(write=False)
    return SampleMesh(vertices, faces)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def sample_mesh() -> Callable[[str], SampleMesh]:
    """Loader of ``data/samples/meshes/<name>.obj``, normalised and cached (arrays are read-only)."""
    return _load


@pytest.fixture(scope="session")
def spot() -> SampleMesh:
    return _load("spot")


CONSISTENT_DIR = SAMPLES_DIR.parent / "consistent"


@pytest.fixture(scope="session")
def consistent_dir() -> Path:
    """``data/samples/consistent``: ``crane-16.npz`` and ``horse-gallop/`` (shape collections in correspondence)."""
    return CONSISTENT_DIR


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module of small networks: faster than two on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- Prefect servers of the test session --------------------------------------------------------------------------

SERVER_TIMEOUT_ENV = "BRENIER_TEST_SERVER_TIMEOUT"
"""Seconds a test Prefect server may take to answer its health check (default 600: a loaded lab server at load
average 30 took longer than Prefect's default 20 s, and the flow tests errored at setup)."""


def server_timeout() -> float:
    return float(os.environ.get(SERVER_TIMEOUT_ENV, "600"))


# The servers that the CLI commands of the tests start for themselves (subprocesses inherit it).
os.environ.setdefault("BRENIER_SERVER_STARTUP_TIMEOUT", str(server_timeout()))


@pytest.fixture(scope="session")
def prefect_test_api():
    """One ephemeral Prefect API (``prefect_test_harness``, temporary SQLite DB) shared by every flow test of the
    session, with a startup timeout of ``BRENIER_TEST_SERVER_TIMEOUT`` seconds instead of Prefect's default."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=server_timeout()):
        yield



@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A local ``prefect server start`` (UI + API, fresh SQLite DB under a temporary PREFECT_HOME) shared by the
    session's tests; stopped with all its children at the end. Its ``.api_url`` is a ``PREFECT_API_URL``."""
    from flows.runtime.prefect_server import start_server

    server = start_server(tmp_path_factory.mktemp("prefect-home"), timeout=server_timeout())
    yield server
    server.stop()


@pytest.fixture()
def migrated_prefect_home(prefect_server, tmp_path: Path) -> Path:
    """A new PREFECT_HOME holding a consistent copy of the session server's database (migrations done), so a
    second server starts in seconds instead of migrating a fresh database."""
    import sqlite3

    home = tmp_path / "prefect-home"
    home.mkdir()
    source = sqlite3.connect(prefect_server.home / "prefect.db")
    target = sqlite3.connect(home / "prefect.db")
    with target:
        source.backup(target)
    source.close()
    target.close()
    return home


class ProcessMarker:
    """A unique ``BRENIER_TEST_MARK`` value: every descendant of a subprocess started with :attr:`env` inherits it
    (servers, Dask workers, flow-run processes), so :meth:`leftovers` finds any that outlived the command."""

    def __init__(self) -> None:
        import uuid

        self.value = uuid.uuid4().hex
        self.env = {"BRENIER_TEST_MARK": self.value}

    def leftovers(self, grace_s: float = 20.0) -> list[str]:
        """Processes still carrying the mark after up to ``grace_s`` seconds of shutdown, as ``"pid cmdline"``."""
        import time

        import psutil

        deadline = time.monotonic() + grace_s
        while True:
            found = []
            for proc in psutil.process_iter():
                try:
                    if proc.environ().get("BRENIER_TEST_MARK") == self.value:
                        found.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


@pytest.fixture()
def process_marker() -> ProcessMarker:
    return ProcessMarker()


def read_run_artifacts(api_url: str, flow_run_id: str) -> dict:
    """The artifacts of one flow run, read back through the Prefect API, by key."""
    import asyncio
    from uuid import UUID

    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read() -> list:
        async with PrefectClient(api_url) as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]))
            )

    return {artifact.key: artifact for artifact in asyncio.run(read())}


@pytest.fixture(scope="session")
def check_ui_artifacts():
    """``check(api_url, flow_run_id, prefix, picture_key) -> artifacts``: asserts the run published its keyed
    progress (at 100 %), ``<prefix>-summary`` table, ``<prefix>-report`` markdown and a PNG picture artifact."""
    import base64
    import io
    import json
    import re

    from PIL import Image

    def check(api_url: str, flow_run_id: str, prefix: str, picture_key: str) -> dict:
        artifacts = read_run_artifacts(api_url, flow_run_id)
        assert {f"{prefix}-progress", f"{prefix}-summary", f"{prefix}-report", picture_key} <= set(artifacts)
        progress = artifacts[f"{prefix}-progress"]
        assert progress.type == "progress" and float(progress.data) == 100.0
        table = artifacts[f"{prefix}-summary"]
        rows = json.loads(table.data) if isinstance(table.data, str) else table.data
        assert table.type == "table" and len(rows) >= 1
        report = artifacts[f"{prefix}-report"]
        assert report.type == "markdown" and prefix.split("-")[0] in report.data.lower()
        picture = artifacts[picture_key]
        pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", picture.data)
        assert picture.type == "markdown" and pngs
        image = Image.open(io.BytesIO(base64.b64decode(pngs[0]))).convert("L")
        low, high = image.getextrema()
        assert image.width >= 64 and image.height >= 32 and high - low > 50  # a picture, not a blank
        return artifacts

    return check


@pytest.fixture(scope="session")
def process_marker_factory() -> type[ProcessMarker]:
    """:class:`ProcessMarker` for fixtures of a wider scope than the function."""
    return ProcessMarker


def printed_paths(output: str) -> list[str]:
    """The absolute local paths a command printed (tokens starting with ``/`` after a blank), templates such as
    ``<mesh>`` left out."""
    import re

    tokens = re.findall(r"(?:^|\s)(/[^\s,;()'\"]+)", output, flags=re.MULTILINE)
    return [t.rstrip(".:") for t in tokens if "<" not in t and "{" not in t]
