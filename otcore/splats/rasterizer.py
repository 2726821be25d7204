"""Differentiable 3D Gaussian Splatting renderer in plain torch.

The renderer follows the reference 3DGS rasteriser (Kerbl, Kopanas, Leimkühler, Drettakis 2023, "3D Gaussian
Splatting for Real-Time Radiance Field Rendering", ``graphdeco-inria/diff-gaussian-rasterization``) and gsplat's
conventions (Ye et al. 2024, "gsplat: An Open-Source Library for Gaussian Splatting", ``nerfstudio-project/gsplat``,
``gsplat.rasterization`` with ``rasterize_mode="classic"``):

1. **Projection** (EWA splatting, Zwicker, Pfister, van Baar, Gross 2002, "EWA Splatting"): world→camera with the
   ``viewmat`` (OpenCV camera: x right, y down, z forward), pinhole intrinsics ``K``, the 2D covariance
   ``Σ2D = J W Σ Wᵀ Jᵀ + eps2d·I`` with the perspective Jacobian ``J`` evaluated at the mean (its ``x/z``,
   ``y/z`` clamped to 1.3× the half field of view as gsplat and INRIA do) and the ``eps2d = 0.3`` px² low-pass
   dilation. The projected mean is ``K (x/z, y/z, 1)``; pixel ``(i, j)`` (column, row) has its centre at
   ``(i + 0.5, j + 0.5)``.
2. **Culling**: depth outside ``(near, far)``, non-positive ``det Σ2D``, opacity below 1/255 and splats whose
   bounding box misses the image are dropped. The box is gsplat's opacity-aware one:
   ``r = ceil(e·sqrt(Σ2D_xx)), ceil(e·sqrt(Σ2D_yy))`` with ``e = min(3.33, sqrt(2 ln(255·opacity)))``, outside
   which every pixel's alpha is below 1/255 (so tiling never changes the image).
3. **Tiles**: each splat is paired with every ``tile_size``² tile its box touches; the pairs are sorted by
   (tile, depth) with one ``torch.sort`` on a combined integer key (gsplat's ``isect_tiles``); depth is the camera
   ``z`` of the mean, and Gaussians at exactly equal depth keep their input order (stable sort).
4. **Compositing** per pixel, front to back: ``alpha_i = min(0.99, o_i exp(-½ dᵀ Σ2D⁻¹ d))``, splats with
   ``alpha_i < 1/255`` skipped (given ``alpha = exp(-30) ~ 1e-13`` instead of 0: ``exp`` is several times slower
   on CPUs for ``-inf`` or underflowing arguments, and 1e-13 is far below float32 resolution),
   ``T_i = Π_{j<i} (1 - alpha_j)``, and — as in the INRIA kernel — compositing stops *before* the splat that would
   bring ``T`` below 1e-4. Because ``T`` only decreases, that stop is exactly the prefix
   ``Π_{j≤i}(1 - alpha_j) >= 1e-4``, so it is evaluated in a vectorised way with a cumulative product.
   ``C = Σ c_i alpha_i T_i + T_final · background`` and the returned alpha is ``1 - T_final``.

Tiles are processed in batches padded to the largest splat count of the batch (tiles are ordered by count first, so
padding is small); each batch holds at most ``max_batch_elems`` (pixel, splat) pairs, and the exponents
``log o - ½ dᵀ Σ2D⁻¹ d`` of a batch are one matrix product (they are quadratic polynomials in the pixel
coordinates). When autograd is on, each batch is wrapped in :func:`torch.utils.checkpoint.checkpoint`, so the
backward pass recomputes the batch instead of keeping its ``[tiles, pixels, splats]`` intermediates: memory stays
bounded by one batch. The image is differentiable w.r.t. colours / SH coefficients, opacities, means, scales and
quaternions (not the camera); the alpha thresholds, the 0.99 clamp and the early stop are piecewise constant, as in
every 3DGS renderer.

Colours: either per-Gaussian values ``[N, D]`` (rendered as they are) or SH coefficients ``[N, (d+1)², 3]`` with
``sh_degree=d`` (``d <= 3``), evaluated in the direction from the camera centre to the mean with the 3DGS basis
constants, then ``rgb = max(0, sh + 0.5)`` (INRIA ``computeColorFromSH``; gsplat clamps the same way).

``backend="gsplat"`` (or ``"auto"`` with CUDA tensors and gsplat importable) calls ``gsplat.rasterization`` instead;
gsplat clamps alpha at 0.999 instead of 0.99 and stops at ``T <= 1e-4``, so its images differ very slightly.

Cameras: :mod:`otcore.splats.cameras`; colours: :mod:`otcore.splats.spherical_harmonics`; image metrics:
:mod:`otcore.splats.image_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from otcore.splats.cameras import Camera
from otcore.splats.spherical_harmonics import _sh_basis, eval_sh

__all__ = ["ALPHA_MAX", "ALPHA_MIN", "T_MIN", "Backend", "FrozenGeometryView", "hit_counts", "render"]

ALPHA_MIN = 1.0 / 255.0
"""Splats with ``alpha`` below this are skipped per pixel (INRIA / gsplat)."""
ALPHA_MAX = 0.99
"""Per-splat alpha clamp of the INRIA rasteriser (gsplat uses 0.999)."""
T_MIN = 1e-4
"""Compositing stops before a splat that would bring the transmittance below this (INRIA)."""
_LOG_ALPHA_MIN = math.log(ALPHA_MIN)
_LOG_ALPHA_MAX = math.log(ALPHA_MAX)
_EXTEND_MAX = 3.33  # gsplat's cap on the box half-size in standard deviations

Backend = Literal["auto", "torch", "gsplat"]


# ---------------------------------------------------------------------------------------------------------------------
# rendering


def _quat_to_rotmat(quats: Tensor) -> Tensor:
    """``[N, 3, 3]`` rotations of ``[N, 4]`` quaternions ``w x y z`` (normalised here)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )  # fmt: skip
    return rot.reshape(-1, 3, 3)


