"""Correspondence-preserving surface sampling of shape collections (input points for NeuralQAAD).

A collection of ``S`` meshes with shared connectivity ``faces`` ``[F, 3]`` and vertices ``[S, V, 3]`` is in
correspondence: vertex ``i`` is the same surface point in every shape. NeuralQAAD (Wagner & Schwanecke 2022)
compresses a dataset of such *consistent* point clouds; sampling each shape independently would destroy that
consistency. Here one set of surface locations, pairs ``(face f_k, barycentric b_k)``, is drawn once and applied
to every shape:

.. math::

    x_{s,k} = b_{k,0}\\, v_{s,f_k[0]} + b_{k,1}\\, v_{s,f_k[1]} + b_{k,2}\\, v_{s,f_k[2]},

so sample ``k`` is the same material point of every shape. Faces are drawn with probability ``w_f`` (by default
the mean over shapes of each shape's face-area fraction) and barycentrics uniformly in the triangle with the
square-root trick (Osada et al. 2002, "Shape distributions", Sec. 4.2), hence every shape is sampled
area-uniformly up to how much its face areas deviate from ``w_f`` (the deformation's area distortion).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "face_area_weights",
    "sample_face_barycentrics",
    "interpolate_barycentric",
    "sample_correspondent_surface",
    "shape_points",
]

AreaWeighting = Literal["mean_area", "mean_shape"]


def _check_collection(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(vertices)
    faces = np.asarray(faces)
    if vertices.ndim != 3 or vertices.shape[2] != 3 or vertices.shape[0] < 1 or vertices.shape[1] < 1:
        raise ValueError(f"vertices must be [S, V, 3] with S, V >= 1, got shape {vertices.shape}")
    if vertices.dtype.kind not in "fiu":
        raise ValueError(f"vertices must be numbers, got dtype {vertices.dtype}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] < 1 or faces.dtype.kind not in "iu":
        raise ValueError(f"faces must be a [F, 3] integer array with F >= 1, got {faces.dtype} of shape {faces.shape}")
    if faces.min() < 0 or faces.max() >= vertices.shape[1]:
        raise ValueError(f"face indices must lie in [0, {vertices.shape[1]}), got [{faces.min()}, {faces.max()}]")
    vertices = np.asarray(vertices, dtype=np.float64)
    if not np.isfinite(vertices).all():
        raise ValueError("vertices contain NaN or Inf coordinates")
    return vertices, np.asarray(faces, dtype=np.int64)


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count!r}")
    return int(count)


def _face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Triangle areas ``[..., F]`` of vertices ``[..., V, 3]`` float64."""
    a, b, c = (vertices[..., faces[:, k], :] for k in range(3))
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=-1)


def face_area_weights(
    vertices: np.ndarray, faces: np.ndarray, area_weighting: AreaWeighting = "mean_area"
) -> np.ndarray:
    """Face-selection probabilities ``[F]`` float64 (summing to 1) for a collection with shared connectivity.

    Args:
        vertices: ``[S, V, 3]`` float positions (any length unit).
        faces: ``[F, 3]`` int triangles shared by all shapes.
        area_weighting: ``"mean_area"`` (default): the mean over shapes of each shape's face-area *fraction*
            ``A_{s,f} / sum_f A_{s,f}``: invariant to per-shape rigid motion and scale, so articulated
            collections (a dancing performer, a galloping horse) are weighted by their actual surface.
            ``"mean_shape"``: the face areas of the mean shape ``mean_s vertices[s]``; cheaper to explain but
            shrinks parts that move between shapes (on the bundled ``crane-16`` the mean shape has 30% of a
            frame's area, and its weights are 2x further from each frame's own area distribution, in total
            variation, than ``"mean_area"``'s).

    Returns:
        ``[F]`` float64 probabilities.

    Raises:
        ValueError: bad shapes or dtypes, face indices out of range, NaN/Inf vertices, zero total area (of any
            shape for ``"mean_area"``, of the mean shape for ``"mean_shape"``), or an unknown ``area_weighting``.
    """
    vertices, faces = _check_collection(vertices, faces)
    if area_weighting == "mean_area":
        areas = _face_areas(vertices, faces)  # [S, F]
        totals = areas.sum(axis=1)
        degenerate = np.flatnonzero(~(totals > 0.0))
        if len(degenerate):
            raise ValueError(f"shapes {degenerate[:5].tolist()} have zero total surface area (degenerate)")
        weights = (areas / totals[:, None]).mean(axis=0)
    elif area_weighting == "mean_shape":
        weights = _face_areas(vertices.mean(axis=0), faces)
        if not weights.sum() > 0.0:
            raise ValueError("the mean shape has zero total surface area (degenerate)")
    else:
        raise ValueError(f"area_weighting must be 'mean_area' or 'mean_shape', got {area_weighting!r}")
    return weights / weights.sum()


