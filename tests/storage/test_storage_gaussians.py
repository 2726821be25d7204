"""storage.gaussians: reading/writing trained 3DGS scenes (INRIA PLY layout) on the bundled real sample."""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import re
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
import trimesh
from numpy.testing import assert_allclose, assert_array_equal
from plyfile import PlyData, PlyElement
from scipy.spatial.transform import Rotation

from storage.errors import (
    DatasetNotFoundError,
    EmptySceneError,
    GaussianMagnitudeError,
    InputError,
    InputTooLargeError,
    NonFiniteGaussiansError,
    NotAGaussianSceneError,
    SymlinkOutsideDatasetError,
    UnreadableSceneError,
)
from storage.gaussians import (
    MAX_ABS_MEAN,
    MAX_SCALE,
    REQUIRED_FIELDS,
    GaussianScene,
    list_scenes,
    quats_to_rotations,
    read_scene,
    write_scene,
)
from storage.inputs import MAX_INPUT_BYTES_ENV
from storage.splat_formats import SH_C0, SPZ_COLOR_SCALE, decode_spz

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
SAMPLE = SAMPLES / "gaussians" / "donut-8k.ply"
BIKER = SAMPLES / "gaussians" / "biker"  # the first 2048 splats of the PlayCanvas biker, as three files
BIKER_COMPRESSED = BIKER / "biker-2k.compressed.ply"  # SuperSplat compressed PLY: 8 chunks, copied bytes
BIKER_SPZ = BIKER / "biker-2k.spz"  # SPZ version 4: the same splats' quantised bytes, one zstd frame per attribute
BIKER_REFERENCE = BIKER / "biker-2k-reference.ply"  # their decoded reference (INRIA PLY)
WOODY = SAMPLES / "meshes" / "woody.obj"
INRIA_ORDER = [
    "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
    "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
]  # fmt: skip


@pytest.fixture(scope="module")
def scene() -> GaussianScene:
    return read_scene(str(SAMPLE))


@pytest.fixture(scope="module")
def raw() -> np.ndarray:
    """The sample's raw vertex records (structured float32 array, INRIA fields)."""
    return PlyData.read(str(SAMPLE))["vertex"].data.copy()


@pytest.fixture
def memory_dir() -> Iterator[str]:
    root = f"memory:///gaussians-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _write_raw(path: Path, vertex: np.ndarray, *extra: PlyElement) -> str:
    PlyData([PlyElement.describe(vertex, "vertex"), *extra], byte_order="<").write(str(path))
    return str(path)


def _drop(vertex: np.ndarray, names: set[str]) -> np.ndarray:
    keep = [n for n in vertex.dtype.names if n not in names]
    out = np.empty(len(vertex), dtype=[(n, vertex.dtype[n]) for n in keep])
    for n in keep:
        out[n] = vertex[n]
    return out


def _add(vertex: np.ndarray, columns: dict[str, np.ndarray]) -> np.ndarray:
    out = np.empty(len(vertex), dtype=vertex.dtype.descr + [(n, "<f4") for n in columns])
    for n in vertex.dtype.names:
        out[n] = vertex[n]
    for n, values in columns.items():
        out[n] = values
    return out


def _with_sh(scene: GaussianScene, degree: int, seed: int) -> GaussianScene:
    k = (degree + 1) ** 2 - 1
    sh_rest = np.random.default_rng(seed).normal(scale=0.1, size=(len(scene), k, 3)).astype(np.float32)
    return dataclasses.replace(scene, sh_rest=sh_rest)


# --- reading the real sample ----------------------------------------------------------------------------------


def test_sample_fields_dtypes_and_activations(scene: GaussianScene, raw: np.ndarray) -> None:
    n = 8192
    assert scene.scene_id == "donut-8k" and scene.uri == str(SAMPLE) and len(scene) == n
    assert list(raw.dtype.names) == INRIA_ORDER
    shapes = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,), "sh_dc": (n, 3),
              "sh_rest": (n, 0, 3), "normals": (n, 3)}  # fmt: skip
    for name, shape in shapes.items():
        a = getattr(scene, name)
        assert a.dtype == np.float32 and a.shape == shape and a.flags.c_contiguous, name
    assert scene.sh_degree == 0
    assert np.all((scene.opacities > 0) & (scene.opacities < 1))
    assert np.all(scene.scales > 0)
    assert_allclose(np.linalg.norm(scene.quats.astype(np.float64), axis=1), 1.0, atol=1e-6)
    assert np.all(scene.normals == 0)  # written as zeros, as INRIA does
    # activations of the stored raw values
    assert_array_equal(scene.means, np.stack([raw["x"], raw["y"], raw["z"]], axis=1))
    assert_array_equal(scene.sh_dc, np.stack([raw[f"f_dc_{i}"] for i in range(3)], axis=1))
    assert_allclose(scene.opacities, 1 / (1 + np.exp(-raw["opacity"].astype(np.float64))), rtol=1e-6)
    assert_allclose(scene.scales[:, 1], np.exp(raw["scale_1"].astype(np.float64)), rtol=1e-6)
    # a real donut: centimetre-scale splats in a ~0.2-unit object
    extent = scene.means.max(axis=0) - scene.means.min(axis=0)
    assert 0.1 < extent.max() < 0.3 and np.median(scene.scales) < 0.01
    assert len(scene.sha256) == 64


