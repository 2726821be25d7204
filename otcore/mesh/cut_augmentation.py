"""Cut augmentation: extend a disk cut through the most compressed regions of the harmonic map.

Gu, Gortler, Hoppe, "Geometry Images", SIGGRAPH 2002, Sec. 3.2: a cut that only makes a surface topologically a
disk leaves long appendages (legs, wings, necks) compressed exponentially in the map, so that sites sit closer than
a float64 power diagram resolves (crane: 220 empty Voronoi cells, sites 2.3e-9 apart). Each round finds the
vertex whose harmonic-map area share is smallest relative to its 3-D area share (an appendage tip) and cuts along
the shortest edge path from it to the current cut or boundary; the map is recomputed. Adding a path that touches
the cut tree at one end only keeps the result a disk.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import igl
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from otcore.mesh.disk_cut import DiskMesh, cut_to_disk, split_pinched_vertices
from otcore.mesh.harmonic import harmonic_map

__all__ = ["AugmentedCut", "augment_cut", "map_area_ratios"]


def map_area_ratios(disk: DiskMesh, uv: np.ndarray) -> np.ndarray:
    """Per disk vertex ``[Vd]`` float64: (one-ring area share in ``uv``) / (one-ring area share in 3-D)."""
    def shares(points: np.ndarray) -> np.ndarray:
        a, b, c = (points[disk.faces[:, k]] for k in range(3))
        area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
        vertex = np.bincount(disk.faces.ravel(), weights=np.repeat(area, 3), minlength=len(points))
        return vertex / vertex.sum()

    flat = np.column_stack([uv, np.zeros(len(uv))])
    return shares(flat) / np.maximum(shares(disk.vertices), 1e-300)


@dataclass(frozen=True)
class AugmentedCut:
    """Result of :func:`augment_cut`.

    Attributes:
        disk: the final :class:`~otcore.mesh.disk_cut.DiskMesh`.
        uv: ``[Vd, 2]`` float64 harmonic map of ``disk`` onto the unit square.
        extra_edges: ``[E, 2]`` int64 source-mesh edges added to the topological cut (a pinched source vertex may
            stand for the copy of one of its fans).
        min_area_ratios: smallest :func:`map_area_ratios` value before each round and at the end.
    """

    disk: DiskMesh
    uv: np.ndarray
    extra_edges: np.ndarray
    min_area_ratios: list[float]


def augment_cut(
    vertices: np.ndarray, faces: np.ndarray, max_paths: int = 8, target_ratio: float = 1e-2
) -> AugmentedCut:
    """Cut a mesh to a disk and augment the cut until the harmonic map is no longer crowded.

    Args:
        vertices: ``[V, 3]`` float positions (source mesh, any genus).
        faces: ``[F, 3]`` int triangles.
        max_paths: most paths added.
        target_ratio: stop once every vertex keeps at least this fraction of its area share in the map.

    Returns:
        :class:`AugmentedCut` (``extra_edges`` is empty when the plain cut already meets ``target_ratio``).

    Raises:
        NonManifoldMeshError, UnsupportedTopologyError: from :func:`otcore.mesh.disk_cut.cut_to_disk`.
    """
    # Paths run on the mesh with pinched vertices split: a path through a pinched vertex of the source could
    # otherwise end on a copy that is not on the cut and open a second boundary loop (cow).
    vertices, faces, source = split_pinched_vertices(np.asarray(vertices, dtype=np.float64),
                                                     np.asarray(faces, dtype=np.int64))
    edges = igl.edges(faces)
    lengths = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
    n = len(vertices)
    graph = sp.coo_matrix((lengths, (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    extra = np.zeros((0, 2), dtype=np.int64)
    ratios: list[float] = []
    while True:
        disk = cut_to_disk(vertices, faces, extra)
        uv = harmonic_map(disk.vertices, disk.faces, disk.boundary)
        area_ratios = map_area_ratios(disk, uv)
        ratios.append(float(area_ratios.min()))
        if ratios[-1] >= target_ratio or len(ratios) > max_paths:
            break
        worst = int(disk.source[np.argmin(area_ratios), 0])
        on_cut = np.unique(disk.source[disk.boundary].ravel())  # cut and boundary vertices of the source mesh
        if worst in set(on_cut.tolist()):
            break  # the most compressed vertex is already on the cut: another path cannot open it further
        _, predecessors, _ = dijkstra(graph, directed=False, indices=on_cut, return_predecessors=True, min_only=True)
        path = [worst]
        while predecessors[path[-1]] >= 0:
            path.append(int(predecessors[path[-1]]))
        extra = np.concatenate([extra, np.column_stack([path[:-1], path[1:]])])
    return AugmentedCut(replace(disk, source=source[disk.source]), uv, source[extra], ratios)
