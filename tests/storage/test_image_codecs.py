"""Image coding of geometry-image pyramids (storage.image_codecs) and its Zarr store path, on a real geometry image."""

from __future__ import annotations

import tomllib
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
import zarr
import zarr.registry

from otcore.mesh.disk_cut import cut_to_disk
from otcore.mesh.geometry_image import mipmap_pyramid, quantize, resample_geometry_image
from otcore.mesh.parameterization import harmonic_parameterization
from storage.image_codecs import (
    CODEC_NAME,
    CodecSetting,
    CodecSettingError,
    ImageCodec,
    decode_image,
    encode_image,
)
from storage.zarr_store import ItemStore

LOSSLESS = ("jpeg2k", "jpegxl", "png", "zstd")


@pytest.fixture(scope="module")
def spot_image(spot) -> np.ndarray:
    """``[3, 129, 129]`` float geometry image of spot's harmonic map (unit bbox diagonal)."""
    disk = cut_to_disk(spot.vertices, spot.faces)
    return resample_geometry_image(disk.vertices, disk.faces, harmonic_parameterization(disk).uv, 129)


@pytest.mark.parametrize("codec", LOSSLESS)
@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_lossless_round_trip_is_exact(spot_image: np.ndarray, codec: str, bits: int) -> None:
    codes = quantize(spot_image, bits).codes
    assert int(codes.max()) == 2**bits - 1  # the full code range is exercised
    setting = CodecSetting(codec, None, bits)
    data = encode_image(codes, setting)
    np.testing.assert_array_equal(decode_image(data, setting, codes.shape), codes)
    if codec == "jpeg2k":  # a smooth image codes far below its raw size, and fewer bits code smaller
        assert len(data) < 0.6 * codes.nbytes


def test_fewer_bits_code_smaller(spot_image: np.ndarray) -> None:
    sizes = [len(encode_image(quantize(spot_image, bits).codes, CodecSetting(bits=bits))) for bits in (10, 12, 14, 16)]
    assert sizes == sorted(sizes) and sizes[0] < 0.5 * sizes[-1]


@pytest.mark.parametrize("bits", [12, 16])
def test_jpeg2k_psnr_target_bounds_the_error(spot_image: np.ndarray, bits: int) -> None:
    codes = quantize(spot_image, bits).codes
    sizes = []
    for psnr in (40.0, 55.0, 70.0):
        setting = CodecSetting("jpeg2k", psnr, bits)
        data = encode_image(codes, setting)
        error = decode_image(data, setting, codes.shape).astype(np.float64) - codes
        rms = np.sqrt(np.mean(error**2))
        assert 20 * np.log10((2**bits - 1) / rms) >= psnr - 1.0
        sizes.append(len(data))
    assert sizes == sorted(sizes) and sizes[-1] < len(encode_image(codes, CodecSetting(bits=bits)))


def test_jpegxl_lossy_error_shrinks_with_quality(spot_image: np.ndarray) -> None:
    codes = quantize(spot_image, 16).codes
    errors = []
    for quality in (50.0, 90.0):
        setting = CodecSetting("jpegxl", quality)
        decoded = decode_image(encode_image(codes, setting), setting, codes.shape).astype(np.float64)
        errors.append(np.sqrt(np.mean((decoded - codes) ** 2)))
    assert errors[1] < errors[0] < 0.05 * 2**16


@pytest.mark.parametrize("bits", [9, 17, 0, True, 12.0])
def test_bits_outside_10_to_16_are_refused(bits) -> None:
    with pytest.raises(CodecSettingError, match=r"bits per channel must be an integer in 10\.\.16"):
        CodecSetting("jpeg2k", None, bits)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"codec": "webp"}, "unknown codec 'webp'"),
        ({"codec": "png", "quality": 50.0}, "png is lossless only"),
        ({"codec": "jpeg2k", "quality": 0.0}, r"jpeg2k quality must be in 1\.\.200"),
        ({"codec": "jpegxl", "quality": 101.0}, r"jpegxl quality must be in 0\.\.100"),
    ],
)
def test_invalid_settings_name_the_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(CodecSettingError, match=message):
        CodecSetting(**kwargs)


def test_parse_reads_labels_and_refuses_garbage() -> None:
    assert CodecSetting.parse("jpeg2k:60", 12) == CodecSetting("jpeg2k", 60.0, 12)
    assert CodecSetting.parse("JPEGXL") == CodecSetting.parse("jpegxl:lossless") == CodecSetting("jpegxl")
    for setting in (CodecSetting("jpeg2k", 62.5), CodecSetting("png")):
        assert CodecSetting.parse(setting.label) == setting
    for text in ("jpeg2k:", "jpeg2k:high", ":60", "jpeg2k 60"):
        with pytest.raises(CodecSettingError):
            CodecSetting.parse(text)