def test_extra_properties_are_ignored_and_normals_optional(tmp_path: Path, raw: np.ndarray) -> None:
    vertex = _add(_drop(raw, {"nx", "ny", "nz"}), {"filter_3D": np.full(len(raw), 1e-3)})  # Mip-Splatting field
    scene = read_scene(_write_raw(tmp_path / "mip.ply", vertex))
    assert scene.normals is None and len(scene) == len(raw)
    # a scene without normals is written with zero normals (INRIA layout)
    write_scene(scene, str(tmp_path / "out.ply"))
    out = PlyData.read(str(tmp_path / "out.ply"))["vertex"].data
    assert list(out.dtype.names) == INRIA_ORDER and np.all(out["nx"] == 0)
    # given normals round-trip
    normals = np.random.default_rng(1).normal(size=(len(scene), 3)).astype(np.float32)
    write_scene(dataclasses.replace(scene, normals=normals), str(tmp_path / "n.ply"))
    assert_array_equal(read_scene(str(tmp_path / "n.ply")).normals, normals)


# --- round trips ------------------------------------------------------------------------------------------------


def _assert_same_scene(a: GaussianScene, b: GaussianScene) -> None:
    assert_array_equal(a.means, b.means)
    assert_array_equal(a.sh_dc, b.sh_dc)
    assert_array_equal(a.sh_rest, b.sh_rest)
    assert (a.normals is None) == (b.normals is None)
    if a.normals is not None:
        assert_array_equal(a.normals, b.normals)
    assert_allclose(a.scales, b.scales, rtol=1e-6, atol=0)
    assert_allclose(a.opacities, b.opacities, rtol=1e-6, atol=0)
    assert_allclose(a.quats, b.quats, rtol=0, atol=1e-6)


def test_round_trip_local_file(tmp_path: Path, scene: GaussianScene) -> None:
    path = tmp_path / "sub" / "copy.ply"
    nbytes = write_scene(scene, str(path))
    assert nbytes == path.stat().st_size == SAMPLE.stat().st_size
    again = read_scene(str(path))
    _assert_same_scene(scene, again)
    assert again.scene_id == "copy"
    # overwrite in place: atomic replace, no temporary files left behind
    write_scene(again, str(path))
    assert [p.name for p in path.parent.iterdir()] == ["copy.ply"]
    # the re-written raw values equal the sample's (log scales exactly, logits to float32 rounding)
    a, b = PlyData.read(str(SAMPLE))["vertex"].data, PlyData.read(str(path))["vertex"].data
    for name in ("x", "f_dc_2", "scale_0", "scale_2"):
        assert_array_equal(a[name], b[name])
    assert_allclose(a["opacity"], b["opacity"], atol=1e-5)


def test_round_trip_memory_filesystem(tmp_path: Path, memory_dir: str, scene: GaussianScene) -> None:
    uri = f"{memory_dir}/scenes/donut.ply"
    nbytes = write_scene(scene, uri)
    assert nbytes == fsspec.filesystem("memory").size(uri)
    again = read_scene(uri)
    _assert_same_scene(scene, again)
    write_scene(scene, str(tmp_path / "donut.ply"))
    assert again.uri == uri and again.sha256 == read_scene(str(tmp_path / "donut.ply")).sha256  # same bytes


@pytest.mark.parametrize("degree", [1, 3])
def test_round_trip_higher_sh_degree(tmp_path: Path, scene: GaussianScene, degree: int) -> None:
    k = (degree + 1) ** 2 - 1
    with_sh = _with_sh(scene, degree, seed=degree)
    path = tmp_path / f"sh{degree}.ply"
    write_scene(with_sh, str(path))
    raw = PlyData.read(str(path))["vertex"].data
    rest = [f"f_rest_{i}" for i in range(3 * k)]
    names = list(raw.dtype.names)
    assert names == INRIA_ORDER[:9] + rest + INRIA_ORDER[9:]
    # channel-major in the file: f_rest_0..K-1 red, K..2K-1 green, 2K..3K-1 blue
    for c in range(3):
        for kk in (0, k - 1):
            assert_array_equal(raw[f"f_rest_{c * k + kk}"], with_sh.sh_rest[:, kk, c])
    again = read_scene(str(path))
    assert again.sh_degree == degree and again.sh_rest.shape == (len(scene), k, 3)
    _assert_same_scene(with_sh, again)


