"""Image metrics of renders: PSNR and SSIM (``pytorch_msssim.ssim``, Wang et al. 2004, Gaussian window 11, σ 1.5)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["psnr", "ssim"]


def _check_images(img: Tensor, ref: Tensor) -> None:
    if img.shape != ref.shape or img.ndim != 3 or img.shape[-1] < 1:
        raise ValueError(f"images must both have shape [H, W, C], got {list(img.shape)} and {list(ref.shape)}")


def psnr(img: Tensor, ref: Tensor, max_val: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio ``10 log10(max_val² / MSE)`` in dB of two ``[H, W, C]`` images.

    Returns a 0-d tensor (differentiable), ``inf`` for identical images. Raises ``ValueError`` on a shape mismatch.
    """
    _check_images(img, ref)
    mse = torch.mean((img - ref) ** 2)
    return 10.0 * torch.log10(max_val**2 / mse)


def ssim(img: Tensor, ref: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity (Wang et al. 2004) of two ``[H, W, C]`` images via ``pytorch_msssim.ssim``.

    Gaussian window 11 px, σ 1.5, ``K = (0.01, 0.03)``; images smaller than 11 px use the largest odd window that
    fits. Returns a 0-d tensor (differentiable), 1 for identical images. Raises ``ValueError`` on a shape mismatch
    or images smaller than 3 px.
    """
    from pytorch_msssim import ssim as _ssim

    _check_images(img, ref)
    side = min(img.shape[0], img.shape[1])
    if side < 3:
        raise ValueError(f"images must be at least 3 x 3 pixels for SSIM, got {list(img.shape[:2])}")
    win = min(11, side if side % 2 else side - 1)
    x = img.permute(2, 0, 1)[None]
    y = ref.permute(2, 0, 1)[None]
    return _ssim(x, y, data_range=data_range, size_average=True, win_size=win)
