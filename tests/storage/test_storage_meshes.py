"""Tests of storage.meshes: listing dataset locations and reading meshes into merged triangle arrays."""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
import trimesh
from plyfile import PlyData, PlyElement

from storage.errors import (
    CoordinateMagnitudeError,
    DatasetNotFoundError,
    DegenerateExtentError,
    DegenerateFacesError,
    EmptyMeshError,
    InputError,
    NonFiniteVerticesError,
    NotAMeshError,
    SymlinkOutsideDatasetError,
    UnreadableMeshError,
    UnreadableSceneError,
)
from storage.gaussians import list_scenes, read_scene
from storage.inputs import read_input
from storage.meshes import MAX_COORDINATE, MESH_EXTENSIONS, MeshItem, list_mesh_items, read_mesh, tristrip_triangles

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


# --- triangle strips (Stanford PLY ``tristrips``) -----------------------------------------------------------------


def _canonical(faces: np.ndarray) -> set[tuple[int, ...]]:
    """Faces as rotations starting at their smallest index: equal sets mean equal faces with equal orientation."""
    rolled = [np.roll(face, -int(np.argmin(face))) for face in np.asarray(faces)]
    return {tuple(int(i) for i in face) for face in rolled}


def _strips(faces: np.ndarray, longest: int) -> list[list[int]]:
    """Greedy triangle strips over ``faces`` (each face in exactly one strip, at most ``longest`` triangles long):
    triangle ``k`` of a strip ``s`` is ``(s[k], s[k+1], s[k+2])`` for even ``k``, ``(s[k+1], s[k], s[k+2])`` for
    odd ``k``, so strip ``k+1`` continues across the directed edge ``s[k+1] -> s[k+2]`` (even ``k+1``) or
    ``s[k+2] -> s[k+1]`` (odd ``k+1``)."""
    by_edge: dict[tuple[int, int], tuple[int, int]] = {}
    for index, (a, b, c) in enumerate(faces.tolist()):
        for u, v, w in ((a, b, c), (b, c, a), (c, a, b)):
            by_edge[(u, v)] = (index, w)
    used = np.zeros(len(faces), dtype=bool)
    strips = []
    for index, face in enumerate(faces.tolist()):
        if used[index]:
            continue
        used[index] = True
        strip = list(face)
        while len(strip) - 2 < longest:
            k = len(strip) - 2  # index of the next triangle
            edge = (strip[k], strip[k + 1]) if k % 2 == 0 else (strip[k + 1], strip[k])
            found = by_edge.get(edge)
            if found is None or used[found[0]]:
                break
            used[found[0]] = True
            strip.append(found[1])
        strips.append(strip)
    return strips