def test_write_rejects_invalid_values(tmp_path: Path, scene: GaussianScene) -> None:
    bad = scene.opacities.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="opacities"):
        write_scene(dataclasses.replace(scene, opacities=bad), str(tmp_path / "x.ply"))
    with pytest.raises(ValueError, match="shape"):
        dataclasses.replace(scene, quats=scene.quats[:, :3])
    with pytest.raises(ValueError, match="degree"):
        dataclasses.replace(scene, sh_rest=np.zeros((len(scene), 2, 3), np.float32))
    assert not (tmp_path / "x.ply").exists()


def test_saturated_opacities_are_written_finite(tmp_path: Path, scene: GaussianScene) -> None:
    opacities = scene.opacities.copy()
    opacities[:2] = [0.0, 1.0]
    write_scene(dataclasses.replace(scene, opacities=opacities), str(tmp_path / "s.ply"))
    again = read_scene(str(tmp_path / "s.ply"))
    assert 0 <= again.opacities[0] < 1e-40 and again.opacities[1] == np.float32(1) - np.float32(2**-24)


# --- covariances ------------------------------------------------------------------------------------------------


def test_covariances_match_scipy_rotation(scene: GaussianScene) -> None:
    cov = scene.covariances()
    assert cov.dtype == np.float64 and cov.shape == (len(scene), 3, 3)
    assert_array_equal(cov, cov.transpose(0, 2, 1))
    eig = np.linalg.eigvalsh(cov)
    assert np.all(eig >= -1e-12 * eig.max(axis=1, keepdims=True))
    # scipy quaternions are scalar-last (x y z w)
    rot = Rotation.from_quat(scene.quats.astype(np.float64)[:, [1, 2, 3, 0]]).as_matrix()
    assert_allclose(quats_to_rotations(scene.quats), rot, atol=1e-12)
    s2 = scene.scales.astype(np.float64) ** 2
    expected = rot @ (s2[:, :, None] * rot.transpose(0, 2, 1))
    assert_allclose(cov, expected, rtol=1e-10, atol=1e-12 * s2.max())
    # eigenvalues are the squared scales
    assert_allclose(eig, np.sort(s2, axis=1), rtol=1e-8)


# --- errors on crafted bad files -------------------------------------------------------------------------------


def test_missing_rot_fields(tmp_path: Path, raw: np.ndarray) -> None:
    path = _write_raw(tmp_path / "norot.ply", _drop(raw, {"rot_0", "rot_1", "rot_2", "rot_3"}))
    with pytest.raises(NotAGaussianSceneError, match="rot_0, rot_1, rot_2, rot_3") as info:
        read_scene(path)
    assert info.value.item_id == "norot" and "scale_0" not in str(info.value)


def test_mesh_ply_is_not_a_gaussian_scene(tmp_path: Path) -> None:
    path = tmp_path / "woody.ply"
    path.write_bytes(trimesh.load(WOODY, force="mesh").export(file_type="ply"))
    with pytest.raises(NotAGaussianSceneError, match="f_dc_0.*rot_3.*faces"):
        read_scene(str(path))


def test_truncated_file(tmp_path: Path) -> None:
    data = SAMPLE.read_bytes()
    path = tmp_path / "cut.ply"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableSceneError, match="truncated: its header declares 8192 vertex"):
        read_scene(str(path))
    path.write_bytes(data[:100])  # inside the header
    with pytest.raises(UnreadableSceneError):
        read_scene(str(path))


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableSceneError, match="cannot read") as info:
        read_scene(str(tmp_path / "nope.ply"))
    assert info.value.item_id == "nope"


def test_nan_opacity(tmp_path: Path, raw: np.ndarray) -> None:
    vertex = raw.copy()
    vertex["opacity"][[7, 70]] = [np.nan, np.inf]
    vertex["scale_2"][0] = np.nan
    with pytest.raises(NonFiniteGaussiansError, match=r"opacity \(2\), scale_2 \(1\)"):
        read_scene(_write_raw(tmp_path / "nan.ply", vertex))


def test_zero_norm_quaternion(tmp_path: Path, raw: np.ndarray) -> None:
    vertex = raw.copy()
    for i in range(4):
        vertex[f"rot_{i}"][[1, 2, 3]] = 0
    with pytest.raises(NonFiniteGaussiansError, match="3 of 8192 Gaussians have a zero-norm quaternion"):
        read_scene(_write_raw(tmp_path / "q0.ply", vertex))


def test_empty_vertex_element(tmp_path: Path, raw: np.ndarray) -> None:
    with pytest.raises(EmptySceneError, match="0 Gaussians"):
        read_scene(_write_raw(tmp_path / "empty.ply", raw[:0]))


