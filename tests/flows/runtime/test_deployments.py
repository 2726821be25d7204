"""prefect.yaml: every flow deploys to a local server; the nightly geometry-image deployment, triggered now, runs under
``prefect worker start --run-once`` and writes its Parquet rows, Zarr groups and UI artifacts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

from storage.tables import read_table
from storage.zarr_store import ItemStore

REPO = Path(__file__).resolve().parents[3]
POOL = "brenier-process"
FLOWS = {  # deployment name -> flow name
    "geometry-images-nightly": "geometry-images",
    "autodecoder": "autodecoder",
    "encode-shapes": "encode-shapes",
    "gaussian-reduction": "gaussian_reduction",
    "geometry-image-sequence": "geometry-image-sequence",
    "train-restoration": "train-restoration",
}

pytestmark = pytest.mark.slow


def prefect(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("prefect")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "prefect", *args]


@pytest.fixture(scope="module")
def deployed(prefect_server) -> dict[str, str]:
    """``prefect deploy --all`` of the repository's prefect.yaml to the session server; returns the env to use."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url, "OMP_NUM_THREADS": "1"}
    pool = subprocess.run(prefect("work-pool", "create", POOL, "--type", "process", "--overwrite"), env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deploy = subprocess.run(prefect("--no-prompt", "deploy", "--all"), env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert deploy.returncode == 0, deploy.stdout[-4000:] + deploy.stderr[-4000:]
    return env


async def _deployments(api_url: str) -> list:
    async with PrefectClient(api_url) as client:
        deployments = await client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[POOL])))
        flows = {d.flow_id: (await client.read_flow(d.flow_id)).name for d in deployments}
        return [(d, flows[d.flow_id]) for d in deployments]


def test_prefect_yaml_declares_every_flow() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert names == set(FLOWS)
    for deployment in spec["deployments"]:
        assert deployment["work_pool"]["name"] == POOL
        assert {"path", "store"} <= set(deployment["parameters"])


def test_every_flow_deploys_with_schedule_and_documented_parameters(prefect_server, deployed) -> None:
    found = {d.name: (d, flow) for d, flow in asyncio.run(_deployments(prefect_server.api_url))}
    assert {name: flow for name, (_, flow) in found.items()} == FLOWS
    nightly, _ = found["geometry-images-nightly"]
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"] and nightly.schedules[0].active
    assert nightly.parameters["path"] == "data/samples/meshes"
    for deployment, _ in found.values():
        properties = deployment.parameter_openapi_schema["properties"]
        # The UI's run form shows each parameter's documentation, taken from the flow's docstring.
        assert properties["path"].get("description") and properties["store"].get("description")
        assert deployment.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)


def test_triggered_nightly_run_executes_on_a_process_worker(prefect_server, deployed, tmp_path: Path,
                                                            process_marker, check_ui_artifacts) -> None:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    store = tmp_path / "store"
    parameters = {
        "path": "data/samples/meshes/[sw]*.obj",  # the bundled spot and woody, relative to the working directory
        "store": str(store),
        "config": {"resolution": 33, "levels": 2, "samples": 2000},
    }
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        flow_run = run_deployment("geometry-images/geometry-images-nightly", parameters=parameters, timeout=0,
                                  job_variables={"env": {"BRENIER_WORKERS": "2"}})
    worker = subprocess.run(prefect("worker", "start", "--pool", POOL, "--run-once"),
                            env={**deployed, **process_marker.env}, cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert worker.returncode == 0, worker.stdout[-4000:] + worker.stderr[-4000:]

    async def state():
        async with PrefectClient(prefect_server.api_url) as client:
            return (await client.read_flow_run(flow_run.id)).state
    final = asyncio.run(state())
    assert final.is_completed(), (final, worker.stdout[-4000:])

    rows = read_table(next(store.glob("geometry-images-*/tables/geometry_images.parquet")))
    assert set(rows["item_id"]) == {"spot", "woody"}
    assert len(rows) == 8 and not rows.duplicated(["item_id", "parameterization", "level"]).any()
    run_id = rows["run_id"].iloc[0]
    for mesh in ("spot", "woody"):
        item = ItemStore(str(store), run_id, mesh)
        assert item.read_attrs()["complete"] is True
        levels, _ = item.read_pyramid("ot/geometry_image")
        assert [level.shape for level in levels] == [(3, 33, 33), (3, 17, 17)]
    check_ui_artifacts(prefect_server.api_url, str(flow_run.id), "geometry-images", "geometry-images-preview")
    assert process_marker.leftovers() == []
