"""Appearance fine-tuning of a reduced 3DGS scene against renders of the original (geometry frozen).

The scenes come without their training photographs, so the original scene's own renders are the targets: from a
set of cameras, the reduced scene's colours (all SH coefficients) and opacities are optimised with Adam on the 3DGS
photometric loss ``(1 - lambda) L1 + lambda (1 - SSIM)``, ``lambda = 0.2`` (Kerbl et al. 2023, Eq. 7), one view per
step, views visited in a seeded random order. Means, scales and rotations are not touched, so the geometry a
reduction produced is what gets evaluated. Opacities are optimised as logits (the 3DGS parameterisation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from otcore.splats.cameras import Camera
from otcore.splats.image_metrics import ssim
from otcore.splats.scene import render_scene

__all__ = ["FineTuneConfig", "FineTuneResult", "finetune_appearance", "render_views"]


@dataclass(frozen=True)
class FineTuneConfig:
    """Fine-tuning schedule (learning rates are per step; the INRIA defaults are tuned for 30k steps, these for
    a few hundred)."""

    steps: int = 200
    sh_learning_rate: float = 0.01
    opacity_learning_rate: float = 0.05
    ssim_weight: float = 0.2
    seed: int = 0


@dataclass
class FineTuneResult:
    """Fine-tuned appearance: ``sh_dc`` float32 ``[M, 3]``, ``sh_rest`` ``[M, K, 3]``, ``opacities`` ``[M]`` (all on
    the device of the inputs, detached), the loss of every step and the wall time in seconds."""

    sh_dc: torch.Tensor
    sh_rest: torch.Tensor
    opacities: torch.Tensor
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def render_views(params: dict[str, torch.Tensor], cameras: Sequence[Camera], **kwargs) -> torch.Tensor:
    """Renders ``[V, H, W, 3]`` (float32 in [0, 1] before clamping: 3DGS colours may exceed 1) of ``params``."""
    return torch.stack([render_scene(params, camera, **kwargs) for camera in cameras])


def finetune_appearance(
    params: dict[str, torch.Tensor],
    cameras: Sequence[Camera],
    targets: torch.Tensor,
    config: FineTuneConfig = FineTuneConfig(),
    on_step: Callable[[int, float], None] | None = None,
    **render_kwargs,
) -> FineTuneResult:
    """Optimise the colours and opacities of ``params`` so its renders match ``targets`` from ``cameras``.

    Args:
        params: scene tensors (:func:`otcore.splats.scene.scene_tensors` keys: ``means``, ``quats``, ``scales``,
            ``opacities`` (activated, in (0, 1)), ``sh_dc``, ``sh_rest``); not modified.
        cameras: ``V`` cameras.
        targets: float32 ``[V, H, W, 3]`` target images (e.g. :func:`render_views` of the original scene).
        config: schedule and seed.
        on_step: called with ``(step, loss)`` after every step (progress reporting).
        render_kwargs: passed to :func:`otcore.splats.scene.render_scene` (e.g. ``background``).

    Returns:
        :class:`FineTuneResult`.

    Raises:
        ValueError: if ``targets`` does not hold one image per camera or ``steps < 0``.
    """
    if targets.shape[0] != len(cameras) or targets.ndim != 4:
        raise ValueError(f"targets must be [V, H, W, 3] with V = {len(cameras)} cameras, got {tuple(targets.shape)}")
    if config.steps < 0:
        raise ValueError(f"steps must be >= 0, got {config.steps}")
    start = time.perf_counter()
    frozen = {k: params[k].detach() for k in ("means", "quats", "scales")}
    sh_dc = params["sh_dc"].detach().clone().requires_grad_(True)
    sh_rest = params["sh_rest"].detach().clone().requires_grad_(params["sh_rest"].numel() > 0)
    eps = 1e-6
    logits = torch.logit(params["opacities"].detach().clamp(eps, 1 - eps)).requires_grad_(True)
    groups = [{"params": [sh_dc], "lr": config.sh_learning_rate},
              {"params": [logits], "lr": config.opacity_learning_rate}]
    if sh_rest.requires_grad:
        groups.append({"params": [sh_rest], "lr": config.sh_learning_rate / 20.0})  # INRIA: rest at dc / 20
    optimizer = torch.optim.Adam(groups, eps=1e-15)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.empty(0, dtype=torch.int64)
    losses: list[float] = []
    for step in range(config.steps):
        if order.numel() == 0:
            order = torch.randperm(len(cameras), generator=generator)
        view, order = int(order[0]), order[1:]
        image = render_scene({**frozen, "sh_dc": sh_dc, "sh_rest": sh_rest, "opacities": torch.sigmoid(logits)},
                             cameras[view], **render_kwargs)
        target = targets[view]
        l1 = (image - target).abs().mean()
        dssim = 1.0 - ssim(image.clamp(0, 1), target.clamp(0, 1))
        loss = (1.0 - config.ssim_weight) * l1 + config.ssim_weight * dssim
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return FineTuneResult(
        sh_dc=sh_dc.detach(),
        sh_rest=sh_rest.detach(),
        opacities=torch.sigmoid(logits).detach(),
        losses=losses,
        seconds=time.perf_counter() - start,
    )