@pytest.mark.parametrize(("count", "names"), [(5, None), (9, [0, 1, 2, 3, 4, 5, 6, 7, 9])])
def test_bad_f_rest_layout(tmp_path: Path, raw: np.ndarray, count: int, names: list[int] | None) -> None:
    indices = names if names is not None else list(range(count))
    vertex = _add(raw[:16], {f"f_rest_{i}": np.zeros(16) for i in indices})
    with pytest.raises(NotAGaussianSceneError, match="f_rest"):
        read_scene(_write_raw(tmp_path / "rest.ply", vertex))


def test_errors_are_input_errors_and_pickle() -> None:
    for cls in (NotAGaussianSceneError, UnreadableSceneError, NonFiniteGaussiansError, EmptySceneError,
                GaussianMagnitudeError):
        error = pickle.loads(pickle.dumps(cls("donut", "a reason")))
        assert isinstance(error, InputError) and str(error) == "donut: a reason"
    assert REQUIRED_FIELDS[:3] == ("x", "y", "z") and len(REQUIRED_FIELDS) == 14


# --- listing ----------------------------------------------------------------------------------------------------


def test_symbolic_link_out_of_the_dataset_is_refused(tmp_path: Path, scene: GaussianScene) -> None:
    """A scene that is a link to a file outside its folder is read only with ``follow_symlinks``."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    link = folder / "donut.ply"
    link.symlink_to(SAMPLE)
    with pytest.raises(SymlinkOutsideDatasetError) as info:
        read_scene(str(link))
    assert info.value.item_id == "donut"
    assert info.value.reason == (
        f"{link} is a symbolic link to {SAMPLE.resolve()}, outside its folder {folder.resolve()}; "
        "set follow_symlinks (CLI: --follow-symlinks) to read it")
    followed = read_scene(str(link), follow_symlinks=True)
    assert followed.sha256 == scene.sha256 and len(followed) == len(scene)


def test_list_scenes(tmp_path: Path, memory_dir: str) -> None:
    assert list_scenes(str(SAMPLE)) == [str(SAMPLE)]
    assert list_scenes(str(SAMPLE.parent)) == [str(SAMPLE)]
    for name in ("b.ply", "a.PLY", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.ply").write_bytes(b"x")
    assert list_scenes(str(tmp_path)) == [str(tmp_path / "a.PLY"), str(tmp_path / "b.ply")]
    assert list_scenes(str(tmp_path / "*.ply")) == [str(tmp_path / "b.ply")]
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        list_scenes(str(tmp_path / "missing"))
    with pytest.raises(DatasetNotFoundError, match="no .ply"):
        list_scenes(str(tmp_path / "notes.txt"))
    with pytest.raises(DatasetNotFoundError, match="no .ply"):
        list_scenes(str(SAMPLES / "meshes"))
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{memory_dir}/s/two.ply", b"x")
    fs.pipe(f"{memory_dir}/s/one.ply", b"x")
    assert list_scenes(f"{memory_dir}/s") == [f"{memory_dir}/s/one.ply", f"{memory_dir}/s/two.ply"]


# --- compressed formats: SuperSplat compressed PLY and Niantic SPZ (storage.splat_formats) ------------------------


@pytest.fixture(scope="module")
def biker() -> GaussianScene:
    """The decoded reference of the biker samples (the same 2048 splats, INRIA PLY)."""
    return read_scene(str(BIKER_REFERENCE))


def _quat_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-Gaussian largest component difference of unit quaternions, up to sign (q and -q are one rotation)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.minimum(np.abs(a - b).max(axis=1), np.abs(a + b).max(axis=1))


def _chunk_step(chunk: np.ndarray, prefix: str, index: np.ndarray) -> np.ndarray:
    """``[N, 3]`` quantisation step (11/10/11 bits) of each splat's chunk box of ``min_/max_{prefix}x y z``."""
    lo = np.stack([chunk[f"min_{prefix}{a}"] for a in "xyz"], axis=1).astype(np.float64)[index]
    hi = np.stack([chunk[f"max_{prefix}{a}"] for a in "xyz"], axis=1).astype(np.float64)[index]
    return (hi - lo) / (2.0 ** np.array([11, 10, 11]) - 1)


