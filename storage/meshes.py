"""Mesh datasets: list the mesh files at a location and read one as plain arrays.

A location is a local folder (non-recursive), a glob, a single file, or an fsspec URL of any of those. Files are
read as bytes through fsspec and parsed with trimesh (never unpickled). The returned mesh is rebuilt without
visuals, so vertices that a format duplicates at UV or normal seams (e.g. ``spot.obj``) are merged by position.
A Stanford PLY whose faces are triangle strips (a ``tristrips`` element, as in the classic Stanford scans) is
parsed with plyfile and its strips unrolled into triangles (:func:`tristrip_triangles`).

By default a mesh is repaired the standard way: faces that repeat a vertex and faces that repeat another face's
three vertices are dropped, and the counts are recorded (:class:`LoadedMesh`); ``strict=True`` refuses such a
mesh instead. Coordinates beyond :data:`MAX_COORDINATE` and a bounding box that collapses to a point
(:data:`MIN_RELATIVE_EXTENT`) are refused with typed errors.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

import fsspec
import numpy as np
import trimesh
from fsspec.implementations.local import LocalFileSystem
from plyfile import PlyData, PlyListProperty

from storage.errors import (
    CoordinateMagnitudeError,
    DatasetNotFoundError,
    DegenerateExtentError,
    DegenerateFacesError,
    EmptyMeshError,
    InputError,
    NonFiniteVerticesError,
    NotAMeshError,
    UnreadableMeshError,
)
from storage.inputs import (
    HEAD_BYTES,
    obj_face_problem,
    ply_count_problem,
    ply_element_counts,
    read_input,
    sniffer_for,
)

__all__ = [
    "MAX_COORDINATE",
    "MESH_EXTENSIONS",
    "MIN_RELATIVE_EXTENT",
    "LoadedMesh",
    "MeshItem",
    "list_files",
    "list_mesh_items",
    "read_mesh",
    "tristrip_triangles",
]

MESH_EXTENSIONS: frozenset[str] = frozenset({"obj", "ply", "stl", "off", "glb"})
"""Lowercase extensions (no dot) that trimesh loads as triangle meshes from a single file with its core
dependencies. ``gltf`` is left out: its buffers usually live in sibling files that a byte stream cannot resolve
(GLB, the single-file form, is supported); ``3mf`` needs lxml; ``xyz`` is a point cloud format."""

MAX_COORDINATE: float = 1e10
"""Largest ``|coordinate|`` a mesh may have, in the file's units; a file with more is refused
(:class:`~storage.errors.CoordinateMagnitudeError`). Merging vertices at equal positions (trimesh,
``trimesh.tol.merge`` = 1e-8) rounds ``coordinate * 1e8`` to int64, which overflows beyond
``2**63 * 1e-8`` ~ 9.2e10: there distinct vertices silently become one (measured: ``(9.3e10, 0, 0)`` and
``(1.86e11, 0, 0)`` merge). 1e10 keeps a 9x margin below that and covers real units (the Earth's radius in
millimetres is 6.4e9). A coordinate such as 1e30 is usually a corrupt or sentinel value; it would also shrink the
rest of the mesh to nothing when the bounding box is normalised to a unit diagonal (float64 power diagrams then
see coincident sites)."""

MIN_RELATIVE_EXTENT: float = 1e-9
"""Smallest bounding-box diagonal, relative to the largest ``|coordinate|``, of a readable mesh; a smaller one
(zero included: a mesh collapsed to a point) is refused (:class:`~storage.errors.DegenerateExtentError`).
float64 positions are exact to ``2**-53 * max|coordinate|`` ~ 1.1e-16 of it, so at this bound normalising to a
unit diagonal keeps positions to ~1.1e-7 of the diagonal, still ~500x finer than the 2**-14 quantisation step of
the stored geometry images; any flatter, the mesh's shape is lost to rounding."""

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
    merged_vertices : int
        Raw vertex count minus ``V``: vertices merged into another at the same position, plus vertices that no
        kept face references (in the file, or after the faces below were dropped). 0 for a clean file.
    degenerate_faces_dropped : int
        Faces dropped because they repeat a vertex (after merging equal positions).
    duplicate_faces_dropped : int
        Faces dropped because another, earlier face has the same three vertices (either orientation).
    """

    vertices: np.ndarray
    faces: np.ndarray
    sha256: str
    file_bytes: int
    merged_vertices: int = 0
    degenerate_faces_dropped: int = 0
    duplicate_faces_dropped: int = 0


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


def _listed(name: str, is_dir: bool) -> bool:
    """Whether a folder entry is listed: anything but a folder, and a folder whose name has an extension."""
    return not is_dir or PurePosixPath(name.rstrip("/")).suffix != ""


def list_files(location: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The files at a dataset location: a folder (its files only, not sub-folders), a glob, a single file, or an
    fsspec URL of any of those.

    Returns:
        The location's filesystem and the files' paths on it (unsorted, any extension: callers filter by
        extension). Entries that are not regular files are included, so that readers report them with a typed
        error instead of letting them vanish from the run: symbolic link loops, broken links, FIFOs, and folders
        whose name has an extension (``x.obj/``, which a reader refuses as a directory). Folders without an
        extension (sub-folders, links to folders such as ``..``) are left out.

    Raises:
        DatasetNotFoundError: if the location does not exist.
    """
    fs, path = fsspec.core.url_to_fs(location)
    if _GLOB_CHARS.intersection(path):
        return fs, [p for p in fs.glob(path) if _listed(p, fs.isdir(p))]
    if fs.isdir(path):
        # Not only regular files: a symbolic link loop, a broken link, a FIFO or a folder with a dataset extension
        # is listed too, so that it fails at read with a typed error instead of vanishing from the run. ``ls``
        # does not follow links into folders, so a link loop never makes listing hang.
        return fs, [entry["name"] for entry in fs.ls(path, detail=True)
                    if _listed(entry["name"], entry["type"] == "directory")]
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


