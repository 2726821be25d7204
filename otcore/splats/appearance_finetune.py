"""Appearance fine-tuning of a reduced 3DGS scene against renders of the original (geometry frozen).

The scenes come without their training photographs, so the original scene's own renders are the targets: from a
set of cameras, the reduced scene's colours (all SH coefficients) and opacities are optimised with Adam on the 3DGS
photometric loss ``(1 - lambda) L1 + lambda (1 - SSIM)``, ``lambda = 0.2`` (Kerbl et al. 2023, Eq. 7), one view per
step, views visited in a seeded random order. Means, scales and rotations are not touched, so the geometry a
reduction produced is what gets evaluated. Opacities are optimised as logits (the 3DGS parameterisation).

Speed (``FineTuneConfig.renderer``): since the geometry is frozen, each camera's projection, tile intersections,
depth sort and SH view-direction basis are the same at every step. ``"frozen"`` (default) computes them once per
camera (:class:`otcore.splats.rasterizer.FrozenGeometryView`) and back-propagates through the compositing with an
analytic backward instead of autograd through checkpointed tile batches; the images and gradients are those of
``"render"`` (:func:`otcore.splats.scene.render_scene` at every step, the previous path, kept for comparison) up to
float rounding. Profiled (cProfile) on biker reduced to 10% (15k Gaussians, 128 px, one thread): the old step spent
55% in the backward (which re-runs every tile batch under the checkpoint) and 41% in the forward; the checkpoint's
saved-tensor hooks alone took a third of the step, the projection 4%, the tile sort less. The frozen path's step
is about 1.7x faster on its own; the present schedule (100 steps at twice the learning rates, same held-out PSNR)
halves the steps. ``bench/finetune.py`` measures the old and new paths on the same inputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from otcore.splats.cameras import Camera
from otcore.splats.image_metrics import ssim
from otcore.splats.rasterizer import FrozenGeometryView
from otcore.splats.scene import render_scene

__all__ = ["FineTuneConfig", "FineTuneResult", "finetune_appearance", "render_views"]


@dataclass(frozen=True)
class FineTuneConfig:
    """Fine-tuning schedule (learning rates are per step; the INRIA defaults are tuned for 30k steps, these for
    about a hundred). Until pipeline version 3 the default was 200 steps at half these rates; 100 steps at twice
    the rates reach the same held-out PSNR (within 0.05 dB on donut-8k and biker at 10%, ``bench/finetune.py``)."""

    steps: int = 100
    sh_learning_rate: float = 0.02
    opacity_learning_rate: float = 0.1
    ssim_weight: float = 0.2
    seed: int = 0
    renderer: str = "frozen"
    """``"frozen"``: per-camera cached geometry + analytic backward (fast); ``"render"``: the full renderer with
    autograd at every step (the previous path)."""


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
        render_kwargs: passed to :func:`otcore.splats.scene.render_scene` (e.g. ``background``); with the
            ``"frozen"`` renderer ``background``, ``tile_size``, ``near``, ``far``, ``eps2d`` and ``max_batch_elems``
            are honoured (the backend is always the torch one).

    Returns:
        :class:`FineTuneResult`.

    Raises:
        ValueError: if ``targets`` does not hold one image per camera, ``steps < 0`` or an unknown renderer.
    """
    if targets.shape[0] != len(cameras) or targets.ndim != 4:
        raise ValueError(f"targets must be [V, H, W, 3] with V = {len(cameras)} cameras, got {tuple(targets.shape)}")
    if config.steps < 0:
        raise ValueError(f"steps must be >= 0, got {config.steps}")
    if config.renderer not in ("frozen", "render"):
        raise ValueError(f"renderer must be 'frozen' or 'render', got {config.renderer!r}")
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
    views: list[FrozenGeometryView | None] = [None] * len(cameras)  # built on first use
    degree = math.isqrt(sh_rest.shape[1] + 1) - 1
    view_kwargs = {k: render_kwargs[k] for k in ("tile_size", "near", "far", "eps2d", "max_batch_elems")
                   if render_kwargs.get(k) is not None}
    for step in range(config.steps):
        if order.numel() == 0:
            order = torch.randperm(len(cameras), generator=generator)
        view, order = int(order[0]), order[1:]
        if config.renderer == "frozen":
            if views[view] is None:
                views[view] = FrozenGeometryView(frozen["means"], frozen["quats"], frozen["scales"], cameras[view],
                                                 degree, **view_kwargs)
            sh = torch.cat([sh_dc[:, None, :], sh_rest], dim=1)
            image = views[view].render(torch.sigmoid(logits), sh, render_kwargs.get("background"))
        else:
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
