"""The geometry-image flow with ``domain="sphere"``: spherical OT parameterization and seamless octahedral
geometry images of closed genus-0 meshes; other topologies become failure rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import igl
import numpy as np
import pytest
import trimesh
import zarr

from flows.geometry_images import geometry_images
from flows.runtime.task_runner import make_task_runner
from storage.tables import GEOMETRY_IMAGES_SCHEMA, read_table
from tasks.geometry_images import GeometryImageConfig

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples" / "meshes"
SPHERE = GeometryImageConfig(resolution=65, levels=2, samples=3_000, domain="sphere", sphere_ot_steps=10,
                             sphere_polish_iterations=200)


@pytest.fixture(scope="module", autouse=True)
def prefect_api(prefect_test_api):
    yield


@pytest.mark.slow
def test_sphere_domain_flow(tmp_path: Path, spot) -> None:
    folder = tmp_path / "meshes"
    folder.mkdir()
    vertices, faces = igl.decimate(np.asarray(spot.vertices), np.asarray(spot.faces, dtype=np.int64), 600)[:2]
    trimesh.Trimesh(vertices, faces, process=False).export(folder / "spot600.obj")
    shutil.copy(SAMPLES / "woody.obj", folder)  # a disk: no spherical parameterization
    store = tmp_path / "store"
    result = geometry_images.with_options(task_runner=make_task_runner(workers=2))(str(folder), str(store), SPHERE)
    rows = read_table(result["tables"]["geometry_images"])
    assert list(rows.columns) == GEOMETRY_IMAGES_SCHEMA.names
    assert set(rows["parameterization"]) == {"sphere_initial", "sphere_ot"} and set(rows["item_id"]) == {"spot600"}
    assert len(rows) == 4 and set(rows["resolution"]) == {65, 33}
    finest = rows[rows["level"] == 0].set_index("parameterization")
    assert (finest["flipped_triangles"] == 0).all()
    assert finest.loc["sphere_initial", "area_distortion"] / finest.loc["sphere_ot", "area_distortion"] >= 5.0
    assert finest.loc["sphere_ot", "hausdorff"] < 0.05
    failures = read_table(result["tables"]["failures"])
    assert list(failures["item_id"]) == ["woody"] and failures["stage"].iloc[0] == "spherical_parameterization"
    assert failures["error_type"].iloc[0] == "UnsupportedTopologyError"
    # seamless: mirrored border samples of the stored uint16 image agree (to one quantisation step)
    pyramid = store / result["run_id"] / "spot600" / "sphere_ot" / "geometry_image"
    codes = zarr.open_group(str(pyramid), mode="r")["0"][:]
    codes = codes.astype(np.int64)
    for border in (codes[:, 0, :], codes[:, -1, :], codes[:, :, 0], codes[:, :, -1]):
        assert np.abs(border - border[:, ::-1]).max() <= 1