def _read_bytes(item: MeshItem, follow_symlinks: bool) -> bytes:
    sniff = sniffer_for(_extension(item.uri))
    return read_input(item.uri, item.item_id, UnreadableMeshError, NotAMeshError, sniff, follow_symlinks)


def _repair_faces(item: MeshItem, faces: np.ndarray, strict: bool) -> tuple[np.ndarray, int, int]:
    """``faces`` without those that repeat a vertex, then without those that repeat an earlier face's three
    vertices (either orientation; the first is kept), order kept; and the two counts dropped.

    With ``strict`` a mesh that needs either is refused: :class:`DegenerateFacesError` naming the first bad face.
    """
    repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])
    if strict and repeated.any():
        first = int(np.flatnonzero(repeated)[0])
        raise DegenerateFacesError(
            item.item_id,
            f"{int(repeated.sum())} of {len(faces)} faces repeat a vertex after merging vertices at equal positions "
            f"(first: face {first} = {faces[first].tolist()})",
        )
    kept = faces[~repeated]
    if len(kept) == 0:
        return kept, int(repeated.sum()), 0
    _, first_of, inverse = np.unique(np.sort(kept, axis=1), axis=0, return_index=True, return_inverse=True)
    duplicate = first_of[inverse.reshape(-1)] != np.arange(len(kept))
    if strict and duplicate.any():
        first = int(np.flatnonzero(duplicate)[0])
        raise DegenerateFacesError(
            item.item_id,
            f"{int(duplicate.sum())} of {len(faces)} faces duplicate another face's vertices (first: face {first} = "
            f"{faces[first].tolist()}, same as face {int(first_of[inverse.reshape(-1)[first]])})",
        )
    return kept[~duplicate], int(repeated.sum()), int(duplicate.sum())


def _check_magnitude(item: MeshItem, vertices: np.ndarray) -> None:
    """Raise :class:`CoordinateMagnitudeError` for coordinates beyond :data:`MAX_COORDINATE`."""
    magnitude = np.abs(vertices).max(axis=1)
    over = int(np.count_nonzero(magnitude > MAX_COORDINATE))
    if over:
        raise CoordinateMagnitudeError(
            item.item_id,
            f"{over} of {len(vertices)} vertices have a coordinate beyond +-{MAX_COORDINATE:.0e} (largest "
            f"|coordinate| {float(magnitude.max()):.6g}): a corrupt or sentinel value, or units to rescale",
        )


def _check_extent(item: MeshItem, vertices: np.ndarray) -> None:
    """Raise :class:`DegenerateExtentError` when the bounding box collapses to a point (see
    :data:`MIN_RELATIVE_EXTENT`)."""
    diagonal = float(np.linalg.norm(vertices.max(axis=0) - vertices.min(axis=0)))
    largest = float(np.abs(vertices).max())
    if diagonal == 0:
        raise DegenerateExtentError(
            item.item_id, "bounding-box diagonal is 0: all vertices are at one position")
    if diagonal <= MIN_RELATIVE_EXTENT * largest:
        raise DegenerateExtentError(
            item.item_id,
            f"bounding-box diagonal {diagonal:.6g} is at most {MIN_RELATIVE_EXTENT:.0e} of the largest |coordinate| "
            f"{largest:.6g}: normalised, the mesh collapses to a point",
        )


