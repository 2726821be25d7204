"""Harmonic (Tutte/cotangent) maps of a disk onto the unit square.

The boundary loop goes to the square's perimeter by arc length, with its four corners at the boundary vertices
closest to arc-length quarters; the interior solves the discrete Laplace equation with cotangent weights
(Pinkall–Polthier 1993; Eck et al. 1995). Cotangent weights can be negative on obtuse triangles, which voids
Tutte's embedding theorem, so negative or tiny weights are raised to a small positive floor: with all weights
positive, a convex boundary and no chord edges (see :mod:`otcore.mesh.disk_cut`), the map is a bijection
(Tutte 1963; Floater, "One-to-one piecewise linear mappings over triangulations", Math. Comp. 2003).
The same Laplacian repairs maps that came out with flipped triangles (:func:`untangle`).
"""

from __future__ import annotations

import igl
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from otcore.errors import FlippedMapError, UnsupportedTopologyError

__all__ = [
    "square_boundary",
    "positive_cotangent_laplacian",
    "harmonic_map",
    "untangle",
    "signed_areas",
    "flipped_triangles",
]

_WEIGHT_FLOOR = 1e-3  # fraction of the mean positive cotangent weight


def square_boundary(vertices: np.ndarray, boundary: np.ndarray) -> np.ndarray:
    """Positions ``[B, 2]`` float64 of an ordered boundary loop on the unit square's perimeter.

    Arc-length parameterization ``t in [0, 4)``; the corners are the four loop vertices nearest ``t = 0, 1, 2, 3``
    (the loop is rotated so vertex 0 is a corner), and each side's vertices are spaced by arc length between its
    two corners. The loop is traversed counter-clockwise: (0,0) -> (1,0) -> (1,1) -> (0,1).

    Raises:
        UnsupportedTopologyError: if the loop has fewer than 4 vertices.
    """
    b = len(boundary)
    if b < 4:
        raise UnsupportedTopologyError(f"boundary loop has {b} vertices; a square needs at least 4")
    points = np.asarray(vertices, dtype=np.float64)[boundary]
    segment = np.linalg.norm(np.roll(points, -1, axis=0) - points, axis=1)
    t = np.concatenate([[0.0], np.cumsum(segment)[:-1]]) / segment.sum() * 4.0
    corners = [0]
    for q in (1.0, 2.0, 3.0):
        c = int(np.argmin(np.abs(t - q)))
        corners.append(min(max(c, corners[-1] + 1), b - (4 - len(corners))))
    corners.append(b)
    arc = np.concatenate([t, [4.0]])
    side_starts = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    directions = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    uv = np.empty((b, 2))
    for side in range(4):
        lo, hi = corners[side], corners[side + 1]
        s = (arc[lo:hi] - arc[lo]) / (arc[hi] - arc[lo])
        uv[lo:hi] = side_starts[side] + s[:, None] * directions[side]
    return uv