def test_compressed_ply_decodes_to_the_reference_within_quantisation(biker: GaussianScene) -> None:
    scene = read_scene(str(BIKER_COMPRESSED))
    assert scene.scene_id == "biker-2k.compressed" and len(scene) == len(biker) == 2048
    assert scene.sh_degree == 0 and scene.normals is None and len(scene.sha256) == 64
    chunk = PlyData.read(str(BIKER_COMPRESSED))["chunk"].data
    index = np.arange(len(scene)) // 256
    eps = 1e-6  # float32 rounding of the reference
    means_error = np.abs(scene.means.astype(np.float64) - biker.means)
    assert (means_error <= _chunk_step(chunk, "", index) / 2 + eps).all()
    log_error = np.abs(np.log(scene.scales.astype(np.float64)) - np.log(biker.scales.astype(np.float64)))
    assert (log_error <= _chunk_step(chunk, "scale_", index) / 2 + eps).all()
    colour_step = np.stack([chunk[f"max_{c}"] - chunk[f"min_{c}"] for c in "rgb"], axis=1)[index] / 255 / SH_C0
    assert (np.abs(scene.sh_dc - biker.sh_dc) <= colour_step / 2 + eps).all()
    assert (np.abs(scene.opacities - biker.opacities) <= 0.5 / 255 + eps).all()
    assert (_quat_error(scene.quats, biker.quats) <= np.sqrt(2) / 1023 + eps).all()
    # the reference is this very decode in float32 (biker.ply was decoded from biker.compressed.ply)
    assert means_error.max() < 1e-6 and log_error.max() < 1e-5
    assert _quat_error(scene.quats, biker.quats).max() < 1e-6


def test_spz_decodes_to_the_reference_within_quantisation(biker: GaussianScene) -> None:
    scene = read_scene(str(BIKER_SPZ))
    assert scene.scene_id == "biker-2k.spz" and len(scene) == 2048 and scene.sh_degree == 0 and scene.normals is None
    eps = 1e-6
    # 24-bit fixed point with 12 fractional bits, in the PLY frame (SPZ's RUB flipped to RDF: y and z negated)
    assert np.abs(scene.means - biker.means).max() <= 2.0**-12 / 2 + eps
    # log scales: q / 16 - 10 in [-10, 5.9375]; smaller ones are clamped to -10 by the format
    decoded, reference = np.log(scene.scales.astype(np.float64)), np.log(biker.scales.astype(np.float64))
    inside = (reference >= -10.0) & (reference <= 255 / 16 - 10)
    assert np.abs(decoded - reference)[inside].max() <= 1 / 32 + 1e-5
    assert_allclose(decoded[~inside], -10.0, atol=1e-5)
    assert (reference[~inside] < -10).all()
    assert np.abs(scene.sh_dc - biker.sh_dc).max() <= 0.5 / (255 * SPZ_COLOR_SCALE) + eps
    assert np.abs(scene.opacities - biker.opacities).max() <= 0.5 / 255 + eps
    # smallest three: sign bit and 9 bits of |component| / (1/sqrt 2) each
    assert _quat_error(scene.quats, biker.quats).max() <= np.sqrt(0.5) / 511 + eps


def _spz_v4_parts(data: bytes) -> tuple[int, int, list[bytes]]:
    """Point count, fractional bits and the decompressed attribute streams of a version-4 SPZ file."""
    from numcodecs import zstd

    _, version, n, _, fractional_bits, _, n_streams, toc = struct.unpack_from("<IIIBBBBI", data)
    assert version == 4
    entries = [struct.unpack_from("<QQ", data, toc + 16 * i) for i in range(n_streams)]
    offset, streams = toc + 16 * n_streams, []
    for compressed, size in entries:
        streams.append(bytes(zstd.decompress(data[offset : offset + compressed], bytearray(size))))
        offset += compressed
    return n, fractional_bits, streams


def _legacy_spz(version: int, n: int, fractional_bits: int, streams: list[bytes], sh_degree: int = 0,
                flags: int = 0) -> bytes:
    """The uncompressed payload of an SPZ file of version 1-3 (gzip it for the file)."""
    return struct.pack("<IIIBBBB", 0x5053474E, version, n, sh_degree, fractional_bits, flags, 0) + b"".join(streams)


def test_spz_versions_2_and_3_gzip_and_uncompressed(tmp_path: Path, biker: GaussianScene) -> None:
    v4 = read_scene(str(BIKER_SPZ))
    n, bits, streams = _spz_v4_parts(BIKER_SPZ.read_bytes())
    # version 3 holds the same bytes as version 4, in one gzip stream (or uncompressed)
    (tmp_path / "v3.spz").write_bytes(gzip.compress(_legacy_spz(3, n, bits, streams)))
    (tmp_path / "raw.spz").write_bytes(_legacy_spz(3, n, bits, streams))
    for name in ("v3.spz", "raw.spz"):
        scene = read_scene(str(tmp_path / name))
        for field in ("means", "scales", "quats", "opacities", "sh_dc"):
            assert_array_equal(getattr(scene, field), getattr(v4, field))
    # version 2: x y z bytes of the unit quaternion with w >= 0, in SPZ's frame
    quats = biker.quats.astype(np.float64) * np.where(biker.quats[:, :1] < 0, -1.0, 1.0)
    xyz = quats[:, 1:] * np.array([1.0, -1.0, -1.0])
    rotations = np.clip(np.round(xyz * 127.5 + 127.5), 0, 255).astype(np.uint8).tobytes()
    (tmp_path / "v2.spz").write_bytes(gzip.compress(_legacy_spz(2, n, bits, [*streams[:4], rotations])))
    v2 = read_scene(str(tmp_path / "v2.spz"))
    assert_array_equal(v2.means, v4.means)
    # version 4 with extension records between the header and the table of contents (flag 0x2): skipped
    data = BIKER_SPZ.read_bytes()
    record = struct.pack("<II", 0xADBE0002, 0)  # a type and an empty payload
    header = bytearray(data[:32])
    header[14] |= 0x2
    struct.pack_into("<I", header, 16, 32 + len(record))
    (tmp_path / "ext.spz").write_bytes(bytes(header) + record + data[32:])
    assert_array_equal(read_scene(str(tmp_path / "ext.spz")).quats, v4.quats)
    assert (v2.quats[:, 0] >= 0).all()
    assert np.abs(v2.quats[:, 1:] - quats[:, 1:]).max() < 2 / 127.5


