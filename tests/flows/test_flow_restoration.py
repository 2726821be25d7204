"""The train-restoration flow on real meshes (tables, model file, artifacts, a mesh without geometry images), and
the geometry-image flow restoring with the trained model (``--restoration``): neural rows and the preview."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from flows.geometry_images import geometry_images
from flows.restoration import train_restoration
from flows.runtime.task_runner import make_task_runner
from storage.models import read_model
from storage.tables import RESTORATION_EPOCHS_SCHEMA, RESTORATION_MODELS_SCHEMA, read_table
from storage.zarr_store import ItemStore
from tasks.geometry_images import PREVIEW_RESTORED, GeometryImageConfig
from tasks.restoration import TrainRestorationConfig
from tasks.shared.restoration import MODEL_FORMAT

TINY = TrainRestorationConfig(epochs=2, steps_per_epoch=2, images_per_step=2, crop=8, surface_samples=2_000,
                              device="cpu")


@pytest.fixture(scope="module", autouse=True)
def prefect_api(prefect_test_api):
    yield


@pytest.mark.slow
def test_train_then_restore_with_the_trained_model(samples_dir: Path, tmp_path: Path, check_ui_artifacts) -> None:
    dataset = tmp_path / "meshes"
    dataset.mkdir()
    shutil.copy(samples_dir / "woody.obj", dataset)
    (dataset / "broken.obj").write_text("v 0 0 0\nf 1 2 3\n")
    store = str(tmp_path / "store")
    state = train_restoration(str(dataset), store, TINY, return_state=True)
    result = state.result()
    check_ui_artifacts(PREFECT_API_URL.value(), str(state.state_details.flow_run_id), "train-restoration",
                       "train-restoration-curve")

    epochs = read_table(result["tables"]["restoration_epochs"])
    assert list(epochs.columns) == RESTORATION_EPOCHS_SCHEMA.names and list(epochs["epoch"]) == [0, 1]
    [model] = read_table(result["tables"]["restoration_models"]).to_dict("records")
    assert model["trained_on"] == "woody" and model["steps"] == 4
    assert set(read_table(result["tables"]["restoration_models"]).columns) == set(RESTORATION_MODELS_SCHEMA.names)
    assert result["model"] == model["model_uri"]
    tensors, metadata, size = read_model(result["model"], MODEL_FORMAT)
    assert size == model["model_bytes"] and metadata["content_sha256"] == model["model_sha256"]
    assert "broken" in result["failed_items"]
    # The geometry images it trained on are an ordinary geometry-images run of the store.
    assert ItemStore(store, result["geometry_run_id"], "woody").read_pyramid("ot/geometry_image")[0][0].shape == (
        3, 257, 257)

    config = GeometryImageConfig(samples=3_000, restoration=result["model"])
    # On a Dask process worker: the restorations travel pickled (no identity checks on module globals).
    state = geometry_images.with_options(task_runner=make_task_runner(workers=1))(
        str(dataset / "woody.obj"), store, config, return_state=True)
    restored = state.result()
    artifacts = check_ui_artifacts(PREFECT_API_URL.value(), str(state.state_details.flow_run_id),
                                   "geometry-images", "geometry-images-preview")
    assert "bilinear | neural" in artifacts["geometry-images-preview"].data
    table = read_table(restored["tables"]["rate_distortion"])
    ot = table[table["parameterization"] == "ot"]
    assert sorted(ot.loc[ot["restore"] == "neural", "resolution"]) == [17, 33, 65, 129, 257]
    assert (ot.loc[ot["restore"] == "neural", "model_bytes"] == size).all()
    item = ItemStore(store, restored["run_id"], "woody")
    for name in ("bilinear", "neural"):
        assert item.read_array(f"ot/{PREVIEW_RESTORED}/{name}").shape == (3, 257, 257)
