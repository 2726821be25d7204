"""The geometry-image flow's rate_distortion table and plot artifact, on a real mesh."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from flows.geometry_images import geometry_images
from storage.tables import RATE_DISTORTION_SCHEMA, read_table
from storage.zarr_store import ItemStore
from tasks.geometry_images import GeometryImageConfig

CONFIG = GeometryImageConfig(resolution=65, levels=3, samples=3_000, rate_distortion=["jpeg2k:50", "jpeg2k:70"])


@pytest.fixture(scope="module", autouse=True)
def prefect_api(prefect_test_api):
    yield


@pytest.mark.slow
def test_flow_writes_one_rate_distortion_row_per_mesh_level_and_setting(samples_dir: Path, tmp_path: Path,
                                                                         check_ui_artifacts) -> None:
    dataset = tmp_path / "meshes"
    dataset.mkdir()
    shutil.copy(samples_dir / "woody.obj", dataset)
    state = geometry_images(str(dataset), str(tmp_path / "store"), CONFIG, return_state=True)
    result = state.result()
    # The run publishes the rate-distortion plot as a picture artifact besides the usual ones.
    check_ui_artifacts(PREFECT_API_URL.value(), str(state.state_details.flow_run_id), "geometry-images",
                       "geometry-images-rate-distortion")

    table = read_table(result["tables"]["rate_distortion"])
    assert list(table.columns) == RATE_DISTORTION_SCHEMA.names
    # woody x (harmonic, ot) x 3 levels x (stored jpeg2k:lossless, jpeg2k:50, jpeg2k:70), each once.
    assert len(table) == 18
    assert not table.duplicated(["item_id", "parameterization", "level", "codec_setting"]).any()
    assert set(table["codec_setting"]) == {"jpeg2k:lossless", "jpeg2k:50", "jpeg2k:70"}
    assert table.groupby("codec_setting")["stored"].all().to_dict() == {
        "jpeg2k:lossless": True, "jpeg2k:50": False, "jpeg2k:70": False}
    assert (table["side_info_bytes"] == 80).all() and (table["stored_bytes"] > table["side_info_bytes"]).all()

    # The stored setting's rows are the geometry_images rows: same bytes, same distances.
    rows = read_table(result["tables"]["geometry_images"]).set_index(["parameterization", "level"])
    stored = table[table["stored"]].set_index(["parameterization", "level"])
    for column in ("stored_bytes", "chamfer_l2", "hausdorff", "compression_ratio"):
        assert stored[column].sort_index().tolist() == rows[column].sort_index().tolist()
    item = ItemStore(result["store"], result["run_id"], "woody")
    side = item.read_side_info("ot/geometry_image")
    assert sum(v.nbytes for v in side.values()) == 80

    # At each level, lossy coding stores fewer bytes the lower its PSNR target, lossless the most.
    for _, group in table.groupby(["parameterization", "level"]):
        sizes = group.set_index("codec_setting")["stored_bytes"]
        assert sizes["jpeg2k:50"] < sizes["jpeg2k:70"] < sizes["jpeg2k:lossless"]
    finest = table[(table["level"] == 0) & (table["parameterization"] == "ot")].set_index("codec_setting")
    assert finest.loc["jpeg2k:50", "chamfer_l2"] > finest.loc["jpeg2k:lossless", "chamfer_l2"]

    # A re-run skips the finished mesh and still reports its rate-distortion rows.
    again = geometry_images(str(dataset), str(tmp_path / "store"), CONFIG)
    assert again["skipped_items"] == 1
    rerun = read_table(again["tables"]["rate_distortion"])
    assert rerun.sort_values(list(rerun.columns[3:7])).reset_index(drop=True).equals(
        table.sort_values(list(table.columns[3:7])).reset_index(drop=True))
