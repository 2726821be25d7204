"""The dataset readers on a corpus of broken inputs (tests/bad_inputs.py) and under property-based fuzzing.

Every broken input must raise (or, for a shape of a collection, be returned as) a typed :class:`InputError`
carrying the item's id, with a message that gives the reason; nothing may unpickle; a 1 GiB sparse file must be
refused from its first bytes; link loops and FIFOs must neither hang listing nor reading. The fuzz tests feed the
readers random bytes and mutated copies of the bundled real samples: a reader either returns well-formed arrays
or raises an InputError, never anything else.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import (
    GIB,
    HORSE_FRAMES,
    MARKER_ENV,
    PickleBomb,
    build,
    collection_cases,
    crane,
    donut_vertex,
    mesh_cases,
    npy_bytes,
    npz_bytes,
    scene_bytes,
    scene_cases,
    woody_ply,
    woody_text,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.collections import list_collections, read_collection
from storage.errors import (
    DatasetNotFoundError,
    InputError,
    InputTooLargeError,
    NotACollectionError,
)
from storage.gaussians import list_scenes, read_scene
from storage.inputs import DEFAULT_MAX_INPUT_BYTES, MAX_INPUT_BYTES_ENV, max_input_bytes
from storage.meshes import MeshItem, list_mesh_items, read_mesh

MESH_CASES = mesh_cases()
SCENE_CASES = scene_cases()
COLLECTION_CASES = collection_cases()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    build(MESH_CASES, root / "meshes")
    build(SCENE_CASES, root / "scenes")
    build(COLLECTION_CASES, root / "collections")
    return root


@pytest.fixture(autouse=True)
def pickle_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Unpickling a :class:`PickleBomb` would create this file; it must never exist after a test."""
    marker = tmp_path / "UNPICKLED"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    yield marker
    assert not marker.exists(), "an input file was unpickled"


def _check(case, error: InputError) -> None:
    assert type(error) is case.error, f"{case.label}: {type(error).__name__}: {error}"
    assert error.item_id == case.item_id
    message = str(error)
    assert message.startswith(f"{case.item_id}: ")
    assert re.search(case.reason, message), f"{case.label}: {message!r} does not match {case.reason!r}"
    message.encode("utf-8")  # printable: goes into Parquet and the Prefect API as it is


# --- the corpus ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", MESH_CASES, ids=lambda c: c.label)
def test_mesh_corpus(case, corpus: Path) -> None:
    items = {item.uri: item for item in list_mesh_items(str(corpus / "meshes"))}
    item = items[str(case.path(corpus / "meshes"))]  # listed, link loops and FIFOs included
    assert item.item_id == case.item_id
    with pytest.raises(InputError) as info:
        read_mesh(item)
    _check(case, info.value)


@pytest.mark.parametrize("case", SCENE_CASES, ids=lambda c: c.label)
def test_scene_corpus(case, corpus: Path) -> None:
    uri = str(case.path(corpus / "scenes"))
    assert uri in list_scenes(str(corpus / "scenes"))
    with pytest.raises(InputError) as info:
        read_scene(uri)
    _check(case, info.value)


@pytest.mark.parametrize("case", [c for c in COLLECTION_CASES if not c.shape_failure], ids=lambda c: c.label)
def test_collection_corpus(case, corpus: Path) -> None:
    with pytest.raises(InputError) as info:
        read_collection(str(case.path(corpus / "collections")))
    _check(case, info.value)


def test_collection_shape_failures(corpus: Path) -> None:
    """Bad shapes next to three good horse frames: each one failure with its typed error; the frames are kept."""
    collection, failures = read_collection(str(corpus / "collections" / "horse"))
    assert collection.shape_ids == tuple(Path(f).stem for f in HORSE_FRAMES)
    assert collection.vertices.shape == (3, 8431, 3) and np.isfinite(collection.vertices).all()
    cases = {c.item_id: c for c in COLLECTION_CASES if c.shape_failure}
    assert sorted(f.shape_id for f in failures) == sorted(cases)
    for failure in failures:
        _check(cases[failure.shape_id], failure.error)
    # the folder of collections lists the .npz files and the folders with shape files, not the empty folder
    listed = {Path(uri).name for uri in list_collections(str(corpus / "collections"))}
    assert "horse" in listed and "all-bad" in listed and "empty-folder" not in listed
    assert {c.label for c in COLLECTION_CASES if c.label.endswith(".npz")} <= listed


