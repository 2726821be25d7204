"""storage.gaussians: reading/writing trained 3DGS scenes (INRIA PLY layout) on the bundled real sample."""

from __future__ import annotations

import dataclasses
import pickle
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
    InputError,
    NonFiniteGaussiansError,
    NotAGaussianSceneError,
    UnreadableSceneError,
)
from storage.gaussians import (
    REQUIRED_FIELDS,
    GaussianScene,
    list_scenes,
    quats_to_rotations,
    read_scene,
    write_scene,
)

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
SAMPLE = SAMPLES / "gaussians" / "donut-8k.ply"
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
    for cls in (NotAGaussianSceneError, UnreadableSceneError, NonFiniteGaussiansError, EmptySceneError):
        error = pickle.loads(pickle.dumps(cls("donut", "a reason")))
        assert isinstance(error, InputError) and str(error) == "donut: a reason"
    assert REQUIRED_FIELDS[:3] == ("x", "y", "z") and len(REQUIRED_FIELDS) == 14


# --- listing ----------------------------------------------------------------------------------------------------


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
