"""Tests of storage.meshes: listing dataset locations and reading meshes into merged triangle arrays."""

from __future__ import annotations

import hashlib
import pickle
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
import trimesh

from storage.errors import (
    DatasetNotFoundError,
    EmptyMeshError,
    InputError,
    NonFiniteVerticesError,
    NotAMeshError,
    UnreadableMeshError,
)
from storage.meshes import MESH_EXTENSIONS, MeshItem, list_mesh_items, read_mesh

TRIANGLE = b"v 0 0 0\nv 1 0 0\nv 0 1 0\n"


@pytest.fixture
def sample_meshes_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "data" / "samples" / "meshes"


@pytest.fixture
def memory_dir() -> Iterator[str]:
    url = f"memory://meshes-{uuid.uuid4().hex}"
    yield url
    fs = fsspec.filesystem("memory")
    fs.rm(url, recursive=True)


def _write(folder: Path, name: str, data: bytes) -> MeshItem:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return MeshItem(item_id=path.stem, uri=str(path))


@pytest.mark.parametrize(("name", "vertices", "faces"), [("spot", 2930, 5856), ("woody", 694, 1267)])
def test_read_sample_mesh_merges_seams(sample_meshes_dir: Path, name: str, vertices: int, faces: int) -> None:
    path = sample_meshes_dir / f"{name}.obj"
    mesh = read_mesh(MeshItem(item_id=name, uri=str(path)))
    assert mesh.vertices.shape == (vertices, 3) and mesh.vertices.dtype == np.float64
    assert mesh.faces.shape == (faces, 3) and mesh.faces.dtype == np.int64
    assert mesh.faces.min() == 0 and mesh.faces.max() == vertices - 1
    assert np.isfinite(mesh.vertices).all()
    data = path.read_bytes()
    assert mesh.sha256 == hashlib.sha256(data).hexdigest()
    assert mesh.file_bytes == len(data)


def test_spot_positions_unique_after_merge(sample_meshes_dir: Path) -> None:
    # spot.obj repeats positions at UV seams; merged output must have each position once
    mesh = read_mesh(MeshItem("spot", str(sample_meshes_dir / "spot.obj")))
    assert len(np.unique(mesh.vertices.round(8), axis=0)) == len(mesh.vertices)


def test_glb_scene_instances_are_baked_and_concatenated(tmp_path: Path) -> None:
    scene = trimesh.Scene()
    scene.add_geometry(
        trimesh.creation.box(), node_name="a", transform=trimesh.transformations.translation_matrix([5, 0, 0])
    )
    scene.add_geometry(
        trimesh.creation.box(), node_name="b", transform=trimesh.transformations.translation_matrix([-5, 0, 0])
    )
    item = _write(tmp_path, "two_boxes.glb", scene.export(file_type="glb"))
    mesh = read_mesh(item)
    assert mesh.vertices.shape == (16, 3)
    assert mesh.faces.shape == (24, 3)
    np.testing.assert_allclose(mesh.vertices.min(axis=0), [-5.5, -0.5, -0.5])
    np.testing.assert_allclose(mesh.vertices.max(axis=0), [5.5, 0.5, 0.5])


def _dataset(tmp_path: Path, sample_meshes_dir: Path) -> Path:
    folder = tmp_path / "dataset"
    folder.mkdir()
    for name in ("spot.obj", "woody.obj"):
        shutil.copy(sample_meshes_dir / name, folder / name)
    (folder / "notes.txt").write_text("not a mesh")
    (folder / "nested").mkdir()
    shutil.copy(sample_meshes_dir / "woody.obj", folder / "nested" / "deep.obj")
    return folder


def test_list_folder_is_non_recursive_and_filters_extensions(tmp_path: Path, sample_meshes_dir: Path) -> None:
    folder = _dataset(tmp_path, sample_meshes_dir)
    items = list_mesh_items(str(folder))
    assert items == [MeshItem("spot", str(folder / "spot.obj")), MeshItem("woody", str(folder / "woody.obj"))]
    assert all(Path(item.uri).is_absolute() for item in items)


def test_list_glob_and_single_file(tmp_path: Path, sample_meshes_dir: Path) -> None:
    folder = _dataset(tmp_path, sample_meshes_dir)
    assert [i.item_id for i in list_mesh_items(str(folder / "w*.obj"))] == ["woody"]
    assert [i.item_id for i in list_mesh_items(str(folder / "*" / "*.obj"))] == ["deep"]
    assert list_mesh_items(str(folder / "spot.obj")) == [MeshItem("spot", str(folder / "spot.obj"))]


def test_list_is_stable_and_sorted(tmp_path: Path, sample_meshes_dir: Path) -> None:
    folder = _dataset(tmp_path, sample_meshes_dir)
    _write(folder, "Alpha Mesh!.obj", (sample_meshes_dir / "woody.obj").read_bytes())
    first = list_mesh_items(str(folder))
    assert first == list_mesh_items(str(folder) + "/")
    assert [i.item_id for i in first] == ["Alpha_Mesh_", "spot", "woody"]


