"""A corpus of broken dataset inputs, generated from the bundled real samples (``data/samples``) at test time.

Nothing here is committed as data: every case is built in a temporary folder by :func:`build_meshes`,
:func:`build_scenes` or :func:`build_collections` — truncated and corrupt files cut from the real samples,
NaN/Inf and huge (1e30, 1e39) coordinates, a mesh collapsed to a point, indices out of range, a non-UTF-8 name,
symbolic link loops, a broken link, a link out of the dataset folder, a folder named like a mesh, a FIFO, 1 GiB sparse files (``truncate``: no disk blocks, no memory), 3DGS PLYs with missing
properties, and shape collections with wrong shapes, ragged or pickled arrays, NaNs and unequal counts.

Each :class:`BadInput` says which reader must reject it, with which typed error, and a regular expression the
error's message must match (the reason). The item id the error must carry is ``item_id``.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from plyfile import PlyData, PlyElement

from storage.errors import (
    CoordinateMagnitudeError,
    DegenerateExtentError,
    EmptyCollectionError,
    EmptyMeshError,
    EmptySceneError,
    InputError,
    NonFiniteGaussiansError,
    NonFiniteVerticesError,
    NotACollectionError,
    NotAGaussianSceneError,
    NotAMeshError,
    SymlinkOutsideDatasetError,
    UndecodableFileNameError,
    UnequalPointCountError,
    UnreadableCollectionError,
    UnreadableMeshError,
    UnreadableSceneError,
)
from storage.inputs import printable

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
WOODY = SAMPLES / "meshes" / "woody.obj"  # 694 vertices, 1267 faces: the smallest real mesh
DONUT = SAMPLES / "gaussians" / "donut-8k.ply"  # 8192 Gaussians, SH degree 0, with normals
CRANE = SAMPLES / "consistent" / "crane-16.npz"  # vertices [16, 10002, 3], faces [20000, 3], frame_files
HORSES = SAMPLES / "consistent" / "horse-gallop"  # 3 frames, 8431 vertices each
GIB = 2**30
NON_UTF8_NAME = b"caf\xe9"  # Latin-1 "café": not valid UTF-8

MARKER_ENV = "BRENIER_TEST_PICKLE_MARKER"


class PickleBomb:
    """Unpickling this object creates the file named by ``$BRENIER_TEST_PICKLE_MARKER`` (proof of code run)."""

    def __reduce__(self):
        return (_touch_marker, ())


def _touch_marker() -> None:
    Path(os.environ.get(MARKER_ENV, "/nonexistent/marker")).write_text("unpickled")


@dataclass(frozen=True)
class BadInput:
    """One broken input.

    Attributes:
        name: file (or folder) name in the corpus folder; ``bytes`` for a non-UTF-8 name.
        item_id: id the typed error must carry (mesh item id, scene id, collection id or shape id).
        error: the typed error class expected.
        reason: regular expression the error message must match.
        build: writes the input at the given path.
        shape_failure: for collections, the error is a per-shape failure returned next to the kept shapes of
            ``<folder>`` (the name's parent), not raised.
    """

    name: str | bytes
    item_id: str
    error: type[InputError]
    reason: str
    build: Callable[[Path], None]
    shape_failure: bool = False

    @property
    def label(self) -> str:
        """The name as printable text (a non-UTF-8 name with ``\\xNN`` escapes): a test id."""
        return printable(self.name if isinstance(self.name, str) else os.fsdecode(self.name))

    def path(self, folder: Path) -> Path:
        name = self.name if isinstance(self.name, str) else os.fsdecode(self.name)
        return folder / name


# --- helpers --------------------------------------------------------------------------------------------------


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _sparse(size: int, prefix: bytes = b"") -> Callable[[Path], None]:
    """A sparse file of ``size`` bytes (``prefix`` then zeros), made like ``truncate -s``: no blocks, no memory."""

    def build(path: Path) -> None:
        path.write_bytes(prefix)
        os.truncate(path, size)

    return build


def _symlink(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _folder_with(source: Path) -> Callable[[Path], None]:
    """A folder (named like a file, e.g. ``dir.obj``) holding a copy of ``source``."""

    def build(path: Path) -> None:
        path.mkdir()
        shutil.copy(source, path / source.name)

    return build


def woody_text() -> str:
    return WOODY.read_text()


def _woody_lines() -> tuple[list[str], list[int], list[int]]:
    lines = woody_text().splitlines()
    v = [i for i, line in enumerate(lines) if line.startswith("v ")]
    f = [i for i, line in enumerate(lines) if line.startswith("f ")]
    return lines, v, f


def _woody_edit(edit: Callable[[list[str], list[int], list[int]], None]) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        lines, v, f = _woody_lines()
        edit(lines, v, f)
        path.write_text("\n".join(lines) + "\n")

    return build


def woody_mesh() -> trimesh.Trimesh:
    return trimesh.load(WOODY, process=False, force="mesh")


def woody_ply(encoding: str = "binary") -> bytes:
    return trimesh.exchange.ply.export_ply(woody_mesh(), encoding=encoding)


def donut_vertex() -> np.ndarray:
    return PlyData.read(str(DONUT))["vertex"].data.copy()


def scene_bytes(vertex: np.ndarray, text: bool = False) -> bytes:
    buffer = io.BytesIO()
    PlyData([PlyElement.describe(vertex, "vertex")], text=text).write(buffer)
    return buffer.getvalue()


def small_donut(n: int = 64) -> bytes:
    """The first ``n`` Gaussians of the real donut sample as a binary 3DGS PLY."""
    return scene_bytes(donut_vertex()[:n])


def _donut_edit(edit: Callable[[np.ndarray], np.ndarray], n: int = 256) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(scene_bytes(edit(donut_vertex()[:n].copy())))


def _drop_fields(*names: str) -> Callable[[np.ndarray], np.ndarray]:
    def edit(vertex: np.ndarray) -> np.ndarray:
        keep = [name for name in vertex.dtype.names if name not in names]
        out = np.empty(len(vertex), dtype=[(name, vertex.dtype[name]) for name in keep])
        for name in keep:
            out[name] = vertex[name]
        return out

    return edit


def _set(field: str, index: int, value: float) -> Callable[[np.ndarray], np.ndarray]:
    def edit(vertex: np.ndarray) -> np.ndarray:
        vertex[field][index] = value
        return vertex

    return edit


def _zero_quat(vertex: np.ndarray) -> np.ndarray:
    for i in range(4):
        vertex[f"rot_{i}"][3] = 0.0
    return vertex


def _with_f_rest(count: int) -> Callable[[np.ndarray], np.ndarray]:
    def edit(vertex: np.ndarray) -> np.ndarray:
        dtype = vertex.dtype.descr + [(f"f_rest_{i}", "<f4") for i in range(count)]
        out = np.zeros(len(vertex), dtype=dtype)
        for name in vertex.dtype.names:
            out[name] = vertex[name]
        return out

    return edit


def _scene_with_list_property(path: Path) -> None:
    """16 real Gaussians whose ``opacity`` is a list property (two values per Gaussian)."""
    vertex = donut_vertex()[:16]
    names = list(vertex.dtype.names)
    dtype = [(name, "<f4") if name != "opacity" else ("opacity", object) for name in names]
    out = np.empty(len(vertex), dtype=dtype)
    for name in names:
        if name == "opacity":
            out[name] = [np.array([v, v], dtype=np.float32) for v in vertex[name]]
        else:
            out[name] = vertex[name]
    element = PlyElement.describe(out, "vertex", len_types={"opacity": "u1"}, val_types={"opacity": "f4"})
    buffer = io.BytesIO()
    PlyData([element]).write(buffer)
    path.write_bytes(buffer.getvalue())


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def crane(shapes: int = 4, points: int = 500) -> dict[str, np.ndarray]:
    """A small real collection: the first ``shapes`` crane frames, their first ``points`` vertices, and the faces
    among those vertices."""
    with np.load(CRANE, allow_pickle=False) as archive:
        vertices = archive["vertices"][:shapes, :points].copy()
        faces = archive["faces"]
        names = archive["frame_files"][:shapes].copy()
    faces = faces[(faces < points).all(axis=1)].astype(np.int32)
    return {"vertices": vertices, "faces": faces, "frame_files": names}


def _pickled_npz(path: Path) -> None:
    evil = np.empty(2, dtype=object)
    evil[:] = [PickleBomb(), PickleBomb()]
    buffer = io.BytesIO()
    np.savez(buffer, vertices=evil)  # np.savez pickles object arrays
    path.write_bytes(buffer.getvalue())


def _pickled_faces_npz(path: Path) -> None:
    evil = np.empty(1, dtype=object)
    evil[0] = PickleBomb()
    arrays = crane(2, 50)
    path.write_bytes(npz_bytes(vertices=arrays["vertices"], faces=evil))


def _ragged_npz(path: Path) -> None:
    arrays = crane(2, 50)
    ragged = np.empty(2, dtype=object)
    ragged[:] = [arrays["vertices"][0], arrays["vertices"][1][:40]]
    path.write_bytes(npz_bytes(vertices=ragged))


def _huge_header_npy(path: Path) -> None:
    """A .npy whose header declares a 10^12-element array over 60 real bytes: must not be allocated."""
    data = npy_bytes(crane(1, 5)["vertices"])
    header_end = data.index(b"\n") + 1
    header = data[:header_end].replace(b"(1, 5, 3)", b"(100000000000, 5, 3)")
    header = header[:8] + (len(header) - 10).to_bytes(2, "little") + header[10:]
    path.write_bytes(header + data[header_end:])


def _mesh_folder(frames: list[str], extra: dict[str, Callable[[Path], None]]) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        folder.mkdir()
        for name in frames:
            shutil.copy(HORSES / name, folder / name)
        for name, make in extra.items():
            make(folder / name)

    return build


# --- the corpus -----------------------------------------------------------------------------------------------


def mesh_cases() -> list[BadInput]:
    """Broken mesh files for :func:`storage.meshes.read_mesh` (and the geometry-image flow)."""
    text = woody_text().encode()
    ply = woody_ply("binary")
    ascii_ply = woody_ply("ascii")
    stl = trimesh.exchange.stl.export_stl(woody_mesh())
    glb = trimesh.Scene(woody_mesh()).export(file_type="glb")
    cut_face = text.index(b"\nf ", len(text) // 2) + 4  # inside a face line: "f 1"
    return [
        BadInput("truncated-in-face.obj", "truncated-in-face", UnreadableMeshError, r"fewer than 3 vertices.*truncated",
                 _write(text[:cut_face])),
        BadInput("truncated-binary.ply", "truncated-binary", UnreadableMeshError, r"parser failed|truncated",
                 _write(ply[: len(ply) // 2])),
        BadInput("truncated-header.ply", "truncated-header", UnreadableMeshError, r"no 'end_header'",
                 _write(ply[:60])),
        BadInput("truncated-ascii.ply", "truncated-ascii", UnreadableMeshError, r"declares 694 vertices and 1267 faces",
                 _write(ascii_ply[:-20])),
        BadInput("truncated-stl.stl", "truncated-stl", UnreadableMeshError, r"truncated binary STL", _write(stl[: len(stl) // 2])),
        BadInput("truncated-glb.glb", "truncated-glb", UnreadableMeshError, r"truncated: its header declares",
                 _write(glb[: len(glb) // 2])),
        BadInput("corrupt-count.ply", "corrupt-count", UnreadableMeshError, r"parser failed|truncated",
                 _write(ply.replace(b"element vertex 694", b"element vertex 69x", 1))),
        BadInput("not-a-ply.ply", "not-a-ply", UnreadableMeshError, r"not a PLY file", _write(text[:2000])),
        BadInput("binary-garbage.obj", "binary-garbage", NotAMeshError, r"binary data \(a NUL byte",
                 _write(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)),
        BadInput("text.obj", "text", NotAMeshError, r"no geometry found", _write(b"hello\nthis is not a mesh\n")),
        BadInput("points-only.obj", "points-only", NotAMeshError, r"PointCloud, not a triangle mesh",
                 _write(b"".join(line + b"\n" for line in text.splitlines() if line.startswith(b"v ")))),
        BadInput("empty.obj", "empty", EmptyMeshError, r"file is empty", _write(b"")),
        BadInput("blank.obj", "blank", EmptyMeshError, r"file is empty", _write(b" \n\t\n")),
        BadInput("nan.obj", "nan", NonFiniteVerticesError, r"1 of 694 vertices have NaN or Inf",
                 _woody_edit(lambda lines, v, f: lines.__setitem__(v[5], "v 0.1 nan 0.2"))),
        BadInput("inf.obj", "inf", NonFiniteVerticesError, r"2 of 694 vertices have NaN or Inf",
                 _woody_edit(lambda lines, v, f: (lines.__setitem__(v[1], "v inf 0 0"),
                                                  lines.__setitem__(v[2], "v 0 -inf 0")))),
        # degenerate and duplicate faces are repaired by default (tests/storage/test_storage_meshes.py)
        BadInput("huge-1e30.obj", "huge-1e30", CoordinateMagnitudeError,
                 r"1 of 694 vertices have a coordinate beyond \+-1e\+10 \(largest \|coordinate\| 1e\+30\)",
                 _woody_edit(lambda lines, v, f: lines.__setitem__(v[5], "v 0.1 1e30 0.2"))),
        BadInput("huge-1e39.obj", "huge-1e39", CoordinateMagnitudeError,  # beyond float32, not float64
                 r"2 of 694 vertices .* \(largest \|coordinate\| 1e\+39\)",
                 _woody_edit(lambda lines, v, f: (lines.__setitem__(v[5], "v 1e39 0 0"),
                                                  lines.__setitem__(v[6], "v 0 0 -1e20")))),
        BadInput("point.obj", "point", DegenerateExtentError, r"diagonal is 0: all vertices are at one position",
                 _woody_edit(lambda lines, v, f: [lines.__setitem__(i, "v 0.5 0.25 1") for i in v])),
        BadInput("dir.obj", "dir", UnreadableMeshError, r"dir\.obj: it is a directory, not a regular file",
                 _folder_with(WOODY)),
        BadInput("outside-link.obj", "outside-link", SymlinkOutsideDatasetError,
                 r"outside-link\.obj is a symbolic link to .*/data/samples/meshes/woody\.obj, outside its folder",
                 _symlink(str(WOODY))),
        BadInput("index-out-of-range.obj", "index-out-of-range", UnreadableMeshError, r"out of bounds",
                 _woody_edit(lambda lines, v, f: lines.append("f 1 2 9999"))),
        BadInput("index-zero.obj", "index-zero", UnreadableMeshError, r"face index 0",
                 _woody_edit(lambda lines, v, f: lines.append("f 0 1 2"))),
        BadInput("index-out-of-range-ply.ply", "index-out-of-range-ply", UnreadableMeshError, r"face indices outside \[0, 3\)",
                 _write(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                        b"element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n")),
        BadInput(NON_UTF8_NAME + b".obj", "caf_", UndecodableFileNameError, r"caf\\xe9\.obj' is not valid UTF-8",
                 _write(text)),
        BadInput("loop-a.obj", "loop-a", UnreadableMeshError, r"symbolic link loop", _symlink("loop-b.obj")),
        BadInput("loop-b.obj", "loop-b", UnreadableMeshError, r"symbolic link loop", _symlink("loop-a.obj")),
        BadInput("self-loop.obj", "self-loop", UnreadableMeshError, r"symbolic link loop", _symlink("self-loop.obj")),
        BadInput("dangling.obj", "dangling", UnreadableMeshError, r"broken symbolic link", _symlink("missing/none.obj")),
        BadInput("pipe.obj", "pipe", UnreadableMeshError, r"FIFO", _fifo),
        BadInput("sparse-1g-obj.obj", "sparse-1g-obj", NotAMeshError, r"binary data \(a NUL byte at offset 0\)", _sparse(GIB)),
        BadInput("sparse-1g-ply.ply", "sparse-1g-ply", UnreadableMeshError, r"not a PLY file", _sparse(GIB)),
        BadInput("sparse-1g-stl.stl", "sparse-1g-stl", NotAMeshError, r"not an STL file", _sparse(GIB)),
        BadInput("padded-1g.ply", "padded-1g", UnreadableMeshError,
                 r"bytes follow the header, which declares only 36",
                 _sparse(GIB, b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n"
                              b"property float y\nproperty float z\nend_header\n" + bytes(36))),
        BadInput("pickle.obj", "pickle", NotAMeshError, r"binary data",
                 _write(b"\x80\x04\x95" + bytes(8) + b"cos\nsystem\n")),
    ]


def scene_cases() -> list[BadInput]:
    """Broken 3DGS scene files for :func:`storage.gaussians.read_scene` (and the Gaussian-reduction flow): INRIA
    PLYs cut from the donut sample, and compressed PLY / SPZ files cut from the biker samples."""
    from storage.errors import GaussianMagnitudeError

    data = small_donut(256)
    biker = SAMPLES / "gaussians" / "biker"
    compressed = (biker / "biker-2k.compressed.ply").read_bytes()
    spz = (biker / "biker-2k.spz").read_bytes()
    first = 32 + 5 * 16 + 9  # the positions stream's first zstd block header (after magic, descriptor, size)
    corrupt_spz = spz[:first] + b"\xff\xff\xff" + spz[first + 3 :]
    return [
        BadInput("truncated.ply", "truncated", UnreadableSceneError, r"truncated: its header declares 256 vertex",
                 _write(data[: len(data) // 2])),
        BadInput("truncated-header.ply", "truncated-header", UnreadableSceneError, r"no 'end_header'", _write(data[:120])),
        BadInput("corrupt-header.ply", "corrupt-header", UnreadableSceneError, r"parser failed",
                 _write(data.replace(b"property float opacity", b"property flaot opacity", 1))),
        BadInput("truncated-ascii.ply", "truncated-ascii", UnreadableSceneError, r"parser failed|truncated",
                 _write(scene_bytes(donut_vertex()[:32], text=True)[:-40])),
        BadInput("not-a-ply.ply", "not-a-ply", UnreadableSceneError, r"not a PLY file", _write(woody_text().encode())),
        BadInput("sparse-1g-scene.ply", "sparse-1g-scene", UnreadableSceneError, r"not a PLY file", _sparse(GIB)),
        BadInput("padded-1g-scene.ply", "padded-1g-scene", UnreadableSceneError, r"bytes follow the header",
                 _sparse(GIB, data)),
        BadInput("mesh.ply", "mesh", NotAGaussianSceneError, r"lacks Gaussian fields .*it has faces",
                 _write(woody_ply("binary"))),
        BadInput("no-opacity.ply", "no-opacity", NotAGaussianSceneError, r"lacks Gaussian fields opacity$",
                 _donut_edit(_drop_fields("opacity"))),
        BadInput("no-rotation-scale.ply", "no-rotation-scale", NotAGaussianSceneError,
                 r"lacks Gaussian fields scale_2, rot_0, rot_1, rot_2, rot_3",
                 _donut_edit(_drop_fields("scale_2", "rot_0", "rot_1", "rot_2", "rot_3"))),
        BadInput("bad-sh.ply", "bad-sh", NotAGaussianSceneError, r"5 f_rest properties match no SH degree",
                 _donut_edit(_with_f_rest(5))),
        BadInput("list-opacity.ply", "list-opacity", NotAGaussianSceneError, r"opacity are list properties",
                 _scene_with_list_property),
        BadInput("empty-scene.ply", "empty-scene", EmptySceneError, r"0 Gaussians", _donut_edit(lambda v: v[:0])),
        BadInput("nan-means.ply", "nan-means", NonFiniteGaussiansError, r"fields: x \(1\)", _donut_edit(_set("x", 7, np.nan))),
        BadInput("inf-scale.ply", "inf-scale", NonFiniteGaussiansError, r"scale_1 \(1\)",
                 _donut_edit(_set("scale_1", 3, np.inf))),
        BadInput("huge-scale.ply", "huge-scale", NonFiniteGaussiansError, r"exp overflows float32",
                 _donut_edit(_set("scale_0", 3, 1000.0))),
        BadInput("zero-quat.ply", "zero-quat", NonFiniteGaussiansError, r"zero-norm quaternion", _donut_edit(_zero_quat)),
        BadInput(NON_UTF8_NAME + b".ply", "caf_", UndecodableFileNameError, r"not valid UTF-8", _write(data)),
        BadInput("loop.ply", "loop", UnreadableSceneError, r"symbolic link loop", _symlink("loop.ply")),
        BadInput("pipe.ply", "pipe", UnreadableSceneError, r"FIFO", _fifo),
        BadInput("far-mean.ply", "far-mean", GaussianMagnitudeError,
                 r"^far-mean: 1 of 256 Gaussians have a mean coordinate beyond ±1e\+06 \(MAX_ABS_MEAN\); the largest \|x\|, \|y\| or \|z\| is 1e\+30 \(Gaussian 7\)$",
                 _donut_edit(_set("x", 7, 1e30))),
        BadInput("truncated.compressed.ply", "truncated.compressed", UnreadableSceneError,
                 r"truncated: its header declares 8 chunk, 2048 vertex", _write(compressed[: len(compressed) // 2])),
        BadInput("corrupt.spz", "corrupt.spz", UnreadableSceneError, r"corrupt SPZ: the positions stream: .*Zstd decompression error",
                 _write(corrupt_spz)),
        BadInput("truncated.spz", "truncated.spz", UnreadableSceneError,
                 r"truncated: its table of contents declares 30845 bytes, the file has 20000", _write(spz[:20000])),
    ]


def collection_cases() -> list[BadInput]:
    """Broken shape collections for :func:`storage.collections.read_collection` (and the autodecoder flow).

    Raised cases are ``.npz`` files and folders directly in the corpus folder (``.npy`` files in ``npy/``, so
    that the corpus folder stays a folder of collections); shape failures (``shape_failure=True``) are files
    inside the ``horse`` folder next to three good frames.
    """
    arrays = crane(4, 500)
    nan = dict(arrays)
    nan["vertices"] = arrays["vertices"].copy()
    nan["vertices"][:] = np.nan
    npz = npz_bytes(**arrays)
    horse = (HORSES / "0001.obj").read_bytes()
    horse_lines = horse.split(b"\n")
    first_v = next(i for i, line in enumerate(horse_lines) if line.startswith(b"v "))
    nan_horse = b"\n".join(horse_lines[:first_v] + [b"v nan 0 0"] + horse_lines[first_v + 1:])
    huge_horse = b"\n".join(horse_lines[:first_v + 5] + [b"v 0.1 1e30 0.2"] + horse_lines[first_v + 6:])
    huge = dict(arrays)
    huge["vertices"] = arrays["vertices"].copy()
    huge["vertices"][:, 17, 0] = 1e30  # one value in each shape: every shape fails, so the collection does
    return [
        BadInput("wrong-shape.npz", "wrong-shape", NotACollectionError, r"\[S, V, 3\] array of numbers, got float32 of shape \(4, 500, 2\)",
                 _write(npz_bytes(vertices=arrays["vertices"][..., :2]))),
        BadInput("flat.npz", "flat", NotACollectionError, r"shape \(2000, 3\)",
                 _write(npz_bytes(vertices=arrays["vertices"].reshape(-1, 3)))),
        BadInput("ragged.npz", "ragged", NotACollectionError, r"object array \(refused: inputs are never unpickled\)",
                 _ragged_npz),
        BadInput("pickled.npz", "pickled", NotACollectionError, r"object array", _pickled_npz),
        BadInput("pickled-faces.npz", "pickled-faces", NotACollectionError, r"'faces.npy': holds an object array",
                 _pickled_faces_npz),
        BadInput("npy/pickled-array.npy", "pickled-array", NotACollectionError, r"object array",
                 _write(npy_bytes(np.array([PickleBomb()], dtype=object), allow_pickle=True))),
        BadInput("npy/huge-header.npy", "huge-header", UnreadableCollectionError, r"truncated: its header declares",
                 _huge_header_npy),
        BadInput("all-nan.npz", "all-nan", EmptyCollectionError, r"all 4 shapes failed", _write(npz_bytes(**nan))),
        BadInput("faces-out-of-range.npz", "faces-out-of-range", NotACollectionError, r"face indices outside \[0, 500\)",
                 _write(npz_bytes(vertices=arrays["vertices"], faces=arrays["faces"] + 1000))),
        BadInput("no-vertices.npz", "no-vertices", NotACollectionError, r"no 'vertices' or 'points' array",
                 _write(npz_bytes(faces=arrays["faces"]))),
        BadInput("truncated.npz", "truncated", UnreadableCollectionError, r"parser failed|cannot read",
                 _write(npz[: len(npz) // 2])),
        BadInput("npy/truncated-array.npy", "truncated-array", UnreadableCollectionError, r"truncated: its header declares",
                 _write(npy_bytes(arrays["vertices"])[:3000])),
        BadInput("sparse-1g.npz", "sparse-1g", UnreadableCollectionError, r"no zip magic", _sparse(GIB)),
        BadInput("loop.npz", "loop", UnreadableCollectionError, r"symbolic link loop", _symlink("loop.npz")),
        BadInput("empty-folder", "empty-folder", EmptyCollectionError, r"holds no shape files",
                 lambda path: path.mkdir()),
        BadInput("all-bad", "all-bad", EmptyCollectionError, r"all 2 shape files failed",
                 _mesh_folder([], {"a.obj": _write(b""), "b.obj": _write(b"\0\0\0")})),
        # per-shape failures inside the horse folder: 3 good frames next to them
        BadInput("horse/0090-woody.obj", "0090-woody", UnequalPointCountError, r"has 694 points, expected 8431",
                 lambda path: shutil.copy(WOODY, path), shape_failure=True),
        BadInput("horse/0091-truncated.obj", "0091-truncated", UnreadableMeshError, r"fewer than 3 vertices",
                 _write(horse[: horse.index(b"\nf ", len(horse) // 2) + 4]), shape_failure=True),
        BadInput("horse/0092-nan.obj", "0092-nan", NonFiniteVerticesError, r"1 of 8431 vertices have NaN",
                 _write(nan_horse), shape_failure=True),
        BadInput("horse/0093-sparse.ply", "0093-sparse", UnreadableMeshError, r"not a PLY file", _sparse(GIB),
                 shape_failure=True),
        BadInput("horse/0094-loop.obj", "0094-loop", UnreadableMeshError, r"symbolic link loop",
                 _symlink("0094-loop.obj"), shape_failure=True),
        BadInput("horse/0095-pickle.npy", "0095-pickle", NotAMeshError, r"object array",
                 _write(npy_bytes(np.array([PickleBomb()], dtype=object), allow_pickle=True)), shape_failure=True),
        BadInput(b"horse/" + NON_UTF8_NAME + b".obj", "caf_", UndecodableFileNameError, r"not valid UTF-8",
                 lambda path: shutil.copy(HORSES / "0009.obj", path), shape_failure=True),
        BadInput("horse/0096-huge.obj", "0096-huge", CoordinateMagnitudeError,
                 r"0096-huge\.obj: 1 of 8431 vertices have a coordinate beyond \+-1e\+06 \(MAX_COORDINATE of a collection; largest \|coordinate\| 1e\+30, vertex 5\)",
                 _write(huge_horse), shape_failure=True),
        BadInput("huge.npz", "huge", EmptyCollectionError,
                 r"all 4 shapes failed \(first: mesh_0000: huge\.npz\[0\]: 1 of 500 vertices have a coordinate beyond \+-1e\+06 .*1e\+30, vertex 17\)",
                 _write(npz_bytes(**huge))),
    ]


HORSE_FRAMES = ["0001.obj", "0009.obj", "0017.obj"]


def build(cases: list[BadInput], folder: Path) -> dict[str, Path]:
    """Write ``cases`` into ``folder`` (created; the ``horse`` folder gets the three good horse frames first).

    Returns:
        label -> path of every case.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if any(case.shape_failure for case in cases):
        _mesh_folder(HORSE_FRAMES, {})(folder / "horse")
    paths = {}
    for case in cases:
        path = case.path(folder)
        path.parent.mkdir(exist_ok=True)
        case.build(path)
        paths[case.label] = path
    return paths

