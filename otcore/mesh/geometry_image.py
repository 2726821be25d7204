"""Geometry images: a surface resampled on a regular grid over its square parameter domain, and its mipmaps.

Gu, Gortler, Hoppe, "Geometry Images", SIGGRAPH 2002; Neural Geometry Images with OT (Gao et al. 2025,
arXiv 2511.18679) store a low-resolution mipmap of an OT-parameterized geometry image and restore a mesh from it.

Mipmap filter: **vertex-preserving subsampling** (level k keeps every 2^k-th sample of the (2^n+1)^2 grid).
Positions are not colours: a low-pass filter averages samples from across a curved surface, which moves them off
it (convex regions shrink), and that bias adds straight to Chamfer/Hausdorff. Subsampling keeps every stored
sample exactly on the surface, each coarse grid is a sub-grid of the finer one (the corners and the square's
border, i.e. the cut, stay where they are), and the aliasing it risks is small because the OT map has already
spread the samples evenly over the surface's area.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from otcore.mesh.metrics import SurfaceDistances, surface_distances

__all__ = [
    "QuantizedImage",
    "resample_geometry_image",
    "quantize",
    "dequantize",
    "grid_faces",
    "geometry_image_to_mesh",
    "mipmap_pyramid",
    "restore_level",
    "quantized_pyramid",
    "restored_level_distances",
]


def resample_geometry_image(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, resolution: int) -> np.ndarray:
    """Sample a parameterized surface on a ``resolution x resolution`` grid over ``[0,1]^2``.

    Each grid point ``(u_x, v_y) = (x, y) / (resolution - 1)`` is located in the uv triangle that contains it and
    its 3D position is the barycentric interpolation of that triangle's vertices.

    Args:
        vertices: ``[V, 3]`` float, 3D positions.
        faces: ``[F, 3]`` int, triangles (of the cut mesh whose boundary is the square's border).
        uv: ``[V, 2]`` float, a bijective map onto ``[0,1]^2``.
        resolution: grid size ``H = W`` (``2^n + 1`` for mipmapping).

    Returns:
        ``geometry_image`` ``[3, H, W]`` float32, row ``y`` is ``v``, column ``x`` is ``u``.

    Raises:
        ValueError: if some grid point lies in no triangle (the map does not cover the square).
    """
    uv = np.asarray(uv, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    scale = resolution - 1
    corners = uv[faces] * scale  # [F,3,2] in pixel units
    lo = np.clip(np.floor(corners.min(1) - 1e-9), 0, scale).astype(np.int64)
    hi = np.clip(np.ceil(corners.max(1) + 1e-9), 0, scale).astype(np.int64)
    counts = (hi[:, 0] - lo[:, 0] + 1) * (hi[:, 1] - lo[:, 1] + 1)
    face = np.repeat(np.arange(len(faces)), counts)
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    width = (hi[:, 0] - lo[:, 0] + 1)[face]
    px = lo[face, 0] + offset % width
    py = lo[face, 1] + offset // width

    a, b, c = corners[face, 0], corners[face, 1], corners[face, 2]
    v0, v1 = b - a, c - a
    d = np.column_stack([px, py]).astype(np.float64) - a
    den = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        l1 = (d[:, 0] * v1[:, 1] - d[:, 1] * v1[:, 0]) / den
        l2 = (v0[:, 0] * d[:, 1] - v0[:, 1] * d[:, 0]) / den
    l0 = 1.0 - l1 - l2
    bary = np.column_stack([l0, l1, l2])
    # Smallest barycentric coordinate decides: the most interior triangle wins ties on shared edges.
    score = np.where(np.isfinite(bary).all(1), bary.min(1), -np.inf)
    pixel = py * resolution + px
    order = np.lexsort((-score, pixel))
    first = np.ones(len(order), dtype=bool)
    first[1:] = pixel[order][1:] != pixel[order][:-1]
    best = order[first]
    covered = np.zeros(resolution * resolution, dtype=bool)
    covered[pixel[best]] = score[best] > -1e-6
    if not covered.all():
        raise ValueError(f"{(~covered).sum()} grid points lie outside the parameterized surface")
    weights = np.clip(bary[best], 0.0, None)
    weights /= weights.sum(1, keepdims=True)
    positions = np.einsum("nk,nkd->nd", weights, np.asarray(vertices, dtype=np.float64)[faces[face[best]]])
    image = np.empty((resolution * resolution, 3))
    image[pixel[best]] = positions
    return image.reshape(resolution, resolution, 3).transpose(2, 0, 1).astype(np.float32)


@dataclass(frozen=True)
class QuantizedImage:
    """A geometry image quantised to ``bits`` per channel: ``value = offset + codes * scale`` per channel.

    Attributes:
        codes: ``[3, H, W]`` uint16.
        offset: ``[3]`` float64, per-channel minimum.
        scale: ``[3]`` float64, per-channel step (range / (2^bits - 1)).
        bits: bits per channel (<= 16).
    """

    codes: np.ndarray
    offset: np.ndarray
    scale: np.ndarray
    bits: int


def quantize(geometry_image: np.ndarray, bits: int = 16) -> QuantizedImage:
    """Uniform per-channel quantisation of a ``[3, H, W]`` float geometry image to ``bits`` (<= 16) bits.

    Raises:
        ValueError: if ``bits`` is outside ``1..16`` or the image is not finite.
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    image = np.asarray(geometry_image, dtype=np.float64)
    if not np.isfinite(image).all():
        raise ValueError("geometry image has non-finite values")
    offset = image.min(axis=(1, 2))
    span = image.max(axis=(1, 2)) - offset
    scale = np.where(span > 0, span / (2**bits - 1), 1.0)
    codes = np.rint((image - offset[:, None, None]) / scale[:, None, None]).astype(np.uint16)
    return QuantizedImage(codes, offset, scale, bits)


def dequantize(codes: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantize`: ``[3, H, W]`` uint16 codes -> float32 positions."""
    return (np.asarray(offset)[:, None, None] + codes.astype(np.float64) * np.asarray(scale)[:, None, None]).astype(
        np.float32
    )


def grid_faces(height: int, width: int) -> np.ndarray:
    """Triangulation of a ``height x width`` grid of row-major vertex indices: ``[2 (H-1)(W-1), 3]`` int64.

    Each quad is split along the diagonal from its lower-left to upper-right sample, counter-clockwise in (u, v).
    """
    idx = np.arange(height * width).reshape(height, width)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return np.concatenate([np.column_stack([a, b, d]), np.column_stack([a, d, c])])


def geometry_image_to_mesh(geometry_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid triangulation of a ``[3, H, W]`` geometry image: vertices ``[H W, 3]`` float32, faces ``[F, 3]`` int64."""
    _, height, width = geometry_image.shape
    return geometry_image.reshape(3, -1).T.copy(), grid_faces(height, width)


def mipmap_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Vertex-preserving mipmap pyramid of a ``[C, 2^n+1, 2^n+1]`` image (see module docstring for the filter).

    Returns:
        ``levels`` arrays, level ``k`` of shape ``[C, 2^(n-k)+1, 2^(n-k)+1]``, same dtype as ``image``.

    Raises:
        ValueError: if the image side is not ``2^n + 1`` or ``levels`` exceeds ``n + 1``.
    """
    side = image.shape[-1]
    n = int(round(np.log2(side - 1))) if side > 1 else -1
    if image.shape[-2] != side or side < 2 or 2**n + 1 != side:
        raise ValueError(f"mipmaps need a square (2^n+1)-sided image, got {image.shape[-2:]}")
    if not 1 <= levels <= n + 1:
        raise ValueError(f"a {side}x{side} image has at most {n + 1} levels, asked for {levels}")
    return [np.ascontiguousarray(image[:, :: 2**k, :: 2**k]) for k in range(levels)]


def restore_level(level_image: np.ndarray, resolution: int) -> np.ndarray:
    """Bilinear upsampling of a coarse ``[3, h, w]`` geometry image back to ``[3, resolution, resolution]`` float32.

    With ``align_corners=True`` a (2^m+1) grid maps onto the (2^n+1) grid sample-for-sample, so the coarse samples
    are reproduced exactly and the new ones lie on the bilinear patches between them.
    """
    tensor = torch.from_numpy(np.asarray(level_image, dtype=np.float32))[None]
    up = torch.nn.functional.interpolate(tensor, size=(resolution, resolution), mode="bilinear", align_corners=True)
    return up[0].numpy()


def quantized_pyramid(geometry_image: np.ndarray, bits: int, levels: int) -> tuple[QuantizedImage, list[np.ndarray]]:
    """The stored form of a geometry image: :func:`quantize` to ``bits``, then :func:`mipmap_pyramid` of the codes.

    Returns:
        The quantisation (``offset``, ``scale`` dequantise every level) and the ``levels`` uint16 code images
        ``[3, R_k, R_k]``, finest first.

    Raises:
        ValueError: from :func:`quantize` or :func:`mipmap_pyramid`.
    """
    quantized = quantize(geometry_image, bits)
    return quantized, mipmap_pyramid(quantized.codes, levels)


def restored_level_distances(
    codes: np.ndarray,
    quantized: QuantizedImage,
    resolution: int,
    source_vertices: np.ndarray,
    source_faces: np.ndarray,
    samples: int,
    seed: int,
    restore: Callable[[np.ndarray, int], np.ndarray] = restore_level,
) -> SurfaceDistances:
    """How far one stored level is from the source surface: dequantise, ``restore`` to ``resolution``,
    triangulate the grid (:func:`geometry_image_to_mesh`) and measure :func:`otcore.mesh.metrics.surface_distances`.

    Args:
        codes: ``[3, R_k, R_k]`` uint16 codes of one level of :func:`quantized_pyramid`.
        quantized: that pyramid's quantisation (``offset``, ``scale``).
        resolution: side of the finest level (``2^n + 1``).
        source_vertices, source_faces: ``[V, 3]`` float64 / ``[F, 3]`` int64 surface measured against.
        samples, seed: area-uniform samples per surface and their seed.
        restore: ``(level_image [3, h, w] float32, resolution) -> [3, resolution, resolution]``; default
            :func:`restore_level` (bilinear), or e.g. a bound :func:`otcore.mesh.neural_restoration.restore_neural`.

    Returns:
        :class:`~otcore.mesh.metrics.SurfaceDistances` (Chamfer-L2, Hausdorff, in the units of the vertices).
    """
    restored = restore(dequantize(codes, quantized.offset, quantized.scale), resolution)
    restored_vertices, restored_faces = geometry_image_to_mesh(restored)
    return surface_distances(restored_vertices, restored_faces, source_vertices, source_faces, samples, seed)