def tristrip_triangles(strips: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Unroll triangle strips into triangles with the standard alternating winding.

    Parameters
    ----------
    strips : sequence of 1-D integer arrays
        Vertex indices, one array per row of a PLY ``tristrips`` element; inside a row, ``-1`` ends a strip and
        starts the next (as does the end of a row). An unsigned index type's largest value counts as ``-1``.

    Returns
    -------
    np.ndarray
        ``[T, 3]`` int64. Triangle ``k`` of a strip ``s`` is ``(s[k], s[k+1], s[k+2])`` for even ``k`` and
        ``(s[k+1], s[k], s[k+2])`` for odd ``k`` (so all share one orientation). Triangles that repeat an index
        are skipped: strips join with such degenerate triangles. Other negative indices are kept (a reader
        reports them as out of range).
    """
    rows = [np.asarray(row) for row in strips]
    if not rows:
        return np.zeros((0, 3), dtype=np.int64)
    pieces = []
    for row in rows:
        indices = row.astype(np.int64)
        if row.dtype.kind == "u" and len(row):
            indices[row == np.iinfo(row.dtype).max] = -1
        pieces.extend((indices, np.array([-1], dtype=np.int64)))
    s = np.concatenate(pieces)
    if len(s) < 3:
        return np.zeros((0, 3), dtype=np.int64)
    separator = s == -1
    position = np.arange(len(s))
    last_separator = np.maximum.accumulate(np.where(separator, position, -1))
    k = position[:-2]
    odd = (k - last_separator[:-2] - 1) % 2 == 1
    a, b, c = s[:-2], s[1:-1], s[2:]
    triangles = np.stack([np.where(odd, b, a), np.where(odd, a, b), c], axis=1)
    whole = ~(separator[:-2] | separator[1:-1] | separator[2:])
    distinct = (a != b) & (b != c) & (a != c)
    return np.ascontiguousarray(triangles[whole & distinct])


def _list_property(element, preferred: tuple[str, ...]) -> str | None:
    names = [p.name for p in element.properties if isinstance(p, PlyListProperty)]
    return next((name for name in preferred if name in names), names[0] if names else None)


def _fan_triangles(polygons: np.ndarray) -> np.ndarray:
    """Polygons (rows of vertex indices) as triangle fans ``(p0, p_j, p_j+1)``; rows with fewer than 3 dropped."""
    rows = [np.asarray(row, dtype=np.int64) for row in polygons]
    triangles = [np.stack([np.full(len(row) - 2, row[0]), row[1:-1], row[2:]], axis=1) for row in rows if len(row) >= 3]
    return np.concatenate(triangles) if triangles else np.zeros((0, 3), dtype=np.int64)


def _load_tristrip_ply(item: MeshItem, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of a PLY with a ``tristrips`` element (and maybe a ``face`` element), via plyfile."""
    ply = PlyData.read(io.BytesIO(data), mmap=False)
    elements = {element.name: element for element in ply.elements}
    vertex = elements.get("vertex")
    if vertex is None or not {"x", "y", "z"} <= set(vertex.data.dtype.names or ()):
        raise NotAMeshError(item.item_id, "PLY with triangle strips but no vertex element with x, y, z")
    vertices = np.column_stack([np.asarray(vertex.data[axis], dtype=np.float64) for axis in "xyz"])
    faces = []
    for name, convert in (("tristrips", tristrip_triangles), ("face", _fan_triangles)):
        element = elements.get(name)
        prop = None if element is None else _list_property(element, ("vertex_indices", "vertex_index"))
        if prop is not None:
            faces.append(convert(element.data[prop]))
    if not faces:
        raise NotAMeshError(item.item_id, "PLY tristrips element has no list property of vertex indices")
    return vertices, np.concatenate(faces).reshape(-1, 3)


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


def _load_arrays(item: MeshItem, data: bytes, strict: bool) -> LoadedMesh:
    """Parse ``data``, validate the raw arrays, merge duplicate vertices and repair (or, ``strict``, refuse)
    degenerate and duplicate faces; raises :class:`InputError`."""
    extension = _extension(item.uri)
    problem = obj_face_problem(data) if extension == "obj" else None
    if problem:
        raise UnreadableMeshError(item.item_id, problem)
    if extension == "ply" and "tristrips" in (ply_element_counts(data[:HEAD_BYTES]) or {}):
        vertices, faces = _load_tristrip_ply(item, data)  # trimesh reads only the vertices of such a file
    else:
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
    _check_magnitude(item, vertices)  # before merging: trimesh's int64 merge grid overflows beyond it
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)
    merged = np.ascontiguousarray(mesh.vertices, dtype=np.float64)
    _check_extent(item, merged)
    kept, degenerate, duplicate = _repair_faces(item, np.ascontiguousarray(mesh.faces, dtype=np.int64), strict)
    if len(kept) == 0:
        raise EmptyMeshError(
            item.item_id, f"no face is left: all {degenerate + duplicate} faces repeat a vertex ({degenerate}) or "
            f"another face ({duplicate}) after merging vertices at equal positions",
        )
    if degenerate or duplicate:  # drop the vertices only dropped faces used, as trimesh drops unreferenced ones
        used = np.zeros(len(merged), dtype=bool)
        used[kept] = True
        if not used.all():
            kept = np.ascontiguousarray((np.cumsum(used) - 1)[kept], dtype=np.int64)
            merged = np.ascontiguousarray(merged[used])
            _check_extent(item, merged)
    return LoadedMesh(
        vertices=merged,
        faces=kept,
        sha256="",
        file_bytes=len(data),
        merged_vertices=len(vertices) - len(merged),
        degenerate_faces_dropped=degenerate,
        duplicate_faces_dropped=duplicate,
    )


