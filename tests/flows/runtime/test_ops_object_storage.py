"""Object storage: flows read inputs from and write the Zarr store and Parquet tables to an S3-compatible store.

A local ``moto`` S3 server on 127.0.0.1 stands in for S3/MinIO/Ceph. The endpoint and credentials travel the way
a user passes them, through the standard AWS environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``) that s3fs/botocore read; nothing in brenier knows about S3.
"""

from __future__ import annotations

import logging

import fsspec
import numpy as np
import pytest
from ops_helpers import REPO, free_port

from flows.gaussian_reduction import gaussian_reduction
from flows.geometry_images import geometry_images
from flows.runtime.task_runner import make_task_runner
from storage.tables import GAUSSIAN_REDUCTION_SCHEMA, GEOMETRY_IMAGES_SCHEMA, read_table
from storage.zarr_store import ItemStore
from tasks.gaussian_reduction import GaussianReductionConfig
from tasks.geometry_images import GeometryImageConfig

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

SAMPLES = REPO / "data" / "samples"
BUCKET = "brenier-test"


@pytest.fixture(scope="module")
def s3(prefect_test_api):
    """A moto S3 server on 127.0.0.1 with one bucket holding two meshes and a 3DGS scene; yields the filesystem."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        fsspec.filesystem("s3").clear_instance_cache()  # instances made before cache the old endpoint
        fs = fsspec.filesystem("s3")
        fs.mkdir(BUCKET)
        for name in ("woody", "cow"):
            fs.put(str(SAMPLES / "meshes" / f"{name}.obj"), f"{BUCKET}/meshes/{name}.obj")
        fs.put(str(SAMPLES / "gaussians" / "donut-8k.ply"), f"{BUCKET}/scenes/donut-8k.ply")
        yield fs
        fs.clear_instance_cache()
    server.stop()


@pytest.mark.slow
def test_geometry_images_from_and_to_s3(s3, tmp_path) -> None:
    """Meshes read from s3://, the run's arrays and tables written to s3:// and read back; a re-run skips."""
    store = f"s3://{BUCKET}/runs"
    config = GeometryImageConfig(resolution=33, levels=2, samples=1000, cut_paths=0)  # plain cut: cow's OT fails
    runner = make_task_runner(workers=2)
    result = geometry_images.with_options(task_runner=runner)(f"s3://{BUCKET}/meshes", store, config)
    assert result["items"] == 2 and result["skipped_items"] == 0
    assert result["tables"]["geometry_images"] == f"{store}/{result['run_id']}/tables/geometry_images.parquet"

    rows = read_table(result["tables"]["geometry_images"])
    assert list(rows.columns) == GEOMETRY_IMAGES_SCHEMA.names
    assert rows.groupby("item_id").size().to_dict() == {"woody": 4, "cow": 2}  # cow: harmonic only (OT fails)
    assert (rows["stored_bytes"] > 0).all()  # chunk sizes measured on the object store
    assert set(rows["source_uri"]) == {f"s3://{BUCKET}/meshes/woody.obj", f"s3://{BUCKET}/meshes/cow.obj"}
    failures = read_table(result["tables"]["failures"])
    assert failures[["item_id", "stage"]].values.tolist() == [["cow", "ot_parameterization"]]

    item = ItemStore(store, result["run_id"], "woody")
    assert item.uri.startswith("s3://")
    levels, attrs = item.read_pyramid("ot/geometry_image")
    assert [level.shape for level in levels] == [(3, 33, 33), (3, 17, 17)] and levels[0].dtype == np.uint16
    assert attrs["multiscales"][0]["datasets"][1]["path"] == "1"
    # the same bytes on the object store as the arrays read back: nothing was left on local disk
    assert s3.exists(f"{BUCKET}/runs/{result['run_id']}/woody/ot/geometry_image/0/zarr.json")
    assert not (tmp_path / "runs").exists() and not (REPO / "s3:").exists()

    again = geometry_images.with_options(task_runner=runner)(f"s3://{BUCKET}/meshes", store, config)
    assert again["skipped_items"] == 2
    assert len(read_table(again["tables"]["geometry_images"])) == len(rows)


@pytest.mark.slow
def test_gaussian_reduction_to_s3(s3) -> None:
    """A 3DGS scene from s3://; reduced PLYs, renders, preview PNG and the table land on the object store."""
    store = f"s3://{BUCKET}/gaussians"
    config = GaussianReductionConfig(methods=["ghap", "random"], resolution=32, views=2, train_views=2,
                                     finetune_steps=2, device="cpu")
    runner = make_task_runner(workers=1)
    result = gaussian_reduction.with_options(task_runner=runner)(f"s3://{BUCKET}/scenes/donut-8k.ply", store, [0.1],
                                                                 config)
    rows = read_table(result["tables"]["gaussian_reduction"])
    assert list(rows.columns) == GAUSSIAN_REDUCTION_SCHEMA.names
    assert len(rows) == 4 and set(rows["n_out"]) == {819}
    base = f"{BUCKET}/gaussians/{result['run_id']}/donut-8k--r0.1"
    assert {p.rsplit("/", 1)[1] for p in s3.ls(f"{base}/ply")} == {
        "ghap.ply", "ghap-finetuned.ply", "random.ply", "random-finetuned.ply"}
    assert s3.cat(f"{base}/preview.png")[:8] == b"\x89PNG\r\n\x1a\n"
    renders = ItemStore(store, result["run_id"], "donut-8k--r0.1").read_array("renders/ghap")
    assert renders.shape == (2, 32, 32, 3) and renders.dtype == np.uint8
