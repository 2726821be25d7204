"""Tests of storage.collections on the bundled real collections (crane-16.npz, horse-gallop/) and broken copies."""

from __future__ import annotations

import hashlib
import io
import pickle
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest

from storage.collections import MAX_COORDINATE, ShapeCollection, ShapeFailure, list_collections, read_collection
from storage.errors import (
    CoordinateMagnitudeError,
    DatasetNotFoundError,
    EmptyCollectionError,
    EmptyMeshError,
    InconsistentConnectivityError,
    InputError,
    NonFiniteVerticesError,
    NotACollectionError,
    NotAMeshError,
    SymlinkOutsideDatasetError,
    UnequalPointCountError,
    UnreadableCollectionError,
    UnreadableMeshError,
)

HORSE_IDS = ("0001", "0009", "0017")
HORSE_POINTS, HORSE_FACES = 8431, 16843
CRANE_FRAMES = tuple(range(0, 166, 11))  # the 16 frames bundled in crane-16.npz


def _parse_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference parse of a plain ``v``/``f`` OBJ: ``[V, 3]`` float64, ``[F, 3]`` int64 (0-based)."""
    lines = path.read_text().splitlines()
    vertices = np.array([[float(x) for x in line.split()[1:4]] for line in lines if line.startswith("v ")])
    faces = np.array([[int(x.split("/")[0]) for x in line.split()[1:4]] for line in lines if line.startswith("f ")])
    return vertices, faces - 1


@pytest.fixture
def horse_dir(consistent_dir: Path) -> Path:
    return consistent_dir / "horse-gallop"


@pytest.fixture
def crane_npz(consistent_dir: Path) -> Path:
    return consistent_dir / "crane-16.npz"


@pytest.fixture
def horse_copy(horse_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "horse-gallop"
    shutil.copytree(horse_dir, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


@pytest.fixture
def memory_dir() -> Iterator[str]:
    url = f"memory://collections-{uuid.uuid4().hex}"
    yield url
    fsspec.filesystem("memory").rm(url, recursive=True)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------------------
# array files


def test_read_bundled_crane_npz(crane_npz: Path) -> None:
    collection, failures = read_collection(str(crane_npz))
    assert failures == []
    assert collection.collection_id == "crane-16"
    assert collection.uri == str(crane_npz)
    assert collection.shape_ids == tuple(f"mesh_{i:04d}" for i in CRANE_FRAMES)
    assert collection.vertices.shape == (16, 10002, 3) and collection.vertices.dtype == np.float32
    assert collection.faces is not None
    assert collection.faces.shape == (20000, 3) and collection.faces.dtype == np.int64
    assert (collection.n_shapes, collection.n_points) == (16, 10002)
    with np.load(crane_npz, allow_pickle=False) as raw:
        np.testing.assert_array_equal(collection.vertices, raw["vertices"])
        np.testing.assert_array_equal(collection.faces, raw["faces"])
    assert collection.sha256 == hashlib.sha256(crane_npz.read_bytes()).hexdigest()


def test_symbolic_link_out_of_the_dataset_is_refused(crane_npz: Path, tmp_path: Path) -> None:
    """A collection file that is a link to a file outside its folder is read only with ``follow_symlinks``."""
    folder = tmp_path / "collections"
    folder.mkdir()
    link = folder / "crane-16.npz"
    link.symlink_to(crane_npz)
    with pytest.raises(SymlinkOutsideDatasetError) as info:
        read_collection(str(link))
    assert info.value.item_id == "crane-16"
    assert info.value.reason == (
        f"{link} is a symbolic link to {crane_npz.resolve()}, outside its folder {folder.resolve()}; "
        "set follow_symlinks (CLI: --follow-symlinks) to read it")
    collection, failures = read_collection(str(link), follow_symlinks=True)
    assert failures == [] and collection.collection_id == "crane-16" and collection.n_shapes == 16
    assert collection.sha256 == hashlib.sha256(crane_npz.read_bytes()).hexdigest()


def test_npz_round_trip_names_points_and_npy(crane_npz: Path, tmp_path: Path) -> None:
    original, _ = read_collection(str(crane_npz))
    vertices = original.vertices[:3].astype(np.float64)

    named = tmp_path / "named.npz"
    np.savez_compressed(named, vertices=vertices, faces=original.faces, shape_ids=np.array(["a/x.obj", "b.ply", "c"]))
    collection, failures = read_collection(str(named))
    assert failures == [] and collection.shape_ids == ("x", "b", "c")
    assert collection.vertices.dtype == np.float32
    np.testing.assert_array_equal(collection.vertices, original.vertices[:3])
    np.testing.assert_array_equal(collection.faces, original.faces)

    points = tmp_path / "cloud.npz"
    np.savez(points, points=vertices)  # point cloud: no faces, no names
    collection, _ = read_collection(str(points))
    assert collection.faces is None and collection.shape_ids == ("0000", "0001", "0002")

    duplicate_names = tmp_path / "dup.npz"
    np.savez(duplicate_names, vertices=vertices, frame_files=np.array(["f.obj", "f.ply", "g.obj"]))
    assert read_collection(str(duplicate_names))[0].shape_ids == ("0000", "0001", "0002")

    stacked = tmp_path / "stacked.npy"
    np.save(stacked, vertices)
    collection, _ = read_collection(str(stacked))
    assert collection.collection_id == "stacked" and collection.vertices.shape == (3, 10002, 3)
    assert collection.faces is None


def test_npz_non_finite_shape_is_a_failure(crane_npz: Path, tmp_path: Path) -> None:
    original, _ = read_collection(str(crane_npz))
    vertices = original.vertices[:4].copy()
    vertices[2, 17, 1] = np.nan
    vertices[3, 5] = np.inf
    path = tmp_path / "nan.npz"
    np.savez(path, vertices=vertices, faces=original.faces)
    collection, failures = read_collection(str(path))
    assert collection.shape_ids == ("0000", "0001")
    np.testing.assert_array_equal(collection.vertices, original.vertices[:2])
    assert [f.shape_id for f in failures] == ["0002", "0003"]
    assert all(isinstance(f.error, NonFiniteVerticesError) for f in failures)
    assert "nan.npz[2]: 1 of 10002 vertices" in str(failures[0].error)

    vertices[:] = np.nan
    np.savez(path, vertices=vertices)
    with pytest.raises(EmptyCollectionError, match="all 4 shapes failed"):
        read_collection(str(path))


def test_coordinates_beyond_the_bound_are_shape_failures(crane_npz: Path, tmp_path: Path, horse_dir: Path) -> None:
    """One 1e30 value made training accept the collection (and EM-kD spin): that shape is left out, typed."""
    original, _ = read_collection(str(crane_npz))
    vertices = original.vertices[:4].copy()
    vertices[1, 42, 2] = 1e30
    vertices[3, :10] = -2 * MAX_COORDINATE
    vertices[0, 7, 0] = 0.99 * MAX_COORDINATE  # inside the bound: kept
    path = tmp_path / "huge.npz"
    np.savez(path, vertices=vertices, faces=original.faces)
    collection, failures = read_collection(str(path))
    assert collection.shape_ids == ("0000", "0002")
    assert [(f.shape_id, type(f.error)) for f in failures] == [("0001", CoordinateMagnitudeError),
                                                             ("0003", CoordinateMagnitudeError)]
    assert str(failures[0].error) == (
        "0001: huge.npz[1]: 1 of 10002 vertices have a coordinate beyond +-1e+06 (MAX_COORDINATE of a collection; "
        "largest |coordinate| 1e+30, vertex 42): a corrupt or sentinel value, or units to rescale"
    )
    assert "huge.npz[3]: 10 of 10002 vertices" in str(failures[1].error)
    assert [str(f.error) for f in pickle.loads(pickle.dumps(failures))] == [str(f.error) for f in failures]
    vertices[:] = 1e30
    np.savez(path, vertices=vertices)
    with pytest.raises(EmptyCollectionError, match=r"all 4 shapes failed \(first: 0000: huge.npz\[0\]: 10002 of"):
        read_collection(str(path))
    # a shape file of a folder
    folder = tmp_path / "horse"
    shutil.copytree(horse_dir, folder)
    lines = (horse_dir / "0001.obj").read_bytes().split(b"\n")
    first_vertex = next(i for i, text in enumerate(lines) if text.startswith(b"v "))
    lines[first_vertex] = b"v 0.1 1e30 0.2"
    (folder / "0002-huge.obj").write_bytes(b"\n".join(lines))
    collection, failures = read_collection(str(folder))
    assert collection.shape_ids == HORSE_IDS and [f.shape_id for f in failures] == ["0002-huge"]
    assert type(failures[0].error) is CoordinateMagnitudeError
    assert "0002-huge.obj: 1 of 8431 vertices have a coordinate beyond +-1e+06" in str(failures[0].error)


@pytest.mark.parametrize(
    ("arrays", "error", "match"),
    [
        ({"faces": np.zeros((2, 3), np.int32)}, NotACollectionError, "no 'vertices' or 'points' array"),
        ({"vertices": np.zeros((10, 3), np.float32)}, NotACollectionError, r"\[S, V, 3\]"),
        ({"vertices": np.zeros((2, 10, 3)), "faces": np.zeros((4, 3))}, NotACollectionError, "faces must be"),
        ({"vertices": np.zeros((2, 10, 3)), "faces": np.full((4, 3), 10)}, NotACollectionError, "outside"),
        ({"vertices": np.zeros((2, 10, 3)), "frame_files": np.array(["a"])}, NotACollectionError, "names"),
        ({"vertices": np.zeros((0, 10, 3))}, EmptyCollectionError, "0 shapes"),
    ],
)
def test_bad_npz_is_a_typed_collection_error(
    tmp_path: Path, arrays: dict[str, np.ndarray], error: type[InputError], match: str
) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(_npz_bytes(**arrays))
    with pytest.raises(error, match=match) as info:
        read_collection(str(path))
    assert info.value.item_id == "bad"


UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class _Payload:
    """Unpickling this object calls :func:`_record_unpickling` (what a malicious pickle would do)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return _record_unpickling, ("payload",)


