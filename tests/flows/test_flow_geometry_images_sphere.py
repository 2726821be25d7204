"""The geometry-image flow with ``domain="sphere"``: spherical OT parameterization and seamless octahedral
geometry images of closed genus-0 meshes; other topologies become failure rows. Run through the CLI, whose
summary, printed paths and preview artifact must describe what the sphere run wrote."""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import igl
import numpy as np
import pytest
import trimesh
import zarr
from PIL import Image

from flows.runtime.cli import app
from storage.tables import GEOMETRY_IMAGES_SCHEMA, read_table

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples" / "meshes"
SPHERE_OPTIONS = ["--resolution", "65", "--levels", "2", "--samples", "3000", "--domain", "sphere",
                  "--sphere-ot-steps", "10", "--sphere-polish-iterations", "200", "--workers", "2"]


@pytest.fixture(scope="module", autouse=True)
def prefect_api(prefect_test_api):
    yield


@pytest.mark.slow
def test_sphere_domain_flow(tmp_path: Path, spot, capsys) -> None:
    folder = tmp_path / "meshes"
    folder.mkdir()
    vertices, faces = igl.decimate(np.asarray(spot.vertices), np.asarray(spot.faces, dtype=np.int64), 600)[:2]
    trimesh.Trimesh(vertices, faces, process=False).export(folder / "spot600.obj")
    shutil.copy(SAMPLES / "woody.obj", folder)  # a disk: no spherical parameterization
    store = tmp_path / "store"
    code = app(["geometry-images", str(folder), "--store", str(store), *SPHERE_OPTIONS], result_action="return_value")
    printed = capsys.readouterr().out
    assert code == 3, printed  # woody failed by design
    # the console describes the sphere run: its title, its columns, paths that exist
    assert "spherical OT" in printed and "harmonic vs OT" not in printed
    assert "distortion sph OT" in printed and "Newton it" not in printed
    paths = re.findall(r"^(?:Zarr store|pyramid|table \w+):\s+(\S+)$", printed, flags=re.MULTILINE)
    assert len(paths) == 1 + 2 + 3 and any(p.endswith("spot600/sphere_ot/geometry_image") for p in paths)
    assert all(Path(p).exists() for p in paths), paths
    tables = {Path(p).stem: p for p in paths if p.endswith(".parquet")}
    _assert_preview_has_an_image("sphere_initial | sphere_ot")
    rows = read_table(tables["geometry_images"])
    assert list(rows.columns) == GEOMETRY_IMAGES_SCHEMA.names
    assert set(rows["parameterization"]) == {"sphere_initial", "sphere_ot"} and set(rows["item_id"]) == {"spot600"}
    assert len(rows) == 4 and set(rows["resolution"]) == {65, 33}
    finest = rows[rows["level"] == 0].set_index("parameterization")
    assert (finest["flipped_triangles"] == 0).all()
    assert finest.loc["sphere_initial", "area_distortion"] / finest.loc["sphere_ot", "area_distortion"] >= 5.0
    assert finest.loc["sphere_ot", "hausdorff"] < 0.05
    failures = read_table(tables["failures"])
    assert list(failures["item_id"]) == ["woody"] and failures["stage"].iloc[0] == "spherical_parameterization"
    assert failures["error_type"].iloc[0] == "UnsupportedTopologyError"
    # seamless: mirrored border samples of the stored uint16 image agree (to one quantisation step)
    pyramid = Path(next(p for p in paths if p.endswith("sphere_ot/geometry_image")))
    codes = zarr.open_group(str(pyramid), mode="r")["0"][:]
    codes = codes.astype(np.int64)
    for border in (codes[:, 0, :], codes[:, -1, :], codes[:, :, 0], codes[:, :, -1]):
        assert np.abs(border - border[:, ::-1]).max() <= 1


def _assert_preview_has_an_image(caption: str) -> None:
    """The latest ``geometry-images-preview`` artifact holds a non-blank PNG under ``caption``."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def latest():
        async with get_client() as client:
            return (await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["geometry-images-preview"])), sort=ArtifactSort.CREATED_DESC, limit=1))[0]

    artifact = asyncio.run(latest())
    assert caption in artifact.data and "sphere domain" in artifact.data
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", artifact.data)
    assert pngs, artifact.data[:300]
    low, high = Image.open(io.BytesIO(base64.b64decode(pngs[0]))).convert("L").getextrema()
    assert high - low > 50  # a picture, not a blank
