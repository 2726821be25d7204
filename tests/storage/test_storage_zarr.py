"""Tests of storage.zarr_store: array and pyramid round trips, stored sizes, and the completion protocol."""

from __future__ import annotations

import errno
import json
import math
import pickle
import resource
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import zarr

from storage.errors import StoreWriteError
from storage.tables import failure_row
from storage.zarr_store import ItemStore, open_root, read_file

RUN = "run-1"


def _smooth_image(channels: int, size: int) -> np.ndarray:
    """[C, size, size] uint16 of smooth ramps, like a quantised geometry image."""
    y, x = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    planes = [x, y, 0.5 + 0.5 * np.sin(3 * x) * np.cos(2 * y)][:channels]
    return np.round(np.stack(planes) * 65535).astype(np.uint16)


def _chunk_file_bytes(root: Path, array_path: str) -> int:
    return sum(p.stat().st_size for p in (root / array_path / "c").rglob("*") if p.is_file())


def test_array_round_trip_is_exact(tmp_path: Path) -> None:
    store = ItemStore(str(tmp_path), RUN, "spot")
    store.begin("fp", {"source": "spot.obj"})
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {
        "harmonic/uv": rng.random((1000, 2)),
        "ot/weights": rng.random(513).astype(np.float32),
        "faces": rng.integers(0, 1000, (300, 3)),
    }
    for path, array in arrays.items():
        store.write_array(path, array, chunks=(128, *array.shape[1:]), attrs={"units": "none"})
    for path, array in arrays.items():
        back = store.read_array(path)
        assert back.dtype == array.dtype and back.shape == array.shape
        np.testing.assert_array_equal(back, array)
        assert store.read_attrs(path) == {"units": "none"}
    assert store.read_attrs()["source"] == "spot.obj"
    with pytest.raises(KeyError):
        store.read_array("harmonic")  # a group, not an array


def test_stored_bytes_are_chunk_bytes_and_compress_smooth_data(tmp_path: Path) -> None:
    store = ItemStore(str(tmp_path), RUN, "spot")
    store.begin("fp", {})
    image = _smooth_image(3, 257)
    stored = store.write_array("image", image, chunks=(3, 128, 128))
    assert stored == _chunk_file_bytes(tmp_path / RUN / "spot", "image")
    assert 0 < stored < image.nbytes / 2
    noise = np.random.default_rng(0).integers(0, 2**16, (3, 65, 65), dtype=np.uint16)
    assert store.write_array("noise", noise) >= noise.nbytes * 0.99  # incompressible


def test_pyramid_round_trip_and_multiscales(tmp_path: Path) -> None:
    store = ItemStore(str(tmp_path), RUN, "spot")
    store.begin("fp", {})
    levels = [_smooth_image(3, n) for n in (257, 129, 65, 33)]
    stored = store.write_pyramid("ot/geometry_image", levels, {"bbox_min": [0.0, 0.0, 0.0]})
    assert len(stored) == 4 and all(b > 0 for b in stored)
    assert stored == sorted(stored, reverse=True)
    back, attrs = store.read_pyramid("ot/geometry_image")
    for level, level_back in zip(levels, back, strict=True):
        assert level_back.dtype == np.uint16
        np.testing.assert_array_equal(level_back, level)
    assert attrs["bbox_min"] == [0.0, 0.0, 0.0]
    (ms,) = attrs["multiscales"]
    assert ms["version"] == "0.5" and ms["type"] == "subsampling" and ms["name"] == "ot/geometry_image"
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert [a["type"] for a in ms["axes"]] == ["channel", "space", "space"]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2", "3"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales == [[1.0, 1.0, 1.0], [1.0, 2.0, 2.0], [1.0, 4.0, 4.0], [1.0, 8.0, 8.0]]
    finest = zarr.open_array(str(tmp_path / RUN / "spot" / "ot" / "geometry_image" / "0"), mode="r")
    coarsest = zarr.open_array(str(tmp_path / RUN / "spot" / "ot" / "geometry_image" / "3"), mode="r")
    assert finest.chunks == (3, 128, 128) and coarsest.chunks == (3, 33, 33)
    assert finest.shards is None


def test_pyramid_rewrite_drops_stale_levels(tmp_path: Path) -> None:
    store = ItemStore(str(tmp_path), RUN, "spot")
    store.begin("fp", {})
    store.write_pyramid("gi", [_smooth_image(3, n) for n in (33, 17, 9)], {})
    store.write_pyramid("gi", [_smooth_image(3, n) for n in (33, 17)], {})
    levels, attrs = store.read_pyramid("gi")
    assert len(levels) == 2 and len(attrs["multiscales"][0]["datasets"]) == 2
    with pytest.raises(KeyError):
        store.read_array("gi/2")


@pytest.mark.parametrize(
    "levels",
    [[], [np.zeros((3, 9))], [np.zeros((3, 9, 9)), np.zeros((2, 5, 5))], [np.zeros((3, 9, 9)), np.zeros((3, 1, 1))]],
)
def test_pyramid_rejects_bad_levels(tmp_path: Path, levels: list[np.ndarray]) -> None:
    store = ItemStore(str(tmp_path), RUN, "spot")
    store.begin("fp", {})
    with pytest.raises(ValueError):
        store.write_pyramid("gi", levels, {})


