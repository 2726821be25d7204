"""Cut a triangle mesh into a topological disk, the domain of a square parameterization.

Disks are kept as they are. Closed meshes of genus g > 0 and meshes with several boundary loops are cut by
libigl's ``cut_to_disk`` (the triangle-deletion cut graph of Gu, Gortler, Hoppe, "Geometry Images", SIGGRAPH 2002).
Closed genus-0 meshes, which that routine leaves whole, are cut along the shortest edge path between two
extreme vertices. Pinched (non-manifold) vertices are split first, which changes no geometry.

Meshes with several connected components are rejected with :class:`~otcore.errors.UnsupportedTopologyError`
rather than packed as one chart per component into the image: a packed atlas needs a chart layout, per-chart
seams and a codec that does not bleed across chart borders, and the scans it would serve (meshes-more/truck, 66
components, most of them small parts) would spend most of the image on gutters. The rejection is a typed
failure row in the geometry-image flow.

Interior edges whose two ends both lie on the cut boundary ("chords") are split at their midpoint, because a
Tutte/harmonic map onto a convex polygon is only guaranteed bijective without them (Floater 2003): a chord whose
ends land on the same side of the square flattens its triangles.
"""

from __future__ import annotations

from dataclasses import dataclass

import igl
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from otcore.errors import NonManifoldMeshError, UnsupportedTopologyError

__all__ = ["DiskMesh", "cut_to_disk", "split_pinched_vertices", "topological_cut"]


@dataclass(frozen=True)
class DiskMesh:
    """A mesh with disk topology, cut from a source mesh.

    Attributes:
        vertices: ``[Vd, 3]`` float64 positions.
        faces: ``[Fd, 3]`` int64 triangles (orientation of the source).
        boundary: ``[B]`` int64 ordered boundary loop (the cut), indices into ``vertices``.
        source: ``[Vd, 2]`` int64, each disk vertex is the midpoint of source vertices ``source[:, 0]`` and
            ``source[:, 1]`` (equal for vertices that are copies of a source vertex), so per-vertex source
            attributes carry over as ``0.5 * (a[source[:, 0]] + a[source[:, 1]])``.
        genus: genus of the source surface.
        boundary_loops: number of boundary loops of the source surface.
    """

    vertices: np.ndarray
    faces: np.ndarray
    boundary: np.ndarray
    source: np.ndarray
    genus: int
    boundary_loops: int


