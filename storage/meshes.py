"""Mesh datasets: list the mesh files at a location and read one as plain arrays.

A location is a local folder (non-recursive), a glob, a single file, or an fsspec URL of any of those. Files are
read as bytes through fsspec and parsed with trimesh (never unpickled). The returned mesh is rebuilt without
visuals, so vertices that a format duplicates at UV or normal seams (e.g. ``spot.obj``) are merged by position.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath

import fsspec
import numpy as np
import trimesh
from fsspec.implementations.local import LocalFileSystem

from storage.errors import (
    DatasetNotFoundError,
    DegenerateFacesError,
    EmptyMeshError,
    InputError,
    NonFiniteVerticesError,
    NotAMeshError,
    UnreadableMeshError,
)
from storage.inputs import obj_face_problem, ply_count_problem, read_input, sniffer_for

__all__ = ["MESH_EXTENSIONS", "LoadedMesh", "MeshItem", "list_files", "list_mesh_items", "read_mesh"]

MESH_EXTENSIONS: frozenset[str] = frozenset({"obj", "ply", "stl", "off", "glb"})
"""Lowercase extensions (no dot) that trimesh loads as triangle meshes from a single file with its core
dependencies. ``gltf`` is left out: its buffers usually live in sibling files that a byte stream cannot resolve
(GLB, the single-file form, is supported); ``3mf`` needs lxml; ``xyz`` is a point cloud format."""

_GLOB_CHARS = frozenset("*?[")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class MeshItem:
    """One mesh file of a dataset.

    Attributes
    ----------
    item_id : str
        Stable id, safe as a path component: the file stem; the file name (``stem.ext``) when several listed
        files share a stem; that name plus ``-`` and 8 hex digits of the SHA-1 of the uri when even names
        collide (a glob across folders). Characters outside ``[A-Za-z0-9._-]`` are replaced by ``_``.
    uri : str
        Absolute local path, or fsspec URL for other filesystems.
    """

    item_id: str
    uri: str


@dataclass(frozen=True)
class LoadedMesh:
    """A triangle mesh read from one file.

    Attributes
    ----------
    vertices : np.ndarray
        ``[V, 3]`` float64, in the file's units, duplicates merged by position.
    faces : np.ndarray
        ``[F, 3]`` int64 indices into ``vertices``.
    sha256 : str
        Hex SHA-256 of the raw file bytes.
    file_bytes : int
        Size of the raw file in bytes.
    """

    vertices: np.ndarray
    faces: np.ndarray
    sha256: str
    file_bytes: int


def _extension(path: str) -> str:
    return PurePosixPath(path).suffix.lower().lstrip(".")


def _safe_id(name: str) -> str:
    return _UNSAFE_ID_CHARS.sub("_", name)


def _assign_ids(uris: list[str]) -> list[MeshItem]:
    stems = [_safe_id(PurePosixPath(uri).stem) for uri in uris]
    names = [_safe_id(PurePosixPath(uri).name) for uri in uris]
    stem_counts = Counter(stems)
    ids = [stem if stem_counts[stem] == 1 else name for stem, name in zip(stems, names, strict=True)]
    id_counts = Counter(ids)
    ids = [
        item_id if id_counts[item_id] == 1 else f"{item_id}-{hashlib.sha1(uri.encode()).hexdigest()[:8]}"
        for item_id, uri in zip(ids, uris, strict=True)
    ]
    return sorted((MeshItem(item_id, uri) for item_id, uri in zip(ids, uris, strict=True)), key=lambda i: i.item_id)


def list_files(location: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The files at a dataset location: a folder (its files only, not sub-folders), a glob, a single file, or an
    fsspec URL of any of those.

    Returns:
        The location's filesystem and the files' paths on it (unsorted, any extension). Entries that are neither
        files nor folders (symbolic link loops, broken links, FIFOs) are included, so that readers report them.

    Raises:
        DatasetNotFoundError: if the location does not exist.
    """
    fs, path = fsspec.core.url_to_fs(location)
    if _GLOB_CHARS.intersection(path):
        return fs, [p for p in fs.glob(path) if not fs.isdir(p)]
    if fs.isdir(path):
        # Not only regular files: a symbolic link loop, a broken link or a FIFO with a dataset extension is
        # listed too, so that it fails at read with a typed error instead of vanishing from the run. ``ls`` does
        # not follow links into folders, so a link loop never makes listing hang.
        return fs, [entry["name"] for entry in fs.ls(path, detail=True) if entry["type"] != "directory"]
    if fs.isfile(path) or fs.lexists(path):
        return fs, [path]
    raise DatasetNotFoundError(f"dataset location {location!r} does not exist")