def test_completion_marker_and_rows_round_trip(tmp_path: Path) -> None:
    store = ItemStore(str(tmp_path), RUN, "spot")
    assert not store.is_complete("fp")
    store.begin("fp", {"config": {"resolution": 257}})
    assert not store.is_complete("fp")
    with pytest.raises(RuntimeError, match="not complete"):
        store.completed_rows()
    store.write_array("uv", np.zeros((4, 2)))
    rows: list[dict[str, Any]] = [
        {"level": 0, "chamfer_l2": 1e-7, "newton_iterations": None, "mass_error": math.nan},
        {"level": np.int16(1), "chamfer_l2": np.float64(2e-7), "mass_error": math.inf, "hausdorff": -math.inf},
    ]
    store.finish(rows)
    assert store.is_complete("fp")
    assert not store.is_complete("other-fingerprint")
    back = store.completed_rows()
    assert back[0]["newton_iterations"] is None and math.isnan(back[0]["mass_error"])
    assert back[1] == {"level": 1, "chamfer_l2": 2e-7, "mass_error": math.inf, "hausdorff": -math.inf}
    assert back[0]["level"] == 0 and back[0]["chamfer_l2"] == 1e-7
    metadata = (tmp_path / RUN / "spot" / "zarr.json").read_text()
    json.loads(metadata, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert ItemStore(str(tmp_path), RUN, "spot").read_attrs()["config"] == {"resolution": 257}


def test_second_begin_clears_old_arrays(tmp_path: Path) -> None:
    store = ItemStore(str(tmp_path), RUN, "spot")
    store.begin("fp1", {})
    store.write_array("old/uv", np.ones((4, 2)))
    store.finish([{"a": 1}])
    store.begin("fp2", {"attempt": 2})
    assert not store.is_complete("fp1") and not store.is_complete("fp2")
    with pytest.raises(KeyError):
        store.read_array("old/uv")
    assert store.read_attrs() == {"attempt": 2, "fingerprint": "fp2", "complete": False}


def test_crash_before_finish_is_not_complete_and_recovers(tmp_path: Path) -> None:
    crashed = ItemStore(str(tmp_path), RUN, "spot")
    crashed.begin("fp", {})
    crashed.write_array("uv", np.ones((10, 2)))  # the worker dies here: finish() never runs
    retry = ItemStore(str(tmp_path), RUN, "spot")
    assert not retry.is_complete("fp")
    retry.begin("fp", {})
    retry.write_array("uv", np.full((10, 2), 2.0))
    retry.finish([])
    assert retry.is_complete("fp")
    np.testing.assert_array_equal(retry.read_array("uv"), 2.0)


def test_metadata_cut_short_reads_incomplete_and_recovers(tmp_path: Path) -> None:
    store = ItemStore(str(tmp_path), RUN, "spot")
    store.begin("fp", {})
    store.finish([])
    (tmp_path / RUN / "spot" / "zarr.json").write_text('{"attributes": {"compl')
    assert not store.is_complete("fp")
    store.begin("fp", {})
    store.finish([])
    assert store.is_complete("fp")


def test_begin_validates_attrs_before_deleting(tmp_path: Path) -> None:
    store = ItemStore(str(tmp_path), RUN, "spot")
    store.begin("fp", {})
    store.write_array("uv", np.ones((3, 2)))
    store.finish([])
    with pytest.raises(TypeError):
        store.begin("fp", {"bad": object()})
    with pytest.raises(ValueError, match="reserved"):
        store.begin("fp", {"complete": True})
    assert store.is_complete("fp")
    np.testing.assert_array_equal(store.read_array("uv"), 1.0)


def test_items_never_interfere(tmp_path: Path) -> None:
    a = ItemStore(str(tmp_path), RUN, "a")
    a.begin("fp", {})
    a.write_array("uv", np.ones((5, 2)))
    a.finish([{"item": "a"}])
    b = ItemStore(str(tmp_path), RUN, "b")
    b.begin("fp", {})
    b.write_array("uv", np.zeros((5, 2)))
    b.begin("fp", {})  # b restarts: a is untouched
    assert a.is_complete("fp") and a.completed_rows() == [{"item": "a"}]
    np.testing.assert_array_equal(a.read_array("uv"), 1.0)
    assert not b.is_complete("fp")


def test_concurrent_items_all_complete(tmp_path: Path) -> None:
    def run(i: int) -> None:
        store = ItemStore(str(tmp_path), RUN, f"item{i}")
        store.begin("fp", {"i": i})
        store.write_pyramid("gi", [np.full((3, 33, 33), i, np.uint16), np.full((3, 17, 17), i, np.uint16)], {})
        store.finish([{"i": i}])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, range(16)))
    for i in range(16):
        store = ItemStore(str(tmp_path), RUN, f"item{i}")
        assert store.is_complete("fp") and store.completed_rows() == [{"i": i}]
        assert (store.read_pyramid("gi")[0][1] == i).all()