def _spz_with(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _spz_cases() -> list[tuple[str, bytes, type[InputError], str]]:
    data = BIKER_SPZ.read_bytes()
    n, bits, streams = _spz_v4_parts(data)
    first = 32 + 5 * 16  # the positions stream's zstd frame: magic, descriptor, 4-byte content size, blocks
    bad_block = bytearray(data)
    bad_block[first + 9 : first + 12] = b"\xff\xff\xff"
    bomb = gzip.compress(_legacy_spz(3, 1_000_000, 12, [bytes(20_000_000)]))
    return [
        ("truncated", data[:-100], UnreadableSceneError, r"truncated: its table of contents declares \d+ bytes"),
        ("padded", data + bytes(10), UnreadableSceneError, r"10 bytes follow the \d+ its table of contents declares"),
        ("not-zstd", data[:first] + b"JUNK" + data[first + 4 :], UnreadableSceneError,
         r"corrupt SPZ: the positions stream is not a zstd frame"),
        ("bad-block", bytes(bad_block), UnreadableSceneError, r"corrupt SPZ: the positions stream: .*Zstd"),
        ("bad-toc", _spz_with(data, 32 + 16 + 8, "<Q", 7), UnreadableSceneError,
         r"the alphas stream declares 7 bytes, 2048 Gaussians need 2048"),
        ("version-1", _spz_with(data, 4, "<I", 1), UnreadableSceneError, r"unsupported SPZ version 1 "),
        ("version-9", _spz_with(data, 4, "<I", 9), UnreadableSceneError, r"unsupported SPZ version 9 "),
        ("zero", _spz_with(data, 8, "<I", 0), EmptySceneError, r"0 Gaussians"),
        ("huge-count", _spz_with(data, 8, "<I", 2**32 - 1), InputTooLargeError, r"declares 4294967295 Gaussians"),
        ("sh-extension", _spz_with(_spz_with(data, 12, "<B", 1), 14, "<B", 2), UnreadableSceneError,
         r"extensions with SH coefficients are not supported"),
        ("gzip-truncated", gzip.compress(_legacy_spz(3, n, bits, streams))[:-30], UnreadableSceneError,
         r"truncated SPZ: the gzip stream ends"),
        ("gzip-short", gzip.compress(_legacy_spz(3, n, bits, streams)[:-5]), UnreadableSceneError,
         r"truncated SPZ: its header declares 2048 Gaussians"),
        ("gzip-garbage", b"\x1f\x8b" + bytes(range(60)), UnreadableSceneError, r"corrupt SPZ: gzip stream"),
        ("gzip-bomb", bomb, InputTooLargeError, r"inflates to more than the input limit"),
        ("not-spz", b"hello, not a splat file\n", UnreadableSceneError, r"not an SPZ file"),
    ]


SPZ_CASES = _spz_cases()


@pytest.mark.parametrize(("name", "data", "error", "reason"), SPZ_CASES, ids=[case[0] for case in SPZ_CASES])
def test_broken_spz_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, data: bytes,
                          error: type[InputError], reason: str) -> None:
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, "8M")  # the gzip bomb inflates to 20 MB
    path = tmp_path / f"{name}.spz"
    path.write_bytes(data)
    with pytest.raises(error, match=reason) as info:
        read_scene(str(path))
    assert type(info.value) is error and info.value.item_id == f"{name}.spz"


def _compressed_parts() -> tuple[np.ndarray, np.ndarray]:
    ply = PlyData.read(str(BIKER_COMPRESSED))
    return ply["chunk"].data.copy(), ply["vertex"].data.copy()


def _write_compressed(path: Path, chunk: np.ndarray, vertex: np.ndarray, *extra: PlyElement) -> str:
    elements = [PlyElement.describe(chunk, "chunk"), PlyElement.describe(vertex, "vertex"), *extra]
    PlyData(elements, byte_order="<").write(str(path))
    return str(path)


