"""Pinhole cameras in the OpenCV / COLMAP / gsplat convention and orbit cameras around a Gaussian scene."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Camera", "look_at", "orbit_cameras", "robust_frame"]


@dataclass(eq=False)
class Camera:
    """A pinhole camera in the OpenCV / COLMAP / gsplat convention.

    Attributes
    ----------
    viewmat : Tensor
        ``[4, 4]`` float32 world→camera rigid transform: ``x_cam = viewmat @ [x_world, 1]``, camera axes x right,
        y down, z forward (the viewing direction). Converted from numpy / lists on construction.
    K : Tensor
        ``[3, 3]`` float32 intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels; a point ``(x, y, z)`` in
        camera coordinates lands at pixel coordinates ``(fx x/z + cx, fy y/z + cy)``, where pixel ``(i, j)`` covers
        ``[i, i+1) × [j, j+1)`` (its centre is ``(i + 0.5, j + 0.5)``), so ``cx = width / 2`` is the image centre.
    width, height : int
        Image size in pixels (> 0).

    Raises
    ------
    ValueError
        On wrong shapes or a non-positive size.
    """

    viewmat: Tensor
    K: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        self.viewmat = torch.as_tensor(self.viewmat, dtype=torch.float32)
        self.K = torch.as_tensor(self.K, dtype=torch.float32)
        if tuple(self.viewmat.shape) != (4, 4):
            raise ValueError(f"viewmat must have shape [4, 4], got {list(self.viewmat.shape)}")
        if tuple(self.K.shape) != (3, 3):
            raise ValueError(f"K must have shape [3, 3], got {list(self.K.shape)}")
        self.width, self.height = int(self.width), int(self.height)
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size must be positive, got width={self.width}, height={self.height}")

    @property
    def center(self) -> Tensor:
        """``[3]`` camera centre in world coordinates, ``-Rᵀ t``."""
        r, t = self.viewmat[:3, :3], self.viewmat[:3, 3]
        return -(r.T @ t)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Camera:
        """A copy with ``viewmat`` and ``K`` on ``device`` (dtype stays float32 unless given)."""
        cam = Camera(self.viewmat, self.K, self.width, self.height)
        cam.viewmat = self.viewmat.to(device=device, dtype=dtype or self.viewmat.dtype)
        cam.K = self.K.to(device=device, dtype=dtype or self.K.dtype)
        return cam


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """World→camera ``[4, 4]`` float64 matrix (OpenCV axes) of a camera at ``eye`` looking at ``target``.

    The camera's y axis (down in the image) is the projection of ``-up``; ``up`` must not be parallel to the
    viewing direction (``ValueError``).
    """
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    norm = np.linalg.norm(forward)
    if not norm > 0:
        raise ValueError("eye and target coincide")
    forward /= norm
    right = np.cross(forward, up)
    rnorm = np.linalg.norm(right)
    if rnorm < 1e-9 * max(np.linalg.norm(up), 1e-300):
        raise ValueError("up is parallel to the viewing direction")
    right /= rnorm
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    viewmat = np.eye(4)
    viewmat[:3, :3] = rot
    viewmat[:3, 3] = -rot @ eye
    return viewmat


def _auto_up(extent: np.ndarray) -> np.ndarray:
    """The world axis whose (log) extent differs most from the other two: a flat object's normal, a tall one's axis.

    Its sign follows the usual capture conventions: ``-y`` when it is y (COLMAP / OpenCV worlds, y down, as the
    INRIA 3DGS scenes are), ``+z`` or ``+x`` otherwise (Blender / NeRF-synthetic worlds are z up).
    """
    log_ext = np.log(np.maximum(extent, 1e-12 * max(extent.max(), 1e-300)))
    score = [abs(log_ext[i] - 0.5 * (log_ext[(i + 1) % 3] + log_ext[(i + 2) % 3])) for i in range(3)]
    axis = int(np.argmax(score))
    up = np.zeros(3)
    up[axis] = -1.0 if axis == 1 else 1.0
    return up


def _weighted_percentiles(values: np.ndarray, weights: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """Per-column weighted percentiles of ``values`` ``[N, D]``: the value below which ``q %`` of the weight lies,
    each sample's weight centred on its value (midpoint rule), linearly interpolated between samples. Samples of
    weight 0 are left out (they would repeat a position of the cumulative weight)."""
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    out = np.empty((len(percentiles), values.shape[1]))
    total = weights.sum()
    for d in range(values.shape[1]):
        order = np.argsort(values[:, d], kind="stable")
        w = weights[order]
        position = (np.cumsum(w) - 0.5 * w) / total
        out[:, d] = np.interp(np.asarray(percentiles, dtype=np.float64) / 100.0, position, values[order, d])
    return out


def robust_frame(
    means: np.ndarray | Tensor,
    weights: np.ndarray | Tensor | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> tuple[np.ndarray, float, np.ndarray]:
    """Centre, radius and extent of a Gaussian scene that stray floaters do not move: what :func:`orbit_cameras`
    frames.

    The centre is the per-axis (weighted) median of ``means``, the extent the per-axis span between the
    (weighted) ``percentiles``, the radius half its diagonal. With ``weights`` (the opacities, say), a Gaussian
    counts in proportion to its weight: the faint floaters that training leaves around a capture (many, far, low
    opacity) then hold a small share of the weight, and the frame follows the opaque object; a plain bounding box,
    or unweighted percentiles once floaters are more than ``percentiles[0]`` % of the Gaussians, would frame them
    too. A degenerate frame (radius 0: one point, or weight on one point) falls back to the full extent, then to
    radius 1.

    Parameters
    ----------
    means : np.ndarray | Tensor
        ``[N, 3]`` finite Gaussian centres (N >= 1).
    weights : np.ndarray | Tensor, optional
        ``[N]`` finite non-negative weights (e.g. opacities); None or an all-zero vector: every Gaussian counts
        equally (``numpy.median`` and ``numpy.percentile``).
    percentiles : tuple[float, float]
        Lower and upper percentiles (0 <= lower < upper <= 100) that bound the extent per axis.

    Returns
    -------
    (np.ndarray, float, np.ndarray)
        ``[3]`` float64 centre, the radius, and the ``[3]`` float64 extent.

    Raises
    ------
    ValueError
        On an empty or non-``[N, 3]`` ``means``, non-finite means, weights of another length, negative or
        non-finite weights, or percentiles out of range.
    """
    pts = means.detach().cpu().double().numpy() if isinstance(means, Tensor) else np.asarray(means, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"means must have shape [N, 3], got {list(pts.shape)}")
    if len(pts) == 0:
        raise ValueError("cannot fit cameras to an empty scene (N = 0)")
    if not np.isfinite(pts).all():
        raise ValueError("means must be finite")
    lower, upper = (float(p) for p in percentiles)
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {percentiles}")
    w = None
    if weights is not None:
        w = weights.detach().cpu().double().numpy() if isinstance(weights, Tensor) else np.asarray(weights, np.float64)
        if w.shape != (len(pts),):
            raise ValueError(f"weights must have shape [{len(pts)}], got {list(w.shape)}")
        if not (np.isfinite(w).all() and (w >= 0).all()):
            raise ValueError("weights must be finite and non-negative")
        if not w.sum() > 0:
            w = None
    if w is None:
        centre = np.median(pts, axis=0)
        lo, hi = np.percentile(pts, [lower, upper], axis=0)
    else:
        centre, lo, hi = _weighted_percentiles(pts, w, [50.0, lower, upper])
    extent = hi - lo
    radius = 0.5 * float(np.linalg.norm(extent))
    if not radius > 0:  # a single point or a degenerate cloud: fall back to the full extent, then to 1
        extent = pts.max(0) - pts.min(0)
        radius = 0.5 * float(np.linalg.norm(extent)) or 1.0
    return centre, radius, extent


def orbit_cameras(
    means: np.ndarray | Tensor,
    n_views: int = 8,
    width: int = 128,
    height: int = 128,
    fov_deg: float = 50.0,
    elevation_deg: Sequence[float] = (20.0, -15.0),
    seed: int = 0,
    *,
    up: np.ndarray | Sequence[float] | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    margin: float = 1.0,
    weights: np.ndarray | Tensor | None = None,
) -> list[Camera]:
    """Cameras on an orbit around a Gaussian scene, looking at its centre, the object filling most of the frame.

    The centre, the object's radius ``R`` and its extent are :func:`robust_frame` of ``means``: the per-axis
    median, and half the diagonal of the box spanned by the ``percentiles`` of ``means`` per axis, each weighted
    by ``weights`` when given (pass the opacities: faint floaters then barely count). Cameras sit at distance
    ``margin · R / sin(fov/2)`` (the sphere of radius ``R`` just fits the shorter image side), at azimuths
    ``offset + 360° k / n_views`` around ``up`` and elevations cycling through ``elevation_deg`` (view ``k`` gets
    ``elevation_deg[k % len]``), so both sides and top/bottom are seen. ``offset`` is 0 for ``seed=0`` and drawn
    uniformly in ``[0, 360°/n_views)`` from ``numpy.random.default_rng(seed)`` otherwise: a different seed gives a
    held-out set of views. Deterministic.

    Parameters
    ----------
    means : np.ndarray | Tensor
        ``[N, 3]`` Gaussian centres in world units (N >= 1).
    n_views : int
        Number of cameras (>= 1).
    width, height : int
        Image size in pixels.
    fov_deg : float
        Field of view of the shorter image side in degrees, in (0, 180).
    elevation_deg : Sequence[float]
        Elevations above the orbit plane in degrees, each in (-90, 90), cycled over the views.
    seed : int
        Azimuth offset seed (see above).
    up : array-like, optional
        ``[3]`` orbit axis in world coordinates (the image's up direction). Default: the coordinate axis whose extent
        differs most from the other two (a flat object's normal, a tall object's long axis).
    percentiles : tuple[float, float]
        Lower and upper percentiles of ``means`` that define the object's extent.
    margin : float
        Distance multiplier (> 0); > 1 leaves more border.
    weights : np.ndarray | Tensor, optional
        ``[N]`` non-negative weight of each Gaussian in the centre and extent (:func:`robust_frame`); None:
        unweighted.

    Returns
    -------
    list[Camera]
        ``n_views`` cameras with ``K = [[f, 0, width/2], [0, f, height/2], [0, 0, 1]]``,
        ``f = min(width, height) / (2 tan(fov/2))``; the centre projects to the image centre.

    Raises
    ------
    ValueError
        On an empty or non-``[N, 3]`` ``means``, non-finite means, bad weights, or parameters out of range.
    """
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    elevations = [float(e) for e in elevation_deg]
    if not elevations or any(not -90.0 < e < 90.0 for e in elevations):
        raise ValueError(f"elevation_deg must be a non-empty sequence of angles in (-90, 90), got {elevation_deg}")
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got width={width}, height={height}")

    centre, radius, extent = robust_frame(means, weights, percentiles)
    half_fov = math.radians(fov_deg) / 2.0
    distance = margin * radius / math.sin(half_fov)

    up_vec = _auto_up(extent) if up is None else np.asarray(up, dtype=np.float64)
    if up_vec.shape != (3,) or not np.linalg.norm(up_vec) > 0:
        raise ValueError(f"up must be a non-zero [3] vector, got {up}")
    up_vec = up_vec / np.linalg.norm(up_vec)
    # an orthonormal basis (e1, e2) of the orbit plane
    helper = np.eye(3)[int(np.argmin(np.abs(up_vec)))]
    e1 = np.cross(up_vec, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up_vec, e1)

    offset = 0.0 if seed == 0 else float(np.random.default_rng(seed).uniform(0.0, 2.0 * math.pi / n_views))
    focal = min(width, height) / (2.0 * math.tan(half_fov))
    k_mat = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
    cameras = []
    for k in range(n_views):
        az = offset + 2.0 * math.pi * k / n_views
        el = math.radians(elevations[k % len(elevations)])
        direction = math.cos(el) * (math.cos(az) * e1 + math.sin(az) * e2) + math.sin(el) * up_vec
        eye = centre + distance * direction
        cameras.append(Camera(look_at(eye, centre, up_vec), k_mat, width, height))
    return cameras