def signed_areas(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Signed areas ``[F]`` float64 of the triangles of a 2D map (positive = counter-clockwise)."""
    a, b, c = uv[faces[:, 0]], uv[faces[:, 1]], uv[faces[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def flipped_triangles(uv: np.ndarray, faces: np.ndarray) -> int:
    """Number of triangles with non-positive signed area in a 2D map ``uv`` ``[V, 2]`` of ``faces`` ``[F, 3]``."""
    return int((signed_areas(uv, faces) <= 0.0).sum())


def positive_cotangent_laplacian(vertices: np.ndarray, faces: np.ndarray) -> sp.csr_matrix:
    """Graph Laplacian ``[V, V]`` (positive semidefinite) with cotangent weights floored at a small positive value."""
    n = len(vertices)
    cot = igl.cotmatrix(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)).tocoo()
    off = cot.row != cot.col
    weights = cot.data[off]
    weights = np.maximum(weights, _WEIGHT_FLOOR * weights[weights > 0].mean())
    adjacency = sp.csr_matrix((weights, (cot.row[off], cot.col[off])), shape=(n, n))
    return (sp.diags(np.asarray(adjacency.sum(1)).ravel()) - adjacency).tocsr()


def _solve_dirichlet(laplacian: sp.csr_matrix, uv: np.ndarray, free: np.ndarray) -> None:
    """Set ``uv[free]`` to the harmonic interpolation of the other vertices' positions (in place)."""
    fixed = np.setdiff1d(np.arange(len(uv)), free)
    rhs = -laplacian[free][:, fixed] @ uv[fixed]
    solve = spla.factorized(laplacian[free][:, free].tocsc())
    uv[free, 0] = solve(rhs[:, 0])
    uv[free, 1] = solve(rhs[:, 1])


_CORNER_STARTS = 16  # arc-length offsets of the first corner tried when the default corners collapse triangles


def harmonic_map(vertices: np.ndarray, faces: np.ndarray, boundary: np.ndarray) -> np.ndarray:
    """Harmonic map of a disk mesh onto the unit square with positive (floored) cotangent weights.

    The first corner is the loop's vertex 0. A "peninsula" of the disk whose only ties to the rest run through
    boundary vertices of one side of the square is mapped flat onto that side (meshes-more/3holes: 8 flipped,
    43 zero-area triangles). When that happens the first corner is moved along the loop (16 arc-length offsets
    in ``[0, 1)`` of a side, one factorisation for all) and the offset with the fewest non-positive, then
    fewest near-zero (``< 1e-12`` of the mean) triangle areas is kept: a corner inside the peninsula's span
    spreads it over two sides.

    Args:
        vertices: ``[V, 3]`` float positions of a disk mesh.
        faces: ``[F, 3]`` int triangles.
        boundary: ``[B]`` int ordered boundary loop.

    Returns:
        ``uv`` ``[V, 2]`` float64 in ``[0, 1]^2``, oriented so that the faces have positive signed area.

    Raises:
        UnsupportedTopologyError: if the boundary loop is shorter than 4 vertices.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    boundary = np.asarray(boundary, dtype=np.int64)
    laplacian = positive_cotangent_laplacian(vertices, faces)
    free = np.setdiff1d(np.arange(len(vertices)), boundary)
    solve = spla.factorized(laplacian[free][:, free].tocsc())
    coupling = laplacian[free][:, boundary]
    points = vertices[boundary]
    segment = np.linalg.norm(np.roll(points, -1, axis=0) - points, axis=1)
    t = np.concatenate([[0.0], np.cumsum(segment)[:-1]]) / segment.sum() * 4.0
    best, best_key = None, None
    for offset in np.arange(_CORNER_STARTS) / _CORNER_STARTS:
        first = int(np.argmin(np.abs(t - offset)))
        uv = np.zeros((len(vertices), 2))
        rolled = np.roll(boundary, -first)
        uv[rolled] = square_boundary(vertices, rolled)
        rhs = -coupling @ uv[boundary]
        uv[free] = np.column_stack([solve(rhs[:, 0]), solve(rhs[:, 1])])
        areas = signed_areas(uv, faces)
        if areas.sum() < 0.0:  # boundary loop ran clockwise relative to the faces
            uv[:, 0] = 1.0 - uv[:, 0]
            areas = -areas
        key = (int((areas <= 0.0).sum()), int((areas < 1e-12 * areas.mean()).sum()))
        if best_key is None or key < best_key:
            best, best_key = uv, key
        if key == (0, 0):
            break
    return best


def untangle(
    uv: np.ndarray, vertices: np.ndarray, faces: np.ndarray, boundary: np.ndarray, max_rounds: int = 30
) -> tuple[np.ndarray, int]:
    """Remove flipped triangles from a square map by local harmonic re-solves.

    The vertices of flipped triangles, dilated by ``r`` rings (``r = 1, 2, ...`` per round), are re-placed by the
    positive-weight harmonic interpolation of the fixed ring around them; rounds continue until no triangle is
    flipped. Boundary vertices never move. Each region is a disk whose border stays where the input put it, so the
    rest of the map is untouched.

    Args:
        uv: ``[V, 2]`` float64 map with possible flips.
        vertices: ``[V, 3]`` float positions; faces: ``[F, 3]`` int; boundary: ``[B]`` int loop on the square.
        max_rounds: dilation rounds before giving up.

    Returns:
        ``(uv, moved)``: the repaired ``[V, 2]`` map and how many vertices were re-placed.

    Raises:
        FlippedMapError: if flips remain after ``max_rounds`` rounds.
    """
    uv = np.array(uv, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    laplacian = positive_cotangent_laplacian(vertices, faces)
    adjacency = (laplacian != 0).astype(np.int8)
    on_boundary = np.zeros(len(uv), dtype=bool)
    on_boundary[boundary] = True
    moved = np.zeros(len(uv), dtype=bool)
    for rings in range(1, max_rounds + 1):
        flipped = signed_areas(uv, faces) <= 0.0
        if not flipped.any():
            return uv, int(moved.sum())
        region = np.zeros(len(uv), dtype=bool)
        region[faces[flipped].ravel()] = True
        for _ in range(rings):
            region |= (adjacency @ region.astype(np.int8)) > 0
        region &= ~on_boundary
        _solve_dirichlet(laplacian, uv, np.flatnonzero(region))
        moved |= region
    remaining = flipped_triangles(uv, faces)
    if remaining:
        raise FlippedMapError(f"{remaining} triangles still flipped after {max_rounds} untangling rounds")
    return uv, int(moved.sum())
