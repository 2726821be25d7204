"""The geometry-image pyramid step shared by the geometry-image and sequence tasks: quantise, mipmap, store, restore
and measure every level (:mod:`otcore.mesh.geometry_image`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from otcore.mesh.geometry_image import quantized_pyramid, restored_level_distances
from storage.zarr_store import ItemStore

__all__ = ["encode_pyramid"]


def encode_pyramid(
    item_store: ItemStore,
    path: str,
    image: np.ndarray,
    source_vertices: np.ndarray,
    source_faces: np.ndarray,
    config: Any,
    attrs: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Quantise a geometry image, store its mipmap pyramid at ``path`` and measure every restored level.

    Args:
        item_store: the item's Zarr group.
        path: group path of the pyramid, e.g. ``"ot/geometry_image"``.
        image: ``[3, R, R]`` float geometry image (unit bbox diagonal units).
        source_vertices, source_faces: ``[V, 3]`` float64 / ``[F, 3]`` int64 mesh the levels are measured against.
        config: any config with ``bits``, ``levels``, ``resolution``, ``samples`` and ``seed``.
        attrs: extra pyramid attributes.

    Returns:
        One dict per level: ``level``, ``resolution``, ``chamfer_l2``, ``hausdorff``, ``samples``, ``stored_bytes``.

    Raises:
        ValueError: if the image cannot be quantised or subsampled into ``config.levels`` levels.
    """
    quantized, levels = quantized_pyramid(image, config.bits, config.levels)
    stored = item_store.write_pyramid(
        path, levels,
        {"quantization": {"bits": config.bits, "offset": quantized.offset.tolist(), "scale": quantized.scale.tolist()},
         "filter": "vertex-preserving subsampling", "channels": ["x", "y", "z"], **(attrs or {})},
    )
    measured = []
    for level, (codes, stored_bytes) in enumerate(zip(levels, stored)):
        distances = restored_level_distances(codes, quantized, config.resolution, source_vertices, source_faces,
                                             config.samples, config.seed)
        measured.append({"level": level, "resolution": int(codes.shape[-1]), "chamfer_l2": distances.chamfer_l2,
                         "hausdorff": distances.hausdorff, "samples": distances.samples,
                         "stored_bytes": stored_bytes})
    return measured