def test_compressed_ply_layouts(tmp_path: Path) -> None:
    chunk, vertex = _compressed_parts()
    full = read_scene(str(BIKER_COMPRESSED))
    # told by the header, not the name: a compressed PLY without ".compressed", an INRIA PLY with it
    renamed = read_scene(_write_compressed(tmp_path / "plain.ply", chunk, vertex))
    assert_array_equal(renamed.means, full.means)
    (tmp_path / "x.compressed.ply").write_bytes(BIKER_REFERENCE.read_bytes())
    assert read_scene(str(tmp_path / "x.compressed.ply")).normals is None
    # without chunk colours the colour byte is the colour itself
    plain = _drop(chunk, {"min_r", "min_g", "min_b", "max_r", "max_g", "max_b"})
    scene = read_scene(_write_compressed(tmp_path / "nocolour.ply", plain, vertex))
    red = (vertex["packed_color"] >> 24).astype(np.float64) / 255
    assert_allclose(scene.sh_dc[:, 0], (red - 0.5) / SH_C0, atol=1e-6)
    assert_array_equal(scene.means, full.means)
    # an sh element of uint8 f_rest (degree 1: 9 properties), decoded as (t - 0.5) * 8
    values = np.array([0, 128, 255, 1, 2, 3, 4, 5, 254], dtype=np.uint8)
    sh = np.empty(len(vertex), dtype=[(f"f_rest_{i}", "u1") for i in range(9)])
    for i in range(9):
        sh[f"f_rest_{i}"] = values[i]
    scene = read_scene(_write_compressed(tmp_path / "sh.ply", chunk, vertex, PlyElement.describe(sh, "sh")))
    t = np.where(values == 0, 0.0, np.where(values == 255, 1.0, (values + 0.5) / 256))
    assert scene.sh_degree == 1
    assert_allclose(scene.sh_rest[0], ((t - 0.5) * 8).reshape(3, 3).T, atol=1e-6)  # [k, c] = f_rest_{3c + k}
    assert scene.sh_rest[0, 0, 0] == -4.0 and scene.sh_rest[0, 2, 0] == 4.0


def _as_float(vertex: np.ndarray, name: str) -> np.ndarray:
    out = np.empty(len(vertex), dtype=[(n, "<f4" if n == name else vertex.dtype[n]) for n in vertex.dtype.names])
    for n in vertex.dtype.names:
        out[n] = vertex[n]
    return out


def test_broken_compressed_ply(tmp_path: Path) -> None:
    chunk, vertex = _compressed_parts()
    with pytest.raises(NotAGaussianSceneError, match="7 chunks for 2048 splats, expected 8"):
        read_scene(_write_compressed(tmp_path / "chunks.ply", chunk[:7], vertex))
    with pytest.raises(NotAGaussianSceneError, match="packed_color must be uint32"):
        read_scene(_write_compressed(tmp_path / "float.ply", chunk, _as_float(vertex, "packed_color")))
    with pytest.raises(NotAGaussianSceneError, match="vertex element lacks packed_scale"):
        read_scene(_write_compressed(tmp_path / "noscale.ply", chunk, _drop(vertex, {"packed_scale"})))
    with pytest.raises(NotAGaussianSceneError, match="partial colour bounds"):
        read_scene(_write_compressed(tmp_path / "partial.ply", _drop(chunk, {"max_b"}), vertex))
    with pytest.raises(EmptySceneError, match="0 Gaussians"):
        read_scene(_write_compressed(tmp_path / "empty.ply", chunk[:0], vertex[:0]))
    nan = chunk.copy()
    nan["min_x"][2] = np.nan
    nan["max_scale_y"][[0, 5]] = np.inf
    with pytest.raises(NonFiniteGaussiansError, match=r"8 compressed PLY chunks in fields: min_x \(1\), max_scale_y"):
        read_scene(_write_compressed(tmp_path / "nan.ply", nan, vertex))
    far = chunk.copy()
    far["max_y"][1] = 1e30  # every splat of chunk 1 with a non-zero y fraction lies beyond the bound
    with pytest.raises(GaussianMagnitudeError, match=r"of 2048 Gaussians have a mean coordinate beyond") as info:
        read_scene(_write_compressed(tmp_path / "far.ply", far, vertex))
    count = int(np.count_nonzero((vertex["packed_position"][256:512] >> 11) & 1023))  # y fractions above 0
    message = re.fullmatch(rf"far: {count} of 2048 Gaussians .*is 1e\+30 \(Gaussian (\d+)\)", str(info.value))
    assert message and 256 <= int(message.group(1)) < 512 and info.value.item_id == "far"


