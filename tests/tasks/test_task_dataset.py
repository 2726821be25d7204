"""The run-level I/O flows route through (tasks/dataset.py) and the shared records, on the bundled real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from storage.errors import DatasetNotFoundError
from storage.zarr_store import ItemStore
from tasks.dataset import crash_result, list_items, read_arrays, read_files, read_run_table, write_tables
from tasks.shared.records import ItemResult, run_id

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"


def test_list_items_of_each_kind(tmp_path: Path) -> None:
    meshes = list_items(str(SAMPLES / "meshes"), "meshes")
    assert [m.item_id for m in meshes] == sorted(p.stem for p in (SAMPLES / "meshes").glob("*.obj"))
    assert list_items(str(SAMPLES / "gaussians"), "scenes") == [str(SAMPLES / "gaussians" / "donut-8k.ply")]
    assert str(SAMPLES / "consistent" / "crane-16.npz") in list_items(str(SAMPLES / "consistent"), "collections")
    with pytest.raises(ValueError, match="unknown item kind"):
        list_items(str(SAMPLES), "videos")
    with pytest.raises(DatasetNotFoundError):
        list_items(str(tmp_path), "meshes")


def test_tables_round_trip_with_a_crash_row(tmp_path: Path) -> None:
    rows = [{"run_id": "r", "item_id": "woody", "frame": 0, "shape_id": "s0", "level": 0, "resolution": 33,
             "chamfer_l2": 1e-6, "hausdorff": 2e-3, "stored_bytes": 100, "compression_ratio": 2.5, "seconds": 0.1}]
    crashed = crash_result("r", "cow", "data/cow.obj", MemoryError("worker died"))
    assert crashed.item_id == "cow" and not crashed.skipped and crashed.tables == {}
    uris = write_tables(str(tmp_path), "r", {"sequence_geometry_images": rows}, crashed.failures)
    assert list(uris) == ["sequence_geometry_images", "failures"]
    images = read_run_table(uris["sequence_geometry_images"])
    assert images["hausdorff"].tolist() == [2e-3] and images["frame"].tolist() == [0]
    failures = read_run_table(uris["failures"])
    assert failures[["item_id", "stage", "error_type", "message"]].values.tolist() == [
        ["cow", "task", "MemoryError", "worker died"]]


def test_read_arrays_and_files_report_what_is_missing(tmp_path: Path) -> None:
    store = ItemStore(str(tmp_path), "r", "item")
    store.begin("f" * 64, {})
    store.write_array("ot/uv", np.arange(6.0).reshape(3, 2))
    uri = store.write_file("preview.png", b"\x89PNG fake")
    found = read_arrays(str(tmp_path), "r", "item", ["ot/uv", "harmonic/uv"])
    assert found["harmonic/uv"] is None and np.array_equal(found["ot/uv"], np.arange(6.0).reshape(3, 2))
    files, unreadable = read_files({"item": uri, "gone": str(tmp_path / "none.png")})
    assert files == {"item": b"\x89PNG fake"} and unreadable == [str(tmp_path / "none.png")]


def test_item_result_stored_rows_round_trip_and_run_id() -> None:
    result = ItemResult("x", {"a": [{"v": 1}], "b": [{"v": 2}, {"v": 3}]})
    stored = result.stored_rows()
    assert stored == [{"table": "a", "v": 1}, {"table": "b", "v": 2}, {"table": "b", "v": 3}]
    assert ItemResult.split_stored(stored) == result.tables and stored[0]["table"] == "a"  # input left intact
    assert run_id("encode", "run/item") == "encode-" + __import__("hashlib").sha256(b"run/item").hexdigest()[:10]
