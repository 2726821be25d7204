"""Flow test of the embedding-alignment job (HOTS3D spherical OT) on von Mises–Fisher mixtures, Dask LocalCluster."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from von_mises_fisher import sample_vmf_mixture

from flows.align_embeddings import align_embeddings
from flows.runtime.task_runner import make_task_runner
from storage.tables import EMBEDDING_ALIGNMENT_SCHEMA, read_table
from tasks.align_embeddings import AlignmentConfig

FAST = AlignmentConfig(hidden=32, layers=2, steps=60, inner_steps=3, batch_size=256, lr=3e-3, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def prefect_api(prefect_test_api):
    yield


@pytest.mark.slow
def test_flow_aligns_vmf_mixtures_and_records_failures(tmp_path):
    d = 16
    rng = np.random.default_rng(0)
    means = rng.standard_normal((2, d))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    shifted = means + 0.6 * rng.standard_normal((2, d)) / np.sqrt(d)
    source, _ = sample_vmf_mixture(means, np.full(2, 60.0), np.ones(2), 400, seed=1)
    target, _ = sample_vmf_mixture(shifted, np.full(2, 60.0), np.ones(2), 500, seed=2)
    np.save(tmp_path / "source.npy", source)
    zarr.save_array(str(tmp_path / "target.zarr"), target)
    np.save(tmp_path / "wrongdim.npy", source[:, :8])
    store = tmp_path / "store"
    runner = make_task_runner(workers=2)
    targets = [str(tmp_path / "target.zarr"), str(tmp_path / "wrongdim.npy")]
    result = align_embeddings.with_options(task_runner=runner)(str(tmp_path / "source.npy"), targets, str(store), FAST)
    rows = read_table(result["tables"]["embedding_alignment"])
    assert list(rows.columns) == EMBEDDING_ALIGNMENT_SCHEMA.names
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["item_id"] == "source__target" and row["dim"] == d and row["n_source"] == 400
    assert row["energy_distance_after"] < row["energy_distance_before"] / 2
    failures = read_table(result["tables"]["failures"])
    assert list(failures["item_id"]) == ["source__wrongdim"] and failures["stage"].iloc[0] == "read"
    group = zarr.open_group(str(store / result["run_id"] / "source__target"), mode="r")
    mapped = group["mapped"][:]
    assert mapped.shape == (400, d) and np.allclose(np.linalg.norm(mapped, axis=1), 1.0, atol=1e-5)
    assert "potential" in group and "dual" in group
    # a re-run with the same inputs and config skips the finished pair
    again = align_embeddings.with_options(task_runner=make_task_runner(workers=1))(
        str(tmp_path / "source.npy"), targets[:1], str(store), FAST)
    assert again["skipped_items"] == 1