def test_codes_that_do_not_fit_the_bits_are_refused(spot_image: np.ndarray) -> None:
    codes = quantize(spot_image, 16).codes
    with pytest.raises(ValueError, match="does not fit in 12 bits"):
        encode_image(codes, CodecSetting(bits=12))
    with pytest.raises(ValueError, match=r"\[C, H, W\] uint16"):
        encode_image(codes.astype(np.int32), CodecSetting())


def _side_info(quantized) -> dict[str, np.ndarray]:
    return {"quantization_offset": quantized.offset, "quantization_scale": quantized.scale,
            "normalization_scale": np.array([2.5])}


@pytest.mark.parametrize("setting", [CodecSetting(), CodecSetting("jpeg2k", 60.0, 12), CodecSetting("png", None, 10)])
def test_stored_bytes_are_codestreams_plus_side_info(tmp_path: Path, spot_image: np.ndarray, setting) -> None:
    quantized = quantize(spot_image, setting.bits)
    levels = mipmap_pyramid(quantized.codes, 4)
    store = ItemStore(str(tmp_path), "run", "spot")
    store.begin("f", {})
    stored = store.write_pyramid("ot/geometry_image", levels, {"note": 1}, codec=setting,
                                 side_info=_side_info(quantized))
    side_bytes = 3 * 8 + 3 * 8 + 8
    assert stored == [len(encode_image(level, setting)) + side_bytes for level in levels]
    for k, level in enumerate(levels):  # one codestream file per level: what a user ships
        (chunk,) = [p for p in (tmp_path / "run" / "spot" / "ot" / "geometry_image" / str(k) / "c").rglob("*")
                    if p.is_file()]
        assert chunk.stat().st_size == stored[k] - side_bytes
    back, attrs = store.read_pyramid("ot/geometry_image")
    assert attrs["codec"] == {"setting": setting.label, "bits": setting.bits} and attrs["note"] == 1
    for level, decoded in zip(levels, back, strict=True):
        assert decoded.shape == level.shape and decoded.dtype == np.uint16
        if setting.lossless:
            np.testing.assert_array_equal(decoded, level)
        else:
            assert 0 < np.abs(decoded.astype(np.int64) - level).max() < 0.05 * 2**setting.bits
    side = store.read_side_info("ot/geometry_image")
    assert sorted(side) == sorted(_side_info(quantized))
    np.testing.assert_array_equal(side["quantization_scale"], quantized.scale)
    level0 = zarr.open_array(str(tmp_path / "run" / "spot" / "ot" / "geometry_image" / "0"), mode="r")
    assert list(level0.metadata.to_dict()["codecs"]) == [ImageCodec(setting).to_dict()]


def test_uncoded_pyramid_still_counts_side_info(tmp_path: Path, spot_image: np.ndarray) -> None:
    quantized = quantize(spot_image, 16)
    store = ItemStore(str(tmp_path), "run", "spot")
    store.begin("f", {})
    with_side = store.write_pyramid("a", [quantized.codes], {}, side_info=_side_info(quantized))
    without = store.write_pyramid("b", [quantized.codes], {})
    assert with_side[0] - without[0] == 56
    assert store.read_side_info("b") == {}


def test_levels_beyond_the_bits_fail_before_anything_is_written(tmp_path: Path, spot_image: np.ndarray) -> None:
    store = ItemStore(str(tmp_path), "run", "spot")
    store.begin("f", {})
    with pytest.raises(ValueError, match="uint16 below 2\\*\\*12"):
        store.write_pyramid("gi", [quantize(spot_image, 16).codes], {}, codec=CodecSetting(bits=12))
    with pytest.raises(KeyError):
        store.read_attrs("gi")


def test_codec_is_registered_and_declared_as_entry_point() -> None:
    assert zarr.registry.get_codec_class(CODEC_NAME) is ImageCodec
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    module, name = pyproject["project"]["entry-points"]["zarr.codecs"][CODEC_NAME].split(":")
    assert getattr(import_module(module), name) is ImageCodec
    for setting in (CodecSetting(), CodecSetting("jpegxl", 80.0, 11)):
        assert ImageCodec.from_dict(ImageCodec(setting).to_dict()).setting == setting
