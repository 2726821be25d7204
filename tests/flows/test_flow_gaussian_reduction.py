"""Flow test of the Gaussian-reduction job on the bundled real 3DGS sample: exact counts, GHAP beats pruning,
readable reduced PLYs, renders in the store, a bad file becomes a failure row, and a re-run skips."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from flows.gaussian_reduction import gaussian_reduction, summary_frame
from flows.runtime.task_runner import make_task_runner
from storage.gaussians import read_scene
from storage.tables import GAUSSIAN_REDUCTION_SCHEMA, read_table
from storage.zarr_store import ItemStore
from tasks.gaussian_reduction import GaussianReductionConfig

DONUT = Path(__file__).resolve().parents[2] / "data" / "samples" / "gaussians" / "donut-8k.ply"
FAST = GaussianReductionConfig(resolution=48, views=3, train_views=3, finetune_steps=6, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def prefect_api(prefect_test_api):
    yield


@pytest.mark.slow
def test_flow_reduces_measures_and_skips(tmp_path: Path) -> None:
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    shutil.copy(DONUT, scenes / "donut-8k.ply")
    data = DONUT.read_bytes()
    (scenes / "broken.ply").write_bytes(data[: len(data) // 2])  # truncated binary body
    store = tmp_path / "store"
    runner = make_task_runner(workers=2)
    result = gaussian_reduction.with_options(task_runner=runner)(str(scenes), str(store), [0.1], FAST)

    table = read_table(result["tables"]["gaussian_reduction"])
    assert list(table.columns) == GAUSSIAN_REDUCTION_SCHEMA.names
    assert len(table) == 8 and set(table["method"]) == {"ghap", "random", "top_opacity", "lightgaussian"}
    assert (table["n_out"] == 819).all() and (table["n_in"] == 8192).all()
    assert np.isfinite(table["psnr"]).all() and ((table["ssim"] > 0) & (table["ssim"] <= 1)).all()
    before = table[~table["fine_tuned"]].set_index("method")["psnr"]
    assert before["ghap"] > before["random"] and before["ghap"] > before["top_opacity"]
    tuned = table[table["fine_tuned"]].set_index("method")["psnr"]
    assert tuned["ghap"] > max(tuned["random"], tuned["top_opacity"], tuned["lightgaussian"])

    failures = read_table(result["tables"]["failures"])
    assert list(failures["item_id"]) == ["broken--r0.1"] and failures["error_type"].iloc[0] == "UnreadableSceneError"

    item = ItemStore(str(store), result["run_id"], "donut-8k--r0.1")
    for method in ("ghap", "random"):
        for suffix in ("", "-finetuned"):
            reduced = read_scene(f"{item.uri}/ply/{method}{suffix}.ply")
            assert len(reduced) == 819 and np.isfinite(reduced.means).all()
    renders = item.read_array("renders/ghap-finetuned")
    assert renders.shape == (3, 48, 48, 3) and renders.dtype == np.uint8
    assert np.abs(renders.astype(int) - item.read_array("renders/original").astype(int)).mean() < 40
    assert Path(result["previews"]["donut-8k--r0.1"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(summary_frame(table.to_dict(orient="records"))) == 4

    again = gaussian_reduction.with_options(task_runner=make_task_runner(workers=1))(
        str(scenes), str(store), [0.1], FAST)
    assert again["skipped_items"] == 1
    assert len(read_table(again["tables"]["gaussian_reduction"])) == 8
