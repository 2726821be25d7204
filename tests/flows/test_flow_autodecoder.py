"""Flow tests of the autodecoder job on the bundled real collections: tables, store, bad shapes, skip on re-run,
resume after a killed run, and encoding new shapes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flows.autodecoder import autodecoder, encode_shapes
from flows.runtime.task_runner import make_task_runner
from storage.tables import AUTODECODER_MODELS_SCHEMA, read_table
from storage.zarr_store import ItemStore
from tasks.autodecoder import AutodecoderConfig, load_model

REPO = Path(__file__).resolve().parents[2]
CONSISTENT = REPO / "data" / "samples" / "consistent"
FAST = AutodecoderConfig(latent_size=16, patches=8, points_per_shape=256, shapes_per_step=4, chamfer_epochs=2,
                         qaad_epochs=2, leaf_size=256, device="cpu", checkpoint_every=2)


@pytest.fixture(scope="module", autouse=True)
def prefect_api(prefect_test_api):
    yield


@pytest.fixture()
def horses(tmp_path: Path) -> Path:
    """The bundled horse-gallop frames plus a truncated copy and a frame of another mesh (unequal count)."""
    folder = tmp_path / "horse-gallop"
    shutil.copytree(CONSISTENT / "horse-gallop", folder)
    text = (folder / "0001.obj").read_text()
    (folder / "0099.obj").write_text(text[: len(text) // 3])
    shutil.copy(REPO / "data" / "samples" / "meshes" / "woody.obj", folder / "0100.obj")
    return folder


@pytest.mark.slow
def test_flow_trains_variants_and_records_bad_shapes(horses: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    runner = make_task_runner(workers=2)
    result = autodecoder.with_options(task_runner=runner)(str(horses), str(store), FAST, ["neuralqaad", "atlasnetv2"])
    assert result["items"] == 2

    models = read_table(result["tables"]["autodecoder_models"])
    assert list(models.columns) == AUTODECODER_MODELS_SCHEMA.names
    models = models.set_index("variant")
    assert set(models.index) == {"neuralqaad", "atlasnetv2"}
    for _, row in models.iterrows():
        assert row["shapes"] == 3 and row["points"] == 8431
        assert row["dataset_floats"] == 3 * 8431 * 3
        assert row["compression_ratio"] == pytest.approx(
            row["dataset_floats"] / (row["network_floats"] + row["latent_floats"]))
        assert row["latent_floats"] == 3 * 16
    # the paper's baseline: fewer patches (BASELINE_PATCHES), each an independent 4 x 128 MLP
    assert models.loc["atlasnetv2", "patches"] == 2 and models.loc["neuralqaad", "patches"] == 8
    assert models.loc["atlasnetv2", "architecture"] == "atlasnetv2"
    assert models.loc["atlasnetv2", "network_floats"] > models.loc["neuralqaad", "network_floats"]

    shapes = read_table(result["tables"]["autodecoder_shapes"])
    assert len(shapes) == 6 and set(shapes["shape_id"]) == {"0001", "0009", "0017"}
    assert shapes["em_kd"].between(0, 1).all() and (shapes["chamfer_l2"] > 0).all()
    epochs = read_table(result["tables"]["autodecoder_epochs"])
    assert sorted(epochs.loc[epochs["variant"] == "neuralqaad", "phase"]) == ["chamfer"] * 2 + ["qaad"] * 2

    failures = read_table(result["tables"]["failures"])
    by_shape = {(uri.rsplit("#", 1)[1], error) for uri, error in zip(failures["source_uri"], failures["error_type"])}
    assert ("0100", "UnequalPointCountError") in by_shape
    assert any(shape == "0099" for shape, _ in by_shape)

    item = ItemStore(str(store), result["run_id"], "horse-gallop--neuralqaad")
    decoded = item.read_array("decoded")
    assert decoded.shape == (3, 8431, 3) and decoded.dtype == np.float32
    model, centre, scale = load_model(str(store), result["run_id"], "horse-gallop--neuralqaad")
    assert model.n_points == 8431 and scale > 0

    # a finished run is skipped on re-run: same rows, no new training
    again = autodecoder.with_options(task_runner=runner)(str(horses), str(store), FAST, ["neuralqaad", "atlasnetv2"])
    assert again["skipped_items"] == 2
    assert read_table(again["tables"]["autodecoder_shapes"])["em_kd"].sort_values().tolist() == \
        shapes["em_kd"].sort_values().tolist()

    # encode the frames again with the trained decoder frozen: codes are fitted, errors are measured
    encoded = encode_shapes.with_options(task_runner=runner)(
        str(CONSISTENT / "horse-gallop"), str(store), result["run_id"], "horse-gallop--neuralqaad",
        config=FAST, chamfer_steps=5, qaad_steps=5,
    )
    rows = read_table(encoded["tables"]["autodecoder_shapes"])
    assert len(rows) == 3 and (rows["variant"] == "encoded").all() and rows["em_kd"].between(0, 1).all()


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """Kill the CLI mid-training (SIGKILL), re-run: training continues from the last checkpoint, not from 0."""
    store = tmp_path / "store"
    config = AutodecoderConfig(latent_size=16, patches=8, points_per_shape=256, shapes_per_step=2,
                               chamfer_epochs=15, qaad_epochs=15, leaf_size=256, device="cpu",
                               checkpoint_every=4)
    run_id = config.default_run_id()
    args = [sys.executable, "-m", "flows.runtime.cli", "autodecoder", str(CONSISTENT / "crane-16.npz"),
            "--store", str(store),
            "--latent-size", "16", "--patches", "8", "--points-per-shape", "256", "--shapes-per-step", "2",
            "--chamfer-epochs", "15", "--qaad-epochs", "15", "--leaf-size", "256", "--device", "cpu",
            "--checkpoint-every", "4",
            "--workers", "1"]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    item = ItemStore(str(store), run_id, "crane-16--neuralqaad")
    fingerprint = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                fingerprint = item.read_attrs().get("fingerprint")
            except (FileNotFoundError, KeyError, ValueError):
                fingerprint = None
            if fingerprint and (item.checkpoint_step(fingerprint) or 0) >= 12:
                break
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert fingerprint is not None, "the run never wrote a checkpoint"
    killed_at = item.checkpoint_step(fingerprint)
    assert killed_at is not None and killed_at >= 12
    assert item.read_attrs().get("complete") is False

    runner = make_task_runner(workers=1)
    result = autodecoder.with_options(task_runner=runner)(str(CONSISTENT / "crane-16.npz"), str(store), config)
    models = read_table(result["tables"]["autodecoder_models"])
    assert result["run_id"] == run_id
    assert int(models.loc[0, "resumed_from_step"]) >= killed_at
    epochs = read_table(result["tables"]["autodecoder_epochs"])
    assert epochs["epoch"].tolist() == list(range(30))  # every epoch exactly once across both runs
    assert item.read_attrs()["complete"] is True
