"""Trained 3D Gaussian Splatting scenes: list the scene files at a location, read one, write one.

A scene is one PLY file in the standard layout of the INRIA 3DGS reference code (Kerbl, Kopanas, Leimkühler,
Drettakis 2023, "3D Gaussian Splatting for Real-Time Radiance Field Rendering"; ``GaussianModel.save_ply`` /
``load_ply`` of ``graphdeco-inria/gaussian-splatting``): one ``vertex`` element with float properties

``x y z [nx ny nz] f_dc_0..2 [f_rest_0..f_rest_{3K-1}] opacity scale_0..2 rot_0..3``

where ``opacity`` is a logit, ``scale_*`` are natural logs of the standard deviations along the Gaussian's
principal axes, ``rot_*`` is an (unnormalised) quaternion ``w x y z``, ``f_dc_*`` the degree-0 spherical-harmonic
(SH) coefficients of red, green, blue and ``f_rest_*`` the higher-degree SH coefficients, channel-major
(``K`` coefficients of red, then of green, then of blue), ``K = (d + 1)^2 - 1`` for SH degree ``d``.

:func:`read_scene` returns the *activated* parameters (``opacities = sigmoid(opacity)``,
``scales = exp(scale)``, unit ``quats``), as every renderer and the reduction methods use them;
:func:`write_scene` applies the inverse activations and writes the INRIA layout back. Files are read as bytes
through fsspec and parsed with plyfile (never unpickled).

Round trip (``read_scene(write_scene(read_scene(f)))``): means, SH coefficients and normals are bit-exact;
scales and opacities agree to float32 rounding (~1e-7 relative). The raw log-scales and logits are re-derived
from the float32 activations, so they agree to float32 rounding as well, except for opacities so close to 0 or 1
that float32 cannot resolve them: a logit above ``logit(1 - 2**-24) ≈ 16.6`` reads as opacity 1.0 and is written
back as that bound (likewise an opacity or scale that underflows to 0 is written as the smallest positive
float32 subnormal), so that every written value is finite.

:func:`read_scene` also reads the compressed formats users of the web 3DGS ecosystem bring, to the same
:class:`GaussianScene` (decoders in :mod:`storage.splat_formats`): the SuperSplat / PlayCanvas *compressed PLY*
(told apart from an INRIA PLY by its header: a ``chunk`` element and ``packed_*`` properties) and Niantic's *SPZ*
(``.spz``, versions 2-4). Every scene, whatever its format, is refused when a mean or a scale exceeds
:data:`MAX_ABS_MEAN` / :data:`MAX_SCALE` (:class:`~storage.errors.GaussianMagnitudeError`).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import PurePosixPath

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from plyfile import PlyData, PlyElement, PlyListProperty

from storage.errors import (
    DatasetNotFoundError,
    EmptySceneError,
    GaussianMagnitudeError,
    NonFiniteGaussiansError,
    NotAGaussianSceneError,
    UnreadableSceneError,
)
from storage.inputs import FormatProblem, Sniffer, read_input, sniff_ply
from storage.meshes import list_files
from storage.splat_formats import (
    DecodedSplats,
    decode_compressed_ply,
    decode_spz,
    is_compressed_ply,
    looks_like_spz,
    sniff_spz,
)

__all__ = [
    "MAX_ABS_MEAN",
    "MAX_SCALE",
    "REQUIRED_FIELDS",
    "SCENE_EXTENSIONS",
    "GaussianScene",
    "encode_scene",
    "list_scenes",
    "quats_to_rotations",
    "read_scene",
    "scene_id_from_uri",
    "write_scene",
]

REQUIRED_FIELDS: tuple[str, ...] = (
    "x", "y", "z",
    "f_dc_0", "f_dc_1", "f_dc_2",
    "opacity",
    "scale_0", "scale_1", "scale_2",
    "rot_0", "rot_1", "rot_2", "rot_3",
)  # fmt: skip
"""Properties of the ``vertex`` element that every Gaussian scene PLY must carry."""

SCENE_EXTENSIONS: frozenset[str] = frozenset({"ply", "spz"})
"""Lowercase extensions (no dot) of scene files: ``.ply`` (INRIA layout or SuperSplat compressed PLY, told apart
by the header) and ``.spz`` (Niantic SPZ)."""

MAX_ABS_MEAN: float = 1e6
"""Largest ``|x|``, ``|y|``, ``|z|`` of a Gaussian mean that :func:`read_scene` accepts, in world units.

