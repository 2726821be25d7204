"""Rate–distortion of geometry-image pyramids: the bytes and the restored mesh's error per level and codec setting.

Used by the geometry-image task (:mod:`tasks.geometry_images`) for the ``rate_distortion`` table and by
``bench/rate_distortion.py``. A level is restored the one way the flow restores it: decode, dequantise, bilinear
upsampling to the finest resolution, grid triangulation; the error is point-to-surface against the source mesh
(:func:`otcore.metrics.surface_distances`, unit bounding-box diagonal).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from otcore.geometry_image import (
    dequantize,
    geometry_image_to_mesh,
    mipmap_pyramid,
    quantize,
    restore_level,
)
from otcore.metrics import SurfaceDistances, surface_distances
from storage.image_codecs import CodecSetting, decode_image, encode_image

__all__ = ["measure_level", "rate_distortion_rows", "setting_columns"]


def measure_level(codes: np.ndarray, offset: np.ndarray, scale: np.ndarray, resolution: int,
                  source_vertices: np.ndarray, source_faces: np.ndarray, samples: int, seed: int) -> SurfaceDistances:
    """Error of the mesh restored from one quantised pyramid level.

    Args:
        codes: ``[3, h, w]`` uint16 samples of the level (as decoded).
        offset, scale: ``[3]`` float64 quantisation offset and step (:class:`otcore.geometry_image.QuantizedImage`).
        resolution: side of the finest level the level is upsampled to.
        source_vertices, source_faces: ``[V, 3]`` float64 / ``[F, 3]`` int64 source mesh, unit bbox diagonal.
        samples, seed: area-uniform samples per surface and their seed.

    Returns:
        Chamfer-L2 and Hausdorff distance of the restored mesh to the source, point-to-surface both ways.
    """
    restored = restore_level(dequantize(codes, offset, scale), resolution)
    vertices, faces = geometry_image_to_mesh(restored)
    return surface_distances(vertices, faces, source_vertices, source_faces, samples, seed)


def setting_columns(setting: CodecSetting) -> dict[str, Any]:
    """The ``codec_setting``, ``codec``, ``codec_quality`` and ``bits`` columns of a rate-distortion row."""
    return {"codec_setting": setting.label, "codec": setting.codec, "codec_quality": setting.quality,
            "bits": setting.bits}


def rate_distortion_rows(image: np.ndarray, settings: list[CodecSetting], levels: int, side_info_bytes: int,
                         source_vertices: np.ndarray, source_faces: np.ndarray, samples: int,
                         seed: int) -> list[dict[str, Any]]:
    """Code every pyramid level of a geometry image with each setting in memory, restore it and measure it.

    Args:
        image: ``[3, R, R]`` float geometry image, ``R = 2^n + 1`` (unit bbox diagonal units).
        settings: codec settings; each quantises the image to its own ``bits``.
        levels: mipmap levels (:func:`otcore.geometry_image.mipmap_pyramid`).
        side_info_bytes: bytes a decoder needs besides the codestream (added to every level's ``stored_bytes``).
        source_vertices, source_faces: ``[V, 3]`` float64 / ``[F, 3]`` int64 mesh the levels are measured against.
        samples, seed: area-uniform samples per surface and their seed.

    Returns:
        One row per setting x level: ``level``, ``resolution``, the :func:`setting_columns`, ``stored=False``,
        ``stored_bytes`` (codestream + side info), ``side_info_bytes``, ``image_raw_bytes`` (uint16 samples),
        ``chamfer_l2``, ``hausdorff``, ``samples``, ``coding_seconds`` (encode + decode).

    Raises:
        ValueError: if the image cannot be quantised or subsampled into ``levels`` levels.
    """
    resolution = int(image.shape[-1])
    rows = []
    for setting in settings:
        quantized = quantize(image, setting.bits)
        for level, codes in enumerate(mipmap_pyramid(quantized.codes, levels)):
            start = time.perf_counter()
            data = encode_image(codes, setting)
            decoded = decode_image(data, setting, codes.shape)
            seconds = time.perf_counter() - start
            distances = measure_level(decoded, quantized.offset, quantized.scale, resolution, source_vertices,
                                      source_faces, samples, seed)
            rows.append({"level": level, "resolution": int(codes.shape[-1]), **setting_columns(setting),
                         "stored": False, "stored_bytes": len(data) + side_info_bytes,
                         "side_info_bytes": side_info_bytes, "image_raw_bytes": int(codes.nbytes),
                         "chamfer_l2": distances.chamfer_l2, "hausdorff": distances.hausdorff,
                         "samples": distances.samples, "coding_seconds": seconds})
    return rows