def _tristrip_ply(vertices: np.ndarray, rows: list[list[int]], text: bool) -> bytes:
    vertex = np.empty(len(vertices), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    for axis, name in enumerate("xyz"):
        vertex[name] = vertices[:, axis]
    strips = np.empty(len(rows), dtype=[("vertex_indices", object)])
    strips["vertex_indices"] = [np.asarray(row, dtype=np.int32) for row in rows]
    elements = [PlyElement.describe(vertex, "vertex"),
                PlyElement.describe(strips, "tristrips", len_types={"vertex_indices": "i4"},
                                    val_types={"vertex_indices": "i4"})]
    buffer = io.BytesIO()
    PlyData(elements, text=text, comments=["triangle strips, as the Stanford range scans"]).write(buffer)
    return buffer.getvalue()


def _joined(strips: list[list[int]]) -> list[int]:
    """Strips joined into one row the two ways files do it: ``-1`` restarts, and degenerate joins that repeat the
    last index of one strip and the first of the next (twice when needed to keep the next strip's parity)."""
    row: list[int] = []
    for number, strip in enumerate(strips):
        if not row:
            row = list(strip)
        elif number % 2:
            row += [-1, *strip]
        else:
            run = row[::-1].index(-1) if -1 in row else len(row)  # indices since the last restart
            row += [row[-1], strip[0]] + ([strip[0]] if run % 2 else []) + strip
    return row


def test_tristrip_triangles_alternate_winding_and_skip_joins() -> None:
    assert tristrip_triangles([np.array([0, 1, 2, 3, 4, -1, 5, 6, 7, 7, 8, 8, 9, 10])]).tolist() == [
        [0, 1, 2], [2, 1, 3], [2, 3, 4], [5, 6, 7], [9, 8, 10]]
    # an unsigned index type marks the restart with its largest value; a row ends a strip too
    rows = [np.array([0, 1, 2, 3], dtype=np.uint32), np.array([4, 5, 6, 2**32 - 1, 7, 8, 9], dtype=np.uint32)]
    assert tristrip_triangles(rows).tolist() == [[0, 1, 2], [2, 1, 3], [4, 5, 6], [7, 8, 9]]
    assert tristrip_triangles([]).shape == (0, 3) and tristrip_triangles([np.array([0, 1])]).shape == (0, 3)


@pytest.mark.parametrize("text", [False, True], ids=["binary", "ascii"])
def test_tristrip_ply_reads_as_woody(tmp_path: Path, sample_meshes_dir: Path, text: bool) -> None:
    """woody's faces as triangle strips (single triangles, and real strips of up to 12 triangles joined by -1 and
    by degenerate triangles) in a PLY written with plyfile: the same faces, same orientation."""
    woody = read_mesh(MeshItem("woody", str(sample_meshes_dir / "woody.obj")))
    strips = _strips(woody.faces, longest=12)
    assert max(len(s) for s in strips) - 2 == 12 and min(len(s) for s in strips) == 3  # real strips and singles
    rows = [strip for strip in strips if len(strip) == 3][:40]  # one row per triangle
    rows += [_joined([strip for strip in strips if len(strip) > 3 or strip not in rows])]  # the rest in one row
    item = _write(tmp_path, "woody-strips.ply", _tristrip_ply(woody.vertices, rows, text))
    mesh = read_mesh(item)
    assert len(mesh.faces) == len(woody.faces) == 1267
    assert _canonical(mesh.faces) == _canonical(woody.faces)
    np.testing.assert_allclose(mesh.vertices, woody.vertices.astype(np.float32), rtol=0, atol=0)
    assert (mesh.merged_vertices, mesh.degenerate_faces_dropped, mesh.duplicate_faces_dropped) == (0, 0, 0)


# --- standard repair: degenerate and duplicate faces dropped by default, refused with strict -----------------------


def _woody_with(sample_meshes_dir: Path, extra: list[str]) -> bytes:
    return ((sample_meshes_dir / "woody.obj").read_text().rstrip("\n") + "\n" + "\n".join(extra) + "\n").encode()


def _first_face(sample_meshes_dir: Path) -> list[str]:
    line = next(line for line in (sample_meshes_dir / "woody.obj").read_text().splitlines() if line.startswith("f "))
    return [token.split("/")[0] for token in line.split()[1:]]


@pytest.mark.parametrize(
    ("case", "counts", "strict_reason"),
    [
        ("degenerate-face", (0, 1, 0), r"1 of 1268 faces repeat a vertex after merging .*\(first: face 1267 = "),
        ("collapsed-face", (3, 1, 0), r"1 of 1268 faces repeat a vertex after merging"),
        ("duplicate-face", (0, 0, 1), r"1 of 1268 faces duplicate another face's vertices \(first: face 1267 = "
                                      r".*same as face 0\)"),
    ],
)
def test_degenerate_and_duplicate_faces_are_repaired(
    tmp_path: Path, sample_meshes_dir: Path, case: str, counts: tuple[int, int, int], strict_reason: str
) -> None:
    """woody plus one bad face reads as woody exactly (the bad face, and vertices only it used, dropped), with the
    repair counted; ``strict=True`` refuses it as before."""
    a, b, c = _first_face(sample_meshes_dir)
    extra = {"degenerate-face": [f"f {a} {a} {b}"],
             "collapsed-face": ["v 0 0 0", "v 0 0 0", "v 0 0 0", "f -1 -2 -3"],  # 3 vertices merge into one
             "duplicate-face": [f"f {c} {b} {a}"]}[case]  # reversed: same vertices, other orientation
    item = _write(tmp_path, f"{case}.obj", _woody_with(sample_meshes_dir, extra))
    woody = read_mesh(MeshItem("woody", str(sample_meshes_dir / "woody.obj")))
    mesh = read_mesh(item)
    np.testing.assert_array_equal(mesh.vertices, woody.vertices)
    np.testing.assert_array_equal(mesh.faces, woody.faces)
    assert (mesh.merged_vertices, mesh.degenerate_faces_dropped, mesh.duplicate_faces_dropped) == counts
    with pytest.raises(DegenerateFacesError, match=strict_reason) as info:
        read_mesh(item, strict=True)
    assert info.value.item_id == case and str(info.value).startswith(f"{case}: ")


def test_clean_meshes_are_unchanged_by_repair(sample_meshes_dir: Path) -> None:
    """A mesh without bad faces: no face dropped, strict reads it identically; seam vertices still merge."""
    for name in ("woody", "spot"):
        item = MeshItem(name, str(sample_meshes_dir / f"{name}.obj"))
        mesh, strict = read_mesh(item), read_mesh(item, strict=True)
        np.testing.assert_array_equal(mesh.vertices, strict.vertices)
        np.testing.assert_array_equal(mesh.faces, strict.faces)
        raw = trimesh.load(sample_meshes_dir / f"{name}.obj", process=False, force="mesh")
        assert mesh.merged_vertices == len(raw.vertices) - len(mesh.vertices)
        assert (mesh.degenerate_faces_dropped, mesh.duplicate_faces_dropped) == (0, 0)
    assert read_mesh(MeshItem("spot", str(sample_meshes_dir / "spot.obj"))).merged_vertices > 0  # UV seams


def test_repair_that_leaves_no_face_is_an_empty_mesh(tmp_path: Path, sample_meshes_dir: Path) -> None:
    vertices = [line for line in (sample_meshes_dir / "woody.obj").read_text().splitlines() if line.startswith("v ")]
    item = _write(tmp_path, "all-degenerate.obj", "\n".join(vertices + ["f 1 1 2", "f 3 4 3", "f 5 6 6"]).encode())
    with pytest.raises(EmptyMeshError, match=r"no face is left: all 3 faces repeat a vertex \(3\)"):
        read_mesh(item)
    with pytest.raises(DegenerateFacesError, match="3 of 3 faces repeat a vertex"):
        read_mesh(item, strict=True)


# --- coordinate magnitude and extent -------------------------------------------------------------------------------


def _woody_moved(sample_meshes_dir: Path, offset: float, scale: float = 1.0) -> bytes:
    mesh = trimesh.load(sample_meshes_dir / "woody.obj", process=False, force="mesh")
    mesh.vertices = mesh.vertices * scale + offset
    return str(trimesh.exchange.obj.export_obj(mesh, digits=17)).encode()


def test_max_coordinate_keeps_trimesh_merge_exact() -> None:
    """The bound's reason: trimesh merges positions on a 1e-8 grid in int64, which overflows beyond ~9.2e10."""
    grid = 10 ** trimesh.util.decimal_to_digits(trimesh.tol.merge)
    assert MAX_COORDINATE * grid < 2**63 / 8  # a 9x margin
    for big, merged in ((MAX_COORDINATE, False), (1e12, True)):  # (big, 0, 0) and (2 big, 0, 0): distinct points
        vertices = np.array([[0, 0, 0], [0, 1, 0], [big, 0, 0], [2 * big, 0, 0]], dtype=np.float64)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mesh = trimesh.Trimesh(vertices, [[0, 1, 2], [0, 1, 3]], process=True)
        assert (len(mesh.vertices) == 3) is merged


def test_huge_coordinates_are_refused_and_far_meshes_read(tmp_path: Path, sample_meshes_dir: Path) -> None:
    for value, shown in (("1e30", "1e+30"), ("1e39", "1e+39"), ("-1e11", "1e+11")):
        item = _write(tmp_path, "huge.obj", _woody_with(sample_meshes_dir, [f"v 0 {value} 0", "f 1 2 -1"]))
        reason = rf"huge: 1 of 695 vertices .* \|coordinate\| {re.escape(shown)}\)"
        with pytest.raises(CoordinateMagnitudeError, match=reason):
            read_mesh(item)
    far = read_mesh(_write(tmp_path, "far.obj", _woody_moved(sample_meshes_dir, 5e9)))  # 5e9 + ~500: readable
    assert len(far.faces) == 1267 and far.vertices.min() > 5e9 - 1e3


def test_mesh_collapsed_to_a_point_is_refused(tmp_path: Path, sample_meshes_dir: Path) -> None:
    """woody shrunk to a ~0.6-unit extent and moved to 5e9: below 1e-9 of its coordinates, normalising would lose
    it."""
    item = _write(tmp_path, "distant.obj", _woody_moved(sample_meshes_dir, 5e9, scale=1e-3))
    with pytest.raises(DegenerateExtentError, match=r"distant: bounding-box diagonal [0-9.]+ is at most 1e-09 of"):
        read_mesh(item)
    point = _write(tmp_path, "point.obj", b"v 1 2 3\nv 1 2 3\nv 1 2 3\nv 1 2 3\nf 1 2 3\nf 1 3 4\n")
    with pytest.raises(DegenerateExtentError, match="diagonal is 0"):
        read_mesh(point)


# --- folders named like meshes, symbolic links out of the dataset --------------------------------------------------


def test_folder_named_like_a_mesh_is_listed_and_refused(tmp_path: Path, sample_meshes_dir: Path) -> None:
    folder = _dataset(tmp_path, sample_meshes_dir)
    (folder / "x.obj").mkdir()
    shutil.copy(sample_meshes_dir / "woody.obj", folder / "x.obj" / "inside.obj")
    (folder / "scene.ply").mkdir()
    items = {i.item_id: i for i in list_mesh_items(str(folder))}
    assert sorted(items) == ["scene", "spot", "woody", "x"]  # "nested" (no extension) is a sub-folder, not listed
    assert [i.item_id for i in list_mesh_items(str(folder / "*.obj"))] == ["spot", "woody", "x"]
    for name in ("x", "scene"):
        with pytest.raises(UnreadableMeshError, match=rf"{name}: cannot read .*{name}\.\w+: it is a directory, not"):
            read_mesh(items[name])
    assert str(folder / "scene.ply") in list_scenes(str(folder))
    with pytest.raises(UnreadableSceneError, match="it is a directory"):
        read_scene(str(folder / "scene.ply"))


def test_folder_named_like_a_mesh_on_fsspec(memory_dir: str, sample_meshes_dir: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{memory_dir}/woody.obj", (sample_meshes_dir / "woody.obj").read_bytes())
    fs.pipe(f"{memory_dir}/x.obj/inside.obj", (sample_meshes_dir / "woody.obj").read_bytes())
    items = {i.item_id: i for i in list_mesh_items(memory_dir)}
    assert sorted(items) == ["woody", "x"]
    with pytest.raises(UnreadableMeshError, match="it is a directory, not a file"):
        read_mesh(items["x"])


def test_symbolic_links_out_of_the_dataset_are_refused(tmp_path: Path, sample_meshes_dir: Path) -> None:
    """Links within the dataset folder are read; a link out of it only with ``follow_symlinks``; the dataset
    folder itself may be a link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(sample_meshes_dir / "woody.obj", outside / "secret.obj")
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(sample_meshes_dir / "woody.obj", folder / "sub" / "woody.obj")
    (folder / "sibling.obj").symlink_to("sub/woody.obj")  # inside: read
    (folder / "escape.obj").symlink_to(outside / "secret.obj")  # absolute, outside
    (folder / "dotdot.obj").symlink_to("../outside/secret.obj")  # relative, outside
    (folder / "chain.obj").symlink_to("dotdot.obj")  # inside link to a link that leaves
    (folder / "linked-sub").symlink_to(outside)
    (folder / "through.obj").symlink_to("linked-sub/secret.obj")  # through a folder link that leaves
    items = {i.item_id: i for i in list_mesh_items(str(folder))}
    assert sorted(items) == ["chain", "dotdot", "escape", "sibling", "through"]
    assert len(read_mesh(items["sibling"]).faces) == 1267
    target = str((outside / "secret.obj").resolve())
    for name in ("escape", "dotdot", "chain", "through"):
        with pytest.raises(SymlinkOutsideDatasetError) as info:
            read_mesh(items[name])
        assert info.value.item_id == name
        assert info.value.reason == (
            f"{folder / name}.obj is a symbolic link to {target}, outside its folder {folder.resolve()}; "
            "set follow_symlinks (CLI: --follow-symlinks) to read it")
        assert len(read_mesh(items[name], follow_symlinks=True).faces) == 1267
    # the dataset location itself may be a link (the user chose it): its files are inside it
    (tmp_path / "data-link").symlink_to(outside)
    (item,) = list_mesh_items(str(tmp_path / "data-link"))
    assert len(read_mesh(item).faces) == 1267
    # loops and broken links keep their errors
    (folder / "loop.obj").symlink_to("loop.obj")
    (folder / "broken.obj").symlink_to("/nonexistent/none.obj")
    with pytest.raises(UnreadableMeshError, match="symbolic link loop"):
        read_mesh(MeshItem("loop", str(folder / "loop.obj")))
    with pytest.raises(UnreadableMeshError, match="broken symbolic link"):
        read_mesh(MeshItem("broken", str(folder / "broken.obj")), follow_symlinks=True)


def test_read_input_refuses_links_out_of_the_folder_for_every_reader(tmp_path: Path, sample_meshes_dir: Path) -> None:
    """The check lives in storage.inputs.read_input, which scene and collection readers call too."""
    (tmp_path / "data").mkdir()
    link = tmp_path / "data" / "woody.obj"
    link.symlink_to(sample_meshes_dir / "woody.obj")
    with pytest.raises(SymlinkOutsideDatasetError, match=r"woody: .*woody\.obj is a symbolic link to"):
        read_input(str(link), "woody", UnreadableMeshError, NotAMeshError)
    assert read_input(str(link), "woody", UnreadableMeshError, NotAMeshError, follow_symlinks=True) == (
        sample_meshes_dir / "woody.obj").read_bytes()


def test_new_errors_survive_pickling() -> None:
    for error in (CoordinateMagnitudeError("a", "r"), DegenerateExtentError("b", "r"),
                  SymlinkOutsideDatasetError("c", "r")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and copy.item_id == error.item_id