@pytest.mark.parametrize("source", [BIKER_COMPRESSED, BIKER_SPZ], ids=["compressed-ply", "spz"])
def test_mutated_compressed_files_give_a_scene_or_an_input_error(tmp_path: Path, source: Path) -> None:
    """Cut and corrupted copies of the real samples: a well-formed scene or a typed InputError, nothing else."""
    data = source.read_bytes()
    rng = np.random.default_rng(0)
    path = tmp_path / source.name
    outcomes = {"scene": 0, "error": 0}
    for i in range(120):
        mutated = bytearray(data)
        if i % 3 == 0:
            mutated = mutated[: int(rng.integers(0, len(data)))]
        else:
            span = 2048 if i % 3 == 1 else len(data)  # header / table / chunk bytes, or anywhere
            for at in rng.integers(0, min(span, len(data)), size=int(rng.integers(1, 5))):
                mutated[at] = int(rng.integers(0, 256))
        path.write_bytes(bytes(mutated))
        try:
            scene = read_scene(str(path))
        except InputError:
            outcomes["error"] += 1
            continue
        outcomes["scene"] += 1
        for name in ("means", "scales", "quats", "opacities", "sh_dc", "sh_rest"):
            assert np.isfinite(getattr(scene, name)).all(), name
        assert np.abs(scene.means).max() <= MAX_ABS_MEAN and scene.scales.max() <= MAX_SCALE
        assert ((scene.opacities >= 0) & (scene.opacities <= 1)).all()
        assert_allclose(np.linalg.norm(scene.quats, axis=1), 1.0, atol=1e-5)
    assert outcomes["scene"] and outcomes["error"]


# --- magnitude bounds ----------------------------------------------------------------------------------------------


def test_means_and_scales_beyond_the_bounds(tmp_path: Path, raw: np.ndarray) -> None:
    vertex = raw.copy()
    vertex["x"][5] = 1e30
    vertex["z"][9] = -2e6
    with pytest.raises(GaussianMagnitudeError) as info:
        read_scene(_write_raw(tmp_path / "far.ply", vertex))
    assert str(info.value) == (
        "far: 2 of 8192 Gaussians have a mean coordinate beyond ±1e+06 (MAX_ABS_MEAN); the largest |x|, |y| or |z| "
        "is 1e+30 (Gaussian 5)"
    )
    vertex = raw.copy()
    vertex["scale_1"][3] = 20.0  # exp(20) = 4.9e8: finite in float32, wider than any scene
    with pytest.raises(GaussianMagnitudeError, match=r"1 of 8192 Gaussians have a scale above 1e\+06 .*4.85e\+08 \(G"):
        read_scene(_write_raw(tmp_path / "wide.ply", vertex))
    # just inside both bounds: read
    vertex = raw.copy()
    vertex["y"][0] = -0.99 * MAX_ABS_MEAN
    vertex["scale_0"][1] = np.log(0.99 * MAX_SCALE)
    scene = read_scene(_write_raw(tmp_path / "near.ply", vertex))
    assert scene.means[0, 1] == np.float32(-0.99 * MAX_ABS_MEAN)


# --- listing and dispatch of the formats ----------------------------------------------------------------------------


def test_list_and_read_dispatch_on_content(tmp_path: Path) -> None:
    assert list_scenes(str(BIKER)) == [str(BIKER_REFERENCE), str(BIKER_COMPRESSED), str(BIKER_SPZ)]
    for name, source in {"a.SPZ": BIKER_SPZ, "b.ply": BIKER_COMPRESSED, "notes.txt": BIKER_SPZ}.items():
        (tmp_path / name).write_bytes(source.read_bytes())
    assert list_scenes(str(tmp_path)) == [str(tmp_path / "a.SPZ"), str(tmp_path / "b.ply")]
    assert list_scenes(str(tmp_path / "*.SPZ")) == [str(tmp_path / "a.SPZ")]
    # content, not the name, picks the reader
    spz = read_scene(str(BIKER_SPZ))
    (tmp_path / "spz-bytes.ply").write_bytes(BIKER_SPZ.read_bytes())
    assert_array_equal(read_scene(str(tmp_path / "spz-bytes.ply")).means, spz.means)
    (tmp_path / "ply-bytes.spz").write_bytes(BIKER_REFERENCE.read_bytes())
    assert len(read_scene(str(tmp_path / "ply-bytes.spz"))) == 2048
    # unknown bytes are reported as not the format the name says
    (tmp_path / "junk.spz").write_bytes(b"\0" * 64)
    with pytest.raises(UnreadableSceneError, match="not an SPZ file"):
        read_scene(str(tmp_path / "junk.spz"))
    (tmp_path / "junk.ply").write_bytes(b"\0" * 64)
    with pytest.raises(UnreadableSceneError, match="not a PLY file"):
        read_scene(str(tmp_path / "junk.ply"))
    assert decode_spz("biker", BIKER_SPZ.read_bytes()).means.shape == (2048, 3)
