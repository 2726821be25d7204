"""Image coding of geometry-image pyramids: off-the-shelf image codecs (imagecodecs) as a Zarr 3 codec.

A geometry image is a smooth ``[C, H, W]`` image of quantised positions, and the coders made for smooth images
are where its storage advantage comes from (Gu, Gortler & Hoppe 2002 coded theirs with wavelets). This module
wraps imagecodecs' JPEG 2000 (OpenJPEG), JPEG XL (libjxl) and PNG, plus plain Zstandard as the generic
reference, in one codec setting:

=========  =========================================  ====================================================
codec      lossless (``quality=None``)                 lossy ``quality``
=========  =========================================  ====================================================
jpeg2k     reversible 5/3 wavelet, no colour transform  target PSNR in dB against the peak ``2**bits - 1``
jpegxl     modular mode                                 libjxl quality 0..100 (perceptual: bounds error loosely)
png        deflate, 16-bit samples                      not supported
zstd       Zstandard level 19 of the raw samples        not supported
=========  =========================================  ====================================================

JPEG 2000 lossless is the default: on the 257² OT geometry images of spot, fandisk, homer and stanford-bunny
(cut-augmented parameterization) it stored 0.33-0.47 of the raw uint16 bytes at 16 bits and 0.22-0.34 at 14
bits (JPEG XL 0.28-0.36, PNG 0.55-0.65, Zstandard 0.70-0.80 at 14 bits; JPEG-LS was worse still), and its PSNR
target bounds the error of the lossy mode (the RMS error lands within 0.3 dB of the target). The
multi-component (RGB -> YCbCr) transform is off: x, y, z are not colour channels, and it cost 1-10% of the
lossless size.

:class:`ImageCodec` is the Zarr 3 array-to-bytes codec ``brenier.imagecodecs``: each chunk ``[C, H, W]`` uint16
is one coded image, so a chunk's stored bytes are what a user ships. It is registered with Zarr on import of
this module and through the ``zarr.codecs`` entry point of the package, so a fresh process opening a store
finds it once ``brenier`` is installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import imagecodecs
import numpy as np
import zarr.registry
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType

__all__ = [
    "CODEC_NAME",
    "DEFAULT_CODEC",
    "CodecName",
    "CodecSetting",
    "CodecSettingError",
    "ImageCodec",
    "decode_image",
    "encode_image",
]

CODEC_NAME = "brenier.imagecodecs"  # the codec's name in zarr.json and in the ``zarr.codecs`` entry point

CodecName = Literal["jpeg2k", "jpegxl", "png", "zstd"]
_LOSSY: dict[str, tuple[float, float]] = {"jpeg2k": (1.0, 200.0), "jpegxl": (0.0, 100.0)}  # quality ranges
_SETTING = re.compile(r"^(?P<codec>[a-z0-9]+)(?::(?P<quality>lossless|[0-9]+(?:\.[0-9]+)?))?$")


class CodecSettingError(ValueError):
    """A codec setting that cannot be used: unknown codec, bits outside 10..16, or a quality the codec lacks."""


@dataclass(frozen=True)
class CodecSetting:
    """How one geometry-image level is coded.

    Attributes:
        codec: ``"jpeg2k"``, ``"jpegxl"``, ``"png"`` or ``"zstd"`` (see the module table).
        quality: None for lossless; jpeg2k: target PSNR in dB (1..200) against ``2**bits - 1``; jpegxl: libjxl
            quality (0..100, 100 is not lossless).
        bits: bits per channel of the quantised samples, 10..16; samples are ``uint16`` codes below ``2**bits``.

    Raises:
        CodecSettingError: on an unknown codec, ``bits`` outside 10..16, or a lossy quality for a lossless-only
            codec or outside the codec's range.
    """

    codec: CodecName = "jpeg2k"
    quality: float | None = None
    bits: int = 16

    def __post_init__(self) -> None:
        if self.codec not in ("jpeg2k", "jpegxl", "png", "zstd"):
            raise CodecSettingError(f"unknown codec {self.codec!r}; use jpeg2k, jpegxl, png or zstd")
        if isinstance(self.bits, bool) or not isinstance(self.bits, int | np.integer) or not 10 <= self.bits <= 16:
            raise CodecSettingError(f"bits per channel must be an integer in 10..16, got {self.bits!r}")
        if self.quality is not None:
            if self.codec not in _LOSSY:
                raise CodecSettingError(f"{self.codec} is lossless only; got quality {self.quality}")
            low, high = _LOSSY[self.codec]
            if not low <= self.quality <= high:
                raise CodecSettingError(f"{self.codec} quality must be in {low:g}..{high:g}, got {self.quality}")

    @property
    def lossless(self) -> bool:
        """Whether decoding returns the quantised samples exactly."""
        return self.quality is None

    @property
    def label(self) -> str:
        """``"<codec>:lossless"`` or ``"<codec>:<quality>"``, the form :meth:`parse` reads."""
        return f"{self.codec}:{'lossless' if self.quality is None else f'{self.quality:g}'}"

    @classmethod
    def parse(cls, text: str, bits: int = 16) -> CodecSetting:
        """Read ``"jpeg2k"``, ``"jpeg2k:lossless"`` or ``"jpeg2k:60"`` (codec, optional quality).

        Raises:
            CodecSettingError: if ``text`` is not of that form or the setting is invalid (see the class).
        """
        match = _SETTING.match(text.strip().lower())
        if match is None:
            raise CodecSettingError(f"codec setting {text!r} is not '<codec>' or '<codec>:<quality|lossless>'")
        quality = match["quality"]
        return cls(match["codec"], None if quality in (None, "lossless") else float(quality), bits)  # type: ignore[arg-type]


DEFAULT_CODEC = CodecSetting()
"""JPEG 2000 lossless at 16 bits per channel."""


def _check_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 3 or codes.dtype != np.uint16:
        raise ValueError(f"an image to code must be [C, H, W] uint16, got {codes.shape} {codes.dtype}")
    if codes.size and int(codes.max()) >= 2**bits:
        raise ValueError(f"sample {int(codes.max())} does not fit in {bits} bits")
    return codes


def encode_image(codes: np.ndarray, setting: CodecSetting) -> bytes:
    """Code one ``[C, H, W]`` uint16 image with ``setting``.

    Args:
        codes: ``[C, H, W]`` uint16 samples below ``2**setting.bits`` (C = 3 for a geometry image).
        setting: codec, quality and bits.

    Returns:
        The codestream (JPEG 2000 J2K, JPEG XL, PNG or Zstandard frame); it records C, H, W and the bit depth
        for the image codecs.

    Raises:
        ValueError: if ``codes`` is not ``[C, H, W]`` uint16 or a sample needs more than ``setting.bits`` bits.
    """
    codes = _check_codes(codes, setting.bits)
    if setting.codec == "zstd":
        return imagecodecs.zstd_encode(np.ascontiguousarray(codes).tobytes(), level=19)
    interleaved = np.ascontiguousarray(codes.transpose(1, 2, 0))  # [H, W, C]: samples of one pixel together
    if setting.codec == "jpeg2k":
        return imagecodecs.jpeg2k_encode(
            interleaved, level=setting.quality, reversible=setting.lossless, mct=False,
            bitspersample=setting.bits, codecformat="J2K")
    if setting.codec == "jpegxl":
        if setting.lossless:
            return imagecodecs.jpegxl_encode(interleaved, lossless=True, bitspersample=setting.bits)
        return imagecodecs.jpegxl_encode(interleaved, level=setting.quality, bitspersample=setting.bits)
    return imagecodecs.png_encode(interleaved, level=9)


def decode_image(data: bytes, setting: CodecSetting, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`encode_image`: the ``[C, H, W]`` uint16 image of ``shape``.

    Raises:
        ValueError: if the decoded image does not have ``shape``.
    """
    if setting.codec == "zstd":
        return np.frombuffer(imagecodecs.zstd_decode(data), dtype=np.uint16).reshape(shape).copy()
    decoded = {"jpeg2k": imagecodecs.jpeg2k_decode, "jpegxl": imagecodecs.jpegxl_decode,
               "png": imagecodecs.png_decode}[setting.codec](data)
    decoded = decoded[..., None] if decoded.ndim == 2 else decoded
    image = np.ascontiguousarray(decoded.transpose(2, 0, 1)).astype(np.uint16, copy=False)
    if image.shape != tuple(shape):
        raise ValueError(f"decoded image has shape {image.shape}, expected {tuple(shape)}")
    return image


