"""The train-restoration task on real geometry images (resume after a kill, model file, failure rows) and the
restore=neural rows that ``--restoration`` adds to the rate_distortion table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect.logging import disable_run_logger

import tasks.restoration as restoration_task
from storage.meshes import MeshItem
from storage.models import read_model
from tasks.geometry_images import GeometryImageConfig, encode_geometry_images, parameterize_mesh
from tasks.restoration import MODEL_FILE, TrainRestorationConfig, train_restoration_model
from tasks.shared.restoration import MODEL_FORMAT, load_restoration

REPO = Path(__file__).resolve().parents[2]
BUNDLED_MODEL = REPO / "data" / "models" / "restoration.safetensors"
TINY = TrainRestorationConfig(epochs=2, steps_per_epoch=3, images_per_step=2, crop=8, surface_samples=2_000,
                              checkpoint_every=2, device="cpu")


@pytest.fixture(autouse=True)
def no_run_logger():
    with disable_run_logger():
        yield


@pytest.fixture(scope="module")
def geometry_store(tmp_path_factory, samples_dir) -> tuple[str, str]:
    """A geometry-images run over spot (the flow's tasks, few samples): ``(store, run_id)``."""
    store = str(tmp_path_factory.mktemp("store"))
    config = GeometryImageConfig(samples=2_000)
    run_id = config.default_run_id()
    record = parameterize_mesh.fn(MeshItem("spot", str(samples_dir / "spot.obj")), store, run_id, config)
    encode_geometry_images.fn(record, store, run_id, config)
    return store, run_id


def test_killed_training_resumes_from_its_checkpoint(geometry_store, monkeypatch) -> None:
    store, geometry_run_id = geometry_store
    straight = train_restoration_model.fn(["spot"], geometry_run_id, store, "straight", TINY)

    real_train = restoration_task.train_restoration

    def killed_at_step_5(state, pairs, on_step=None, on_epoch=None):
        def step(s):
            on_step(s)
            if s.step == 5:
                raise KeyboardInterrupt("worker killed")
        return real_train(state, pairs, on_step=step, on_epoch=on_epoch)

    monkeypatch.setattr(restoration_task, "train_restoration", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_restoration_model.fn(["spot", "not-parameterized"], geometry_run_id, store, "resumed", TINY)
    monkeypatch.setattr(restoration_task, "train_restoration", real_train)
    resumed = train_restoration_model.fn(["spot", "not-parameterized"], geometry_run_id, store, "resumed", TINY)

    model = resumed.rows("restoration_models")[0]
    assert model["resumed_from_step"] == 4  # the last checkpoint before the kill (every 2 steps)
    assert model["steps"] == 6 and model["training_meshes"] == 1 and model["trained_on"] == "spot"
    assert [f["item_id"] for f in resumed.failures] == ["not-parameterized"]
    assert model["model_sha256"] == straight.rows("restoration_models")[0]["model_sha256"]  # bit for bit
    tensors, metadata, size = read_model(resumed.artifacts["model"], MODEL_FORMAT)
    assert resumed.artifacts["model"].endswith(MODEL_FILE) and size == model["model_bytes"]
    assert sum(t.size for t in tensors.values()) == model["parameters"] == metadata["parameters"]
    epochs = pd.DataFrame(resumed.rows("restoration_epochs"))
    assert list(epochs["epoch"]) == [0, 1] and (epochs["position_l1"] > 0).all()

    again = train_restoration_model.fn(["spot", "not-parameterized"], geometry_run_id, store, "resumed", TINY)
    assert again.skipped and again.rows("restoration_models") == resumed.rows("restoration_models")


def test_bundled_model_adds_neural_rows_that_beat_bilinear_on_an_unseen_mesh(samples_dir, tmp_path) -> None:
    """spot is an evaluation mesh: the bundled network was trained on meshes-more only."""
    config = GeometryImageConfig(samples=20_000, restoration=str(BUNDLED_MODEL))
    item = MeshItem("spot", str(samples_dir / "spot.obj"))
    record = parameterize_mesh.fn(item, str(tmp_path), "neural", config)
    rows = pd.DataFrame(encode_geometry_images.fn(record, str(tmp_path), "neural", config).rows("rate_distortion"))
    ot = rows[rows["parameterization"] == "ot"].set_index(["restore", "resolution"])
    assert set(ot.loc["neural"].index) == {257, 129, 65, 33, 17}
    # The finest level is the stored image itself, whichever restoration.
    assert ot.loc[("neural", 257), "hausdorff"] == ot.loc[("bilinear", 257), "hausdorff"]
    model_bytes = BUNDLED_MODEL.stat().st_size
    assert (ot.loc["neural", "model_bytes"] == model_bytes).all() and ot.loc["bilinear", "model_bytes"].isna().all()
    assert (ot.loc["neural"].drop(index=257)["restore_seconds"] > 0).all()
    assert ot.loc[("neural", 257), "restore_seconds"] == 0.0  # the stored image itself
    for resolution in (33, 65):
        assert ot.loc[("neural", resolution), "chamfer_l2"] < ot.loc[("bilinear", resolution), "chamfer_l2"]
    assert np.array_equal(ot.loc["neural", "stored_bytes"], ot.loc["bilinear", "stored_bytes"])


def test_a_bad_model_file_keeps_the_bilinear_rows_and_says_why(samples_dir, tmp_path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    load_restoration.cache_clear()
    config = GeometryImageConfig(samples=2_000, levels=2, restoration=str(bad))
    item = MeshItem("spot", str(samples_dir / "spot.obj"))
    record = parameterize_mesh.fn(item, str(tmp_path), "bad", config)
    result = encode_geometry_images.fn(record, str(tmp_path), "bad", config)
    assert {row["restore"] for row in result.rows("rate_distortion")} == {"bilinear"}
    assert len(result.rows("geometry_images")) == 4  # harmonic and OT x 2 levels
    [failure] = [f for f in result.failures if f["stage"] == "restoration"]
    assert failure["error_type"] == "ModelFileError" and "bad.safetensors" in failure["message"]
