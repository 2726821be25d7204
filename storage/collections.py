"""Shape collections in correspondence: many shapes with the same point count, point ``i`` of every shape being
the same surface point (the input of NeuralQAAD's autodecoder; D-FAUST, COMA and animation sequences come so).

Two input forms are read, from a local path or any fsspec URL (``s3://…``, ``memory://…``):

* an **array file**: ``.npz`` with a ``vertices`` (or ``points``) array ``[S, V, 3]``, optional ``faces``
  ``[F, 3]`` (shared connectivity), optional shape names in ``frame_files`` or ``shape_ids`` (``[S]`` strings);
  or ``.npy`` holding ``[S, V, 3]``;
* a **folder of shape files**, one shape per file (non-recursive): meshes or point clouds in
  :data:`SHAPE_EXTENSIONS` (OBJ/PLY/OFF/STL parsed by trimesh with ``process=False``, so vertex order is the
  file's; point-cloud PLY/OBJ without faces are allowed) or ``.npy`` ``[V, 3]`` point arrays, in natural file
  name order (``2.obj`` before ``10.obj``).

Bad individual shapes (unreadable, empty, NaN/Inf coordinates, coordinates beyond :data:`MAX_COORDINATE`, wrong
point count, other connectivity) are returned as :class:`ShapeFailure` records next to the collection of the good
ones; a flow records them as failed rows.
Files are read as bytes through fsspec and never unpickled (``np.load(..., allow_pickle=False)``).
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import fsspec
import numpy as np
import trimesh
from fsspec.implementations.local import LocalFileSystem

from storage.errors import (
    CoordinateMagnitudeError,
    DatasetNotFoundError,
    EmptyCollectionError,
    EmptyMeshError,
    InconsistentConnectivityError,
    InputError,
    InputTooLargeError,
    NonFiniteVerticesError,
    NotACollectionError,
    NotAMeshError,
    UndecodableFileNameError,
    UnequalPointCountError,
    UnreadableCollectionError,
    UnreadableMeshError,
)
from storage.inputs import (
    max_input_bytes,
    npz_member_problem,
    obj_face_problem,
    ply_count_problem,
    printable,
    read_input,
    sniffer_for,
)

__all__ = [
    "ARRAY_EXTENSIONS",
    "MAX_COORDINATE",
    "SHAPE_EXTENSIONS",
    "ShapeCollection",
    "ShapeFailure",
    "list_collections",
    "read_collection",
]

SHAPE_EXTENSIONS: frozenset[str] = frozenset({"obj", "ply", "off", "stl", "npy"})
"""Lowercase extensions (no dot) of one-shape files in a collection folder: meshes or point clouds that trimesh
parses, and ``.npy`` ``[V, 3]`` point arrays."""

ARRAY_EXTENSIONS: frozenset[str] = frozenset({"npz", "npy"})
"""Extensions of single-file collections: ``.npz`` (``vertices``/``points`` ``[S, V, 3]``) or ``.npy``
``[S, V, 3]``."""

MAX_COORDINATE: float = 1e6
"""Largest ``|coordinate|`` of a shape of a collection, in the files' units; a shape with more is left out as a
:class:`ShapeFailure` (:class:`~storage.errors.CoordinateMagnitudeError`, the reason naming the file or
``collection.npz[index]``). Collections in correspondence are captures of bodies, faces or animals, in metres or
millimetres (a human is ~2000 mm), and are kept in float32, whose spacing at 1e6 is already 1/16 of a unit. A
value beyond it (1e30: a corrupt or sentinel value) dominates the collection's normalisation (one centre and scale
for all shapes, ``otcore.points.autodecoder_training.normalization``), shrinking every other shape to ~1e-30 of
the unit box; training then accepted it and EM-kD's auction spun for 11 minutes on the collapsed points."""

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_DIGITS = re.compile(r"(\d+)")
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_NAME_KEYS = ("frame_files", "shape_ids")


