"""Flow and task tests of the geometry-image job on real meshes, on a Dask LocalCluster."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from flows.geometry_images import geometry_images
from flows.runtime.task_runner import make_task_runner
from storage.tables import GEOMETRY_IMAGES_SCHEMA, read_table
from storage.zarr_store import ItemStore
from tasks.geometry_images import GeometryImageConfig

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples" / "meshes"
FAST = GeometryImageConfig(resolution=129, levels=3, samples=5_000)


@pytest.fixture(scope="module", autouse=True)
def prefect_api(prefect_test_api):
    yield


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """Two real meshes (a disk and a closed genus-0 mesh) plus broken inputs."""
    folder = tmp_path / "meshes"
    folder.mkdir()
    shutil.copy(SAMPLES / "woody.obj", folder)
    shutil.copy(SAMPLES / "spot.obj", folder)
    (folder / "nan.obj").write_text("v 0 0 0\nv 1 0 nan\nv 0 1 0\nf 1 2 3\n")
    (folder / "empty.obj").write_text("")
    (folder / "notamesh.obj").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return folder


def _run(dataset: Path, store: Path) -> dict:
    runner = make_task_runner(workers=2)
    return geometry_images.with_options(task_runner=runner)(str(dataset), str(store), FAST)


@pytest.mark.slow
def test_flow_on_real_meshes_with_bad_inputs(dataset: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = _run(dataset, store)
    assert result["items"] == 5
    assert sorted(result["failed_items"]) == ["empty", "nan", "notamesh"]

    rows = read_table(result["tables"]["geometry_images"])
    assert list(rows.columns) == GEOMETRY_IMAGES_SCHEMA.names
    # 2 meshes x (harmonic, ot) x 3 levels, each exactly once.
    assert len(rows) == 12
    assert not rows.duplicated(["item_id", "parameterization", "level"]).any()
    assert set(rows["resolution"]) == {129, 65, 33}
    ot = rows[rows["parameterization"] == "ot"]
    assert (ot["mass_error"] < FAST.tol).all() and (ot["flipped_triangles"] == 0).all()
    assert rows["parameterization"].eq("harmonic").sum() == 6
    assert rows.loc[rows.parameterization == "harmonic", "newton_iterations"].isna().all()
    # Finer levels are more faithful (up to the squared quantisation step, where a flat mesh's error is only
    # quantisation noise); compression grows as levels get coarser.
    quantisation_floor = (2.0 ** -FAST.bits) ** 2
    for (_, _), group in rows.groupby(["item_id", "parameterization"]):
        group = group.sort_values("level")
        assert (group["chamfer_l2"].diff().dropna() >= -quantisation_floor).all()
        assert group["compression_ratio"].is_monotonic_increasing

    failures = read_table(result["tables"]["failures"]).set_index("item_id")
    assert failures.loc["nan", "error_type"] == "NonFiniteVerticesError"
    assert failures.loc["empty", "error_type"] == "EmptyMeshError"
    assert failures.loc["notamesh", "error_type"] in {"NotAMeshError", "UnreadableMeshError"}
    assert (failures["stage"] == "read").all()

    # The Zarr pyramid decodes back to the geometry the table measured.
    item = ItemStore(str(store), result["run_id"], "spot")
    levels, attrs = item.read_pyramid("ot/geometry_image")
    assert [lvl.shape for lvl in levels] == [(3, 129, 129), (3, 65, 65), (3, 33, 33)]
    assert attrs["multiscales"][0]["datasets"][2]["coordinateTransformations"][0]["scale"] == [1.0, 4.0, 4.0]
    np.testing.assert_array_equal(levels[1], levels[0][:, ::2, ::2])

    # Re-running with the same inputs and config skips every finished mesh and yields identical tables.
    again = _run(dataset, store)
    assert again["skipped_items"] == 2 and again["run_id"] == result["run_id"] == FAST.default_run_id()
    rerun_rows = read_table(again["tables"]["geometry_images"])
    key = ["item_id", "parameterization", "level"]
    np.testing.assert_allclose(
        rerun_rows.sort_values(key)["chamfer_l2"].to_numpy(), rows.sort_values(key)["chamfer_l2"].to_numpy()
    )