def list_mesh_items(location: str) -> list[MeshItem]:
    """List the mesh files at a dataset location.

    Parameters
    ----------
    location : str
        A folder (its files only, not sub-folders), a glob (``"data/*.obj"``), a single file, or an fsspec URL
        of any of those (``"s3://bucket/meshes/"``, ``"memory://d/*.ply"``).

    Returns
    -------
    list[MeshItem]
        Files whose lowercase extension is in :data:`MESH_EXTENSIONS`, sorted by ``item_id``. Ids are stable:
        they depend only on the set of listed file paths.

    Raises
    ------
    DatasetNotFoundError
        If the location does not exist or matches no mesh file.
    """
    fs, paths = list_files(location)
    paths = [p for p in paths if _extension(p) in MESH_EXTENSIONS]
    if not paths:
        raise DatasetNotFoundError(
            f"dataset location {location!r} matches no mesh files (extensions: {', '.join(sorted(MESH_EXTENSIONS))})"
        )
    local = isinstance(fs, LocalFileSystem)
    return _assign_ids([p if local else fs.unstrip_protocol(p) for p in paths])


def _read_bytes(item: MeshItem) -> bytes:
    sniff = sniffer_for(_extension(item.uri))
    return read_input(item.uri, item.item_id, UnreadableMeshError, NotAMeshError, sniff)




def _check_faces(item: MeshItem, faces: np.ndarray) -> None:
    """Raise :class:`DegenerateFacesError` for faces that repeat a vertex or repeat another face."""
    repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])
    if repeated.any():
        first = int(np.flatnonzero(repeated)[0])
        raise DegenerateFacesError(
            item.item_id,
            f"{int(repeated.sum())} of {len(faces)} faces repeat a vertex after merging vertices at equal positions "
            f"(first: face {first} = {faces[first].tolist()})",
        )
    _, first_of, inverse = np.unique(np.sort(faces, axis=1), axis=0, return_index=True, return_inverse=True)
    duplicate = first_of[inverse.reshape(-1)] != np.arange(len(faces))
    if duplicate.any():
        first = int(np.flatnonzero(duplicate)[0])
        raise DegenerateFacesError(
            item.item_id,
            f"{int(duplicate.sum())} of {len(faces)} faces duplicate another face's vertices (first: face {first} = "
            f"{faces[first].tolist()}, same as face {int(first_of[inverse.reshape(-1)[first]])})",
        )