def test_duplicate_stems_get_file_names(tmp_path: Path, sample_meshes_dir: Path) -> None:
    folder = _dataset(tmp_path, sample_meshes_dir)
    _write(folder, "spot.stl", trimesh.creation.box().export(file_type="stl"))
    ids = [i.item_id for i in list_mesh_items(str(folder))]
    assert ids == ["spot.obj", "spot.stl", "woody"]


def test_duplicate_names_across_folders_get_distinct_stable_ids(tmp_path: Path, sample_meshes_dir: Path) -> None:
    for sub in ("a", "b"):
        _write(tmp_path / sub, "spot.obj", (sample_meshes_dir / "spot.obj").read_bytes())
    items = list_mesh_items(str(tmp_path / "*" / "spot.obj"))
    ids = [i.item_id for i in items]
    assert len(set(ids)) == 2 and all(i.startswith("spot.obj-") for i in ids)
    assert items == list_mesh_items(str(tmp_path / "*" / "spot.obj"))


def test_fsspec_url_listing_and_reading(memory_dir: str, sample_meshes_dir: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{memory_dir}/woody.obj", (sample_meshes_dir / "woody.obj").read_bytes())
    fs.pipe(f"{memory_dir}/readme.md", b"# not a mesh")
    items = list_mesh_items(memory_dir)
    assert [i.item_id for i in items] == ["woody"]
    assert items[0].uri.startswith("memory://")
    assert read_mesh(items[0]).vertices.shape == (694, 3)
    assert [i.item_id for i in list_mesh_items(f"{memory_dir}/*.obj")] == ["woody"]


def test_missing_location_and_no_meshes(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        list_mesh_items(missing)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetNotFoundError, match="no mesh files"):
        list_mesh_items(str(tmp_path))
    with pytest.raises(DatasetNotFoundError):
        list_mesh_items(str(tmp_path / "*.obj"))


def test_mesh_extensions_are_loadable_by_trimesh() -> None:
    assert MESH_EXTENSIONS.issubset(trimesh.exchange.load.mesh_formats())


def _box_ply() -> bytes:
    data: bytes = trimesh.creation.box().export(file_type="ply")
    return data


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        ("garbage.obj", b"hello world\nthis is not a mesh\n", NotAMeshError),
        ("png.obj", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, NotAMeshError),
        ("random.obj", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), NotAMeshError),
        ("truncated.ply", _box_ply()[: len(_box_ply()) // 2], UnreadableMeshError),
        ("random.ply", np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(), UnreadableMeshError),
        ("bad_index.obj", TRIANGLE + b"f 1 2 7\n", UnreadableMeshError),
        ("empty.obj", b"", EmptyMeshError),
        ("blank.stl", b"", EmptyMeshError),
        ("points.obj", TRIANGLE, NotAMeshError),  # vertices without faces are a point cloud
        # a face line with 2 vertices: refused (trimesh drops every face)
        ("no_faces.obj", TRIANGLE + b"f 1 2\n", UnreadableMeshError),
        ("nan.obj", b"v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n", NonFiniteVerticesError),
        ("inf.obj", b"v 0 0 0\nv inf 0 0\nv 0 1 0\nv 1 1 1\nf 1 2 3\nf 1 3 4\n", NonFiniteVerticesError),
    ],
)
def test_bad_inputs_raise_typed_errors(tmp_path: Path, name: str, data: bytes, error: type[InputError]) -> None:
    item = _write(tmp_path, name, data)
    with pytest.raises(error) as info:
        read_mesh(item)
    assert info.value.item_id == item.item_id
    assert str(info.value).startswith(f"{item.item_id}: ")
    assert info.value.reason


def test_nan_reason_counts_vertices(tmp_path: Path) -> None:
    item = _write(tmp_path, "nan.obj", b"v 0 0 0\nv nan 0 0\nv 0 nan 0\nv 1 1 1\nf 1 2 3\nf 1 3 4\n")
    with pytest.raises(NonFiniteVerticesError, match="2 of 4 vertices"):
        read_mesh(item)


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    item = MeshItem("ghost", str(tmp_path / "ghost.obj"))
    with pytest.raises(UnreadableMeshError, match=r"ghost: cannot read .*FileNotFoundError"):
        read_mesh(item)


def test_truncated_obj_in_vertex_block_is_not_a_mesh(tmp_path: Path, sample_meshes_dir: Path) -> None:
    data = (sample_meshes_dir / "woody.obj").read_bytes()
    item = _write(tmp_path, "woody_cut.obj", data[: data.index(b"\nf ") // 2])
    with pytest.raises(NotAMeshError, match="PointCloud"):
        read_mesh(item)


def test_input_errors_survive_pickling() -> None:
    # Dask ships a task's exception between processes
    error = pickle.loads(pickle.dumps(NonFiniteVerticesError("spot", "1 of 3 vertices have NaN or Inf coordinates")))
    assert type(error) is NonFiniteVerticesError
    assert (error.item_id, error.reason) == ("spot", "1 of 3 vertices have NaN or Inf coordinates")
    assert str(error) == "spot: 1 of 3 vertices have NaN or Inf coordinates"
