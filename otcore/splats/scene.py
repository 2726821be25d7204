"""A Gaussian scene's parameters as arrays and tensors: covariances, the renderer's tensor dict, rendering it.

A scene is the 3DGS parameter set (Kerbl et al. 2023): ``means [N, 3]``, ``scales [N, 3]`` (activated),
``quats [N, 4]`` (``w x y z``), ``opacities [N]`` (activated), ``sh_dc [N, 3]`` and ``sh_rest [N, K, 3]``
(``K = (d+1)² - 1``). Readers and writers of scene files live in ``storage``; this module takes their arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from otcore.splats.cameras import Camera
from otcore.splats.rasterizer import render

__all__ = ["covariances", "quats_to_rotations", "render_scene", "scene_tensors"]


def quats_to_rotations(quats: np.ndarray) -> np.ndarray:
    """Rotation matrices of quaternions ``w x y z`` (normalised here), as ``build_rotation`` of the INRIA code.

    Args:
        quats: ``[N, 4]`` float, ``w x y z``, non-zero norm.

    Returns:
        ``[N, 3, 3]`` float64 rotation matrices ``R`` (``R @ v`` rotates a column vector ``v``).
    """
    q = np.asarray(quats, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    r = np.empty((len(q), 3, 3))
    r[:, 0, 0] = 1 - 2 * (y * y + z * z)
    r[:, 0, 1] = 2 * (x * y - w * z)
    r[:, 0, 2] = 2 * (x * z + w * y)
    r[:, 1, 0] = 2 * (x * y + w * z)
    r[:, 1, 1] = 1 - 2 * (x * x + z * z)
    r[:, 1, 2] = 2 * (y * z - w * x)
    r[:, 2, 0] = 2 * (x * z - w * y)
    r[:, 2, 1] = 2 * (y * z + w * x)
    r[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return r


def covariances(scales: np.ndarray, quats: np.ndarray) -> np.ndarray:
    """Covariance matrices ``Σ = R diag(s²) Rᵀ`` (Kerbl et al. 2023, eq. 6), computed in float64.

    Args:
        scales: ``[N, 3]`` activated scales ``s`` (world units).
        quats: ``[N, 4]`` quaternions ``w x y z`` of ``R`` (normalised here).

    Returns:
        ``[N, 3, 3]`` float64, exactly symmetric positive semi-definite, in squared world units.
    """
    rotations = quats_to_rotations(quats)
    s2 = np.asarray(scales).astype(np.float64) ** 2
    cov = np.einsum("nij,nj,nkj->nik", rotations, s2, rotations)
    return 0.5 * (cov + cov.transpose(0, 2, 1))  # exactly symmetric, not just to rounding


def scene_tensors(
    means: np.ndarray,
    scales: np.ndarray,
    quats: np.ndarray,
    opacities: np.ndarray,
    sh_dc: np.ndarray,
    sh_rest: np.ndarray,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """A scene's parameters as the tensor dict of :func:`render_scene` and the fine-tuning.

    Args:
        means, scales, quats, opacities, sh_dc, sh_rest: the scene's arrays (shapes in the module docstring).
        device, dtype: of the returned tensors.

    Returns:
        ``means [N, 3]``, ``quats [N, 4]`` (unit norm, ``w x y z``), ``scales [N, 3]``, ``opacities [N]``,
        ``sh_dc [N, 3]``, ``sh_rest [N, K, 3]``, all ``dtype`` on ``device``. Fresh tensors (safe to set
        ``requires_grad`` on).

    Raises:
        ValueError: if the scene is empty.
    """
    n = len(means)
    if n == 0:
        raise ValueError("the scene is empty (N = 0 Gaussians)")

    def conv(a: np.ndarray) -> Tensor:
        return torch.tensor(np.asarray(a), dtype=dtype, device=device)

    return {
        "means": conv(means),
        "quats": F.normalize(conv(quats), dim=-1),
        "scales": conv(scales),
        "opacities": conv(opacities),
        "sh_dc": conv(sh_dc),
        "sh_rest": conv(sh_rest).reshape(n, -1, 3),
    }


def render_scene(params: Mapping[str, Tensor], camera: Camera, **kwargs: Any) -> Tensor | tuple[Tensor, Tensor]:
    """:func:`render` of a :func:`scene_tensors`-style dict, colours from ``sh_dc`` (+ ``sh_rest`` if present).

    The SH degree is that of ``sh_rest`` (``K = (d+1)² - 1`` coefficients; 0 without it). ``kwargs`` go to
    :func:`render`. Raises ``ValueError`` for a missing key or a ``sh_rest`` size that is no SH degree.
    """
    missing = [k for k in ("means", "quats", "scales", "opacities", "sh_dc") if k not in params]
    if missing:
        raise ValueError(f"params lacks {missing}")
    sh_dc = params["sh_dc"]
    sh_rest = params.get("sh_rest")
    k_rest = 0 if sh_rest is None else sh_rest.shape[1]
    degree = math.isqrt(k_rest + 1) - 1
    if (degree + 1) ** 2 != k_rest + 1:
        raise ValueError(f"sh_rest must have (d+1)^2 - 1 coefficients per channel, got {k_rest}")
    sh = sh_dc[:, None, :] if k_rest == 0 else torch.cat([sh_dc[:, None, :], sh_rest], dim=1)
    return render(
        params["means"], params["quats"], params["scales"], params["opacities"], sh, camera, sh_degree=degree,
        **kwargs,
    )  # fmt: skip
