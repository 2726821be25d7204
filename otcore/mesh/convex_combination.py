"""Convex-combination (Tutte/Floater) maps that repair flipped triangles of an OT centroid map.

Moving every vertex to its power-cell centroid (:mod:`otcore.mesh.parameterization`) preserves areas but can swap
neighbouring vertices where the harmonic map was crowded, flipping triangles. A convex-combination map is
fold-free by construction: if every interior vertex is a convex combination (positive weights) of its
neighbours and the boundary is a convex polygon, the piecewise-linear map is a bijection (Tutte 1963; Floater,
"One-to-one piecewise linear mappings over triangulations", Math. Comp. 2003, Thm. 6.1; interior edges between
two boundary vertices are excluded, see :mod:`otcore.mesh.disk_cut`).

To keep the map close to the OT map, the weights are the mean-value weights (Floater, "Mean value coordinates",
CAGD 2003) of each vertex's one-ring *in the OT centroid layout*, with unsigned angles so they stay positive.
Where a one-ring is fold-free and star-shaped around its vertex, these weights reproduce the centroid exactly
(mean-value coordinates have linear precision): a fold-free layout is a fixed point, and on a layout with
tangled regions only those rows break the fixed point, so the solution stays close to the OT map elsewhere (the
linear system spreads the correction smoothly; measured median vertex shift under half an edge length). Where
the centroid layout is degenerate (coincident centroids or a straight angle, the weight is infinite or
undefined), the vertex falls back to the 3-D mean-value weights of its one-ring, and to uniform weights if those
degenerate too (zero-area 3-D triangles).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = ["ConvexCombinationMap", "convex_combination_map", "mean_value_weights"]

# A weight is degenerate when an edge is this short relative to the mean edge length of the layout.
_DEGENERATE_EDGE = 1e-12


def mean_value_weights(points: np.ndarray, faces: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Mean-value weights ``w_ij = (tan(a_ij / 2) + tan(b_ij / 2)) / |x_j - x_i|`` of every directed edge.

    ``a_ij`` and ``b_ij`` are the (unsigned) angles at vertex ``i`` of the two triangles sharing edge ``ij``
    (Floater, "Mean value coordinates", CAGD 2003, Eq. 3.1); ``tan(a / 2) = |u x v| / (|u| |v| + u . v)``.

    Args:
        points: ``[V, D]`` float positions, ``D`` = 2 (a planar layout) or 3 (the surface).
        faces: ``[F, 3]`` int triangles.

    Returns:
        ``(weights, degenerate)``: ``[V, V]`` CSR matrix with ``weights[i, j] = w_ij >= 0`` (not symmetric) and a
        ``[V]`` bool mask of vertices with a zero or non-finite angle term or an edge shorter than ``1e-12`` times
        the mean edge length (their row is not a usable convex combination).
    """
    points = np.asarray(points, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    n = len(points)
    rows, cols, values = [], [], []
    edge = {k: points[faces[:, (k + 1) % 3]] - points[faces[:, k]] for k in range(3)}  # edge k: corner k -> k+1
    lengths = {k: np.linalg.norm(edge[k], axis=1) for k in range(3)}
    scale = np.mean(np.concatenate(list(lengths.values())))
    degenerate = np.zeros(n, dtype=bool)
    for k in range(3):
        # Corner k: vectors to the next (u) and previous (v) corners.
        u, v = edge[k], -edge[(k + 2) % 3]
        lu, lv = lengths[k], lengths[(k + 2) % 3]
        if points.shape[1] == 2:
            cross = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
        else:
            cross = np.linalg.norm(np.cross(u, v), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            half_tan = np.abs(cross) / (lu * lv + np.einsum("ij,ij->i", u, v))
            w_next, w_prev = half_tan / lu, half_tan / lv
        short = np.minimum(lu, lv) < _DEGENERATE_EDGE * scale
        bad = ~(half_tan > 0.0) | ~np.isfinite(w_next) | ~np.isfinite(w_prev) | short
        degenerate[faces[bad, k]] = True
        corner = faces[:, k]
        rows += [corner, corner]
        cols += [faces[:, (k + 1) % 3], faces[:, (k + 2) % 3]]
        values += [np.where(bad, 0.0, w_next), np.where(bad, 0.0, w_prev)]
    weights = sp.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )  # duplicates (the two triangles of an edge) are summed
    return weights, degenerate


@dataclass(frozen=True)
class ConvexCombinationMap:
    """Result of :func:`convex_combination_map`.

    Attributes:
        uv: ``[V, 2]`` float64 map; boundary vertices are where the input put them.
        fallback_vertices: interior vertices whose centroid-layout weights were degenerate (3-D mean-value or
            uniform weights used instead).
    """

    uv: np.ndarray
    fallback_vertices: int


def convex_combination_map(
    uv: np.ndarray, vertices: np.ndarray, faces: np.ndarray, boundary: np.ndarray
) -> ConvexCombinationMap:
    """Fold-free map with the boundary of ``uv`` fixed and mean-value weights of the ``uv`` layout inside.

    Solves ``x_i = sum_j lambda_ij x_j`` for the interior vertices, ``lambda_ij = w_ij / sum_k w_ik`` > 0 the
    normalised mean-value weights of ``uv`` (fallbacks: 3-D mean-value, then uniform; see the module docstring),
    by one sparse LU factorisation (the system is not symmetric).

    Args:
        uv: ``[V, 2]`` float64 layout to follow (e.g. the OT centroid map, possibly with flips). Its boundary
            loop must be a convex polygon traversed once (e.g. the unit square's sides) for the bijectivity
            guarantee.
        vertices: ``[V, 3]`` float positions of the disk mesh (for the fallback weights).
        faces: ``[F, 3]`` int triangles; boundary: ``[B]`` int boundary loop (kept fixed).

    Returns:
        :class:`ConvexCombinationMap`. A layout that is already fold-free and star-shaped everywhere comes back
        unchanged up to rounding.

    Raises:
        ValueError: if the shapes disagree.
    """
    uv = np.asarray(uv, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    n = len(uv)
    if uv.shape != (n, 2) or len(vertices) != n:
        raise ValueError(f"uv must be [V, 2] and vertices [V, 3] with the same V, got {uv.shape}, {np.shape(vertices)}")
    weights, degenerate = mean_value_weights(uv, faces)
    interior = np.ones(n, dtype=bool)
    interior[boundary] = False
    fallback = degenerate & interior
    if fallback.any():
        surface, surface_degenerate = mean_value_weights(vertices, faces)
        edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
        uniform = sp.csr_matrix((np.ones(2 * len(edges)), (np.concatenate([edges[:, 0], edges[:, 1]]),
                                                           np.concatenate([edges[:, 1], edges[:, 0]]))), shape=(n, n))
        uniform.data[:] = 1.0  # each edge once, whatever the number of its faces
        pick = sp.diags((fallback & ~surface_degenerate).astype(np.float64))
        last = sp.diags((fallback & surface_degenerate).astype(np.float64))
        keep = sp.diags((~fallback).astype(np.float64))
        weights = (keep @ weights + pick @ surface + last @ uniform).tocsr()
    row_sums = np.asarray(weights.sum(axis=1)).ravel()
    free = np.flatnonzero(interior)
    fixed = np.flatnonzero(~interior)
    # Rows of (D - W) restricted to the interior: D_ii x_i - sum_{j free} w_ij x_j = sum_{j fixed} w_ij x_j.
    system = (sp.diags(row_sums[free]) - weights[free][:, free]).tocsc()
    rhs = weights[free][:, fixed] @ uv[fixed]
    solve = spla.splu(system)
    out = uv.copy()
    out[free] = solve.solve(rhs)
    return ConvexCombinationMap(out, int(fallback.sum()))