def test_empty_folders_are_not_datasets(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for lister in (list_mesh_items, list_scenes, list_collections):
        with pytest.raises(DatasetNotFoundError, match="empty"):
            lister(str(tmp_path / "empty"))


def test_link_loops_do_not_hang_listing(tmp_path: Path) -> None:
    """A folder whose sub-folder links back to it, and link loops at file level: listing returns at once."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "woody.obj").write_text(woody_text())
    (folder / "up").symlink_to("..")
    (folder / "me").symlink_to(".")
    (folder / "loop.obj").symlink_to("loop.obj")
    assert [i.item_id for i in list_mesh_items(str(folder))] == ["loop", "woody"]
    assert [i.item_id for i in list_mesh_items(str(folder / "*.obj"))] == ["loop", "woody"]
    assert list_collections(str(folder)) == [str(folder)]


# --- pickles ------------------------------------------------------------------------------------------------------


def test_pickle_bomb_is_live(pickle_marker: Path) -> None:
    """The payload is real: unpickling it does create the marker (so the corpus tests can fail)."""
    pickle.loads(pickle.dumps(PickleBomb()))
    assert pickle_marker.exists()
    pickle_marker.unlink()


def test_pickled_npz_is_refused_without_running_it(tmp_path: Path, pickle_marker: Path) -> None:
    evil = np.empty(2, dtype=object)
    evil[:] = [PickleBomb(), PickleBomb()]
    path = tmp_path / "evil.npz"
    arrays = crane(2, 30)
    for key in ("vertices", "faces", "frame_files"):
        payload = dict(arrays, **{key: evil})
        path.write_bytes(npz_bytes(**payload))
        with pytest.raises(NotACollectionError, match="object array"):
            read_collection(str(path))
        assert not pickle_marker.exists()
    with np.load(path, allow_pickle=True) as archive:  # what a careless reader would do
        archive["frame_files"]
    assert pickle_marker.exists()
    pickle_marker.unlink()


# --- size and format limits ---------------------------------------------------------------------------------------


def test_sparse_gigabyte_is_refused_from_its_first_bytes(tmp_path: Path) -> None:
    """1 GiB sparse files (as ``truncate -s 1G`` makes them) under every reader: refused reading 64 KiB."""
    paths = {}
    for name in ("big.obj", "big.ply", "big.npz", "big.npy"):
        paths[name] = tmp_path / name
        paths[name].touch()
        os.truncate(paths[name], GIB)
    header = woody_ply("binary").split(b"end_header\n")[0] + b"end_header\n"
    paths["padded.ply"] = tmp_path / "padded.ply"
    paths["padded.ply"].write_bytes(header)
    os.truncate(paths["padded.ply"], GIB)
    tracemalloc.start()
    try:
        for name in ("big.obj", "big.ply", "padded.ply"):
            with pytest.raises(InputError, match=name):
                read_mesh(MeshItem(name, str(paths[name])))
        for name in ("big.ply", "padded.ply"):
            with pytest.raises(InputError, match=name):
                read_scene(str(paths[name]))
        for name in ("big.npz", "big.npy"):
            with pytest.raises(InputError, match=name):
                read_collection(str(paths[name]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"peak {peak} bytes allocated while refusing 1 GiB files"


def test_input_size_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert max_input_bytes() == DEFAULT_MAX_INPUT_BYTES == 2 * GIB
    woody = tmp_path / "woody.obj"
    woody.write_text(woody_text())
    scene = tmp_path / "scene.ply"
    scene.write_bytes(scene_bytes(donut_vertex()[:512]))
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, "16K")
    assert max_input_bytes() == 16 * 1024
    with pytest.raises(InputTooLargeError, match=r"woody: .*woody.obj has 39.1 KiB .* input limit of 16.0 KiB"):
        read_mesh(MeshItem("woody", str(woody)))
    with pytest.raises(InputTooLargeError, match=MAX_INPUT_BYTES_ENV):
        read_scene(str(scene))
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, "1M")
    assert len(read_mesh(MeshItem("woody", str(woody))).faces) == 1267
    assert len(read_scene(str(scene))) == 512
    # a zip bomb: 64 MiB of zeros compressed to ~64 KiB, refused before it is inflated
    bomb = tmp_path / "bomb.npz"
    buffer = io.BytesIO()
    np.savez_compressed(buffer, vertices=np.zeros((2, 1_500_000, 3), np.float32))  # 36 MB inflated
    bomb.write_bytes(buffer.getvalue())
    assert bomb.stat().st_size < 2**20
    with pytest.raises(InputTooLargeError, match="inflate"):
        read_collection(str(bomb))
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match="not a positive size"):
        max_input_bytes()


# --- property-based fuzzing ---------------------------------------------------------------------------------------

# CI runs 120 fixed examples per test (~12 s in all); BRENIER_FUZZ_EXAMPLES=5000 runs a longer random search.
DEEP_FUZZ = int(os.environ.get("BRENIER_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=DEEP_FUZZ or 120,
    deadline=None,
    database=None,  # nothing written next to the tests (.hypothesis/)
    derandomize=not DEEP_FUZZ,  # the same examples on every CI run
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

MAGIC = st.sampled_from([b"", b"ply\n", b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nend_header\n",
                         b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n", b"PK\x03\x04",
                         b"\x93NUMPY\x01\x00", b"glTF\x02\x00\x00\x00", b"solid x\n", b"v 1 2 3\nv 4 5 6\nf 1 2 3\n",
                         b"OFF\n3 1 0\n"])


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """``original`` after random bit flips, byte overwrites, a deleted or duplicated span, and a truncation."""
    data = bytearray(original)
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "byte", "delete", "duplicate"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[at] = draw(st.sampled_from([0, 0x20, 0x0A, ord("-"), ord("9"), ord("e"), 0xFF, 0x7F]))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


PLY_TYPES = [b"char", b"uchar", b"short", b"ushort", b"int", b"uint", b"float", b"double", b"int64", b"list"]


@st.composite
def ply_header_mutated(draw, original: bytes) -> bytes:
    """``original`` (a PLY) with its header's words replaced: counts (0, huge, negative), types, keywords."""
    end = original.index(b"end_header\n")
    words = re.split(rb"([ \n])", original[:end])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(words) - 1))
        if words[at] in (b" ", b"\n"):
            continue
        words[at] = draw(st.one_of(
            st.integers(-5, 2**40).map(lambda n: str(n).encode()),
            st.sampled_from(PLY_TYPES + [b"ascii", b"binary_big_endian", b"element", b"property", b"", b"face"]),
        ))
    return b"".join(words) + original[end:]