def _edge_flags(faces: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``[F, 3]`` bool: face edge ``k`` (from ``faces[:, k]`` to ``faces[:, k+1]``) is in ``edges`` ``[E, 2]``."""
    n = int(faces.max()) + 1
    keys = set((np.minimum(edges[:, 0], edges[:, 1]) * n + np.maximum(edges[:, 0], edges[:, 1])).tolist())
    wanted = np.fromiter(keys, dtype=np.int64, count=len(keys))
    flags = np.zeros(faces.shape, dtype=bool)
    for k in range(3):
        a, b = faces[:, k], faces[:, (k + 1) % 3]
        flags[:, k] = np.isin(np.minimum(a, b) * n + np.maximum(a, b), wanted)
    return flags


def _sphere_cut(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Shortest edge path ``[E, 2]`` between two far-apart vertices of a closed genus-0 mesh."""
    edges = igl.edges(faces)
    lengths = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
    n = len(vertices)
    graph = sp.coo_matrix((lengths, (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    used = np.unique(faces)
    start = used[np.argmax(np.linalg.norm(vertices[used] - vertices[used].mean(0), axis=1))]
    distances, predecessors = dijkstra(graph, directed=False, indices=start, return_predecessors=True)
    end = used[np.argmax(np.where(np.isfinite(distances[used]), distances[used], -1.0))]
    path = [end]
    while path[-1] != start:
        path.append(predecessors[path[-1]])
    path = np.asarray(path)
    return np.column_stack([path[:-1], path[1:]])


def split_pinched_vertices(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop unreferenced vertices and give each fan of faces around a pinched vertex its own copy.

    A pinched (non-manifold) vertex joins several fans of faces that share no edge there (cow: 4 such vertices);
    splitting it changes no geometry.

    Args:
        vertices: ``[V, 3]`` float64 positions; faces: ``[F, 3]`` int64 edge-manifold triangles.

    Returns:
        ``(vertices [V', 3] float64, faces [F, 3] int64, source [V'] int64)``; new vertex ``i`` is source vertex
        ``source[i]``.
    """
    used, faces = np.unique(faces, return_inverse=True)
    vertices, faces = vertices[used], faces.reshape(-1, 3)
    if not igl.is_vertex_manifold(faces).all():
        vertices, faces, index = igl.split_nonmanifold(vertices, faces)
        used = used[index]
    return vertices, faces, used


def _split_chords(
    vertices: np.ndarray, faces: np.ndarray, source: np.ndarray, boundary: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split every interior edge joining two boundary vertices at its midpoint (the midpoint is interior)."""
    on_boundary = np.zeros(len(vertices), dtype=bool)
    on_boundary[boundary] = True
    boundary_keys = {frozenset(e) for e in zip(boundary.tolist(), np.roll(boundary, -1).tolist())}
    edge_faces: dict[frozenset, list[int]] = {}
    for f, tri in enumerate(faces.tolist()):
        for k in range(3):
            edge_faces.setdefault(frozenset((tri[k], tri[(k + 1) % 3])), []).append(f)
    chords = [e for e in edge_faces if all(on_boundary[list(e)]) and e not in boundary_keys]
    if not chords:
        return vertices, faces, source
    faces = faces.tolist()
    new_vertices, new_source = [], []
    for chord in chords:
        a, b = tuple(chord)
        m = len(vertices) + len(new_vertices)
        new_vertices.append(0.5 * (vertices[a] + vertices[b]))
        new_source.append((source[a, 0], source[b, 0]))
        for f in edge_faces.pop(chord):
            tri = faces[f]
            k = next(k for k in range(3) if {tri[k], tri[(k + 1) % 3]} == {a, b})
            p, q, r = tri[k], tri[(k + 1) % 3], tri[(k + 2) % 3]
            faces[f] = [p, m, r]
            faces.append([m, q, r])
            g = len(faces) - 1
            # Edge q-r now belongs to the new face g (edges at new midpoints are never chords: not tracked).
            qr = edge_faces.get(frozenset((q, r)))
            if qr is not None:
                qr[qr.index(f)] = g
    return (
        np.concatenate([vertices, np.asarray(new_vertices)]),
        np.asarray(faces, dtype=np.int64),
        np.concatenate([source, np.asarray(new_source, dtype=np.int64)]),
    )


def topological_cut(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Edges ``[E, 2]`` (int64) whose cut makes the mesh a disk: libigl's cut graph, a shortest path between two
    far-apart vertices on a closed genus-0 mesh, nothing for a mesh that already is a disk."""
    cuts = igl.cut_to_disk(faces)
    if cuts:
        return np.concatenate([np.column_stack([c[:-1], c[1:]]) for c in cuts if len(c) > 1]).astype(np.int64)
    loops = igl.boundary_loop_all(faces)
    if loops:
        return np.zeros((0, 2), dtype=np.int64)
    return _sphere_cut(vertices, faces)


def cut_to_disk(vertices: np.ndarray, faces: np.ndarray, extra_edges: np.ndarray | None = None) -> DiskMesh:
    """Cut a connected, edge-manifold triangle mesh into a topological disk.

    Args:
        vertices: ``[V, 3]`` float positions.
        faces: ``[F, 3]`` int triangles, consistently oriented.
        extra_edges: ``[E, 2]`` int source-vertex edges cut in addition to the topological cut: paths that start
            on the cut or the boundary and form no cycle with it keep the result a disk (see
            :func:`otcore.mesh.cut_augmentation.augment_cut`).

    Returns:
        :class:`DiskMesh` with one boundary loop and no interior edge between two boundary vertices.

    Raises:
        NonManifoldMeshError: if an edge has more than two faces or faces are inconsistently oriented.
        UnsupportedTopologyError: if the mesh has several connected components or the cut fails to give a disk.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    edge_manifold = igl.is_edge_manifold(faces)[0]
    if not edge_manifold:
        raise NonManifoldMeshError("mesh has non-manifold edges (an edge with more than two faces)")
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    _, uses = np.unique(directed, axis=0, return_counts=True)
    if (uses > 1).any():
        raise NonManifoldMeshError(
            f"faces are inconsistently oriented: {(uses > 1).sum()} edges are traversed twice in the same direction"
        )
    vertices, faces, used = split_pinched_vertices(vertices, faces)
    source = np.repeat(used[:, None], 2, axis=1)
    components = igl.facet_components(faces)[0]
    if components != 1:
        raise UnsupportedTopologyError(f"mesh has {components} connected components; a square map needs one")

    loops = igl.boundary_loop_all(faces)
    used = np.unique(faces)
    euler = len(used) - len(igl.edges(faces)) + len(faces)
    genus = (2 - euler - len(loops)) // 2
    if len(loops) == 1 and genus == 0 and (extra_edges is None or len(extra_edges) == 0):
        boundary = np.asarray(loops[0], dtype=np.int64)
        cut_vertices, cut_faces, cut_source = vertices, faces, source
    else:
        edges = topological_cut(vertices, faces)
        if extra_edges is not None and len(extra_edges):
            # Source vertex ids -> ids after dropping unreferenced / splitting pinched vertices.
            remap = np.full(int(max(source.max(), np.max(extra_edges))) + 1, -1, dtype=np.int64)
            remap[source[::-1, 0]] = np.arange(len(source))[::-1]
            extra = remap[np.asarray(extra_edges, dtype=np.int64)]
            edges = np.concatenate([edges, extra[(extra >= 0).all(1)]]) if len(edges) else extra[(extra >= 0).all(1)]
        cut_vertices, cut_faces, index = igl.cut_mesh(vertices, faces, _edge_flags(faces, edges))
        cut_source = source[index]
        cut_loops = igl.boundary_loop_all(cut_faces)
        if len(cut_loops) != 1 or igl.euler_characteristic(cut_faces) != 1:
            raise UnsupportedTopologyError(
                f"cutting (genus {genus}, {len(loops)} boundary loops) gave {len(cut_loops)} boundary loops, not a disk"
            )
        boundary = np.asarray(cut_loops[0], dtype=np.int64)
    disk_vertices, disk_faces, disk_source = _split_chords(cut_vertices, cut_faces, cut_source, boundary)
    return DiskMesh(disk_vertices, disk_faces, boundary, disk_source, int(genus), len(loops))