Trained scenes are in metres (COLMAP, Nerfstudio, Polycam captures) or normalised units, so 1e6 (1000 km) is far
beyond any capture; float32 resolves only 1/16 of a unit there, coarser than the splats of any scene. Beyond it
lie corrupt or mis-scaled exports (a mean at 1e30), whose square overflows float32 (1e60 > 3.4e38) in the
distances and projections that rendering and reduction compute in float32: refused at the read, by name, instead
of failing far downstream."""

MAX_SCALE: float = 1e6
"""Largest standard deviation (``exp(scale_*)``) of a Gaussian that :func:`read_scene` accepts, in world units
(a log scale up to ``ln 1e6 ≈ 13.8``): a Gaussian wider than the bound of the means is not scene content, and its
squared scale enters the covariances (``Σ = R diag(s²) Rᵀ``) and the 2D splat extents in float32."""

_NORMAL_FIELDS = ("nx", "ny", "nz")
_F_REST = re.compile(r"^f_rest_(\d+)$")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_ONE_BELOW_1 = np.nextafter(np.float32(1.0), np.float32(0.0))  # 1 - 2**-24
_SMALLEST_F32 = np.nextafter(np.float32(0.0), np.float32(1.0))  # smallest positive subnormal, ~1.4e-45


def _as_f32(name: str, a: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape, strict=True)):
        expected = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {expected}, got {list(a.shape)}")
    return a


@dataclass(frozen=True, eq=False)
class GaussianScene:
    """A trained 3D Gaussian Splatting scene with activated parameters.

    Arrays are converted to contiguous float32 on construction and their shapes checked (``ValueError``).

    Attributes
    ----------
    scene_id : str
        Stable id, safe as a path component (see :func:`scene_id_from_uri`).
    uri : str
        Where the scene was read from (absolute local path or fsspec URL); ``""`` for a scene built in memory.
    means : np.ndarray
        ``[N, 3]`` float32, Gaussian centres in world units.
    scales : np.ndarray
        ``[N, 3]`` float32, standard deviations along the principal axes in world units (``exp`` of the stored
        log scales), > 0.
    quats : np.ndarray
        ``[N, 4]`` float32, rotation quaternions ``w x y z`` of unit norm (normalised on read).
    opacities : np.ndarray
        ``[N]`` float32 in [0, 1] (``sigmoid`` of the stored logit).
    sh_dc : np.ndarray
        ``[N, 3]`` float32, degree-0 SH coefficients (``f_dc_0..2``) of red, green, blue as stored.
    sh_rest : np.ndarray
        ``[N, K, 3]`` float32, higher-degree SH coefficients, ``K = (d + 1)^2 - 1`` (``K = 0`` for degree 0):
        ``sh_rest[n, k, c]`` is ``f_rest_{c * K + k}`` (the INRIA ``load_ply`` reshape ``[N, 3, K] -> [N, K, 3]``).
    normals : np.ndarray | None
        ``[N, 3]`` float32 ``nx ny nz`` if the file has them (INRIA writes zeros), else None.
    sha256 : str
        Hex SHA-256 of the raw file bytes; ``""`` for a scene built in memory.
    """

    scene_id: str
    uri: str
    means: np.ndarray  # [N, 3]
    scales: np.ndarray  # [N, 3]
    quats: np.ndarray  # [N, 4] wxyz
    opacities: np.ndarray  # [N]
    sh_dc: np.ndarray  # [N, 3]
    sh_rest: np.ndarray  # [N, K, 3]
    normals: np.ndarray | None  # [N, 3] or None
    sha256: str = ""

    def __post_init__(self) -> None:
        means = _as_f32("means", self.means, (None, 3))
        n = means.shape[0]
        sh_rest = _as_f32("sh_rest", self.sh_rest, (n, None, 3))
        k = sh_rest.shape[1]
        if math.isqrt(k + 1) ** 2 != k + 1:
            raise ValueError(f"sh_rest must have (d + 1)^2 - 1 coefficients per channel for an SH degree d, got {k}")
        fields = {
            "means": means,
            "scales": _as_f32("scales", self.scales, (n, 3)),
            "quats": _as_f32("quats", self.quats, (n, 4)),
            "opacities": _as_f32("opacities", self.opacities, (n,)),
            "sh_dc": _as_f32("sh_dc", self.sh_dc, (n, 3)),
            "sh_rest": sh_rest,
            "normals": None if self.normals is None else _as_f32("normals", self.normals, (n, 3)),
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        """SH degree ``d`` with ``(d + 1)^2 - 1 == sh_rest.shape[1]`` (0 when there is no ``f_rest``)."""
        return math.isqrt(self.sh_rest.shape[1] + 1) - 1

    def covariances(self) -> np.ndarray:
        """Covariance matrices ``Σ = R diag(s²) Rᵀ`` (Kerbl et al. 2023, eq. 6).

        ``R`` is the rotation of the normalised quaternion ``quats`` (``w x y z``), ``s = scales``; computed in
        float64.

        Returns
        -------
        np.ndarray
            ``[N, 3, 3]`` float64, symmetric positive semi-definite, in squared world units.
        """
        rotations = quats_to_rotations(self.quats)  # [N, 3, 3]
        s2 = self.scales.astype(np.float64) ** 2  # [N, 3]
        cov = np.einsum("nij,nj,nkj->nik", rotations, s2, rotations)
        return 0.5 * (cov + cov.transpose(0, 2, 1))  # exactly symmetric, not just to rounding


def quats_to_rotations(quats: np.ndarray) -> np.ndarray:
    """Rotation matrices of quaternions ``w x y z`` (normalised here), as ``build_rotation`` of the INRIA code.

    Parameters
    ----------
    quats : np.ndarray
        ``[N, 4]`` float, ``w x y z``, non-zero norm.

    Returns
    -------
    np.ndarray
        ``[N, 3, 3]`` float64 rotation matrices ``R`` (``R @ v`` rotates a column vector ``v``).
    """
    q = np.asarray(quats, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    r = np.empty((len(q), 3, 3))
    r[:, 0, 0] = 1 - 2 * (y * y + z * z)
    r[:, 0, 1] = 2 * (x * y - w * z)
    r[:, 0, 2] = 2 * (x * z + w * y)
    r[:, 1, 0] = 2 * (x * y + w * z)
    r[:, 1, 1] = 1 - 2 * (x * x + z * z)
    r[:, 1, 2] = 2 * (y * z - w * x)
    r[:, 2, 0] = 2 * (x * z - w * y)
    r[:, 2, 1] = 2 * (y * z + w * x)
    r[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return r


def scene_id_from_uri(uri: str) -> str:
    """Stable scene id of a file: its stem (``biker.ply`` -> ``biker``, ``biker.compressed.ply`` ->
    ``biker.compressed``), but the whole name of an SPZ file (``biker.spz`` -> ``biker.spz``), so that the PLY
    and SPZ copies of a scene in one folder are distinct items; characters outside ``[A-Za-z0-9._-]`` are
    replaced by ``_``."""
    path = PurePosixPath(uri.rstrip("/"))
    return _UNSAFE_ID_CHARS.sub("_", path.name if path.suffix.lower() == ".spz" else path.stem) or "scene"


# --- listing ------------------------------------------------------------------------------------------------------


def list_scenes(location: str) -> list[str]:
    """List the Gaussian scene files (``.ply`` or ``.spz``, any letter case; :data:`SCENE_EXTENSIONS`) at a
    location.

    Parameters
    ----------
    location : str
        A scene file, a folder (its files only, not sub-folders), a glob (``"scenes/*.ply"``), or an fsspec URL
        of any of those (``"memory://scenes/"``).

    Returns
    -------
    list[str]
        URIs of the scene files, sorted: absolute local paths, or fsspec URLs for other filesystems.
        The files are not opened (an INRIA PLY and a compressed PLY are both ``.ply``); a listed file may still
        fail :func:`read_scene`.

    Raises
    ------
    DatasetNotFoundError
        If the location does not exist, is a file that is neither ``.ply`` nor ``.spz``, or matches no such file.
    """
    fs, paths = list_files(location)
    paths = [p for p in paths if PurePosixPath(p).suffix.lower().lstrip(".") in SCENE_EXTENSIONS]
    if not paths:
        raise DatasetNotFoundError(f"dataset location {location!r} matches no .ply or .spz Gaussian scene files")
    local = isinstance(fs, LocalFileSystem)
    return sorted(os.path.abspath(p) if local else fs.unstrip_protocol(p) for p in paths)


# --- reading ------------------------------------------------------------------------------------------------------


def _scene_sniffer(uri: str) -> Sniffer:
    """Sniffer of a scene file, by content: PLY bytes (``ply`` magic) are checked as PLY, SPZ bytes (gzip or
    ``NGSP`` magic) as SPZ, whatever the name; other bytes are reported as not the format the extension names."""
    spz_named = PurePosixPath(uri).suffix.lower() == ".spz"

    def sniff(head: bytes, size: int) -> FormatProblem | None:
        if head[:3] == b"ply":
            return sniff_ply(head, size)
        if looks_like_spz(head):
            return sniff_spz(head, size)
        return sniff_spz(head, size) if spz_named else sniff_ply(head, size)

    return sniff


def _read_bytes(scene_id: str, uri: str, follow_symlinks: bool) -> bytes:
    # Not a PLY / SPZ, truncated, padded, sparse, too large, a FIFO, a link loop or (unless followed) a link out of
    # its folder: refused before a parser sees it.
    return read_input(uri, scene_id, UnreadableSceneError, UnreadableSceneError, _scene_sniffer(uri), follow_symlinks)


def _parse(scene_id: str, data: bytes) -> PlyData:
    try:
        return PlyData.read(io.BytesIO(data), mmap=False)
    except Exception as e:  # plyfile raises PlyParseError subclasses, but also ValueError etc. on garbage
        raise UnreadableSceneError(scene_id, f"PLY parser failed: {type(e).__name__}: {e}") from e


def _f_rest_count(scene_id: str, names: list[str]) -> int:
    """Number of ``f_rest_*`` properties, checked to be ``f_rest_0..M-1`` with ``M = 3 ((d + 1)^2 - 1)``."""
    indices = sorted(int(m.group(1)) for name in names if (m := _F_REST.match(name)))
    m = len(indices)
    if indices != list(range(m)):
        raise NotAGaussianSceneError(
            scene_id, f"f_rest properties are not numbered f_rest_0..f_rest_{m - 1} (found indices {indices})"
        )
    k, rem = divmod(m, 3)
    if rem or math.isqrt(k + 1) ** 2 != k + 1:
        raise NotAGaussianSceneError(
            scene_id,
            f"{m} f_rest properties match no SH degree: expected 3 * ((d + 1)^2 - 1) of them (0, 9, 24, 45, 72, ...)",
        )
    return m


def _column(vertex: np.ndarray, name: str) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # a signalling NaN warns when cast; it is reported as non-finite
        return np.asarray(vertex[name], dtype=np.float64)


def _activated_scene(
    scene_id: str,
    uri: str,
    data: bytes,
    means: np.ndarray,
    log_scales: np.ndarray,
    rot: np.ndarray,
    opacities: np.ndarray,
    sh_dc: np.ndarray,
    sh_rest: np.ndarray,
    normals: np.ndarray | None,
) -> GaussianScene:
    """The checks every format shares (overflowing scales, the magnitude bounds, zero quaternions), then the
    scene with ``scales = exp(log_scales)`` and normalised quaternions."""
    n = len(means)
    arrays = {"means": means, "log scales": log_scales, "quaternions": rot, "opacities": opacities,
              "SH coefficients": np.concatenate([sh_dc, sh_rest.reshape(n, -1)], axis=1)}  # fmt: skip
    bad = {name: int(np.count_nonzero(~np.isfinite(a).reshape(n, -1).all(axis=1))) for name, a in arrays.items()}
    bad = {name: count for name, count in bad.items() if count}
    if bad:  # only decoders of compressed formats get here with them (the PLY fields are checked by name first)
        detail = ", ".join(f"{name} ({count})" for name, count in bad.items())
        raise NonFiniteGaussiansError(scene_id, f"NaN or Inf values among {n} decoded Gaussians in: {detail}")
    with np.errstate(over="ignore"):  # an overflow is reported below as a typed error
        scales = np.exp(log_scales).astype(np.float32)
    overflow = int(np.count_nonzero(~np.isfinite(scales).all(axis=1)))
    if overflow:
        raise NonFiniteGaussiansError(
            scene_id, f"{overflow} of {n} Gaussians have log scales whose exp overflows float32 (scale_* > 88.7)"
        )
    magnitudes = np.abs(means).max(axis=1)
    far = magnitudes > MAX_ABS_MEAN
    if far.any():
        worst = int(np.argmax(magnitudes))
        raise GaussianMagnitudeError(
            scene_id,
            f"{int(np.count_nonzero(far))} of {n} Gaussians have a mean coordinate beyond ±{MAX_ABS_MEAN:g} "
            f"(MAX_ABS_MEAN); the largest |x|, |y| or |z| is {magnitudes[worst]:.3g} (Gaussian {worst})",
        )
    widest = scales.max(axis=1)
    wide = widest > MAX_SCALE
    if wide.any():
        worst = int(np.argmax(widest))
        raise GaussianMagnitudeError(
            scene_id,
            f"{int(np.count_nonzero(wide))} of {n} Gaussians have a scale above {MAX_SCALE:g} (MAX_SCALE, log scale "
            f"{math.log(MAX_SCALE):.2f}); the largest is {float(widest[worst]):.3g} (Gaussian {worst})",
        )
    norms = np.linalg.norm(rot, axis=1, keepdims=True)
    zero = int(np.count_nonzero(norms == 0))
    if zero:
        raise NonFiniteGaussiansError(scene_id, f"{zero} of {n} Gaussians have a zero-norm quaternion (rot_0..3)")
    return GaussianScene(
        scene_id=scene_id,
        uri=uri,
        means=means,
        scales=scales,
        quats=rot / norms,
        opacities=opacities,
        sh_dc=sh_dc,
        sh_rest=sh_rest,
        normals=normals,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _inria_scene(scene_id: str, uri: str, data: bytes, ply: PlyData) -> GaussianScene:
    if "vertex" not in ply:
        elements = ", ".join(e.name for e in ply.elements) or "none"
        raise NotAGaussianSceneError(scene_id, f"PLY has no 'vertex' element (elements: {elements})")
    element = ply["vertex"]
    names = [p.name for p in element.properties]
    missing = [name for name in REQUIRED_FIELDS if name not in names]
    if missing:
        extra = " (it has faces: a mesh, not a Gaussian scene)" if "face" in ply else ""
        raise NotAGaussianSceneError(scene_id, f"PLY vertex element lacks Gaussian fields {', '.join(missing)}{extra}")
    m_rest = _f_rest_count(scene_id, names)
    has_normals = all(name in names for name in _NORMAL_FIELDS)
    used = [*REQUIRED_FIELDS, *(f"f_rest_{i}" for i in range(m_rest)), *(_NORMAL_FIELDS if has_normals else ())]
    lists = [p.name for p in element.properties if p.name in used and isinstance(p, PlyListProperty)]
    if lists:
        raise NotAGaussianSceneError(scene_id, f"fields {', '.join(lists)} are list properties, expected scalars")
    vertex = element.data
    n = len(vertex)
    if n == 0:
        raise EmptySceneError(scene_id, "PLY vertex element has 0 Gaussians")

    bad = {name: int(np.count_nonzero(~np.isfinite(_column(vertex, name)))) for name in used}
    bad = {name: count for name, count in bad.items() if count}
    if bad:
        detail = ", ".join(f"{name} ({count})" for name, count in bad.items())
        raise NonFiniteGaussiansError(scene_id, f"NaN or Inf values among {n} Gaussians in fields: {detail}")

    def stack(fields: list[str]) -> np.ndarray:
        return np.stack([_column(vertex, f) for f in fields], axis=1)

    k = m_rest // 3
    f_rest = stack([f"f_rest_{i}" for i in range(m_rest)]) if m_rest else np.zeros((n, 0))
    with np.errstate(over="ignore"):  # exp(-logit) overflows to inf for logits below -709: the opacity is 0
        opacities = 1.0 / (1.0 + np.exp(-_column(vertex, "opacity")))
    return _activated_scene(
        scene_id, uri, data,
        means=stack(["x", "y", "z"]),
        log_scales=stack(["scale_0", "scale_1", "scale_2"]),
        rot=stack(["rot_0", "rot_1", "rot_2", "rot_3"]),
        opacities=opacities,
        sh_dc=stack(["f_dc_0", "f_dc_1", "f_dc_2"]),
        sh_rest=f_rest.reshape(n, 3, k).transpose(0, 2, 1),
        normals=stack(list(_NORMAL_FIELDS)) if has_normals else None,
    )  # fmt: skip


def _decoded_scene(scene_id: str, uri: str, data: bytes, decoded: DecodedSplats) -> GaussianScene:
    return _activated_scene(scene_id, uri, data, decoded.means, decoded.log_scales, decoded.quats,
                            decoded.opacities, decoded.sh_dc, decoded.sh_rest, normals=None)


def read_scene(uri: str, follow_symlinks: bool = False) -> GaussianScene:
    """Read one 3DGS scene file and activate its parameters.

    Three formats, told apart by the file's content (a file named ``.spz`` holding a PLY is read as the PLY):

    * an **INRIA PLY** (see the module docstring): properties of the ``vertex`` element other than
      :data:`REQUIRED_FIELDS`, ``nx ny nz`` and ``f_rest_*`` are ignored (e.g. Mip-Splatting's ``filter_3D``);
      any numeric property type is accepted;
    * a SuperSplat / PlayCanvas **compressed PLY** (a ``chunk`` element and ``packed_*`` vertex properties;
      :func:`storage.splat_formats.decode_compressed_ply`);
    * a Niantic **SPZ** file, versions 2-4 (gzip or ``NGSP`` magic; :func:`storage.splat_formats.decode_spz`),
      converted from SPZ's right-up-back frame to the PLY's right-down-front frame.

    Activations are computed in float64 and cast to float32: ``opacities = 1 / (1 + exp(-opacity))`` (the
    compressed formats store the activated opacity, which is taken as is), ``scales = exp(scale_*)``,
    ``quats = rot / ||rot||``. Compressed formats have no normals (``normals`` is None).

    Parameters
    ----------
    uri : str
        Local path or fsspec URL of the ``.ply`` / ``.spz`` file. The scene id is :func:`scene_id_from_uri` of it.
    follow_symlinks : bool
        Read a file that is a symbolic link resolving outside its folder (refused by default; links within the
        folder are always read).

    Returns
    -------
    GaussianScene
        The activated scene; ``sha256`` of the raw bytes.

    Raises
    ------
    UnreadableSceneError
        The file is missing or unreadable (a broken link, a link loop, a FIFO), is neither a PLY nor an SPZ file,
        its header declares more data than it holds (truncated) or far less (padded, e.g. a sparse file), plyfile
        cannot parse it (corrupt data, bad header), or an SPZ file is corrupt (bad gzip / zstd stream, sizes that
        disagree with its header) or of an unsupported version. Checked on the first 64 KiB before the file is
        read whole (:func:`storage.inputs.read_input`), where the format allows.
    SymlinkOutsideDatasetError
        The file is a symbolic link resolving outside its folder and ``follow_symlinks`` is False; the reason
        names the link, its target and the folder.
    InputTooLargeError
        The file, or the SPZ data it inflates to, is larger than :func:`storage.inputs.max_input_bytes`.
    UndecodableFileNameError
        The file name is not valid UTF-8.
    NotAGaussianSceneError
        The PLY has no ``vertex`` element, lacks some of :data:`REQUIRED_FIELDS` (the reason names them; e.g. a
        triangle mesh PLY), stores a required field as a list property, or has an ``f_rest_*`` set that is not
        ``f_rest_0..f_rest_{3K-1}`` with ``K = (d + 1)^2 - 1`` for some SH degree ``d``; a compressed PLY lacks
        a ``packed_*`` property or chunk bound, or has not one chunk per 256 splats.
    EmptySceneError
        The scene has zero Gaussians.
    NonFiniteGaussiansError
        Some value of a field that is read (required fields, ``f_rest_*``, ``nx ny nz``; a compressed PLY's chunk
        bounds) is NaN or infinite, a log scale overflows ``exp`` in float32, or a quaternion has zero norm (it
        has no rotation to normalise to; treating it as the identity would invent data). The reason names each
        field and its count.
    GaussianMagnitudeError
        Some mean coordinate exceeds :data:`MAX_ABS_MEAN` in magnitude, or some scale exceeds :data:`MAX_SCALE`;
        the reason gives how many Gaussians, the largest value and its Gaussian.
    """
    scene_id = scene_id_from_uri(uri)
    data = _read_bytes(scene_id, uri, follow_symlinks)
    if data[:3] != b"ply":
        return _decoded_scene(scene_id, uri, data, decode_spz(scene_id, data))
    ply = _parse(scene_id, data)
    if is_compressed_ply(ply):
        return _decoded_scene(scene_id, uri, data, decode_compressed_ply(scene_id, ply))
    return _inria_scene(scene_id, uri, data, ply)


# --- writing ------------------------------------------------------------------------------------------------------


def _inria_dtype(k: int) -> list[tuple[str, str]]:
    names = [
        "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
        *(f"f_rest_{i}" for i in range(3 * k)),
        "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
    ]  # fmt: skip
    return [(name, "<f4") for name in names]


def encode_scene(scene: GaussianScene) -> bytes:
    """The PLY bytes :func:`write_scene` writes for ``scene`` (INRIA layout, binary little endian, float32).

    Raises
    ------
    ValueError
        If a value is NaN/Inf, a scale is negative, an opacity is outside [0, 1], or a quaternion has zero norm.
    """
    n, k = len(scene), scene.sh_rest.shape[1]
    arrays = {"means": scene.means, "scales": scene.scales, "quats": scene.quats, "opacities": scene.opacities,
              "sh_dc": scene.sh_dc, "sh_rest": scene.sh_rest}  # fmt: skip
    if scene.normals is not None:
        arrays["normals"] = scene.normals
    for name, a in arrays.items():
        if not np.isfinite(a).all():
            raise ValueError(f"{scene.scene_id}: {name} has NaN or Inf values")
    if (scene.scales < 0).any():
        raise ValueError(f"{scene.scene_id}: scales must be >= 0")
    if ((scene.opacities < 0) | (scene.opacities > 1)).any():
        raise ValueError(f"{scene.scene_id}: opacities must lie in [0, 1]")
    quats = scene.quats.astype(np.float64)
    norms = np.linalg.norm(quats, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{scene.scene_id}: quats must have non-zero norm")

    # Inverse activations in float64 of the float32 values, clipped so that every written value is finite.
    opacities = np.clip(scene.opacities, _SMALLEST_F32, _ONE_BELOW_1).astype(np.float64)
    scales = np.maximum(scene.scales, _SMALLEST_F32).astype(np.float64)
    vertex = np.empty(n, dtype=_inria_dtype(k))
    for i, c in enumerate("xyz"):
        vertex[c] = scene.means[:, i]
        vertex[f"n{c}"] = 0.0 if scene.normals is None else scene.normals[:, i]
        vertex[f"f_dc_{i}"] = scene.sh_dc[:, i]
        vertex[f"scale_{i}"] = np.log(scales[:, i])
    rest = scene.sh_rest.transpose(0, 2, 1).reshape(n, 3 * k)  # channel-major, as the INRIA save_ply
    for i in range(3 * k):
        vertex[f"f_rest_{i}"] = rest[:, i]
    vertex["opacity"] = np.log(opacities) - np.log1p(-opacities)
    quats = quats / norms
    for i in range(4):
        vertex[f"rot_{i}"] = quats[:, i]
    buffer = io.BytesIO()
    PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<").write(buffer)
    return buffer.getvalue()


def write_scene(scene: GaussianScene, uri: str) -> int:
    """Write a scene as a standard INRIA 3DGS PLY.

    Binary little endian, one ``vertex`` element of float32 properties in the order of the INRIA ``save_ply``:
    ``x y z nx ny nz f_dc_0..2 f_rest_0..f_rest_{3K-1} opacity scale_0..2 rot_0..3``. Normals are written as
    zeros when ``scene.normals`` is None (as INRIA does); ``f_rest`` is written channel-major; scales are written
    as ``log``, opacities as ``logit`` (computed in float64 from the float32 values; opacities are clipped to
    ``[2**-149, 1 - 2**-24]`` and scales to ``>= 2**-149`` so the logs are finite), quaternions normalised.

    Parameters
    ----------
    scene : GaussianScene
        The scene to write (activated parameters).
    uri : str
        Local path or fsspec URL of the ``.ply`` file; parent folders are created.

    Returns
    -------
    int
        Number of bytes written.

    Raises
    ------
    ValueError
        If the scene holds NaN/Inf values, negative scales, opacities outside [0, 1] or zero-norm quaternions.

    Notes
    -----
    A local file is written to a temporary file in the same folder and renamed into place (``os.replace``), so a
    reader never sees a partial file. Other filesystems get one ``open(uri, "wb")`` write (object stores
    publish an object only when its upload completes).
    """
    data = encode_scene(scene)
    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, LocalFileSystem):
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ply", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; give the file ordinary permissions
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    else:
        parent = fs._parent(path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(data)
    return len(data)