def _concatenate_meshes(item: MeshItem, scene: trimesh.Scene, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Bake every mesh instance of ``scene`` into one vertex/face array pair, visuals dropped."""
    vertices: list[np.ndarray] = []
    faces: list[np.ndarray] = []
    other_kinds: set[str] = set()
    offset = 0
    for node in scene.graph.nodes_geometry:
        transform, geometry_name = scene.graph[node]
        geometry = scene.geometry[geometry_name]
        if not isinstance(geometry, trimesh.Trimesh):
            other_kinds.add(type(geometry).__name__)
            continue
        vertices.append(trimesh.transform_points(np.asarray(geometry.vertices, dtype=np.float64), transform))
        faces.append(np.asarray(geometry.faces, dtype=np.int64).reshape(-1, 3) + offset)
        offset += len(geometry.vertices)
    if not vertices:
        if other_kinds:
            raise NotAMeshError(item.item_id, f"holds {', '.join(sorted(other_kinds))}, not a triangle mesh")
        if not data.strip():
            raise EmptyMeshError(item.item_id, "file is empty")
        raise NotAMeshError(
            item.item_id, f"no geometry found in {len(data)} bytes: not a {_extension(item.uri)} mesh file"
        )
    return np.concatenate(vertices), np.concatenate(faces)


def _load_arrays(item: MeshItem, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``data``, validate the raw arrays, and merge duplicate vertices; raises :class:`InputError`."""
    extension = _extension(item.uri)
    problem = obj_face_problem(data) if extension == "obj" else None
    if problem:
        raise UnreadableMeshError(item.item_id, problem)
    scene = trimesh.load_scene(io.BytesIO(data), file_type=extension, process=False)
    vertices, faces = _concatenate_meshes(item, scene, data)
    problem = ply_count_problem(data, len(vertices), len(faces)) if extension == "ply" else None
    if problem:
        raise UnreadableMeshError(item.item_id, problem)
    if len(vertices) == 0 or len(faces) == 0:
        raise EmptyMeshError(item.item_id, f"mesh has {len(vertices)} vertices and {len(faces)} faces")
    bad = int(np.count_nonzero(~np.isfinite(vertices).all(axis=1)))
    if bad:
        raise NonFiniteVerticesError(item.item_id, f"{bad} of {len(vertices)} vertices have NaN or Inf coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise UnreadableMeshError(item.item_id, f"face indices outside [0, {len(vertices)})")
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)
    merged_faces = np.ascontiguousarray(mesh.faces, dtype=np.int64)
    _check_faces(item, merged_faces)
    return np.ascontiguousarray(mesh.vertices, dtype=np.float64), merged_faces


def read_mesh(item: MeshItem) -> LoadedMesh:
    """Read one mesh file as merged triangle arrays.

    The bytes are read through fsspec, parsed with ``trimesh.load_scene(..., process=False)``, every mesh
    instance of the scene is moved to its place and concatenated, and a visual-free
    ``trimesh.Trimesh(vertices, faces, process=True)`` merges vertices duplicated at UV/normal seams. Before
    parsing, the file passes :func:`storage.inputs.read_input` (UTF-8 name, regular file, size limit, format
    sniffing of the first 64 KiB against the file size), so a sparse, padded or truncated file, a FIFO or a link
    loop is refused without being read whole.

    Parameters
    ----------
    item : MeshItem
        The file to read; its extension selects the parser.

    Returns
    -------
    LoadedMesh
        ``vertices`` [V, 3] float64 (file units), ``faces`` [F, 3] int64, SHA-256 and size of the raw bytes.

    Raises
    ------
    UnreadableMeshError
        The file is missing or unreadable (a broken link, a link loop, a FIFO or another non-regular file), its
        header declares more data than it holds (truncated) or far less (padded), its parser failed (corrupt
        data; the reason names the parser's exception type), or face indices point outside the vertex array
        (an OBJ index 0 included).
    NotAMeshError
        The bytes are not the extension's format (binary data in an OBJ/OFF, no PLY/GLB magic), or the file
        parses to no triangle mesh: a point cloud, or no geometry at all in a non-blank file.
    DegenerateFacesError
        A face repeats a vertex, or two faces have the same three vertices (after merging equal positions).
    InputTooLargeError
        The file is larger than :func:`storage.inputs.max_input_bytes`.
    UndecodableFileNameError
        The file name is not valid UTF-8.
    EmptyMeshError
        The file is blank, or its mesh has zero vertices or zero faces.
    NonFiniteVerticesError
        Some raw vertex coordinates are NaN or infinite (checked before vertices are merged).

    Notes
    -----
    OBJ is line-based, so an OBJ cut at a line boundary after its first faces reads as a smaller valid mesh;
    the SHA-256 is what identifies the exact input.
    """
    data = _read_bytes(item)
    try:
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/overflowed coordinates are reported as typed errors
            vertices, faces = _load_arrays(item, data)
    except InputError:
        raise
    except Exception as e:  # trimesh parsers raise anything from IndexError to JSONDecodeError on corrupt data
        raise UnreadableMeshError(item.item_id, f"parser failed: {type(e).__name__}: {e}") from e
    return LoadedMesh(
        vertices=vertices,
        faces=faces,
        sha256=hashlib.sha256(data).hexdigest(),
        file_bytes=len(data),
    )