@dataclass
class _Projected:
    ids: Tensor  # [M] int64 indices of the visible Gaussians
    means2d: Tensor  # [M, 2] pixel coordinates
    conics: Tensor  # [M, 3] (a, b, c): sigma = 0.5 (a dx² + c dy²) + b dx dy
    opacities: Tensor  # [M]
    depths: Tensor  # [M]
    radii: Tensor  # [M, 2] int64 box half-sizes in pixels


def _project(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, camera: Camera, near: float, far: float,
    eps2d: float,
) -> _Projected:  # fmt: skip
    """EWA projection of all Gaussians (Zwicker et al. 2002; gsplat ``fully_fused_projection``) and culling."""
    dtype = means.dtype
    viewmat = camera.viewmat.to(device=means.device, dtype=dtype)
    k_mat = camera.K.to(device=means.device, dtype=dtype)
    width, height = camera.width, camera.height
    rot_w2c, trans = viewmat[:3, :3], viewmat[:3, 3]
    mc = means @ rot_w2c.T + trans  # [N, 3]
    x, y, z = mc.unbind(-1)
    valid = (z > near) & (z < far) & (opacities >= ALPHA_MIN)
    # cull early: everything below works on the candidates only
    cand = torch.nonzero(valid).squeeze(1)
    x, y, z = x[cand], y[cand], z[cand]
    fx, fy, cx, cy = k_mat[0, 0], k_mat[1, 1], k_mat[0, 2], k_mat[1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx = z * torch.clamp(x / z, min=-lim_x_neg, max=lim_x_pos)
    ty = z * torch.clamp(y / z, min=-lim_y_neg, max=lim_y_pos)
    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], -1).reshape(-1, 2, 3)
    # Σ_cam = (W R S)(W R S)ᵀ, Σ2D = (J W R S)(J W R S)ᵀ: exactly symmetric PSD
    m3 = (rot_w2c @ _quat_to_rotmat(quats[cand])) * scales[cand, None, :]  # [M, 3, 3]
    jm = jac @ m3  # [M, 2, 3]
    cov_a = (jm[:, 0] * jm[:, 0]).sum(-1) + eps2d
    cov_b = (jm[:, 0] * jm[:, 1]).sum(-1)
    cov_c = (jm[:, 1] * jm[:, 1]).sum(-1) + eps2d
    # det Σ2D without the cancellation of a·c - b² (float32 loses ~1e-3 of it on elongated splats): with rows r0, r1
    # of J W R S, det(A Aᵀ + εI) = |r0 × r1|² + ε (|r0|² + |r1|²) + ε² (Cauchy–Binet)
    det = torch.linalg.cross(jm[:, 0], jm[:, 1]).square().sum(-1) + eps2d * (cov_a + cov_c - eps2d)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    op = opacities[cand]
    with torch.no_grad():
        extend = torch.clamp_max(torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_MIN) / ALPHA_MIN)), _EXTEND_MAX)
        rx = torch.ceil(extend * torch.sqrt(cov_a.clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(cov_c.clamp_min(0)))
        mx, my = means2d[:, 0], means2d[:, 1]
        keep = (
            (det > 0)
            & torch.isfinite(mx) & torch.isfinite(my)
            & (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        )  # fmt: skip
        sel = torch.nonzero(keep).squeeze(1)
    det = det[sel]
    conics = torch.stack([cov_c[sel] / det, -cov_b[sel] / det, cov_a[sel] / det], -1)
    return _Projected(
        ids=cand[sel],
        means2d=means2d[sel],
        conics=conics,
        opacities=op[sel],
        depths=z[sel].detach(),
        radii=torch.stack([rx[sel], ry[sel]], -1).long(),
    )


def _tile_batch(
    features: Tensor, tile_xy: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor,
    valid: Tensor,
) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing of one batch of ``B`` tiles of ``P`` pixels and ``S`` (padded) splats each.

    ``features [P, 6]`` are ``(u², v², uv, u, v, 1)`` of the pixel centres relative to the tile centre,
    ``tile_xy [B, 2]`` the tile centres in pixel coordinates; ``means2d [B, S, 2]``, ``conics [B, S, 3]``,
    ``opacities [B, S]``, ``colors [B, S, D]`` describe the depth-sorted splats of each tile and ``valid [B, S]``
    marks the real ones. ``log(o) - ½ dᵀ Σ2D⁻¹ d`` is a quadratic polynomial in ``(u, v)``, so all
    (pixel, splat) exponents of a tile are one matrix product ``features @ coef``; tile-centred coordinates
    (``|u|, |v| <= tile_size / 2``) keep its float32 cancellation error ~1e-5 on the exponents that matter.

    Returns the colour ``[B, P, D]`` (without background) and the accumulated alpha ``[B, P]``.
    """
    mx = means2d[..., 0] - tile_xy[:, None, 0]  # [B, S] mean relative to the tile centre
    my = means2d[..., 1] - tile_xy[:, None, 1]
    a, b, c = conics.unbind(-1)
    const = torch.log(opacities) - (0.5 * a * mx * mx + 0.5 * c * my * my + b * mx * my)
    coef = torch.stack([-0.5 * a, -0.5 * c, -b, a * mx + b * my, c * my + b * mx, const], dim=1)  # [B, 6, S]
    off = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, -1e20], dtype=coef.dtype, device=coef.device)
    coef = torch.where(valid[:, None, :], coef, off[None, :, None])  # padding: alpha = exp(-1e20) = 0
    log_alpha = features @ coef  # [B, P, S]: log(o) - sigma
    # skip alpha < 1/255 (exp(-30) ~ 1e-13 stands in for 0: exp of -inf or of denormal results is slow on CPUs),
    # clamp alpha at 0.99
    alpha = torch.exp(F.threshold(log_alpha, _LOG_ALPHA_MIN, -30.0).clamp_max_(_LOG_ALPHA_MAX))
    one_minus = 1.0 - alpha
    trans_incl = torch.cumprod(one_minus, dim=-1)  # T after each splat
    # alpha_i T_i with T_i = T_incl_i / (1 - alpha_i), stopped before the splat that brings T below 1e-4
    weights = F.threshold(trans_incl, T_MIN, 0.0) * alpha / one_minus
    out = weights @ torch.cat([colors, torch.ones_like(colors[..., :1])], dim=-1)  # [B, P, D + 1]
    return out[..., :-1], out[..., -1]


def _check_inputs(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                  sh_degree: int | None) -> None:  # fmt: skip
    if means.ndim != 2 or means.shape[1] != 3:
        raise ValueError(f"means must have shape [N, 3], got {list(means.shape)}")
    n = means.shape[0]
    if n == 0:
        raise ValueError("cannot render an empty scene (N = 0 Gaussians)")
    for name, t, shape in (("quats", quats, (n, 4)), ("scales", scales, (n, 3)), ("opacities", opacities, (n,))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {list(shape)} for N = {n} Gaussians, got {list(t.shape)}")
    if sh_degree is None:
        if colors.ndim != 2 or colors.shape[0] != n or colors.shape[1] < 1:
            raise ValueError(f"colors must have shape [N={n}, D] (or pass sh_degree for SH), got {list(colors.shape)}")
    else:
        k = (sh_degree + 1) ** 2
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree must be in 0..3, got {sh_degree}")
        if colors.ndim != 3 or colors.shape[0] != n or colors.shape[1] < k or colors.shape[2] != 3:
            raise ValueError(
                f"SH colors must have shape [N={n}, K >= {k}, 3] for sh_degree {sh_degree}, got {list(colors.shape)}"
            )
    tensors = (means, quats, scales, opacities, colors)
    if len({t.device for t in tensors}) != 1:
        raise ValueError("means, quats, scales, opacities and colors must be on the same device")
    if any(not t.is_floating_point() for t in tensors):
        raise ValueError("means, quats, scales, opacities and colors must be floating-point tensors")


def _gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except (ImportError, OSError, RuntimeError):  # not installed, or a broken CUDA extension build
        return False
    return True


def render(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    camera: Camera,
    *,
    sh_degree: int | None = None,
    background: Sequence[float] | Tensor | None = None,
    tile_size: int | None = None,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    backend: Backend = "auto",
    return_alpha: bool = False,
    max_batch_elems: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Render Gaussians with 3DGS EWA splatting (Kerbl et al. 2023; Zwicker et al. 2002) — see the module docstring.

    Vectorised torch: no Python loop per Gaussian or per pixel (one loop over batches of tiles). Works on CPU and
    CUDA tensors, in float32 or float64: the dtype of ``means``, to which the other inputs and the camera are cast.

    Parameters
    ----------
    means : Tensor
        ``[N, 3]`` centres, world units.
    quats : Tensor
        ``[N, 4]`` rotations ``w x y z``, need not be normalised (normalised here, as gsplat does).
    scales : Tensor
        ``[N, 3]`` activated standard deviations along the principal axes (world units, > 0).
    opacities : Tensor
        ``[N]`` activated opacities in [0, 1].
    colors : Tensor
        ``[N, D]`` colours (any D channels) if ``sh_degree`` is None, else ``[N, K, 3]`` SH coefficients with
        ``K >= (sh_degree + 1)²`` (``colors[:, 0]`` is ``sh_dc``; gsplat's layout).
    camera : Camera
        Pinhole camera (OpenCV convention); the image is ``camera.height × camera.width``.
    sh_degree : int, optional
        SH degree 0..3 to evaluate (view direction: camera centre → mean), then ``rgb = max(0, sh + 0.5)``.
    background : sequence of float or Tensor, optional
        ``[D]`` background colour composited with the final transmittance; default zeros.
    tile_size : int, optional
        Tile side in pixels. Default: 8 for the torch backend (fastest on CPUs: fewer wasted (pixel, splat) pairs;
        the image does not depend on it beyond float rounding), 16 for gsplat (its tested value, as INRIA).
    near, far : float
        Gaussians with camera depth ``z`` outside ``(near, far)`` are culled (world units).
    eps2d : float
        Low-pass dilation added to the diagonal of the 2D covariance, px² (0.3 as INRIA / gsplat).
    backend : {"auto", "torch", "gsplat"}
        ``"torch"``: this renderer. ``"gsplat"``: ``gsplat.rasterization`` (needs gsplat and CUDA tensors).
        ``"auto"``: gsplat when the tensors are on CUDA and gsplat imports, else torch.
    return_alpha : bool
        Also return the accumulated alpha ``1 - T_final``.
    max_batch_elems : int, optional
        Upper bound on (pixel, splat) pairs per tile batch of the torch backend; a single tile exceeding it is still
        processed whole. Default: 2^18 on the CPU (~1 MiB per float32 intermediate: a batch stays in the caches,
        2-4x faster than large batches), 2^24 on other devices.

    Returns
    -------
    Tensor or (Tensor, Tensor)
        Image ``[H, W, D]`` (dtype of ``means``, not clamped) and, with ``return_alpha``, alpha ``[H, W]`` in [0, 1].

    Raises
    ------
    ValueError
        On wrong shapes, an empty scene (N = 0), mixed devices, a bad ``sh_degree``/``tile_size``/``background``, or
        an unknown backend.
    RuntimeError
        If ``backend="gsplat"`` and gsplat cannot be imported or the tensors are not on CUDA.
    """
    _check_inputs(means, quats, scales, opacities, colors, sh_degree)
    if backend not in ("auto", "torch", "gsplat"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'gsplat', got {backend!r}")
    device, dtype = means.device, means.dtype
    quats, scales, opacities, colors = (t.to(dtype) for t in (quats, scales, opacities, colors))
    n_channels = 3 if sh_degree is not None else colors.shape[1]
    if background is None:
        bg = torch.zeros(n_channels, device=device, dtype=dtype)
    else:
        bg = torch.as_tensor(background, dtype=dtype, device=device).reshape(-1)
        if bg.shape[0] != n_channels:
            raise ValueError(f"background must have {n_channels} channels, got {list(bg.shape)}")

    use_gsplat = backend == "gsplat" or (backend == "auto" and means.is_cuda and _gsplat_available())
    if tile_size is None:
        tile_size = 16 if use_gsplat else 8
    if max_batch_elems is None:
        max_batch_elems = 1 << 18 if device.type == "cpu" else 1 << 24
    if tile_size < 1:
        raise ValueError(f"tile_size must be >= 1, got {tile_size}")
    if use_gsplat:
        image, alpha = _render_gsplat(
            means, quats, scales, opacities, colors, camera, sh_degree, bg, tile_size, near, far, eps2d
        )
    else:
        image, alpha = _render_torch(
            means, quats, scales, opacities, colors, camera, sh_degree, bg, tile_size, near, far, eps2d,
            max_batch_elems,
        )  # fmt: skip
    return (image, alpha) if return_alpha else image


def _render_gsplat(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, camera: Camera,
    sh_degree: int | None, bg: Tensor, tile_size: int, near: float, far: float, eps2d: float,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``gsplat.rasterization`` (gsplat >= 1.0 API) for one camera; same conventions, alpha clamp 0.999."""
    try:
        from gsplat import rasterization
    except Exception as exc:
        raise RuntimeError("backend='gsplat' needs the gsplat package (pip install gsplat)") from exc
    if not means.is_cuda:
        raise RuntimeError("backend='gsplat' needs CUDA tensors; use backend='torch' on the CPU")
    viewmat = camera.viewmat.to(device=means.device, dtype=means.dtype)
    k_mat = camera.K.to(device=means.device, dtype=means.dtype)
    render_colors, render_alphas, _ = rasterization(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=viewmat[None],
        Ks=k_mat[None],
        width=camera.width,
        height=camera.height,
        near_plane=near,
        far_plane=far,
        eps2d=eps2d,
        sh_degree=sh_degree,
        packed=False,
        tile_size=tile_size,
        backgrounds=bg[None],
        render_mode="RGB",
        rasterize_mode="classic",
    )
    return render_colors[0], render_alphas[0, ..., 0]


@dataclass
class _TileBatch:
    """One batch of ``B`` tiles of ``P`` pixels with ``S`` (padded) depth-sorted splats each."""

    sid: Tensor  # [B, S] int64 indices into the projected (visible) splats; 0 on padding
    valid: Tensor  # [B, S] bool, the real splats
    tile_xy: Tensor  # [B, 2] tile centres in pixel coordinates
    pixel: Tensor  # [B * P] int64 flat pixel index (row * width + column); clamped to the image
    inside: Tensor  # [B * P] bool, the pixel lies inside the image


def _tile_plan(proj: _Projected, width: int, height: int, tile_size: int, max_batch_elems: int,
               dtype: torch.dtype) -> tuple[Tensor, list[_TileBatch]]:  # fmt: skip
    """Tile intersections of the projected splats, sorted by (tile, depth) with one sort on a combined key (gsplat
    ``isect_tiles``), cut into batches of at most ``max_batch_elems`` (pixel, splat) pairs, busiest tiles first.
    Returns the ``[P, 6]`` pixel features ``(u², v², uv, u, v, 1)`` (tile-centred) and the batches."""
    device = proj.means2d.device
    m = proj.ids.shape[0]
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n_tiles = tiles_x * tiles_y
    pixels_per_tile = tile_size * tile_size
    local_pix = torch.arange(pixels_per_tile, device=device)
    local_px, local_py = local_pix % tile_size, local_pix // tile_size
    u = local_px.to(dtype) + (0.5 - 0.5 * tile_size)  # pixel centres relative to the tile centre
    v = local_py.to(dtype) + (0.5 - 0.5 * tile_size)
    features = torch.stack([u * u, v * v, u * v, u, v, torch.ones_like(u)], dim=-1)  # [P, 6]
    with torch.no_grad():
        center = proj.means2d.detach()
        lo = torch.floor((center - proj.radii) / tile_size).long()
        hi = torch.ceil((center + proj.radii) / tile_size).long()
        x0, x1 = lo[:, 0].clamp(0, tiles_x), hi[:, 0].clamp(0, tiles_x)
        y0, y1 = lo[:, 1].clamp(0, tiles_y), hi[:, 1].clamp(0, tiles_y)
        span_x = (x1 - x0).clamp_min(0)
        per_splat = span_x * (y1 - y0).clamp_min(0)
        n_isect = int(per_splat.sum())
        if n_isect == 0:
            return features, []
        splat = torch.repeat_interleave(torch.arange(m, device=device), per_splat)
        start = torch.cumsum(per_splat, 0) - per_splat
        local = torch.arange(n_isect, device=device) - start[splat]
        sx = span_x[splat]
        tile = (y0[splat] + local // sx) * tiles_x + x0[splat] + local % sx
        depth_rank = torch.empty(m, dtype=torch.long, device=device)
        depth_rank[torch.argsort(proj.depths, stable=True)] = torch.arange(m, device=device)
        key = tile * m + depth_rank[splat]
        key, order = torch.sort(key)
        splat = splat[order]
        counts = torch.bincount(key // m, minlength=n_tiles)
        offsets = torch.cumsum(counts, 0) - counts
        # busiest tiles first, batched so that tiles · pixels · max count stays under max_batch_elems
        tile_order = torch.argsort(counts, descending=True, stable=True)
        tile_order = tile_order[counts[tile_order] > 0].tolist()
        counts_l = counts.tolist()
        batches = []
        i = 0
        while i < len(tile_order):
            cap = counts_l[tile_order[i]]
            n_batch = max(1, min(len(tile_order) - i, max_batch_elems // max(1, pixels_per_tile * cap)))
            batch = torch.tensor(tile_order[i : i + n_batch], device=device)
            i += n_batch
            slot = torch.arange(cap, device=device)
            valid = slot[None, :] < counts[batch][:, None]  # [B, S]
            flat = (offsets[batch][:, None] + slot[None, :]).clamp_max(n_isect - 1)
            sid = torch.where(valid, splat[flat], torch.zeros_like(flat))
            tx, ty = batch % tiles_x, batch // tiles_x
            tile_xy = (torch.stack([tx, ty], -1).to(dtype) + 0.5) * tile_size
            px = tx[:, None] * tile_size + local_px[None, :]  # [B, P] integer pixel columns
            py = ty[:, None] * tile_size + local_py[None, :]
            inside = ((px < width) & (py < height)).reshape(-1)
            pixel = (py.clamp_max(height - 1) * width + px.clamp_max(width - 1)).reshape(-1)
            batches.append(_TileBatch(sid, valid, tile_xy, pixel, inside))
    return features, batches


def _assemble(batches: list[_TileBatch], rgbs: list[Tensor], accs: list[Tensor], bg: Tensor, width: int,
              height: int) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Scatter the batches' pixels into ``[H, W, D]`` and ``[H, W]`` and composite the background."""
    n_channels = bg.shape[0]
    pix = torch.cat([b.pixel[b.inside] for b in batches])
    rgb = torch.cat([c.reshape(-1, n_channels)[b.inside] for b, c in zip(batches, rgbs, strict=True)])
    acc = torch.cat([a.reshape(-1)[b.inside] for b, a in zip(batches, accs, strict=True)])
    n_pix = height * width
    image = torch.zeros(n_pix, n_channels, device=bg.device, dtype=rgb.dtype).index_copy(0, pix, rgb)
    alpha = torch.zeros(n_pix, device=bg.device, dtype=acc.dtype).index_copy(0, pix, acc)
    image = image + (1.0 - alpha)[:, None] * bg[None, :]
    return image.reshape(height, width, n_channels), alpha.reshape(height, width)


def _render_torch(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, camera: Camera,
    sh_degree: int | None, bg: Tensor, tile_size: int, near: float, far: float, eps2d: float, max_batch_elems: int,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    device, dtype = means.device, means.dtype
    width, height = camera.width, camera.height
    n_channels = bg.shape[0]
    proj = _project(means, quats, scales, opacities, camera, near, far, eps2d)
    m = proj.ids.shape[0]
    grad_on = torch.is_grad_enabled() and any(
        t.requires_grad for t in (means, quats, scales, opacities, colors)
    )

    def background_only() -> tuple[Tensor, Tensor]:  # nothing visible; still connected to the inputs' graph
        image = bg.expand(height, width, n_channels).clone()
        if grad_on:
            image = image + 0.0 * (means.sum() + quats.sum() + scales.sum() + opacities.sum() + colors.sum())
        return image, torch.zeros(height, width, device=device, dtype=dtype)

    if m == 0:
        return background_only()

    if sh_degree is None:
        col = colors[proj.ids]
    else:
        viewmat = camera.viewmat.to(device=device, dtype=dtype)
        cam_center = -(viewmat[:3, :3].T @ viewmat[:3, 3])
        col = eval_sh(colors[proj.ids], means[proj.ids] - cam_center, sh_degree)

    features, batches = _tile_plan(proj, width, height, tile_size, max_batch_elems, dtype)
    if not batches:
        return background_only()
    packed = torch.cat([proj.means2d, proj.conics, proj.opacities[:, None], col], dim=1)
    rgbs, accs = [], []
    for b in batches:
        g = packed[b.sid]  # [B, S, 6 + D]: one gather instead of one per attribute
        args = (features, b.tile_xy, g[..., 0:2], g[..., 2:5], g[..., 5], g[..., 6:], b.valid)
        if grad_on:
            rgb, acc = checkpoint(_tile_batch, *args, use_reentrant=False)
        else:
            rgb, acc = _tile_batch(*args)
        rgbs.append(rgb)
        accs.append(acc)
    return _assemble(batches, rgbs, accs, bg, width, height)


# ---------------------------------------------------------------------------------------------------------------------
# hit counts (LightGaussian's global significance)


@torch.no_grad()
def hit_counts(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    cameras: Sequence[Camera],
    *,
    tile_size: int = 8,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    max_batch_elems: int | None = None,
) -> Tensor:
    """Per Gaussian, the number of pixels of all ``cameras`` it contributes to (LightGaussian's ``1(G_j, r_i)``).

    Fan et al., "LightGaussian: Unbounded 3D Gaussian Compression with 15x Reduction and 200+ FPS" (NeurIPS 2024),
    Sec. 3.1: the global significance ``GS_j = sum_i 1(G_j, r_i) sigma_j gamma(Sigma_j)`` sums over every pixel
    (ray ``r_i``) of every training view. **Rule**: a pixel counts for Gaussian ``j`` exactly where ``j`` takes part
    in that pixel's front-to-back compositing with this module's torch rasteriser: its ``alpha >= 1/255`` (smaller
    ones are skipped) *and* it comes before the transmittance stop (the splat that would bring ``T`` below 1e-4 and
    all later ones do not count): the pairs the INRIA kernel composites, which LightGaussian's counting renderer
    (``count_render``, built on that kernel) counts. A Gaussian hidden behind opaque ones, or too faint at a pixel,
    does not count there; the box/tile culling never drops a counted pair (module docstring).

    Vectorised torch (CPU or CUDA; the torch tile path also on a GPU, gsplat has no per-Gaussian pixel count):
    the same projection, tiles and batches as :func:`render`, without colours.

    Args:
        means, quats, scales, opacities: ``[N, 3]``, ``[N, 4]`` (``w x y z``), ``[N, 3]`` activated, ``[N]``
            activated, floating point on one device.
        cameras: the views (e.g. the training cameras); their image sizes may differ.
        tile_size, near, far, eps2d, max_batch_elems: as :func:`render` (torch backend).

    Returns:
        int64 ``[N]`` pixel counts summed over the cameras (0 for a Gaussian no pixel sees).

    Raises:
        ValueError: on wrong shapes or an empty scene (as :func:`render`), or no cameras.
    """
    if not len(cameras):
        raise ValueError("hit_counts needs at least one camera")
    _check_inputs(means, quats, scales, opacities, means, None)
    dtype, device = means.dtype, means.device
    quats, scales, opacities = (t.to(dtype) for t in (quats, scales, opacities))
    if max_batch_elems is None:
        max_batch_elems = 1 << 18 if device.type == "cpu" else 1 << 24
    counts = torch.zeros(means.shape[0], dtype=torch.int64, device=device)
    for camera in cameras:
        proj = _project(means, quats, scales, opacities, camera, near, far, eps2d)
        if proj.ids.shape[0] == 0:
            continue
        features, batches = _tile_plan(proj, camera.width, camera.height, tile_size, max_batch_elems, dtype)
        packed = torch.cat([proj.means2d, proj.conics, proj.opacities[:, None]], dim=1)
        for b in batches:
            g = packed[b.sid]
            log_alpha = _log_alpha(features, b.tile_xy, g[..., 0:2], g[..., 2:5], g[..., 5], b.valid)
            alpha = torch.exp(F.threshold(log_alpha, _LOG_ALPHA_MIN, -30.0).clamp_max_(_LOG_ALPHA_MAX))
            trans_incl = torch.cumprod(1.0 - alpha, dim=-1)
            n_tiles = b.sid.shape[0]
            hit = (log_alpha > _LOG_ALPHA_MIN) & (trans_incl > T_MIN) & b.inside.reshape(n_tiles, -1, 1)
            per_slot = hit.sum(1)  # [B, S]
            counts.index_add_(0, proj.ids[b.sid[b.valid]], per_slot[b.valid])
    return counts


def _log_alpha(features: Tensor, tile_xy: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor,
               valid: Tensor) -> Tensor:  # fmt: skip
    """``log(o) - ½ dᵀ Σ2D⁻¹ d`` for every (pixel, splat) of a batch, ``[B, P, S]`` (-1e20 on padding)."""
    return features @ _exponent_coefficients(tile_xy, means2d, conics, valid, torch.log(opacities))


def _exponent_coefficients(tile_xy: Tensor, means2d: Tensor, conics: Tensor, valid: Tensor,
                           log_opacity: Tensor | None) -> Tensor:  # fmt: skip
    """``[B, 6, S]`` coefficients of ``log(o) - ½ dᵀ Σ2D⁻¹ d`` in the pixel features (see :func:`_tile_batch`);
    without ``log_opacity`` the constant term leaves ``log(o)`` out."""
    mx = means2d[..., 0] - tile_xy[:, None, 0]
    my = means2d[..., 1] - tile_xy[:, None, 1]
    a, b, c = conics.unbind(-1)
    const = -(0.5 * a * mx * mx + 0.5 * c * my * my + b * mx * my)
    if log_opacity is not None:
        const = const + log_opacity
    coef = torch.stack([-0.5 * a, -0.5 * c, -b, a * mx + b * my, c * my + b * mx, const], dim=1)
    off = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, -1e20], dtype=coef.dtype, device=coef.device)
    return torch.where(valid[:, None, :], coef, off[None, :, None])


# ---------------------------------------------------------------------------------------------------------------------
# frozen geometry: one camera's projection, tiles and sort computed once, colours and opacities differentiable


class _Composite(torch.autograd.Function):
    """Front-to-back compositing of one tile batch with an analytic backward w.r.t. ``log(o)`` and colours.

    Inputs: ``features [P, 6]``, geometric exponent coefficients ``coef [B, 6, S]`` (no ``log o``), ``log_o [B, S]``,
    ``colors [B, S, D]``. Outputs as :func:`_tile_batch`. The forward keeps alpha and the compositing weights of the
    batch (two ``[B, P, S]`` tensors, at most ``max_batch_elems`` entries each) and the backward applies, per pixel
    and splat ``i`` (``w_i = alpha_i T_i`` the compositing weight, ``v_i = <dL/dC, c_i> + dL/dA``):

        dL/dc_i = w_i dL/dC,     dL/dalpha_i = [i composited] (T_i v_i - (sum_{k>i} w_k v_k) / (1 - alpha_i)),

    ``dalpha/dlog o = alpha`` where neither the 1/255 skip nor the 0.99 clamp is active (0 there), which is what
    autograd gives for :func:`_tile_batch` (the tests compare both).
    """

    @staticmethod
    def forward(ctx, features: Tensor, coef: Tensor, log_o: Tensor, colors: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha = torch.baddbmm(log_o[:, None, :], features.expand(coef.shape[0], -1, -1), coef)  # [B, P, S]
        alpha = torch.exp(F.threshold(log_alpha, _LOG_ALPHA_MIN, -30.0).clamp_max_(_LOG_ALPHA_MAX))
        del log_alpha
        one_minus = 1.0 - alpha
        # w_i = alpha_i T_i, T_i = prod_{j<i} (1 - alpha_j), 0 from the splat that brings T below 1e-4 on
        weights = F.threshold(torch.cumprod(one_minus, dim=-1), T_MIN, 0.0).div_(one_minus).mul_(alpha)
        ctx.save_for_backward(colors, alpha, weights)
        return weights @ colors, weights.sum(-1)

    @staticmethod
    def backward(ctx, grad_rgb: Tensor, grad_acc: Tensor):
        colors, alpha, weights = ctx.saved_tensors
        grad_colors = weights.transpose(1, 2) @ grad_rgb  # [B, S, D]
        u = torch.baddbmm(grad_acc[..., None], grad_rgb, colors.transpose(1, 2)).mul_(weights)  # w_i v_i
        after = torch.cumsum(u, dim=-1).neg_().add_(u.sum(-1, keepdim=True))  # sum_{k > i} w_k v_k
        # dL/dlog o_i = alpha_i dL/dalpha_i = w_i v_i - after_i alpha_i / (1 - alpha_i), masked after the stop (where
        # w = 0) and where alpha is skipped (< 1/255, stored as exp(-30)) or clamped at 0.99
        grad = u.sub_(after.mul_(alpha).div_(1.0 - alpha))
        clamped = torch.exp(alpha.new_tensor(_LOG_ALPHA_MAX))  # the value the 0.99 clamp leaves, in alpha's dtype
        free = (weights > 0) & (alpha >= ALPHA_MIN) & (alpha < clamped)  # w = 0 after the stop: after_i is rounding
        return None, None, grad.mul_(free).sum(1), grad_colors


class FrozenGeometryView:
    """One camera's view of a scene whose means, scales and rotations are frozen: the projection, the tile
    intersections, their depth sort, the batches and the SH basis of the view directions are computed once
    (:meth:`__init__`), and :meth:`render` only composites the current opacities and SH colours, with an analytic
    backward (:class:`_Composite`) instead of autograd through checkpointed batches. Used by the appearance
    fine-tuning (``otcore.splats.appearance_finetune``), where the same cameras are rendered hundreds of times.

    The opacity culling and the opacity-aware box of :func:`render` depend on the opacities, which change here, so
    the plan uses the widest box (``3.33`` standard deviations, that of opacity 1) and keeps every Gaussian in the
    depth range: every (pixel, splat) pair :func:`render` composites is in the plan, and the extra pairs have
    ``alpha < 1/255`` and are skipped, so the image equals :func:`render`'s up to float rounding (the tests check
    this), at the price of a few more pairs.

    Args:
        means, quats, scales: ``[N, 3]``, ``[N, 4]`` (``w x y z``), ``[N, 3]`` activated, the frozen geometry.
        camera: the view.
        sh_degree: SH degree of the colours passed to :meth:`render` (0..3).
        tile_size, near, far, eps2d, max_batch_elems: as :func:`render` (torch backend).

    Raises:
        ValueError: on wrong shapes or an empty scene.
    """

    def __init__(self, means: Tensor, quats: Tensor, scales: Tensor, camera: Camera, sh_degree: int, *,
                 tile_size: int = 8, near: float = 0.01, far: float = 1e10, eps2d: float = 0.3,
                 max_batch_elems: int | None = None) -> None:  # fmt: skip
        means, quats, scales = means.detach(), quats.detach().to(means.dtype), scales.detach().to(means.dtype)
        ones = torch.ones(means.shape[0], dtype=means.dtype, device=means.device)
        _check_inputs(means, quats, scales, ones, means, None)
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree must be in 0..3, got {sh_degree}")
        device = means.device
        if max_batch_elems is None:
            max_batch_elems = 1 << 18 if device.type == "cpu" else 1 << 24
        self.width, self.height, self.sh_degree = camera.width, camera.height, sh_degree
        with torch.no_grad():
            proj = _project(means, quats, scales, ones, camera, near, far, eps2d)
            self.ids = proj.ids
            self.features, self.batches = _tile_plan(proj, self.width, self.height, tile_size, max_batch_elems,
                                                     means.dtype)
            self.coefs = [_exponent_coefficients(b.tile_xy, proj.means2d[b.sid], proj.conics[b.sid], b.valid, None)
                          for b in self.batches]
            viewmat = camera.viewmat.to(device=device, dtype=means.dtype)
            cam_center = -(viewmat[:3, :3].T @ viewmat[:3, 3])
            self.basis = _sh_basis(F.normalize(means[self.ids] - cam_center, dim=-1), sh_degree)  # [M, K]

    def render(self, opacities: Tensor, sh: Tensor, background: Tensor | None = None) -> Tensor:
        """``[H, W, 3]`` image of the frozen geometry with ``opacities [N]`` (activated) and SH coefficients
        ``sh [N, K >= (d+1)², 3]``, differentiable w.r.t. both; ``background [3]`` (default black)."""
        dtype, device = self.features.dtype, self.features.device
        bg = torch.zeros(3, dtype=dtype, device=device) if background is None else torch.as_tensor(
            background, dtype=dtype, device=device).reshape(3)
        if not self.batches:
            image = bg.expand(self.height, self.width, 3).clone()
            return image + 0.0 * (opacities.sum() + sh.sum())
        k = self.basis.shape[1]
        if sh.ndim != 3 or sh.shape[1] < k or sh.shape[2] != 3 or opacities.shape != sh.shape[:1]:
            raise ValueError(f"opacities [N] and sh [N, K >= {k}, 3] expected, got {list(opacities.shape)}, "
                             f"{list(sh.shape)}")
        col = torch.clamp_min(torch.einsum("nk,nkc->nc", self.basis, sh[self.ids, :k].to(dtype)) + 0.5, 0.0)
        log_o = torch.log(opacities[self.ids].to(dtype))
        rgbs, accs = [], []
        for b, coef in zip(self.batches, self.coefs, strict=True):
            rgb, acc = _Composite.apply(self.features, coef, log_o[b.sid], col[b.sid])
            rgbs.append(rgb)
            accs.append(acc)
        return _assemble(self.batches, rgbs, accs, bg, self.width, self.height)[0]
