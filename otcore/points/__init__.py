"""Point clouds: EM-kD and Chamfer distances, point sampling, the autodecoder, its training and QAAD.
"""

from __future__ import annotations

from otcore.points.autodecoder import (
    ATLASNETV2_HIDDEN,
    AtlasNetV2Decoder,
    Autodecoder,
    NeuralQAADDecoder,
    PatchLayout,
    PointNetEncoder,
    count_parameters,
    matched_baseline_width,
    patch_layout,
)
from otcore.points.autodecoder_training import (
    BASELINE_PATCHES,
    VARIANTS,
    EpochRecord,
    TrainingConfig,
    TrainingState,
    encode,
    evaluate,
    new_training_state,
    normalization,
    train,
    variant_config,
)
from otcore.points.chamfer import chamfer_l2
from otcore.points.em_kd import EM_KD_SPLITS, EMKDResult, em_kd
from otcore.points.point_sampling import (
    face_area_weights,
    interpolate_barycentric,
    sample_correspondent_surface,
    sample_face_barycentrics,
    shape_points,
)
from otcore.points.qaad import (
    CHAMFER_FORMS,
    QAAD_ASSIGNMENTS,
    augmented_chamfer,
    leafwise_assignment,
    qaad_greedy,
    qaad_reassignment,
    repair_bijection,
)

__all__ = [
    "ATLASNETV2_HIDDEN",
    "AtlasNetV2Decoder",
    "BASELINE_PATCHES",
    "CHAMFER_FORMS",
    "QAAD_ASSIGNMENTS",
    "PointNetEncoder",
    "VARIANTS",
    "leafwise_assignment",
    "repair_bijection",
    "variant_config",
    "Autodecoder",
    "EMKDResult",
    "EM_KD_SPLITS",
    "EpochRecord",
    "NeuralQAADDecoder",
    "PatchLayout",
    "TrainingConfig",
    "TrainingState",
    "augmented_chamfer",
    "chamfer_l2",
    "count_parameters",
    "em_kd",
    "encode",
    "evaluate",
    "face_area_weights",
    "interpolate_barycentric",
    "matched_baseline_width",
    "new_training_state",
    "normalization",
    "patch_layout",
    "qaad_greedy",
    "qaad_reassignment",
    "sample_correspondent_surface",
    "sample_face_barycentrics",
    "shape_points",
    "train",
]