@dataclass(frozen=True)
class ImageCodec(ArrayBytesCodec):
    """Zarr 3 array-to-bytes codec ``brenier.imagecodecs``: each ``[C, H, W]`` uint16 chunk is one coded image.

    Its ``zarr.json`` entry is ``{"name": "brenier.imagecodecs", "configuration": {"codec": ..., "quality": ...,
    "bits": ...}}``. Use it as ``serializer=ImageCodec(setting)`` with ``compressors=None`` (the image codecs
    compress already).

    Raises:
        CodecSettingError: on an invalid setting (see :class:`CodecSetting`).
        ValueError: at array creation, if the array is not 3-D uint16.
    """

    is_fixed_size: ClassVar[bool] = False
    setting: CodecSetting

    def __init__(self, setting: CodecSetting = DEFAULT_CODEC) -> None:
        object.__setattr__(self, "setting", setting)

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        _, configuration = parse_named_configuration(data, CODEC_NAME, require_configuration=True)
        return cls(CodecSetting(configuration["codec"], configuration.get("quality"), int(configuration["bits"])))

    def to_dict(self) -> dict:
        return {"name": CODEC_NAME, "configuration": {
            "codec": self.setting.codec, "quality": self.setting.quality, "bits": self.setting.bits}}

    def validate(self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar],
                 chunk_grid: ChunkGrid) -> None:
        if len(shape) != 3 or dtype.to_native_dtype() != np.dtype(np.uint16):
            raise ValueError(f"{CODEC_NAME} codes [C, H, W] uint16 arrays, got shape {shape} {dtype}")

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        data = encode_image(np.asarray(chunk_array.as_numpy_array()), self.setting)
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        image = decode_image(chunk_bytes.to_bytes(), self.setting, chunk_spec.shape)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(image)

    def compute_encoded_size(self, _input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable-size codestreams


zarr.registry.register_codec(CODEC_NAME, ImageCodec)