def sample_face_barycentrics(weights: np.ndarray, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``count`` surface locations: faces by ``weights``, barycentrics uniform in the triangle.

    Uniform barycentrics by the square-root trick (Osada et al. 2002): with ``r1, r2 ~ U[0, 1)``,
    ``b = (1 - sqrt(r1), sqrt(r1) (1 - r2), sqrt(r1) r2)``.

    Args:
        weights: ``[F]`` float non-negative face probabilities (normalised here).
        count: number of samples ``N >= 1``.
        seed: seed of ``np.random.default_rng``; the same seed gives the same draw.

    Returns:
        ``(face_index [N] int64, barycentric [N, 3] float64)``, each barycentric row summing to 1.

    Raises:
        ValueError: ``count < 1``, or weights not a 1-D finite non-negative array with a positive sum.
    """
    count = _check_count(count)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or len(weights) < 1 or not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("weights must be a non-empty 1-D array of finite non-negative numbers")
    total = weights.sum()
    if not total > 0.0:
        raise ValueError("weights sum to zero (degenerate surface)")
    rng = np.random.default_rng(seed)
    face_index = rng.choice(len(weights), size=count, p=weights / total).astype(np.int64)
    r1 = np.sqrt(rng.random(count))
    r2 = rng.random(count)
    barycentric = np.stack([1.0 - r1, r1 * (1.0 - r2), r1 * r2], axis=1)
    return face_index, barycentric


def interpolate_barycentric(
    vertices: np.ndarray, faces: np.ndarray, face_index: np.ndarray, barycentric: np.ndarray
) -> np.ndarray:
    """Points at given ``(face, barycentric)`` locations of every shape of a collection.

    Args:
        vertices: ``[S, V, 3]`` (or ``[V, 3]``) float positions.
        faces: ``[F, 3]`` int triangles.
        face_index: ``[N]`` int indices into ``faces``.
        barycentric: ``[N, 3]`` float barycentric coordinates.

    Returns:
        ``[S, N, 3]`` (or ``[N, 3]``) float64 points:
        ``out[..., k, :] = sum_j barycentric[k, j] * vertices[..., faces[face_index[k], j], :]``.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    corners = np.asarray(faces, dtype=np.int64)[np.asarray(face_index, dtype=np.int64)]  # [N, 3]
    return np.einsum("...nkd,nk->...nd", vertices[..., corners, :], np.asarray(barycentric, dtype=np.float64))


def sample_correspondent_surface(
    vertices: np.ndarray,
    faces: np.ndarray,
    count: int,
    seed: int = 0,
    area_weighting: AreaWeighting = "mean_area",
) -> np.ndarray:
    """Area-uniform surface samples that stay in correspondence across a collection.

    One set of ``count`` locations ``(face, barycentric)`` is drawn (:func:`sample_face_barycentrics` with
    :func:`face_area_weights`) and the *same* locations are evaluated on every shape
    (:func:`interpolate_barycentric`). Shared locations keep sample ``k`` the same material point in every
    shape, i.e. the sampled collection stays consistent, which is NeuralQAAD's premise (Wagner & Schwanecke
    2022, "NeuralQAAD: An Efficient Differentiable Framework for High Resolution Point Cloud Compression").
    Each shape is then area-uniform up to the deformation's area distortion relative to the face weights.

    Args:
        vertices: ``[S, V, 3]`` float positions (any length unit; samples are in the same unit).
        faces: ``[F, 3]`` int triangles shared by all shapes.
        count: samples per shape ``N >= 1``.
        seed: seed of ``np.random.default_rng``; same inputs and seed give identical samples.
        area_weighting: how face areas are pooled over shapes, see :func:`face_area_weights`.

    Returns:
        ``[S, N, 3]`` float32 samples (computed in float64).

    Raises:
        ValueError: bad shapes or dtypes, face indices out of range, NaN/Inf vertices, ``count < 1``, or zero
            total surface area (degenerate).
    """
    count = _check_count(count)
    vertices, faces = _check_collection(vertices, faces)
    face_index, barycentric = sample_face_barycentrics(face_area_weights(vertices, faces, area_weighting), count, seed)
    return interpolate_barycentric(vertices, faces, face_index, barycentric).astype(np.float32)


def shape_points(
    vertices: np.ndarray,
    faces: np.ndarray | None,
    mode: str,
    count: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The point sets a collection is learned from: its vertices, or correspondent surface samples.

    Args:
        vertices: ``[S, V, 3]`` float positions.
        faces: ``[F, 3]`` int shared triangles, or ``None`` for a point-cloud collection.
        mode: ``"vertices"``: the vertices themselves (``N = V``; ``count`` must be ``None`` or ``V``);
            ``"surface"``: :func:`sample_correspondent_surface` with ``count`` samples (needs ``faces``).
        count: samples per shape for ``"surface"``.
        seed: sampling seed for ``"surface"``.

    Returns:
        ``[S, N, 3]`` float32 points, in correspondence across ``S``.

    Raises:
        ValueError: unknown ``mode``; ``"surface"`` without faces or without ``count``; ``"vertices"`` with a
            ``count`` other than ``V``; bad vertex array; the errors of :func:`sample_correspondent_surface`.
    """
    if mode == "vertices":
        vertices = np.asarray(vertices)
        if vertices.ndim != 3 or vertices.shape[2] != 3:
            raise ValueError(f"vertices must be [S, V, 3], got shape {vertices.shape}")
        if count is not None and count != vertices.shape[1]:
            raise ValueError(f"mode 'vertices' gives all {vertices.shape[1]} vertices, got count={count}")
        return np.ascontiguousarray(vertices, dtype=np.float32)
    if mode == "surface":
        if faces is None:
            raise ValueError("mode 'surface' needs faces; this collection is a point cloud (use mode 'vertices')")
        if count is None:
            raise ValueError("mode 'surface' needs a sample count")
        return sample_correspondent_surface(vertices, faces, count, seed)
    raise ValueError(f"mode must be 'vertices' or 'surface', got {mode!r}")