def test_fsspec_url_root() -> None:
    root = f"memory://zarr-{uuid.uuid4().hex}"
    try:
        assert type(open_root(root)).__name__ == "FsspecStore"
        store = ItemStore(root + "/", RUN, "spot")
        assert store.uri == f"{root}/{RUN}/spot"
        store.begin("fp", {})
        stored = store.write_array("image", _smooth_image(3, 65))
        assert 0 < stored < _smooth_image(3, 65).nbytes
        store.finish([{"x": 1.5}])
        assert ItemStore(root, RUN, "spot").is_complete("fp")
        np.testing.assert_array_equal(store.read_array("image"), _smooth_image(3, 65))
    finally:
        fsspec.filesystem("memory").rm(root, recursive=True)


def test_local_root_uses_local_store_and_uri(tmp_path: Path) -> None:
    assert isinstance(open_root(str(tmp_path)), zarr.storage.LocalStore)
    assert ItemStore(str(tmp_path), RUN, "spot").uri == f"{tmp_path}/{RUN}/spot"


@pytest.mark.parametrize("item_id", ["", "a/b", "..", "__meta"])
def test_invalid_ids_are_rejected(tmp_path: Path, item_id: str) -> None:
    with pytest.raises(ValueError):
        ItemStore(str(tmp_path), RUN, item_id)


def test_write_before_begin_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ItemStore(str(tmp_path), RUN, "spot").write_array("uv", np.zeros(3))


def test_open_array_writes_one_frame_at_a_time_and_files_sit_beside_the_arrays(tmp_path: Path) -> None:
    """Tasks that stream per-frame arrays or write a picture go through the item store, never around it."""
    store = ItemStore(str(tmp_path), "run", "item")
    store.begin("f" * 64, {})
    store.write_array("frames/uv", np.full((3, 4, 2), np.nan), chunks=(1, 4, 2))
    frames = store.open_array("frames/uv", mode="r+")
    frames[1] = np.ones((4, 2))
    stored = store.read_array("frames/uv")
    assert np.isnan(stored[[0, 2]]).all() and (stored[1] == 1).all()
    with pytest.raises(ValueError):  # read-only by default
        store.open_array("frames/uv")[0] = np.zeros((4, 2))
    with pytest.raises(FileNotFoundError):
        store.open_array("frames/missing")
    uri = store.write_file("preview.png", b"\x89PNG")
    assert uri == f"{store.uri}/preview.png" and read_file(uri) == b"\x89PNG"
    with pytest.raises(FileNotFoundError):
        read_file(f"{store.uri}/none.png")


@contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Files written by this process may not grow beyond ``limit`` bytes: writes fail with ``EFBIG`` ("File too
    large"), as on a file system with a file-size limit or under ``ulimit -f``."""
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE") or not hasattr(signal, "SIGXFSZ"), reason="POSIX only")
def test_write_failure_names_the_file(tmp_path: Path) -> None:
    """A write that fails (here: File too large) raises StoreWriteError naming what was written, errno kept."""
    store = ItemStore(str(tmp_path), RUN, "spot")
    store.begin("f" * 64, {})
    noise = np.random.default_rng(0).random((20_000, 2))  # ~300 KB, incompressible
    with _file_size_limit(4096), pytest.raises(StoreWriteError) as info:
        store.write_array("ot/uv", noise)
    error = info.value
    assert isinstance(error, OSError) and error.errno == errno.EFBIG
    assert str(error) == f"writing {store.uri}/ot/uv: [Errno 27] File too large"
    assert failure_row(RUN, "spot", "/data/spot.obj", "task", error)["message"] == str(error)
    copy = pickle.loads(pickle.dumps(error))  # Dask ships it between processes
    assert (type(copy), copy.errno, str(copy)) == (StoreWriteError, errno.EFBIG, str(error))
    preview = rf"^writing {store.uri}/preview\.png: \[Errno 27\]"
    with _file_size_limit(64), pytest.raises(StoreWriteError, match=preview):
        store.write_file("preview.png", bytes(1000))
    with _file_size_limit(64), pytest.raises(StoreWriteError, match=rf"^writing {store.uri}: \[Errno 27\]"):
        store.finish([{"note": "x" * 1000}])
    store.write_array("ot/uv", noise)  # without the limit the same write succeeds
    assert not store.is_complete("f" * 64)


def test_write_errors_other_than_os_errors_are_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError):  # no group yet: as documented, not a write failure
        ItemStore(str(tmp_path), RUN, "spot").write_array("uv", np.zeros(3))
    store = ItemStore(str(tmp_path), RUN, "spot")
    store.begin("f" * 64, {})

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/elsewhere/zarr.json")

    monkeypatch.setattr(zarr.Group, "create_array", refuse)
    with pytest.raises(StoreWriteError) as info:
        store.write_array("ot/uv", np.zeros(3))
    assert info.value.errno == errno.EACCES and info.value.filename == "/elsewhere/zarr.json"
    assert str(info.value) == f"writing {store.uri}/ot/uv: [Errno 13] Permission denied: '/elsewhere/zarr.json'"
