"""Decoders of the compressed 3DGS formats of the web ecosystem: the SuperSplat / PlayCanvas *compressed PLY* and
Niantic's *SPZ*. :func:`storage.gaussians.read_scene` reads both (next to the INRIA PLY) and turns the decoded
arrays into a :class:`storage.gaussians.GaussianScene`; this module only knows the bytes.

**Compressed PLY** (SuperSplat ``*.compressed.ply``; the decoder of PlayCanvas' ``splat-transform``,
``src/lib/readers/decompress-ply.ts``). A ``chunk`` element holds, per 256 consecutive splats, float32 bounds
``min_/max_ x y z`` of the means, ``min_/max_scale_ x y z`` of the log scales and optionally ``min_/max_ r g b``
of the colours. The ``vertex`` element holds four uint32 per splat:

* ``packed_position``: 11/10/11 bits (x in bits 21-31, y in 11-20, z in 0-10), each a fraction ``q / (2^b - 1)``
  of its chunk's box: ``x = min_x + (max_x - min_x) q_x / 2047``;
* ``packed_scale``: the log scales, 11/10/11 bits of the chunk's log-scale box, the same way;
* ``packed_rotation``: "smallest three": bits 30-31 index the largest-magnitude component of the quaternion
  ``rot_0..3`` (``w x y z``, made positive), bits 20-29, 10-19, 0-9 the other three in order, each
  ``(q / 1023 - 0.5) · √2`` (so in ``[-1/√2, 1/√2]``); the largest is ``√(1 - a² - b² - c²)``;
* ``packed_color``: 8/8/8/8 bits r g b a (r in bits 24-31), ``t = q / 255``; the colour is ``t`` (or
  ``min_r + (max_r - min_r) t`` with chunk colours) and equals ``0.5 + SH_C0 · f_dc``; the alpha ``t`` is the
  *activated* opacity ``sigmoid(opacity)``.

An optional ``sh`` element holds uint8 ``f_rest_0..f_rest_{3K-1}`` (INRIA order), ``f_rest = (t - 0.5) · 8`` with
``t = 0`` for 0, 1 for 255 and ``(q + 0.5) / 256`` otherwise.

**SPZ** (Niantic, ``nianticlabs/spz`` ``load-spz.cc``; version 4 as its C++ writer and the loaders of three.js /
Spark write it). Versions 2 and 3: one gzip stream of a 16-byte header (``magic 0x5053474e "NGSP"``, version,
numPoints, shDegree, fractionalBits, flags, reserved) followed, attribute by attribute for all splats, by the
positions (3 × 24-bit signed fixed point with ``fractionalBits`` fractional bits), alphas (uint8, the activated
opacity × 255), colours (3 × uint8, ``0.5 + 0.15 f_dc``), scales (3 × uint8, ``log scale = q / 16 - 10``),
rotations (version 2: 3 × uint8 ``x y z`` of the unit quaternion with ``w ≥ 0``, ``q / 127.5 - 1``; version 3:
4-byte smallest three of ``x y z w``, 2-bit largest index, 3 × (sign bit + 9-bit magnitude ``/ 511 · 1/√2``)) and
SH coefficients (uint8, ``(q - 128) / 128``, ``[coefficient][channel]`` per splat). Version 4: the same 16 header
bytes (the last one is the number of streams) plus a uint32 ``tocByteOffset`` and 12 reserved bytes, uncompressed;
at ``tocByteOffset`` a table of (compressed, uncompressed) uint64 sizes; then the attributes, each one zstd frame,
in the order above (rotations as in version 3). SPZ stores a right-up-back (RUB) frame; the INRIA / COLMAP PLY frame
is right-down-front (RDF), so y and z of the means, the quaternion's ``y z`` and the odd SH coefficients flip
(``load-spz.cc`` ``coordinateConverter(RUB, RDF)``; checked on the bundled biker sample, whose decoded means match
the PLY reference to half the 2^-12 fixed-point step only with this flip).

Both readers refuse with a typed error naming the item: damaged bytes (:class:`UnreadableSceneError`: a bad gzip or
zstd stream, sizes that disagree with the header, an unsupported SPZ version or extension), a layout that is not
one of these formats (:class:`NotAGaussianSceneError`), zero splats (:class:`EmptySceneError`), non-finite chunk
bounds (:class:`NonFiniteGaussiansError`), and data that would inflate beyond :func:`storage.inputs.max_input_bytes`
(:class:`InputTooLargeError`).
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from numcodecs import zstd
from plyfile import PlyData, PlyListProperty

from storage.errors import (
    EmptySceneError,
    InputTooLargeError,
    NonFiniteGaussiansError,
    NotAGaussianSceneError,
    UnreadableSceneError,
)
from storage.inputs import FormatProblem, max_input_bytes

__all__ = [
    "COMPRESSED_PLY_CHUNK",
    "SH_C0",
    "SPZ_COLOR_SCALE",
    "SPZ_VERSIONS",
    "DecodedSplats",
    "decode_compressed_ply",
    "decode_spz",
    "is_compressed_ply",
    "looks_like_spz",
    "sniff_spz",
]

SH_C0: float = 0.28209479177387814
"""Degree-0 SH basis constant ``1 / (2 √π)``: colour = ``0.5 + SH_C0 · f_dc``."""

COMPRESSED_PLY_CHUNK: int = 256
"""Splats per ``chunk`` row of a compressed PLY."""

SPZ_COLOR_SCALE: float = 0.15
"""SPZ stores ``0.5 + 0.15 f_dc`` (not ``SH_C0``) in a colour byte, leaving room for out-of-gamut DC terms."""

SPZ_VERSIONS: tuple[int, ...] = (2, 3, 4)
"""SPZ versions read: 2 and 3 (gzip, or the same payload uncompressed), 4 (zstd streams). Version 1 (float16
positions, never released) and later versions are refused."""

_SPZ_MAGIC = 0x5053474E  # "NGSP" little endian
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SPZ_FLAG_EXTENSIONS = 0x2
_SPZ_SH_DIMS = {0: 0, 1: 3, 2: 8, 3: 15, 4: 24}  # coefficients per channel of SH degree d (SPZ supports up to 4)
_SPZ_STREAMS = ("positions", "alphas", "colors", "scales", "rotations", "sh")
# RUB -> RDF (x kept, y and z flipped): the sign of each SH coefficient k (load-spz.cc flipSh with x=1, y=z=-1)
_RUB_TO_RDF_SH = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1, -1, 1, -1, 1, 1, -1, 1, -1, -1.0])
_SQRT1_2 = math.sqrt(0.5)

_CHUNK_FIELDS = ("min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
                 "min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z")  # fmt: skip
_CHUNK_COLOR_FIELDS = ("min_r", "min_g", "min_b", "max_r", "max_g", "max_b")
_PACKED_FIELDS = ("packed_position", "packed_rotation", "packed_scale", "packed_color")


@dataclass(frozen=True)
class DecodedSplats:
    """Splats decoded from a compressed format, in the INRIA PLY frame and conventions (float64 arrays).

    Attributes
    ----------
    means : np.ndarray
        ``[N, 3]`` centres.
    log_scales : np.ndarray
        ``[N, 3]`` natural logs of the standard deviations (the PLY's ``scale_*``).
    quats : np.ndarray
        ``[N, 4]`` quaternions ``w x y z`` (the PLY's ``rot_*``), unit up to quantisation.
    opacities : np.ndarray
        ``[N]`` activated opacities in [0, 1] (``sigmoid`` of the PLY's ``opacity``; both formats store them so).
    sh_dc : np.ndarray
        ``[N, 3]`` degree-0 SH coefficients (``f_dc_*``).
    sh_rest : np.ndarray
        ``[N, K, 3]`` higher-degree SH coefficients, ``sh_rest[n, k, c]`` (``K = 0`` for degree 0).
    """

    means: np.ndarray
    log_scales: np.ndarray
    quats: np.ndarray
    opacities: np.ndarray
    sh_dc: np.ndarray
    sh_rest: np.ndarray


def _smallest_three(comp: np.ndarray, scale: float, centred: bool, bits: int) -> np.ndarray:
    """``[N, 4]`` quaternion components from "smallest three" words: bits 30-31 the index of the largest, bits
    ``2·bits, bits, 0`` (each ``bits`` wide) the other three in ascending index order (the first in the highest
    bits). ``centred``: compressed PLY ``(q / (2^bits - 1) - 0.5) · scale``; otherwise SPZ, a sign bit above a
    ``bits - 1``-bit magnitude ``q / (2^(bits-1) - 1) · scale``."""
    comp = comp.astype(np.uint64)
    largest = (comp >> np.uint64(30)).astype(np.int64)
    out = np.zeros((len(comp), 4))
    mask = np.uint64((1 << bits) - 1)
    values = []
    for shift in (2 * bits, bits, 0):
        q = ((comp >> np.uint64(shift)) & mask).astype(np.float64)
        if centred:
            values.append((q / ((1 << bits) - 1) - 0.5) * scale)
        else:
            magnitude = (q.astype(np.int64) & ((1 << (bits - 1)) - 1)) / ((1 << (bits - 1)) - 1) * scale
            negative = (q.astype(np.int64) >> (bits - 1)) & 1
            values.append(np.where(negative == 1, -magnitude, magnitude))
    rows = np.arange(len(comp))
    for which in range(4):
        sel = rows[largest == which]
        others = [i for i in range(4) if i != which]
        for column, value in zip(others, values, strict=True):
            out[sel, column] = value[sel]
    sum_sq = (out**2).sum(axis=1)
    out[rows, largest] = np.sqrt(np.maximum(0.0, 1.0 - sum_sq))
    return out


# --- compressed PLY -----------------------------------------------------------------------------------------------


def is_compressed_ply(ply: PlyData) -> bool:
    """Whether a parsed PLY is laid out as a compressed PLY: a ``chunk`` element and ``packed_*`` properties in
    its ``vertex`` element (told by the header, never by the file name)."""
    names = {element.name for element in ply.elements}
    if "chunk" not in names or "vertex" not in names:
        return False
    vertex = {p.name for p in ply["vertex"].properties}
    return any(name in vertex for name in _PACKED_FIELDS)


def _unorm(value: np.ndarray, shift: int, bits: int) -> np.ndarray:
    return ((value >> np.uint32(shift)) & np.uint32((1 << bits) - 1)).astype(np.float64) / ((1 << bits) - 1)


def _lerp(lo: np.ndarray, hi: np.ndarray, t: np.ndarray) -> np.ndarray:
    return lo * (1.0 - t) + hi * t


def _scalar_fields(scene_id: str, element, names: tuple[str, ...], what: str) -> None:
    present = {p.name: p for p in element.properties}
    missing = [name for name in names if name not in present]
    if missing:
        raise NotAGaussianSceneError(scene_id, f"compressed PLY {what} lacks {', '.join(missing)}")
    lists = [name for name in names if isinstance(present[name], PlyListProperty)]
    if lists:
        raise NotAGaussianSceneError(scene_id, f"compressed PLY {what} fields {', '.join(lists)} are list properties")


def decode_compressed_ply(scene_id: str, ply: PlyData) -> DecodedSplats:
    """Decode a SuperSplat / PlayCanvas compressed PLY (see the module docstring) parsed by plyfile.

    Raises
    ------
    NotAGaussianSceneError
        A ``packed_*`` property or chunk bound is missing, a list, or ``packed_*`` is not uint32; there is not one
        chunk per 256 splats; chunk colours are partial; the ``sh`` element has a row count other than the
        splats' or properties other than uint8 ``f_rest_0..f_rest_{3K-1}`` of an SH degree.
    EmptySceneError
        Zero splats.
    NonFiniteGaussiansError
        A chunk bound is NaN or infinite (the reason names the fields and counts).
    """
    vertex, chunk = ply["vertex"], ply["chunk"]
    _scalar_fields(scene_id, vertex, _PACKED_FIELDS, "vertex element")
    wrong = [p.name for p in vertex.properties if p.name in _PACKED_FIELDS and p.val_dtype not in ("u4", "uint32")]
    if wrong:
        raise NotAGaussianSceneError(scene_id, f"compressed PLY fields {', '.join(wrong)} must be uint32")
    _scalar_fields(scene_id, chunk, _CHUNK_FIELDS, "chunk element")
    chunk_names = {p.name for p in chunk.properties}
    colours = [name for name in _CHUNK_COLOR_FIELDS if name in chunk_names]
    if colours and len(colours) != len(_CHUNK_COLOR_FIELDS):
        missing = ", ".join(name for name in _CHUNK_COLOR_FIELDS if name not in chunk_names)
        raise NotAGaussianSceneError(
            scene_id, f"compressed PLY chunk element has partial colour bounds (lacks {missing})")
    if colours:
        _scalar_fields(scene_id, chunk, _CHUNK_COLOR_FIELDS, "chunk element")
    n = len(vertex.data)
    if n == 0:
        raise EmptySceneError(scene_id, "compressed PLY vertex element has 0 Gaussians")
    n_chunks = len(chunk.data)
    expected = -(-n // COMPRESSED_PLY_CHUNK)
    if n_chunks != expected:
        raise NotAGaussianSceneError(
            scene_id, f"compressed PLY has {n_chunks} chunks for {n} splats, expected {expected} "
            f"(one per {COMPRESSED_PLY_CHUNK} splats)")
    with np.errstate(invalid="ignore"):
        bounds = {name: np.asarray(chunk.data[name], dtype=np.float64) for name in (*_CHUNK_FIELDS, *colours)}
    bad = {name: int(np.count_nonzero(~np.isfinite(v))) for name, v in bounds.items()}
    bad = {name: count for name, count in bad.items() if count}
    if bad:
        detail = ", ".join(f"{name} ({count})" for name, count in bad.items())
        raise NonFiniteGaussiansError(
            scene_id, f"NaN or Inf values among {n_chunks} compressed PLY chunks in fields: {detail}")

    index = np.arange(n) // COMPRESSED_PLY_CHUNK
    packed = {name: np.asarray(vertex.data[name], dtype=np.uint32) for name in _PACKED_FIELDS}

    def unpack_111011(value: np.ndarray, prefix: str) -> np.ndarray:
        fractions = (_unorm(value, 21, 11), _unorm(value, 11, 10), _unorm(value, 0, 11))
        return np.stack([_lerp(bounds[f"min_{prefix}{axis}"][index], bounds[f"max_{prefix}{axis}"][index], t)
                         for axis, t in zip("xyz", fractions, strict=True)], axis=1)

    means = unpack_111011(packed["packed_position"], "")
    log_scales = unpack_111011(packed["packed_scale"], "scale_")
    quats = _smallest_three(packed["packed_rotation"], math.sqrt(2.0), centred=True, bits=10)
    color = packed["packed_color"]
    rgb = np.stack([_unorm(color, shift, 8) for shift in (24, 16, 8)], axis=1)
    if colours:
        rgb = np.stack([_lerp(bounds[f"min_{c}"][index], bounds[f"max_{c}"][index], rgb[:, i])
                        for i, c in enumerate("rgb")], axis=1)
    return DecodedSplats(
        means=means,
        log_scales=log_scales,
        quats=quats,
        opacities=_unorm(color, 0, 8),
        sh_dc=(rgb - 0.5) / SH_C0,
        sh_rest=_compressed_ply_sh(scene_id, ply, n),
    )


def _compressed_ply_sh(scene_id: str, ply: PlyData, n: int) -> np.ndarray:
    if "sh" not in {element.name for element in ply.elements}:
        return np.zeros((n, 0, 3))
    element = ply["sh"]
    names = [p.name for p in element.properties]
    m = len(names)
    k = m // 3
    if names != [f"f_rest_{i}" for i in range(m)] or m % 3 or math.isqrt(k + 1) ** 2 != k + 1:
        raise NotAGaussianSceneError(
            scene_id, f"compressed PLY sh element must hold f_rest_0..f_rest_{{3K-1}} for an SH degree, got "
            f"{m} properties ({', '.join(names[:4])}{', ...' if m > 4 else ''})")
    if any(isinstance(p, PlyListProperty) or p.val_dtype not in ("u1", "uint8") for p in element.properties):
        raise NotAGaussianSceneError(scene_id, "compressed PLY sh properties must be uint8 scalars")
    if len(element.data) != n:
        raise NotAGaussianSceneError(scene_id, f"compressed PLY sh element has {len(element.data)} rows for {n} splats")
    q = np.stack([np.asarray(element.data[name], dtype=np.float64) for name in names], axis=1)  # [N, 3K]
    t = np.where(q == 0, 0.0, np.where(q == 255, 1.0, (q + 0.5) / 256.0))
    return ((t - 0.5) * 8.0).reshape(n, 3, k).transpose(0, 2, 1)


# --- SPZ ----------------------------------------------------------------------------------------------------------


def looks_like_spz(head: bytes) -> bool:
    """Whether bytes start like an SPZ file: gzip magic (versions 1-3) or ``NGSP`` (version 4, or an
    uncompressed legacy payload)."""
    return head[:2] == _GZIP_MAGIC or head[:4] == b"NGSP"


def _v4_layout(head: bytes) -> tuple[list[tuple[int, int]], int] | str:
    """TOC entries and the offset of the first stream of a version-4 header, or why they cannot be read."""
    if len(head) < 32:
        return f"truncated: a version 4 SPZ header has 32 bytes, the file {len(head)}"
    n_streams, toc = head[15], struct.unpack_from("<I", head, 16)[0]
    if toc < 32:
        return f"corrupt SPZ header: table of contents at byte {toc}, inside the 32-byte header"
    end = toc + 16 * n_streams
    if end > len(head):
        return f"truncated: the SPZ table of contents ends at byte {end}, past the {len(head)} bytes read"
    return [struct.unpack_from("<QQ", head, toc + 16 * i) for i in range(n_streams)], end


def sniff_spz(head: bytes, size: int) -> FormatProblem | None:
    """Sniffer of SPZ (:class:`storage.inputs.Sniffer`): gzip magic (versions 1-3, checked when inflated), or the
    ``NGSP`` magic of version 4 with a table of contents whose streams end exactly at the end of the file (a
    truncated or padded file is refused from its first bytes)."""
    if head[:2] == _GZIP_MAGIC:
        return None
    if head[:4] != b"NGSP":
        return FormatProblem(f"not an SPZ file (starts with {head[:8]!r}, expected gzip magic or b'NGSP')", True)
    if len(head) < 8 or struct.unpack_from("<I", head, 4)[0] != 4:
        return None  # an uncompressed legacy payload or an unsupported version: the decoder says which
    layout = _v4_layout(head)
    if isinstance(layout, str):
        return FormatProblem(layout, True)
    entries, start = layout
    declared = start + sum(compressed for compressed, _ in entries)
    if size < declared:
        return FormatProblem(f"truncated: its table of contents declares {declared} bytes, the file has {size}", True)
    if size > declared:
        return FormatProblem(f"{size - declared} bytes follow the {declared} its table of contents declares", True)
    return None


def _gunzip(scene_id: str, data: bytes) -> bytes:
    limit = max_input_bytes()
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as e:
        raise UnreadableSceneError(scene_id, f"corrupt SPZ: gzip stream: {e}") from e
    if len(out) > limit or inflater.unconsumed_tail:
        raise InputTooLargeError(scene_id, f"SPZ gzip stream inflates to more than the input limit of {limit} bytes")
    if not inflater.eof:
        raise UnreadableSceneError(scene_id, f"truncated SPZ: the gzip stream ends after {len(data)} bytes, unfinished")
    return out


def _zstd_content_size(frame: bytes) -> int | None:
    """Frame_Content_Size of a zstd frame header (RFC 8878 §3.1.1.1), or None when absent or unreadable."""
    if len(frame) < 6 or frame[:4] != _ZSTD_MAGIC:
        return None
    descriptor = frame[4]
    single_segment = (descriptor >> 5) & 1
    position = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3]
    width = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
    if width == 0 or len(frame) < position + width:
        return None
    value = int.from_bytes(frame[position : position + width], "little")
    return value + 256 if width == 2 else value


def _unzstd(scene_id: str, frame: bytes, expected: int, name: str) -> bytes:
    if frame[:4] != _ZSTD_MAGIC:
        raise UnreadableSceneError(scene_id, f"corrupt SPZ: the {name} stream is not a zstd frame")
    declared = _zstd_content_size(frame)
    if declared is None:
        raise UnreadableSceneError(scene_id, f"corrupt SPZ: the {name} stream's zstd frame declares no content size")
    if declared != expected:
        raise UnreadableSceneError(
            scene_id, f"corrupt SPZ: the {name} stream's zstd frame holds {declared} bytes, expected {expected}")
    try:
        return bytes(zstd.decompress(frame, bytearray(expected)))
    except (RuntimeError, ValueError) as e:
        raise UnreadableSceneError(scene_id, f"corrupt SPZ: the {name} stream: {e}") from e


def _stream_sizes(n: int, sh_dim: int, rotation_bytes: int) -> dict[str, int]:
    sizes = {"positions": 9 * n, "alphas": n, "colors": 3 * n, "scales": 3 * n, "rotations": rotation_bytes * n,
             "sh": 3 * sh_dim * n}  # fmt: skip
    return {name: size for name, size in sizes.items() if name != "sh" or sh_dim}


def _check_header(scene_id: str, version: int, n: int, sh_degree: int, fractional_bits: int) -> int:
    if version not in SPZ_VERSIONS:
        raise UnreadableSceneError(
            scene_id, f"unsupported SPZ version {version} (this reader decodes versions "
            f"{', '.join(map(str, SPZ_VERSIONS))})")
    if sh_degree not in _SPZ_SH_DIMS:
        raise UnreadableSceneError(scene_id, f"corrupt SPZ header: SH degree {sh_degree} (SPZ has 0 to 4)")
    if fractional_bits > 23:
        raise UnreadableSceneError(
            scene_id, f"corrupt SPZ header: {fractional_bits} fractional bits of 24-bit positions")
    if n == 0:
        raise EmptySceneError(scene_id, "SPZ file has 0 Gaussians")
    sh_dim = _SPZ_SH_DIMS[sh_degree]
    limit = max_input_bytes()
    decoded = n * (9 + 1 + 3 + 3 + 4 + 3 * sh_dim)
    if decoded > limit:
        raise InputTooLargeError(
            scene_id, f"SPZ header declares {n} Gaussians ({decoded} bytes decoded), more than the input limit of "
            f"{limit} bytes")
    return sh_dim


def _legacy_streams(scene_id: str, payload: bytes) -> tuple[int, int, int, int, dict[str, bytes]]:
    if len(payload) < 16:
        raise UnreadableSceneError(scene_id, f"truncated SPZ: {len(payload)} bytes, shorter than the 16-byte header")
    magic, version, n, sh_degree, fractional_bits, flags, _ = struct.unpack_from("<IIIBBBB", payload)
    if magic != _SPZ_MAGIC:
        raise UnreadableSceneError(scene_id, f"corrupt SPZ: the payload starts with {payload[:4]!r}, not b'NGSP'")
    if version == 4:
        raise UnreadableSceneError(scene_id, "corrupt SPZ: a version 4 header inside a gzip stream")
    sh_dim = _check_header(scene_id, version, n, sh_degree, fractional_bits)
    if flags & _SPZ_FLAG_EXTENSIONS:
        raise UnreadableSceneError(scene_id, f"SPZ version {version} extensions are not supported (flags {flags:#x})")
    sizes = _stream_sizes(n, sh_dim, 3 if version == 2 else 4)
    needed = 16 + sum(sizes.values())
    if len(payload) != needed:
        what = "truncated" if len(payload) < needed else "corrupt"
        raise UnreadableSceneError(
            scene_id, f"{what} SPZ: its header declares {n} Gaussians of SH degree {sh_degree}, {needed} bytes, "
            f"the payload has {len(payload)}")
    streams, offset = {}, 16
    for name, size in sizes.items():
        streams[name] = payload[offset : offset + size]
        offset += size
    return version, n, sh_degree, fractional_bits, streams


def _v4_streams(scene_id: str, data: bytes) -> tuple[int, int, int, dict[str, bytes]]:
    layout = _v4_layout(data)
    if isinstance(layout, str):
        raise UnreadableSceneError(scene_id, layout)
    entries, offset = layout
    _, version, n, sh_degree, fractional_bits, flags = struct.unpack_from("<IIIBBB", data)
    sh_dim = _check_header(scene_id, version, n, sh_degree, fractional_bits)
    if flags & _SPZ_FLAG_EXTENSIONS and sh_dim:
        # an extension may change the SH quantisation (Adobe's SH quantisation extension); it is not read here
        raise UnreadableSceneError(
            scene_id, f"SPZ extensions with SH coefficients are not supported (flags {flags:#x})")
    sizes = _stream_sizes(n, sh_dim, 4)
    if len(entries) != len(sizes):
        raise UnreadableSceneError(
            scene_id, f"corrupt SPZ: {len(entries)} streams for SH degree {sh_degree}, expected {len(sizes)}")
    streams = {}
    for (name, size), (compressed, uncompressed) in zip(sizes.items(), entries, strict=True):
        if uncompressed != size:
            raise UnreadableSceneError(
                scene_id, f"corrupt SPZ: the {name} stream declares {uncompressed} bytes, {n} Gaussians need {size}")
        if offset + compressed > len(data):
            raise UnreadableSceneError(
                scene_id, f"truncated SPZ: the {name} stream ends at byte {offset + compressed}, the file has "
                f"{len(data)}")
        streams[name] = _unzstd(scene_id, data[offset : offset + compressed], size, name)
        offset += compressed
    if offset != len(data):
        raise UnreadableSceneError(scene_id, f"corrupt SPZ: {len(data) - offset} bytes follow the last stream")
    return n, sh_degree, fractional_bits, streams


def decode_spz(scene_id: str, data: bytes) -> DecodedSplats:
    """Decode an SPZ file (versions :data:`SPZ_VERSIONS`; see the module docstring) into the INRIA PLY frame.

    The antialiasing flag (splats trained with Mip-Splatting's 2D filter) is not represented and is ignored.

    Raises
    ------
    UnreadableSceneError
        Not SPZ bytes; a corrupt or truncated gzip / zstd stream; a header whose sizes disagree with the data; an
        unsupported version, SH degree or extension.
    InputTooLargeError
        The data would inflate beyond :func:`storage.inputs.max_input_bytes`.
    EmptySceneError
        Zero Gaussians.
    """
    if data[:2] == _GZIP_MAGIC:
        version, n, sh_degree, fractional_bits, streams = _legacy_streams(scene_id, _gunzip(scene_id, data))
    elif data[:4] == b"NGSP" and len(data) >= 8 and struct.unpack_from("<I", data, 4)[0] == 4:
        version = 4
        n, sh_degree, fractional_bits, streams = _v4_streams(scene_id, data)
    elif data[:4] == b"NGSP":
        version, n, sh_degree, fractional_bits, streams = _legacy_streams(scene_id, data)
    else:
        raise UnreadableSceneError(scene_id, f"not an SPZ file (starts with {data[:8]!r})")

    flip = np.array([1.0, -1.0, -1.0])  # RUB (SPZ) -> RDF (INRIA PLY): y and z flip
    raw = np.frombuffer(streams["positions"], dtype=np.uint8).reshape(n, 3, 3).astype(np.int32)
    fixed = raw[..., 0] | (raw[..., 1] << 8) | (raw[..., 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = fixed.astype(np.float64) / float(1 << fractional_bits) * flip

    rotations = np.frombuffer(streams["rotations"], dtype=np.uint8)
    if version == 2:
        xyz = rotations.reshape(n, 3).astype(np.float64) / 127.5 - 1.0
        w = np.sqrt(np.maximum(0.0, 1.0 - (xyz**2).sum(axis=1)))
        xyzw = np.concatenate([xyz, w[:, None]], axis=1)
    else:
        xyzw = _smallest_three(rotations.view("<u4"), _SQRT1_2, centred=False, bits=10)
    quats = np.concatenate([xyzw[:, 3:], xyzw[:, :3] * flip], axis=1)  # w x y z, then the frame flip of x y z

    colors = np.frombuffer(streams["colors"], dtype=np.uint8).reshape(n, 3).astype(np.float64)
    log_scales = np.frombuffer(streams["scales"], dtype=np.uint8).reshape(n, 3).astype(np.float64) / 16.0 - 10.0
    sh_dim = _SPZ_SH_DIMS[sh_degree]
    if sh_dim:
        sh = np.frombuffer(streams["sh"], dtype=np.uint8).reshape(n, sh_dim, 3).astype(np.float64)
        sh_rest = (sh - 128.0) / 128.0 * _RUB_TO_RDF_SH[:sh_dim, None]
    else:
        sh_rest = np.zeros((n, 0, 3))
    return DecodedSplats(
        means=means,
        log_scales=log_scales,
        quats=quats,
        opacities=np.frombuffer(streams["alphas"], dtype=np.uint8).astype(np.float64) / 255.0,
        sh_dc=(colors / 255.0 - 0.5) / SPZ_COLOR_SCALE,
        sh_rest=sh_rest,
    )