@pytest.mark.parametrize("key", ["vertices", "frame_files"])
def test_object_array_npz_is_refused_without_unpickling(tmp_path: Path, key: str) -> None:
    payload = np.empty(2, dtype=object)
    payload[:] = [_Payload(), _Payload()]
    arrays = {"vertices": np.zeros((2, 4, 3), np.float32), key: payload}
    path = tmp_path / "evil.npz"
    path.write_bytes(_npz_bytes(**arrays))
    UNPICKLED.clear()
    with pytest.raises(NotACollectionError, match="object array") as info:
        read_collection(str(path))
    assert UNPICKLED == []
    assert info.value.item_id == "evil"
    with np.load(path, allow_pickle=True) as archive:  # the payload is real: unpickling it would have run code
        archive[key]
    assert UNPICKLED == ["payload", "payload"]


def test_corrupt_and_foreign_array_files(crane_npz: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(crane_npz.read_bytes()[: 600_000])
    with pytest.raises(UnreadableCollectionError) as info:
        read_collection(str(truncated))
    assert info.value.item_id == "truncated"
    text = tmp_path / "text.npz"
    text.write_text("not a zip\n")
    with pytest.raises(UnreadableCollectionError, match="no zip magic"):
        read_collection(str(text))
    mesh = tmp_path / "single.obj"
    mesh.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(NotACollectionError, match="neither"):
        read_collection(str(mesh))


# --------------------------------------------------------------------------------------------------------------
# folders of shape files


def test_read_bundled_horse_folder(horse_dir: Path) -> None:
    collection, failures = read_collection(str(horse_dir))
    assert failures == []
    assert collection.collection_id == "horse-gallop"
    assert collection.shape_ids == HORSE_IDS
    assert collection.vertices.shape == (3, HORSE_POINTS, 3) and collection.vertices.dtype == np.float32
    assert collection.faces is not None and collection.faces.shape == (HORSE_FACES, 3)
    assert collection.faces.dtype == np.int64
    for index, shape_id in enumerate(HORSE_IDS):  # file order of vertices and faces is kept exactly
        vertices, faces = _parse_obj(horse_dir / f"{shape_id}.obj")
        np.testing.assert_array_equal(collection.vertices[index], vertices.astype(np.float32))
        np.testing.assert_array_equal(collection.faces, faces)
    assert not np.allclose(collection.vertices[0], collection.vertices[1])  # distinct poses


def test_bad_files_in_a_folder_become_failures(horse_copy: Path, horse_dir: Path, samples_dir: Path) -> None:
    data = (horse_dir / "0001.obj").read_bytes()
    first_faces = data.index(b"\nf ")
    # cut at a line boundary inside the face list: every vertex, a third of the faces
    cut_faces = data.index(b"\n", first_faces + (len(data) - first_faces) // 3) + 1
    (horse_copy / "0002-truncated.obj").write_bytes(data[:cut_faces])
    # cut inside a vertex line, after its second coordinate
    line = data.index(b"\nv ", len(data) // 4) + 1
    cut_vertex = data.index(b" ", data.index(b" ", line + 2) + 1)
    (horse_copy / "0003-cut.obj").write_bytes(data[:cut_vertex])
    shutil.copy(samples_dir / "woody.obj", horse_copy / "0004-woody.obj")  # 694 points, not 8431
    lines = data.split(b"\n")
    vertex_lines = [i for i, text in enumerate(lines) if text.startswith(b"v ")]
    lines[vertex_lines[100]] = b"v nan 0.5 0.5"
    lines[vertex_lines[200]] = b"v 0.5 inf 0.5"
    (horse_copy / "0005-nan.obj").write_bytes(b"\n".join(lines))
    (horse_copy / "0006-empty.obj").write_bytes(b"")
    (horse_copy / "0007-text.ply").write_bytes(b"hello\n")
    (horse_copy / "notes.txt").write_text("not a shape file")

    collection, failures = read_collection(str(horse_copy))
    assert collection.shape_ids == HORSE_IDS and collection.vertices.shape == (3, HORSE_POINTS, 3)
    expected = {
        "0002-truncated": InconsistentConnectivityError,
        "0003-cut": UnreadableMeshError,
        "0004-woody": UnequalPointCountError,
        "0005-nan": NonFiniteVerticesError,
        "0006-empty": EmptyMeshError,
        "0007-text": UnreadableMeshError,
    }
    assert [f.shape_id for f in failures] == list(expected)  # natural file order
    for failure in failures:
        assert type(failure.error) is expected[failure.shape_id], failure.error
        assert failure.error.item_id == failure.shape_id
    by_id = {f.shape_id: str(f.error) for f in failures}
    assert "0004-woody.obj has 694 points, expected 8431" in by_id["0004-woody"]
    assert "2 of 8431 vertices have NaN or Inf" in by_id["0005-nan"]
    assert "0002-truncated.obj" in by_id["0002-truncated"]
    # failures pickle (Dask ships them between processes)
    assert [str(f.error) for f in pickle.loads(pickle.dumps(failures))] == [str(f.error) for f in failures]
    # the fingerprint is of the kept shapes only
    assert collection.sha256 == read_collection(str(horse_dir))[0].sha256


def test_point_count_majority_and_connectivity(horse_copy: Path, samples_dir: Path) -> None:
    for name in ("woody-a.obj", "woody-b.obj"):  # 2 of 5 files with another count: the horse count wins
        shutil.copy(samples_dir / "woody.obj", horse_copy / name)
    collection, failures = read_collection(str(horse_copy))
    assert collection.n_points == HORSE_POINTS and collection.n_shapes == 3
    assert {type(f.error) for f in failures} == {UnequalPointCountError}

    # same vertices, other faces: inconsistent connectivity
    data = (horse_copy / "0001.obj").read_text().splitlines()
    face_lines = [i for i, text in enumerate(data) if text.startswith("f ")]
    a, b, c = data[face_lines[0]].split()[1:]
    data[face_lines[0]] = f"f {a} {c} {b}"  # flipped orientation of one face
    (horse_copy / "0100.obj").write_text("\n".join(data))
    collection, failures = read_collection(str(horse_copy))
    flipped = [f for f in failures if f.shape_id == "0100"]
    assert len(flipped) == 1 and isinstance(flipped[0].error, InconsistentConnectivityError)
    assert "1 of 16843 faces differ" in str(flipped[0].error)


def test_point_cloud_and_npy_folders(crane_npz: Path, memory_dir: str) -> None:
    original, _ = read_collection(str(crane_npz))
    fs = fsspec.filesystem("memory")
    for i in (0, 1, 2, 10):  # natural order: s2 before s10
        buffer = io.BytesIO()
        np.save(buffer, original.vertices[i])
        fs.pipe(f"{memory_dir}/npy/s{i}.npy", buffer.getvalue())
    fs.pipe(f"{memory_dir}/npy/s11.npy", b"\x93NUMPY garbage")
    buffer = io.BytesIO()
    np.save(buffer, original.vertices[:2])  # [2, V, 3]: not one shape
    fs.pipe(f"{memory_dir}/npy/s12.npy", buffer.getvalue())
    collection, failures = read_collection(f"{memory_dir}/npy")
    assert collection.shape_ids == ("s0", "s1", "s2", "s10") and collection.faces is None
    np.testing.assert_array_equal(collection.vertices, original.vertices[[0, 1, 2, 10]])
    assert [(f.shape_id, type(f.error)) for f in failures] == [("s11", UnreadableMeshError), ("s12", NotAMeshError)]

    # point-cloud PLY (vertices only), written by hand
    for i in range(2):
        points = original.vertices[i]
        header = f"ply\nformat ascii 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\n"
        body = "\n".join(" ".join(repr(float(x)) for x in p) for p in points)
        fs.pipe(f"{memory_dir}/ply/{i}.ply", (header + "property float z\nend_header\n" + body + "\n").encode())
    collection, failures = read_collection(f"{memory_dir}/ply")
    assert failures == [] and collection.faces is None and collection.shape_ids == ("0", "1")
    np.testing.assert_array_equal(collection.vertices, original.vertices[:2])


def test_empty_and_missing_locations(tmp_path: Path, horse_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmptyCollectionError, match="holds no shape files") as info:
        read_collection(str(empty))
    assert info.value.item_id == "empty"
    (empty / "readme.txt").write_text("nothing here")
    with pytest.raises(EmptyCollectionError):
        read_collection(str(empty))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.obj").write_bytes(b"")
    (broken / "b.obj").write_bytes(b"v nan 0 0\n")
    with pytest.raises(EmptyCollectionError, match="all 2 shape files failed"):
        read_collection(str(broken))
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        read_collection(str(tmp_path / "missing"))
    with pytest.raises(DatasetNotFoundError):
        list_collections(str(tmp_path / "missing.npz"))
    with pytest.raises(DatasetNotFoundError, match="holds no shape collection"):
        list_collections(str(empty))


def test_list_collections(consistent_dir: Path, crane_npz: Path, horse_dir: Path) -> None:
    assert list_collections(str(consistent_dir)) == [str(crane_npz), str(horse_dir)]
    assert list_collections(str(horse_dir)) == [str(horse_dir)]
    assert list_collections(str(crane_npz)) == [str(crane_npz)]


def test_collection_records_are_frozen(crane_npz: Path) -> None:
    collection, _ = read_collection(str(crane_npz))
    assert isinstance(collection, ShapeCollection)
    with pytest.raises(AttributeError):
        collection.shape_ids = ()  # type: ignore[misc]
    failure = ShapeFailure("x", NonFiniteVerticesError("x", "bad"))
    assert str(failure.error) == "x: bad"
