"""Rate–distortion rows of a real geometry image (tasks.shared.rate_distortion) and the codec fields of the
geometry-image config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from otcore.mesh.disk_cut import cut_to_disk
from otcore.mesh.geometry_image import quantized_pyramid, resample_geometry_image
from otcore.mesh.parameterization import harmonic_parameterization
from storage.image_codecs import CodecSetting, encode_image
from tasks.geometry_images import GeometryImageConfig
from tasks.shared.rate_distortion import rate_distortion_rows


def test_rows_count_codestream_and_side_info_and_lossy_costs_accuracy(spot) -> None:
    disk = cut_to_disk(spot.vertices, spot.faces)
    image = resample_geometry_image(disk.vertices, disk.faces, harmonic_parameterization(disk).uv, 65)
    settings = [CodecSetting(bits=12), CodecSetting("jpeg2k", 40.0, 12)]
    rows = rate_distortion_rows(image, settings, 2, 80, spot.vertices, spot.faces, 4_000, 0)
    assert [(r["codec_setting"], r["level"], r["resolution"]) for r in rows] == [
        ("jpeg2k:lossless", 0, 65), ("jpeg2k:lossless", 1, 33), ("jpeg2k:40", 0, 65), ("jpeg2k:40", 1, 33)]
    _, levels = quantized_pyramid(image, 12, 2)
    for row in rows:
        codes = levels[row["level"]]
        assert row["image_raw_bytes"] == codes.nbytes and row["side_info_bytes"] == 80 and not row["stored"]
        setting = CodecSetting.parse(row["codec_setting"], 12)
        assert row["stored_bytes"] == len(encode_image(codes, setting)) + 80
    by = {(r["codec_setting"], r["level"]): r for r in rows}
    for level in (0, 1):
        lossless, lossy = by["jpeg2k:lossless", level], by["jpeg2k:40", level]
        assert lossy["stored_bytes"] < lossless["stored_bytes"]
        assert lossy["chamfer_l2"] > lossless["chamfer_l2"]
    assert by["jpeg2k:lossless", 0]["hausdorff"] < by["jpeg2k:lossless", 1]["hausdorff"] < 0.1


@pytest.mark.parametrize("bits", [9, 17, 0])
def test_config_refuses_bits_outside_10_to_16(bits: int) -> None:
    with pytest.raises(ValidationError, match="bits"):
        GeometryImageConfig(bits=bits)


def test_config_codec_settings() -> None:
    config = GeometryImageConfig(codec="jpeg2k", codec_quality=70, bits=12,
                                 rate_distortion=["jpeg2k:50", "jpeg2k:70", "png"])
    assert config.rate_distortion_settings == [  # stored setting first, its duplicate dropped
        CodecSetting("jpeg2k", 70.0, 12), CodecSetting("jpeg2k", 50.0, 12), CodecSetting("png", None, 12)]
    assert GeometryImageConfig().codec_setting == CodecSetting("jpeg2k", None, 14)
    for kwargs, message in [({"rate_distortion": ["png:50"]}, "png is lossless only"),
                            ({"codec": "png", "codec_quality": 50}, "png is lossless only"),
                            ({"rate_distortion": ["jpeg2k:high"]}, "is not '<codec>'")]:
        with pytest.raises(ValidationError, match=message):
            GeometryImageConfig(**kwargs)
    with pytest.raises(ValidationError):
        GeometryImageConfig(codec="webp")