def _assert_mesh(path: Path) -> None:
    try:
        mesh = read_mesh(MeshItem("fuzz", str(path)))
    except InputError as error:
        assert error.item_id == "fuzz" and str(error).startswith("fuzz: ")
        return
    v, f = mesh.vertices, mesh.faces
    assert v.dtype == np.float64 and v.ndim == 2 and v.shape[1] == 3 and np.isfinite(v).all()
    assert f.dtype == np.int64 and f.ndim == 2 and f.shape[1] == 3 and len(f) > 0
    assert f.min() >= 0 and f.max() < len(v)
    assert (f[:, 0] != f[:, 1]).all() and (f[:, 1] != f[:, 2]).all() and (f[:, 0] != f[:, 2]).all()


def _assert_scene(path: Path) -> None:
    try:
        scene = read_scene(str(path))
    except InputError as error:
        assert error.item_id == path.stem
        return
    assert len(scene) > 0 and np.isfinite(scene.means).all() and np.isfinite(scene.sh_dc).all()
    assert np.isfinite(scene.scales).all() and (scene.scales >= 0).all()
    assert ((scene.opacities >= 0) & (scene.opacities <= 1)).all()
    np.testing.assert_allclose(np.linalg.norm(scene.quats, axis=1), 1.0, rtol=1e-5)


def _assert_collection(path: Path) -> None:
    try:
        collection, failures = read_collection(str(path))
    except InputError as error:
        assert str(error).startswith(f"{error.item_id}: ")
        return
    v = collection.vertices
    assert v.dtype == np.float32 and v.ndim == 3 and v.shape[2] == 3 and v.shape[0] == len(collection.shape_ids)
    assert np.isfinite(v).all() and v.shape[0] > 0 and v.shape[1] > 0
    if collection.faces is not None:
        assert collection.faces.min() >= 0 and collection.faces.max() < v.shape[1]
    assert all(isinstance(f.error, InputError) for f in failures)


@FUZZ
@given(extension=st.sampled_from(["obj", "ply", "stl", "off", "glb"]), prefix=MAGIC, body=st.binary(max_size=2048))
def test_fuzz_mesh_reader_random_bytes(tmp_path: Path, extension: str, prefix: bytes, body: bytes) -> None:
    path = tmp_path / f"fuzz.{extension}"
    path.write_bytes(prefix + body)
    _assert_mesh(path)


WOODY_OBJ = woody_text().encode()
WOODY_PLY_ASCII = woody_ply("ascii")
WOODY_PLY_BINARY = woody_ply("binary")