@dataclass(frozen=True)
class ShapeCollection:
    """Shapes in full correspondence, stacked.

    Attributes
    ----------
    collection_id : str
        Stable id, safe as a path component: the array file's stem or the folder's name.
    uri : str
        The location as given to :func:`read_collection`.
    shape_ids : tuple[str, ...]
        One stable id per kept shape, in order: the file stem (the file name when stems collide) for a folder;
        the stem of the ``frame_files`` / ``shape_ids`` entry for an array file (``f"{i:04d}"``, ``i`` the index
        in the file, when there are no names or their stems are not unique).
    vertices : np.ndarray
        ``[S, V, 3]`` float32 point positions in the files' units; ``vertices[s, i]`` corresponds across ``s``.
    faces : np.ndarray or None
        ``[F, 3]`` int64 shared connectivity (indices into ``V``), ``None`` for point clouds.
    sha256 : str
        Hex SHA-256 fingerprint of the input. Array file: of its raw bytes. Folder: of, for each kept shape in
        order, its file name, a NUL byte, its size as 8 little-endian bytes and the SHA-256 digest of its raw
        bytes (files that failed do not count, so a still-broken file changing does not change the collection).
    """

    collection_id: str
    uri: str
    shape_ids: tuple[str, ...]
    vertices: np.ndarray
    faces: np.ndarray | None
    sha256: str

    @property
    def n_shapes(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_points(self) -> int:
        return int(self.vertices.shape[1])


@dataclass(frozen=True)
class ShapeFailure:
    """One shape left out of a collection.

    Attributes
    ----------
    shape_id : str
        The id the shape would have had (see :attr:`ShapeCollection.shape_ids`).
    error : InputError
        Typed error whose ``item_id`` is ``shape_id`` and whose reason names the file (or array index).
    """

    shape_id: str
    error: InputError


@dataclass(frozen=True)
class _ParsedShape:
    shape_id: str
    name: str
    vertices: np.ndarray  # [V, 3] float32, finite
    faces: np.ndarray | None  # [F, 3] int64
    size: int
    digest: bytes


def _extension(path: str) -> str:
    return PurePosixPath(path).suffix.lower().lstrip(".")


def _safe_id(name: str) -> str:
    return _UNSAFE_ID_CHARS.sub("_", name) or "_"


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key ordering digit runs numerically: ``2.obj < 10.obj``; ties broken by the exact name."""
    parts = _DIGITS.split(name)
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in parts if p) + ((1, name),)


def _collection_id(path: str) -> str:
    p = PurePosixPath(path.rstrip("/"))
    return _safe_id(p.stem if _extension(p.name) in ARRAY_EXTENSIONS else p.name) if p.name else "collection"


def _shape_ids(names: list[str]) -> list[str]:
    """Ids from file names: sanitized stems, or sanitized names where stems collide."""
    stems = [_safe_id(PurePosixPath(n).stem) for n in names]
    counts = Counter(stems)
    return [s if counts[s] == 1 else _safe_id(n) for s, n in zip(stems, names, strict=True)]


def _uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


# --------------------------------------------------------------------------------------------------------------
# listing


def _ls(fs: fsspec.AbstractFileSystem, path: str) -> list[dict[str, Any]]:
    return sorted(fs.ls(path, detail=True), key=lambda e: _natural_key(PurePosixPath(e["name"]).name))


def _has_shape_files(entries: list[dict[str, Any]]) -> bool:
    return any(e["type"] != "directory" and _extension(e["name"]) in SHAPE_EXTENSIONS for e in entries)


def list_collections(location: str) -> list[str]:
    """List the shape collections at a location.

    Rules, in order:

    1. an ``.npz`` / ``.npy`` file is one collection: ``[location]``;
    2. a folder that directly holds shape files (:data:`SHAPE_EXTENSIONS`, ``.npy`` included) is one
       collection: ``[location]``;
    3. otherwise the folder's ``.npz`` files and its sub-folders that directly hold shape files are the
       collections (one level deep), in natural name order.

    Parameters
    ----------
    location : str
        Local path or fsspec URL of a file or folder.

    Returns
    -------
    list[str]
        Collection URIs for :func:`read_collection` (local paths stay paths, other filesystems get URLs).

    Raises
    ------
    DatasetNotFoundError
        The location does not exist, is a file of another kind, or holds no collection.
    """
    fs, path = fsspec.core.url_to_fs(location)
    if fs.isfile(path):
        if _extension(path) in ARRAY_EXTENSIONS:
            return [location]
        raise DatasetNotFoundError(f"{location!r} is neither a .npz/.npy collection file nor a folder")
    if not fs.isdir(path):
        raise DatasetNotFoundError(f"dataset location {location!r} does not exist")
    entries = _ls(fs, path)
    if _has_shape_files(entries):
        return [location]
    found: list[str] = []
    for entry in entries:
        if entry["type"] != "directory" and _extension(entry["name"]) == "npz":
            found.append(_uri(fs, entry["name"]))
        elif entry["type"] == "directory" and _has_shape_files(_ls(fs, entry["name"])):
            found.append(_uri(fs, entry["name"]))
    if not found:
        raise DatasetNotFoundError(
            f"dataset location {location!r} holds no shape collection (.npz files, or folders of "
            f"{', '.join(sorted(SHAPE_EXTENSIONS))} files)"
        )
    return found


# --------------------------------------------------------------------------------------------------------------
# one shape file of a folder


def _read_bytes(
    fs: fsspec.AbstractFileSystem,
    path: str,
    item_id: str,
    unreadable: type[InputError],
    wrong_format: type[InputError],
    follow_symlinks: bool,
) -> bytes:
    """The file's bytes after :func:`storage.inputs.read_input`'s checks (name, file type, link target inside its
    folder unless ``follow_symlinks``, size, format sniff)."""
    return read_input(
        _uri(fs, path), item_id, unreadable, wrong_format, sniffer_for(_extension(path)), follow_symlinks
    )


def _parse_npy_points(shape_id: str, name: str, data: bytes) -> tuple[np.ndarray, None]:
    if not data.startswith(_NPY_MAGIC):
        raise UnreadableMeshError(shape_id, f"{name} is not a .npy file (no NumPy magic bytes)")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise NotAMeshError(shape_id, f"{name} holds an object array (refused: inputs are never unpickled)") from e
        raise UnreadableMeshError(shape_id, f"{name}: .npy parser failed: {type(e).__name__}: {e}") from e
    except Exception as e:
        raise UnreadableMeshError(shape_id, f"{name}: .npy parser failed: {type(e).__name__}: {e}") from e
    if array.ndim != 2 or array.shape[1] != 3 or array.dtype.kind not in "fiu":
        raise NotAMeshError(shape_id, f"{name} holds a {array.dtype} array of shape {array.shape}, not [V, 3] points")
    if len(array) == 0:
        raise EmptyMeshError(shape_id, f"{name} holds zero points")
    return np.asarray(array, dtype=np.float64), None


def _parse_trimesh(shape_id: str, name: str, data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    extension = _extension(name)
    # OBJ: keep the file's vertex order and its unreferenced vertices (trimesh otherwise drops and reorders them,
    # which would silently break correspondence). Each material group then carries the full vertex list.
    options = {"maintain_order": True} if extension == "obj" else {}
    problem = obj_face_problem(data) if extension == "obj" else None
    if problem:
        raise UnreadableMeshError(shape_id, f"{name}: {problem}")
    scene = trimesh.load_scene(io.BytesIO(data), file_type=extension, process=False, **options)
    vertices: list[np.ndarray] = []
    faces: list[np.ndarray] = []
    kinds: set[str] = set()
    for node in scene.graph.nodes_geometry:
        transform, geometry_name = scene.graph[node]
        geometry = scene.geometry[geometry_name]
        kinds.add(type(geometry).__name__)
        if not isinstance(geometry, trimesh.Trimesh | trimesh.PointCloud):
            continue
        points = np.asarray(geometry.vertices, dtype=np.float64).reshape(-1, 3)
        vertices.append(trimesh.transform_points(points, transform) if len(points) else points)
        if isinstance(geometry, trimesh.Trimesh):
            faces.append(np.asarray(geometry.faces, dtype=np.int64).reshape(-1, 3))
    if {"Trimesh", "PointCloud"} <= kinds:
        raise NotAMeshError(shape_id, f"{name} mixes triangle meshes and point clouds")
    if not vertices:
        if kinds:
            raise NotAMeshError(shape_id, f"{name} holds {', '.join(sorted(kinds))}, not a mesh or point cloud")
        raise NotAMeshError(shape_id, f"no geometry found in {len(data)} bytes of {name}")
    if extension == "obj" and len(vertices) > 1 and all(np.array_equal(v, vertices[0]) for v in vertices[1:]):
        # one vertex list shared by several groups (OBJ material groups with maintain_order): index it once
        vertices = vertices[:1]
    else:
        offsets = np.cumsum([0] + [len(v) for v in vertices[:-1]])
        faces = [f + o for f, o in zip(faces, offsets, strict=True)] if faces else faces
    all_faces = np.concatenate(faces) if faces else None
    all_vertices = np.concatenate(vertices)
    problem = ply_count_problem(data, len(all_vertices), 0 if all_faces is None else len(all_faces))
    if extension == "ply" and problem:
        raise UnreadableMeshError(shape_id, f"{name}: {problem}")
    return all_vertices, all_faces if all_faces is not None and len(all_faces) else None


def _parse_shape(shape_id: str, name: str, data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """``[V, 3]`` float32 finite points and ``[F, 3]`` int64 faces (or None) of one file; raises InputError."""
    if not data.strip():
        raise EmptyMeshError(shape_id, f"{name} is empty")
    try:
        # signalling NaNs raise 'invalid' when cast; they are reported below as non-finite coordinates
        with np.errstate(invalid="ignore", over="ignore"):
            if _extension(name) == "npy":
                vertices, faces = _parse_npy_points(shape_id, name, data)
            else:
                vertices, faces = _parse_trimesh(shape_id, name, data)
    except InputError:
        raise
    except Exception as e:  # trimesh parsers raise anything from IndexError to UnicodeDecodeError on bad data
        raise UnreadableMeshError(shape_id, f"{name}: parser failed: {type(e).__name__}: {e}") from e
    if len(vertices) == 0:
        raise EmptyMeshError(shape_id, f"{name} has zero vertices")
    with np.errstate(over="ignore", invalid="ignore"):
        points = np.ascontiguousarray(vertices, dtype=np.float32)
    bad = int(np.count_nonzero(~np.isfinite(points).all(axis=1)))
    if bad:
        raise NonFiniteVerticesError(
            shape_id, f"{name}: {bad} of {len(points)} vertices have NaN or Inf coordinates (in float32)"
        )
    magnitude = _magnitude_problem(points)
    if magnitude:
        raise CoordinateMagnitudeError(shape_id, f"{name}: {magnitude}")
    if faces is not None and (faces.min() < 0 or faces.max() >= len(points)):
        raise UnreadableMeshError(shape_id, f"{name}: face indices outside [0, {len(points)})")
    return points, faces


def _magnitude_problem(points: np.ndarray) -> str | None:
    """Why finite ``[V, 3]`` points exceed :data:`MAX_COORDINATE`, or None."""
    magnitude = np.abs(points).max(axis=1)
    over = int(np.count_nonzero(magnitude > MAX_COORDINATE))
    if not over:
        return None
    worst = int(np.argmax(magnitude))
    return (f"{over} of {len(points)} vertices have a coordinate beyond +-{MAX_COORDINATE:.0e} (MAX_COORDINATE of "
            f"a collection; largest |coordinate| {float(magnitude[worst]):.6g}, vertex {worst}): a corrupt or "
            "sentinel value, or units to rescale")


def _faces_key(faces: np.ndarray) -> bytes:
    return len(faces).to_bytes(8, "little") + hashlib.sha256(faces.tobytes()).digest()


def _read_folder(
    fs: fsspec.AbstractFileSystem, path: str, uri: str, follow_symlinks: bool
) -> tuple[ShapeCollection, list[ShapeFailure]]:
    collection_id = _collection_id(path)
    # Non-directory entries, not only regular files: a link loop or a FIFO becomes a failed shape, not a gap.
    files = [e["name"] for e in _ls(fs, path) if e["type"] != "directory" and _extension(e["name"]) in SHAPE_EXTENSIONS]
    if not files:
        raise EmptyCollectionError(
            collection_id,
            f"folder {uri} holds no shape files ({', '.join(sorted(SHAPE_EXTENSIONS))}); for a folder of "
            "collections, list them with list_collections",
        )
    names = [PurePosixPath(f).name for f in files]
    failures: dict[int, ShapeFailure] = {}
    parsed: dict[int, _ParsedShape] = {}
    for index, (file, name, shape_id) in enumerate(zip(files, names, _shape_ids(names), strict=True)):
        try:
            data = _read_bytes(fs, file, shape_id, UnreadableMeshError, NotAMeshError, follow_symlinks)
            vertices, faces = _parse_shape(shape_id, name, data)
        except InputError as e:
            failures[index] = ShapeFailure(shape_id, e)
            continue
        digest = hashlib.sha256(data).digest()
        parsed[index] = _ParsedShape(shape_id, name, vertices, faces, len(data), digest)

    reference_faces: np.ndarray | None = None
    n_readable = len(parsed)
    if parsed:
        # Reference point count: the most common among readable files (ties: the first in file order).
        counts = Counter(len(p.vertices) for p in parsed.values())
        n_points = counts.most_common(1)[0][0]
        # Reference connectivity: the most common face array among files with that count that have faces.
        same_count = [p.faces for p in parsed.values() if len(p.vertices) == n_points and p.faces is not None]
        by_key = {_faces_key(f): f for f in same_count}  # equal keys hold equal arrays
        connectivity = Counter(_faces_key(f) for f in same_count)
        reference_faces = by_key[connectivity.most_common(1)[0][0]] if connectivity else None
        for index, p in list(parsed.items()):
            if len(p.vertices) != n_points:
                error: InputError = UnequalPointCountError(
                    p.shape_id,
                    f"{p.name} has {len(p.vertices)} points, expected {n_points} (the most common point count "
                    f"among the {n_readable} readable shape files)",
                )
            elif p.faces is not None and reference_faces is not None and not np.array_equal(p.faces, reference_faces):
                detail = (
                    f"{int(np.count_nonzero((p.faces != reference_faces).any(axis=1)))} of {len(p.faces)} faces differ"
                    if p.faces.shape == reference_faces.shape
                    else f"it has {len(p.faces)} faces, the collection {len(reference_faces)}"
                )
                error = InconsistentConnectivityError(
                    p.shape_id, f"{p.name}: connectivity differs from the collection's shared faces ({detail})"
                )
            else:
                continue
            failures[index] = ShapeFailure(p.shape_id, error)
            del parsed[index]

    ordered_failures = [failures[i] for i in sorted(failures)]
    if not parsed:
        first = ordered_failures[0].error
        raise EmptyCollectionError(
            collection_id, f"no usable shape in {uri}: all {len(files)} shape files failed (first: {first})"
        )
    kept = [parsed[i] for i in sorted(parsed)]
    hasher = hashlib.sha256()
    for p in kept:
        hasher.update(p.name.encode() + b"\0" + p.size.to_bytes(8, "little") + p.digest)
    collection = ShapeCollection(
        collection_id=collection_id,
        uri=uri,
        shape_ids=tuple(p.shape_id for p in kept),
        vertices=np.stack([p.vertices for p in kept]),
        faces=reference_faces,
        sha256=hasher.hexdigest(),
    )
    return collection, ordered_failures


# --------------------------------------------------------------------------------------------------------------
# one array file


def _npz_member(archive: Any, key: str, collection_id: str, name: str) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise NotACollectionError(
                collection_id, f"{name}: array {key!r} is an object array (refused: inputs are never unpickled)"
            ) from e
        raise UnreadableCollectionError(collection_id, f"{name}: cannot read array {key!r}: {e}") from e
    except Exception as e:  # zlib/zip/EOF errors of a corrupt archive
        raise UnreadableCollectionError(
            collection_id, f"{name}: cannot read array {key!r}: {type(e).__name__}: {e}"
        ) from e


def _load_arrays(data: bytes, collection_id: str, name: str) -> dict[str, np.ndarray]:
    """``vertices`` and optional ``faces`` / ``names`` arrays of an .npz or .npy collection file."""
    extension = _extension(name)
    if extension == "npy":
        if not data.startswith(_NPY_MAGIC):
            raise UnreadableCollectionError(collection_id, f"{name} is not a .npy file (no NumPy magic bytes)")
        try:
            return {"vertices": np.load(io.BytesIO(data), allow_pickle=False)}
        except ValueError as e:
            if "allow_pickle" in str(e):
                raise NotACollectionError(
                    collection_id, f"{name} holds an object array (refused: inputs are never unpickled)"
                ) from e
            raise UnreadableCollectionError(collection_id, f"{name}: .npy parser failed: {e}") from e
        except Exception as e:
            raise UnreadableCollectionError(
                collection_id, f"{name}: .npy parser failed: {type(e).__name__}: {e}"
            ) from e
    if not data.startswith(_ZIP_MAGIC):
        raise UnreadableCollectionError(collection_id, f"{name} is not an .npz file (no zip magic bytes)")
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise UnreadableCollectionError(collection_id, f"{name}: .npz parser failed: {type(e).__name__}: {e}") from e
    with archive:
        files = list(archive.files)
        key = next((k for k in ("vertices", "points") if k in files), None)
        if key is None:
            raise NotACollectionError(
                collection_id, f"{name} has no 'vertices' or 'points' array (arrays: {', '.join(files) or 'none'})"
            )
        name_key = next((k for k in _NAME_KEYS if k in files), None)
        wanted = {"vertices": key, "faces": "faces" if "faces" in files else None, "names": name_key}
        wanted = {role: k for role, k in wanted.items() if k is not None}
        _check_members(archive, list(wanted.values()), collection_id, name)
        arrays = {role: _npz_member(archive, k, collection_id, name) for role, k in wanted.items()}
    return arrays


def _check_members(archive: Any, keys: list[str], collection_id: str, name: str) -> None:
    """Refuse members that would inflate beyond the input limit, are damaged or hold object arrays, before
    NumPy inflates any of them (a zip bomb or a header declaring a huge array is never allocated)."""
    limit = max_input_bytes()
    members = {info.filename: info for info in archive.zip.infolist()}
    total = 0
    for key in keys:
        member = key if key in members else f"{key}.npy"
        if member not in members:
            continue  # NumPy lists it, so it exists; let _npz_member report what is wrong
        total += members[member].file_size
        if total > limit:
            raise InputTooLargeError(
                collection_id, f"{name}: its arrays inflate to more than the input limit of {limit} bytes"
            )
        problem = npz_member_problem(archive.zip, member, limit)
        if problem is not None:
            error = UnreadableCollectionError if problem.corrupt else NotACollectionError
            raise error(collection_id, f"{name}: {problem.reason}")


def _array_shape_ids(names: np.ndarray | None, n_shapes: int, collection_id: str, name: str) -> list[str]:
    default = [f"{i:04d}" for i in range(n_shapes)]
    if names is None:
        return default
    if names.ndim != 1 or len(names) != n_shapes or names.dtype.kind not in "US":
        raise NotACollectionError(
            collection_id,
            f"{name}: shape names must be a [{n_shapes}] string array, got {names.dtype} of shape {names.shape}",
        )
    texts = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names.tolist()]
    ids = [_safe_id(PurePosixPath(t).stem) for t in texts]
    return ids if len(set(ids)) == n_shapes else default


def _read_array_file(
    fs: fsspec.AbstractFileSystem, path: str, uri: str, follow_symlinks: bool
) -> tuple[ShapeCollection, list[ShapeFailure]]:
    collection_id = _collection_id(path)
    name = PurePosixPath(path).name
    data = _read_bytes(fs, path, collection_id, UnreadableCollectionError, NotACollectionError, follow_symlinks)
    if not data:
        raise EmptyCollectionError(collection_id, f"{name} is empty")
    arrays = _load_arrays(data, collection_id, name)

    vertices = arrays["vertices"]
    if vertices.ndim != 3 or vertices.shape[2] != 3 or vertices.dtype.kind not in "fiu":
        raise NotACollectionError(
            collection_id,
            f"{name}: vertices must be a [S, V, 3] array of numbers, got {vertices.dtype} of shape {vertices.shape}",
        )
    n_shapes, n_points = int(vertices.shape[0]), int(vertices.shape[1])
    if n_shapes == 0 or n_points == 0:
        raise EmptyCollectionError(collection_id, f"{name} holds {n_shapes} shapes of {n_points} points")

    faces = arrays.get("faces")
    if faces is not None:
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
            raise NotACollectionError(
                collection_id, f"{name}: faces must be a [F, 3] integer array, got {faces.dtype} of shape {faces.shape}"
            )
        faces = np.ascontiguousarray(faces, dtype=np.int64) if len(faces) else None
        if faces is not None and (faces.min() < 0 or faces.max() >= n_points):
            raise NotACollectionError(collection_id, f"{name}: face indices outside [0, {n_points})")

    shape_ids = _array_shape_ids(arrays.get("names"), n_shapes, collection_id, name)
    with np.errstate(over="ignore", invalid="ignore"):
        points = np.ascontiguousarray(vertices, dtype=np.float32)
    bad = np.count_nonzero(~np.isfinite(points).all(axis=2), axis=1)
    failures, keep = [], np.ones(n_shapes, dtype=bool)
    for i in range(n_shapes):
        if bad[i]:
            error: InputError = NonFiniteVerticesError(
                shape_ids[i], f"{name}[{i}]: {bad[i]} of {n_points} vertices have NaN or Inf coordinates (in float32)"
            )
        elif magnitude := _magnitude_problem(points[i]):
            error = CoordinateMagnitudeError(shape_ids[i], f"{name}[{i}]: {magnitude}")
        else:
            continue
        failures.append(ShapeFailure(shape_ids[i], error))
        keep[i] = False
    if not keep.any():
        raise EmptyCollectionError(
            collection_id, f"no usable shape in {uri}: all {n_shapes} shapes failed (first: {failures[0].error})"
        )
    collection = ShapeCollection(
        collection_id=collection_id,
        uri=uri,
        shape_ids=tuple(s for s, k in zip(shape_ids, keep, strict=True) if k),
        vertices=points if keep.all() else np.ascontiguousarray(points[keep]),
        faces=faces,
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return collection, failures


# --------------------------------------------------------------------------------------------------------------


def read_collection(uri: str, follow_symlinks: bool = False) -> tuple[ShapeCollection, list[ShapeFailure]]:
    """Read a shape collection in correspondence, leaving out (and reporting) the bad shapes.

    Parameters
    ----------
    uri : str
        Local path or fsspec URL of an ``.npz`` / ``.npy`` array file or of a folder of shape files (see the
        module docstring for the accepted layouts).
    follow_symlinks : bool
        Read a file (the array file, or a shape file of the folder) that is a symbolic link resolving outside the
        folder holding it (refused by default; links within the folder are always read).

    Returns
    -------
    (ShapeCollection, list[ShapeFailure])
        The kept shapes, stacked ``[S, V, 3]`` float32 with their shared ``[F, 3]`` int64 faces (or None), and
        one failure per shape left out, in input order.

        For a folder, the expected point count ``V`` is the **most common point count among the readable
        files** (ties: the count met first in file order), and the shared connectivity is the most common face
        array among the readable files with that count (files without faces, e.g. point clouds or ``.npy``, are
        kept: their points are in correspondence and the shared faces apply to them). For an array file, a shape
        with NaN/Inf coordinates or a coordinate beyond :data:`MAX_COORDINATE` is left out.

    Raises
    ------
    DatasetNotFoundError
        ``uri`` does not exist.
    NotACollectionError
        ``uri`` is a file other than ``.npz`` / ``.npy``; an array file lacks ``vertices`` / ``points``, has
        them in another shape than ``[S, V, 3]``, stores an object array (refused without unpickling), or has
        bad ``faces`` (not ``[F, 3]`` integers in ``[0, V)``) or names (not ``[S]`` strings).
    UnreadableCollectionError
        The array file cannot be read (a broken link, a link loop, a FIFO) or parsed (corrupt or truncated; a
        header or zip member declaring more data than there is), checked before it is read whole
        (:func:`storage.inputs.read_input`).
    SymlinkOutsideDatasetError
        The array file is a symbolic link resolving outside its folder and ``follow_symlinks`` is False; the
        reason names the link, its target and the folder.
    InputTooLargeError
        The array file, or the arrays it inflates to, exceed :func:`storage.inputs.max_input_bytes`.
    UndecodableFileNameError
        ``uri`` is not valid UTF-8.
    EmptyCollectionError
        The folder holds no shape files, the array file is empty or holds zero shapes, or every shape failed.

    Per-shape errors (returned in :class:`ShapeFailure`, never raised): :class:`UnreadableMeshError`
    (unreadable or corrupt file, face indices out of range), :class:`EmptyMeshError` (blank file, zero points),
    :class:`NotAMeshError` (no geometry, binary data in a text format, or a ``.npy`` that is not ``[V, 3]``
    numbers), :class:`InputTooLargeError`, :class:`UndecodableFileNameError` (a non-UTF-8 file name),
    :class:`~storage.errors.SymlinkOutsideDatasetError` (a link out of the folder, unless ``follow_symlinks``),
    :class:`NonFiniteVerticesError`, :class:`CoordinateMagnitudeError` (a coordinate beyond
    :data:`MAX_COORDINATE`, the reason giving the count, the largest value and its vertex),
    :class:`UnequalPointCountError` and
    :class:`InconsistentConnectivityError`.
    """
    fs, path = fsspec.core.url_to_fs(uri)
    if printable(uri) != uri:
        raise UndecodableFileNameError(
            _collection_id(path), f"collection path '{printable(uri)}' is not valid UTF-8; rename it"
        )
    if fs.isdir(path):
        return _read_folder(fs, path, uri, follow_symlinks)
    if not fs.isfile(path) and not fs.lexists(path):  # a link loop or a FIFO exists: it fails as unreadable
        raise DatasetNotFoundError(f"collection location {uri!r} does not exist")
    if _extension(path) not in ARRAY_EXTENSIONS:
        raise NotACollectionError(
            _collection_id(path), f"{uri} is neither an .npz/.npy array file nor a folder of shape files"
        )
    return _read_array_file(fs, path, uri, follow_symlinks)
