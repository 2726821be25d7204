"""Real spherical harmonics of 3DGS colours (degree <= 3, INRIA ``computeColorFromSH`` constants)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SH_C0", "eval_sh", "sh0_to_rgb"]

SH_C0 = 0.28209479177387814
"""Degree-0 real SH basis constant ``1 / (2 sqrt(pi))``: ``rgb = 0.5 + SH_C0 * sh_dc`` (3DGS convention)."""
_SH_C1 = 0.4886025119029199
_SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_SH_C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)  # fmt: skip


def sh0_to_rgb(sh_dc: Tensor) -> Tensor:
    """Colour of degree-0 SH coefficients: ``max(0, 0.5 + SH_C0 · sh_dc)`` (3DGS convention), same shape."""
    return torch.clamp_min(0.5 + SH_C0 * sh_dc, 0.0)


def _sh_basis(dirs: Tensor, degree: int) -> Tensor:
    """Real SH basis ``[..., (degree+1)²]`` at unit directions ``[..., 3]`` with the 3DGS signs and ordering."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            _SH_C2[0] * xy,
            _SH_C2[1] * yz,
            _SH_C2[2] * (2.0 * zz - xx - yy),
            _SH_C2[3] * xz,
            _SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _SH_C3[0] * y * (3.0 * xx - yy),
            _SH_C3[1] * xy * z,
            _SH_C3[2] * y * (4.0 * zz - xx - yy),
            _SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            _SH_C3[4] * x * (4.0 * zz - xx - yy),
            _SH_C3[5] * z * (xx - yy),
            _SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(sh: Tensor, dirs: Tensor, degree: int) -> Tensor:
    """View-dependent colour of SH coefficients, as INRIA's ``computeColorFromSH`` / gsplat's ``spherical_harmonics``.

    Parameters
    ----------
    sh : Tensor
        ``[N, K, 3]`` SH coefficients, ``K >= (degree + 1)²`` (``sh[:, 0]`` is ``sh_dc``; extra bands ignored).
    dirs : Tensor
        ``[N, 3]`` viewing directions (camera centre → mean), normalised here.
    degree : int
        SH degree in 0..3.

    Returns
    -------
    Tensor
        ``[N, 3]`` colours ``max(0, Σ_k Y_k(dir) sh[:, k] + 0.5)``.

    Raises
    ------
    ValueError
        If ``degree`` is outside 0..3 or ``sh`` has too few coefficients.
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be in 0..3, got {degree}")
    n_coef = (degree + 1) ** 2
    if sh.ndim != 3 or sh.shape[-1] != 3 or sh.shape[1] < n_coef:
        raise ValueError(f"sh must have shape [N, K >= {n_coef}, 3] for degree {degree}, got {list(sh.shape)}")
    basis = _sh_basis(F.normalize(dirs, dim=-1), degree)  # [N, n_coef]
    return torch.clamp_min(torch.einsum("nk,nkc->nc", basis, sh[:, :n_coef]) + 0.5, 0.0)

