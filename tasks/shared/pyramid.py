"""The geometry-image pyramid step shared by the geometry-image and sequence tasks: quantise, mipmap, code and store,
decode, restore and measure every level (:mod:`otcore.mesh.geometry_image`, :mod:`storage.image_codecs`)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from otcore.mesh.geometry_image import QuantizedImage, quantized_pyramid, restored_level_distances
from storage.image_codecs import CodecSetting
from storage.zarr_store import ItemStore
from tasks.shared.restoration import BILINEAR, Restoration

__all__ = ["encode_pyramid", "measure_levels"]


def measure_levels(levels: list[np.ndarray], quantized: QuantizedImage, restorations: list[Restoration],
                   resolution: int, source_vertices: np.ndarray, source_faces: np.ndarray, samples: int,
                   seed: int) -> list[dict[str, Any]]:
    """Restore every decoded level to ``resolution`` with each restoration and measure it against the source.

    Returns:
        One dict per level x restoration (levels outer; at the finest level every restoration is the identity and
        shares bilinear's measurement): ``level``, ``resolution`` (of the level), ``restore``,
        ``chamfer_l2``, ``hausdorff``, ``samples``, ``restore_seconds`` (restoration alone, not the measurement),
        ``model_bytes``.
    """
    rows = []
    for level, codes in enumerate(levels):
        for restoration in restorations:
            if restoration.name != BILINEAR.name and codes.shape[-1] >= resolution:
                # The finest level is the image itself: every restoration returns it (measured once, by bilinear,
                # the identity here).
                identity = next(row for row in rows if row["level"] == level and row["restore"] == BILINEAR.name)
                rows.append({**identity, "restore": restoration.name, "restore_seconds": 0.0,
                             "model_bytes": restoration.model_bytes})
                continue
            seconds = []

            def timed(image: np.ndarray, size: int, restore=restoration.restore) -> np.ndarray:
                start = time.perf_counter()
                restored = restore(image, size)
                seconds.append(time.perf_counter() - start)
                return restored

            distances = restored_level_distances(codes, quantized, resolution, source_vertices, source_faces,
                                                 samples, seed, restore=timed)
            rows.append({"level": level, "resolution": int(codes.shape[-1]), "restore": restoration.name,
                         "chamfer_l2": distances.chamfer_l2, "hausdorff": distances.hausdorff,
                         "samples": distances.samples, "restore_seconds": seconds[0],
                         "model_bytes": restoration.model_bytes})
    return rows


def encode_pyramid(
    item_store: ItemStore,
    path: str,
    image: np.ndarray,
    source_vertices: np.ndarray,
    source_faces: np.ndarray,
    config: Any,
    attrs: dict[str, Any] | None = None,
    codec: CodecSetting | None = None,
    side_info: dict[str, np.ndarray] | None = None,
    restorations: list[Restoration] | None = None,
) -> list[dict[str, Any]]:
    """Quantise a geometry image, store its image-coded mipmap pyramid at ``path`` and measure every level.

    Each level is decoded back from the store, so lossy coding shows in the distances. The quantisation offset
    and scale are stored as side info (``quantization_offset``, ``quantization_scale``) with ``side_info``, and
    every level's ``stored_bytes`` counts them.

    Args:
        item_store: the item's Zarr group.
        path: group path of the pyramid, e.g. ``"ot/geometry_image"``.
        image: ``[3, R, R]`` float geometry image (unit bbox diagonal units).
        source_vertices, source_faces: ``[V, 3]`` float64 / ``[F, 3]`` int64 mesh the levels are measured against.
        config: any config with ``bits``, ``levels``, ``resolution``, ``samples`` and ``seed``.
        attrs: extra pyramid attributes.
        codec: image codec of the levels; default JPEG 2000 lossless at ``config.bits``.
        side_info: further ``[n]`` arrays a decoder needs (e.g. the normalisation offset and scale).
        restorations: how levels are restored for measuring; default bilinear alone.

    Returns:
        The :func:`measure_levels` rows, each with ``stored_bytes``.

    Raises:
        ValueError: if the image cannot be quantised or subsampled into ``config.levels`` levels.
    """
    codec = codec or CodecSetting(bits=config.bits)
    quantized, levels = quantized_pyramid(image, codec.bits, config.levels)
    stored = item_store.write_pyramid(
        path, levels,
        {"quantization": {"bits": codec.bits, "offset": quantized.offset.tolist(), "scale": quantized.scale.tolist()},
         "filter": "vertex-preserving subsampling", "channels": ["x", "y", "z"], **(attrs or {})},
        codec=codec,
        side_info={"quantization_offset": quantized.offset, "quantization_scale": quantized.scale,
                   **(side_info or {})},
    )
    decoded, _ = item_store.read_pyramid(path)
    rows = measure_levels(decoded, quantized, restorations or [BILINEAR], config.resolution, source_vertices,
                          source_faces, config.samples, config.seed)
    return [{**row, "stored_bytes": stored[row["level"]]} for row in rows]