@FUZZ
@given(data=st.one_of(mutated(WOODY_OBJ), mutated(WOODY_OBJ[:3000] + WOODY_OBJ[-3000:])))
def test_fuzz_mesh_reader_mutated_obj(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.obj"
    path.write_bytes(data)
    _assert_mesh(path)


@FUZZ
@given(data=st.one_of(mutated(WOODY_PLY_ASCII), mutated(WOODY_PLY_BINARY), ply_header_mutated(WOODY_PLY_ASCII),
                      ply_header_mutated(WOODY_PLY_BINARY)))
def test_fuzz_mesh_reader_mutated_ply(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.ply"
    path.write_bytes(data)
    _assert_mesh(path)


SCENE_BINARY = scene_bytes(donut_vertex()[:64])
SCENE_ASCII = scene_bytes(donut_vertex()[:16], text=True)


@FUZZ
@given(data=st.one_of(mutated(SCENE_BINARY), mutated(SCENE_ASCII), ply_header_mutated(SCENE_BINARY),
                      ply_header_mutated(SCENE_ASCII), MAGIC.map(lambda m: m + b"\n"),
                      st.builds(lambda m, b: m + b, MAGIC, st.binary(max_size=2048))))
def test_fuzz_scene_reader(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.ply"
    path.write_bytes(data)
    _assert_scene(path)


COLLECTION_NPZ = npz_bytes(**crane(3, 60))
COLLECTION_NPY = npy_bytes(crane(3, 60)["vertices"])


@FUZZ
@given(extension_data=st.one_of(
    st.tuples(st.just("npz"), mutated(COLLECTION_NPZ)),
    st.tuples(st.just("npy"), mutated(COLLECTION_NPY)),
    st.tuples(st.sampled_from(["npz", "npy"]), st.builds(lambda m, b: m + b, MAGIC, st.binary(max_size=2048))),
))
def test_fuzz_collection_reader_array_files(tmp_path: Path, extension_data: tuple[str, bytes]) -> None:
    extension, data = extension_data
    path = tmp_path / f"fuzz.{extension}"
    path.write_bytes(data)
    _assert_collection(path)


@FUZZ
@given(shapes=st.lists(st.tuples(st.sampled_from(["obj", "ply", "npy"]), st.integers(0, 2**32 - 1)), min_size=1,
                       max_size=3))
def test_fuzz_collection_reader_folders(tmp_path: Path, shapes: list[tuple[str, int]]) -> None:
    """Folders of one-shape files, each a real crane frame (60 points) in some format with random damage."""
    arrays = crane(3, 60)
    folder = tmp_path / "collection"
    if folder.exists():
        for path in folder.iterdir():
            path.unlink()
    folder.mkdir(exist_ok=True)
    for index, (extension, seed) in enumerate(shapes):
        rng = np.random.default_rng(seed)
        vertices, faces = arrays["vertices"][index], arrays["faces"]
        if extension == "obj":
            data = ("".join(f"v {x} {y} {z}\n" for x, y, z in vertices)
                    + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces)).encode()
        elif extension == "ply":
            data = WOODY_PLY_BINARY if seed % 5 == 0 else trimesh_ply(vertices, faces)
        else:
            data = npy_bytes(vertices)
        data = bytearray(data)
        for _ in range(int(rng.integers(0, 4))):
            data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        if rng.random() < 0.3:
            data = data[: int(rng.integers(0, len(data)))]
        (folder / f"{index:02d}.{extension}").write_bytes(bytes(data))
    _assert_collection(folder)


def trimesh_ply(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    import trimesh

    return trimesh.exchange.ply.export_ply(trimesh.Trimesh(vertices, faces, process=False), encoding="binary")


def test_no_reader_can_unpickle() -> None:
    """Every ``np.load`` in storage/, tasks/ and flows/ passes ``allow_pickle=False``; none calls ``pickle.load``,
    ``pickle.loads`` or ``torch.load`` (which unpickles) on anything."""
    import ast

    offenders = []
    for package in ("storage", "tasks", "flows"):
        for source in sorted((Path(__file__).resolve().parents[2] / package).rglob("*.py")):
            for node in ast.walk(ast.parse(source.read_text())):
                if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                    continue
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
                call = f"{owner}.{node.func.attr}"
                if call in ("np.load", "numpy.load"):
                    flags = [k for k in node.keywords if k.arg == "allow_pickle"]
                    if not (flags and isinstance(flags[0].value, ast.Constant) and flags[0].value.value is False):
                        offenders.append(f"{source.name}:{node.lineno} {call} without allow_pickle=False")
                elif call in ("pickle.load", "pickle.loads", "torch.load", "cloudpickle.loads"):
                    offenders.append(f"{source.name}:{node.lineno} {call}")
    assert offenders == []
