"""Rate–distortion of geometry-image pyramids: the bytes and the restored mesh's error per level and codec setting.

Used by the geometry-image task (:mod:`tasks.geometry_images`) for the ``rate_distortion`` table and by
``bench/rate_distortion.py``. A level is restored the ways the flow restores it
(:func:`tasks.shared.pyramid.measure_levels`: dequantise, bilinear upsampling or the restoration network to the
finest resolution, grid triangulation); the error is point-to-surface against the source mesh, unit bounding-box
diagonal.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from otcore.mesh.geometry_image import quantized_pyramid
from storage.image_codecs import CodecSetting, decode_image, encode_image
from tasks.shared.pyramid import measure_levels
from tasks.shared.restoration import BILINEAR, Restoration

__all__ = ["rate_distortion_rows", "setting_columns"]


def setting_columns(setting: CodecSetting) -> dict[str, Any]:
    """The ``codec_setting``, ``codec``, ``codec_quality`` and ``bits`` columns of a rate-distortion row."""
    return {"codec_setting": setting.label, "codec": setting.codec, "codec_quality": setting.quality,
            "bits": setting.bits}


def rate_distortion_rows(image: np.ndarray, settings: list[CodecSetting], levels: int, side_info_bytes: int,
                         source_vertices: np.ndarray, source_faces: np.ndarray, samples: int,
                         seed: int, restorations: list[Restoration] | None = None) -> list[dict[str, Any]]:
    """Code every pyramid level of a geometry image with each setting in memory, restore it and measure it.

    Args:
        image: ``[3, R, R]`` float geometry image, ``R = 2^n + 1`` (unit bbox diagonal units).
        settings: codec settings; each quantises the image to its own ``bits``.
        levels: mipmap levels (:func:`otcore.mesh.geometry_image.mipmap_pyramid`).
        side_info_bytes: bytes a decoder needs besides the codestream (added to every level's ``stored_bytes``).
        source_vertices, source_faces: ``[V, 3]`` float64 / ``[F, 3]`` int64 mesh the levels are measured against.
        samples, seed: area-uniform samples per surface and their seed.
        restorations: how each level is restored (default bilinear alone).

    Returns:
        One row per setting x level x restoration: the :func:`tasks.shared.pyramid.measure_levels` columns, the
        :func:`setting_columns`, ``stored=False``, ``stored_bytes`` (codestream + side info), ``side_info_bytes``,
        ``image_raw_bytes`` (uint16 samples), ``coding_seconds`` (encode + decode).

    Raises:
        ValueError: if the image cannot be quantised or subsampled into ``levels`` levels.
    """
    resolution = int(image.shape[-1])
    rows = []
    for setting in settings:
        quantized, pyramid = quantized_pyramid(image, setting.bits, levels)
        decoded, coded = [], []
        for codes in pyramid:
            start = time.perf_counter()
            data = encode_image(codes, setting)
            decoded.append(decode_image(data, setting, codes.shape))
            coded.append((len(data), time.perf_counter() - start, int(codes.nbytes)))
        for row in measure_levels(decoded, quantized, restorations or [BILINEAR], resolution, source_vertices,
                                  source_faces, samples, seed):
            data_bytes, seconds, raw_bytes = coded[row["level"]]
            rows.append({**row, **setting_columns(setting), "stored": False,
                         "stored_bytes": data_bytes + side_info_bytes, "side_info_bytes": side_info_bytes,
                         "image_raw_bytes": raw_bytes, "coding_seconds": seconds})
    return rows
