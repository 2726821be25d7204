"""Seamless spherical geometry images: the sphere unfolded onto the square by the octahedral map.

Praun & Hoppe, "Spherical parametrization and remeshing", SIGGRAPH 2003: a spherical parameterization is
resampled on a square grid through the unfolded octahedron; the square's border folds onto four half-edges of
the octahedron, so ``image[:, y, x]`` and its mirror ``image[:, y, W-1-x]`` on the top/bottom rows (and likewise
on the left/right columns) are the same surface point: the grid mesh closes up, with no cut. We use the
*equal-area* octahedral map (Clarberg, "Fast equal-area mapping of the (hemi)sphere using SIMD", JGT 2008), so
an area-preserving spherical parameterization gives an area-uniform geometry image (Praun & Hoppe project
radially, which over-samples the octahedron's vertices by up to ~3x).

Square coordinates are ``(u, v)`` in ``[0, 1]^2`` (``x``/column = ``u``, ``y``/row = ``v``), as in
:mod:`otcore.mesh.geometry_image`; the upper hemisphere (``z >= 0``) is the diamond ``|2u-1| + |2v-1| <= 1``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["octahedral_decode", "octahedral_encode", "resample_spherical_geometry_image"]


def octahedral_decode(uv: np.ndarray) -> np.ndarray:
    """Equal-area octahedral map ``[N, 2]`` in ``[0, 1]^2`` -> ``[N, 3]`` float64 unit vectors.

    The Jacobian is constant (``4 pi`` steradians over the unit square).
    """
    uv = np.asarray(uv, dtype=np.float64)
    p = 2.0 * uv - 1.0
    a, b = np.abs(p[:, 0]), np.abs(p[:, 1])
    lower = a + b > 1.0
    a, b = np.where(lower, 1.0 - np.abs(p[:, 1]), a), np.where(lower, 1.0 - np.abs(p[:, 0]), b)
    r = a + b  # 0 at the pole of the half, 1 on the equator
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.where(r > 0, 0.5 * np.pi * b / r, 0.0)
    z = np.where(lower, -1.0, 1.0) * (1.0 - r * r)
    sin_theta = r * np.sqrt(np.clip(2.0 - r * r, 0.0, None))
    x = np.where(p[:, 0] < 0, -1.0, 1.0) * sin_theta * np.cos(phi)
    y = np.where(p[:, 1] < 0, -1.0, 1.0) * sin_theta * np.sin(phi)
    out = np.column_stack([x, y, z])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def octahedral_encode(sphere: np.ndarray) -> np.ndarray:
    """Inverse of :func:`octahedral_decode`: ``[N, 3]`` unit vectors -> ``[N, 2]`` float64 in ``[0, 1]^2``."""
    s = np.asarray(sphere, dtype=np.float64)
    s = s / np.linalg.norm(s, axis=1, keepdims=True)
    r = np.sqrt(np.clip(1.0 - np.abs(s[:, 2]), 0.0, None))
    phi = np.arctan2(np.abs(s[:, 1]), np.abs(s[:, 0]))
    b = r * phi / (0.5 * np.pi)
    a = r - b
    lower = s[:, 2] < 0
    a, b = np.where(lower, 1.0 - b, a), np.where(lower, 1.0 - a, b)
    u = np.where(s[:, 0] < 0, -a, a)
    v = np.where(s[:, 1] < 0, -b, b)
    return 0.5 * (np.column_stack([u, v]) + 1.0)


def _locate(queries: np.ndarray, sphere: np.ndarray, faces: np.ndarray, k: int,
            tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """For each direction, the best of its ``k`` nearest faces (by centroid): ``(face [Q], weights [Q, 3])``."""
    centroids = sphere[faces].mean(1)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    _, cand = cKDTree(centroids).query(queries, k=min(k, len(faces)))
    cand = cand.reshape(len(queries), -1)  # [Q, k]
    a, b, c = (sphere[faces[cand, j]] for j in range(3))  # [Q, k, 3]
    s = queries[:, None, :]
    lam = np.stack([
        np.einsum("qkd,qkd->qk", s, np.cross(b, c)),
        np.einsum("qkd,qkd->qk", a, np.cross(s, c)),
        np.einsum("qkd,qkd->qk", a, np.cross(b, s)),
    ], axis=-1)  # [Q, k, 3], central-projection barycentrics (unnormalised)
    total = lam.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        bary = np.where(total > 0, lam / total, -np.inf)
    score = bary.min(-1)  # >= 0 inside
    best = score.argmax(1)
    rows = np.arange(len(queries))
    return cand[rows, best], np.where(score[rows, best, None] > -tol, bary[rows, best], np.nan)


def resample_spherical_geometry_image(
    vertices: np.ndarray, faces: np.ndarray, sphere: np.ndarray, resolution: int
) -> np.ndarray:
    """Sample a spherically parameterized surface on the ``resolution x resolution`` octahedral grid.

    Grid point ``(x, y)`` is the direction ``octahedral_decode((x, y) / (resolution - 1))``; the spherical
    triangle that contains it (central projection) gives barycentric weights for the 3D positions.

    Args:
        vertices: ``[V, 3]`` float 3D positions; faces: ``[F, 3]`` int; sphere: ``[V, 3]`` flip-free unit vectors.
        resolution: grid side ``H = W`` (``2^n + 1`` for mipmaps).

    Returns:
        ``geometry_image`` ``[3, H, W]`` float32 (row ``y`` is ``v``, column ``x`` is ``u``), seamless: mirrored
        border samples are equal.

    Raises:
        ValueError: if some direction lies in no spherical triangle (the map does not cover the sphere).
    """
    sphere = np.asarray(sphere, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    t = np.arange(resolution) / (resolution - 1)
    u, v = np.meshgrid(t, t)  # [H, W]: row = v, column = u
    queries = octahedral_decode(np.column_stack([u.ravel(), v.ravel()]))
    face, weights = _locate(queries, sphere, faces, 16)
    missing = np.flatnonzero(np.isnan(weights).any(1))
    if len(missing):
        face[missing], weights[missing] = _locate(queries[missing], sphere, faces, 256)
    missing = np.flatnonzero(np.isnan(weights).any(1))
    if len(missing):  # thin triangles whose centroids are far from the direction: test every face
        for start in range(0, len(missing), 32):
            chunk = missing[start:start + 32]
            face[chunk], weights[chunk] = _locate(queries[chunk], sphere, faces, len(faces), tol=1e-7)
        if np.isnan(weights).any():
            raise ValueError(f"{np.isnan(weights).any(1).sum()} grid directions lie in no spherical triangle")
    weights = np.clip(weights, 0.0, None)
    weights /= weights.sum(1, keepdims=True)
    positions = np.einsum("qk,qkd->qd", weights, np.asarray(vertices, dtype=np.float64)[faces[face]])
    return positions.reshape(resolution, resolution, 3).transpose(2, 0, 1).astype(np.float32)
