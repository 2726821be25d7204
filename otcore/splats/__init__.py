"""3D Gaussian splats: cameras, spherical harmonics, the rasteriser, image metrics, GHAP reduction, pruning
baselines, appearance fine-tuning and the one reduction entry point :func:`reduce`.
"""

from __future__ import annotations

from otcore.splats.appearance_finetune import FineTuneConfig, FineTuneResult, finetune_appearance, render_views
from otcore.splats.cameras import Camera, look_at, orbit_cameras
from otcore.splats.gaussian_pruning import PRUNING_METHODS, importance_scores, select_subset
from otcore.splats.ghap import (
    GHAP_COSTS,
    GHAPResult,
    allocate_counts,
    covariances_to_scales_quats,
    ghap_reduce,
    merge_appearance,
)
from otcore.splats.image_metrics import psnr, ssim
from otcore.splats.rasterizer import ALPHA_MAX, ALPHA_MIN, T_MIN, Backend, FrozenGeometryView, hit_counts, render
from otcore.splats.reduction import REDUCTION_METHODS, ReducedGaussians, reduce
from otcore.splats.scene import covariances, quats_to_rotations, render_scene, scene_tensors
from otcore.splats.spherical_harmonics import SH_C0, eval_sh, sh0_to_rgb

__all__ = [
    "ALPHA_MAX",
    "ALPHA_MIN",
    "Backend",
    "Camera",
    "FineTuneConfig",
    "FineTuneResult",
    "FrozenGeometryView",
    "GHAP_COSTS",
    "GHAPResult",
    "PRUNING_METHODS",
    "REDUCTION_METHODS",
    "ReducedGaussians",
    "SH_C0",
    "T_MIN",
    "allocate_counts",
    "covariances",
    "covariances_to_scales_quats",
    "eval_sh",
    "finetune_appearance",
    "ghap_reduce",
    "hit_counts",
    "importance_scores",
    "look_at",
    "merge_appearance",
    "orbit_cameras",
    "psnr",
    "quats_to_rotations",
    "reduce",
    "render",
    "render_scene",
    "render_views",
    "scene_tensors",
    "select_subset",
    "sh0_to_rgb",
    "ssim",
]