def read_mesh(item: MeshItem, strict: bool = False, follow_symlinks: bool = False) -> LoadedMesh:
    """Read one mesh file as merged, repaired triangle arrays.

    The bytes are read through fsspec, parsed with ``trimesh.load_scene(..., process=False)`` (a PLY with a
    ``tristrips`` element with plyfile, its strips unrolled by :func:`tristrip_triangles`), every mesh
    instance of the scene is moved to its place and concatenated, and a visual-free
    ``trimesh.Trimesh(vertices, faces, process=True)`` merges vertices duplicated at UV/normal seams and drops
    unreferenced ones. Then, unless ``strict``, faces that repeat a vertex and faces that repeat an earlier
    face's three vertices are dropped (with the vertices only they used); a mesh that needs no repair gives
    exactly the arrays it gave before repair existed. Before parsing, the file passes
    :func:`storage.inputs.read_input` (UTF-8 name, regular file, link target inside its folder, size limit, format
    sniffing of the first 64 KiB against the file size), so a sparse, padded or truncated file, a FIFO, a folder
    or a link loop is refused without being read whole.

    Parameters
    ----------
    item : MeshItem
        The file to read; its extension selects the parser.
    strict : bool
        Refuse (:class:`DegenerateFacesError`) a mesh with degenerate or duplicate faces instead of dropping
        them. Merging vertices at equal positions (seams) happens either way.
    follow_symlinks : bool
        Read a file that is a symbolic link resolving outside its folder (refused by default).

    Returns
    -------
    LoadedMesh
        ``vertices`` [V, 3] float64 (file units, every one used by a face), ``faces`` [F, 3] int64 (F >= 1, three
        distinct vertices each, no two with the same vertices), SHA-256 and size of the raw bytes, and the repair
        counts ``merged_vertices``, ``degenerate_faces_dropped``, ``duplicate_faces_dropped``.

    Raises
    ------
    UnreadableMeshError
        The file is missing or unreadable (a broken link, a link loop, a FIFO, a directory or another non-regular
        file; the reason says which), its header declares more data than it holds (truncated) or far less
        (padded), its parser failed (corrupt data; the reason names the parser's exception type), or face
        indices point outside the vertex array (an OBJ index 0 included).
    SymlinkOutsideDatasetError
        The file is a symbolic link resolving outside its folder and ``follow_symlinks`` is False.
    NotAMeshError
        The bytes are not the extension's format (binary data in an OBJ/OFF, no PLY/GLB magic), or the file
        parses to no triangle mesh: a point cloud, or no geometry at all in a non-blank file.
    DegenerateFacesError
        Only with ``strict``: a face repeats a vertex, or two faces have the same three vertices (after merging
        equal positions); the reason counts them and gives the first.
    InputTooLargeError
        The file is larger than :func:`storage.inputs.max_input_bytes`.
    UndecodableFileNameError
        The file name is not valid UTF-8.
    EmptyMeshError
        The file is blank, its mesh has zero vertices or zero faces, or no face is left after the repair.
    NonFiniteVerticesError
        Some raw vertex coordinates are NaN or infinite (checked before vertices are merged).
    CoordinateMagnitudeError
        Some raw vertex coordinates exceed :data:`MAX_COORDINATE` in magnitude (checked before merging); the
        reason gives how many vertices and the largest magnitude.
    DegenerateExtentError
        The merged vertices' bounding-box diagonal is zero or at most :data:`MIN_RELATIVE_EXTENT` times their
        largest ``|coordinate|``.

    Notes
    -----
    OBJ is line-based, so an OBJ cut at a line boundary after its first faces reads as a smaller valid mesh;
    the SHA-256 is what identifies the exact input.
    """
    data = _read_bytes(item, follow_symlinks)
    try:
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/overflowed coordinates are reported as typed errors
            mesh = _load_arrays(item, data, strict)
    except InputError:
        raise
    except Exception as e:  # trimesh parsers raise anything from IndexError to JSONDecodeError on corrupt data
        raise UnreadableMeshError(item.item_id, f"parser failed: {type(e).__name__}: {e}") from e
    return replace(mesh, sha256=hashlib.sha256(data).hexdigest())
