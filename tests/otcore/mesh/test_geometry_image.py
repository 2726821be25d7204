"""Tests of otcore.mesh.geometry_image: resampling, quantisation, grid meshes, mipmaps and the spot round trip."""

from __future__ import annotations

import igl
import numpy as np
import pytest

from otcore.mesh.disk_cut import cut_to_disk
from otcore.mesh.geometry_image import (
    dequantize,
    geometry_image_to_mesh,
    grid_faces,
    mipmap_pyramid,
    quantize,
    quantized_pyramid,
    resample_geometry_image,
    restore_level,
    restored_level_distances,
)
from otcore.mesh.harmonic import signed_areas
from otcore.mesh.metrics import surface_distances
from otcore.mesh.parameterization import harmonic_parameterization, parameterize_to_square


def _jittered_square_mesh(n: int = 9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A triangulated unit square (uv) with jittered interior vertices: ``[n*n, 2]``, ``[2 (n-1)^2, 3]``."""
    g = np.linspace(0.0, 1.0, n)
    x, y = np.meshgrid(g, g)
    uv = np.column_stack([x.ravel(), y.ravel()])
    interior = (uv > 0.0).all(1) & (uv < 1.0).all(1)
    uv[interior] += np.random.default_rng(seed).uniform(-0.3, 0.3, (interior.sum(), 2)) / (n - 1)
    return uv, grid_faces(n, n)


@pytest.mark.parametrize(("height", "width"), [(2, 2), (5, 7), (17, 17)])
def test_grid_faces_counts_and_orientation(height: int, width: int) -> None:
    faces = grid_faces(height, width)
    assert faces.shape == (2 * (height - 1) * (width - 1), 3) and faces.dtype == np.int64
    assert faces.min() == 0 and faces.max() == height * width - 1
    y, x = np.divmod(np.arange(height * width), width)
    uv = np.column_stack([x / (width - 1), y / (height - 1)])
    areas = signed_areas(uv, faces)
    np.testing.assert_allclose(areas, 0.5 / ((height - 1) * (width - 1)), rtol=1e-12)
    assert igl.euler_characteristic(faces) == 1 and igl.is_edge_manifold(faces)[0]
    assert len(igl.boundary_loop_all(faces)) == 1


def test_geometry_image_to_mesh_is_row_major() -> None:
    image = np.random.default_rng(0).random((3, 5, 7)).astype(np.float32)
    vertices, faces = geometry_image_to_mesh(image)
    assert vertices.shape == (35, 3) and vertices.dtype == np.float32
    for y, x in [(0, 0), (0, 6), (4, 0), (2, 3), (4, 6)]:
        np.testing.assert_array_equal(vertices[y * 7 + x], image[:, y, x])
    np.testing.assert_array_equal(faces, grid_faces(5, 7))


def test_mipmap_pyramid_is_exact_subsampling() -> None:
    image = np.random.default_rng(1).random((3, 257, 257)).astype(np.float32)
    pyramid = mipmap_pyramid(image, 5)
    assert [level.shape for level in pyramid] == [(3, s, s) for s in (257, 129, 65, 33, 17)]
    for k, level in enumerate(pyramid):
        assert level.dtype == np.float32 and level.flags.c_contiguous
        np.testing.assert_array_equal(level, image[:, :: 2**k, :: 2**k])
    assert len(mipmap_pyramid(image, 9)) == 9 and mipmap_pyramid(image, 9)[-1].shape == (3, 2, 2)
    codes = np.arange(3 * 33 * 33, dtype=np.uint16).reshape(3, 33, 33)
    assert mipmap_pyramid(codes, 2)[1].dtype == np.uint16


@pytest.mark.parametrize(
    ("shape", "levels"),
    [((3, 256, 256), 1), ((3, 258, 258), 1), ((3, 257, 129), 1), ((3, 1, 1), 1), ((3, 257, 257), 10),
     ((3, 257, 257), 0)],
)
def test_mipmap_pyramid_rejects_bad_input(shape: tuple, levels: int) -> None:
    with pytest.raises(ValueError):
        mipmap_pyramid(np.zeros(shape, dtype=np.float32), levels)


@pytest.mark.parametrize("k", [0, 1, 3])
def test_restore_level_keeps_coarse_samples_and_is_bilinear(k: int) -> None:
    rng = np.random.default_rng(k)
    fine = rng.random((3, 65, 65)).astype(np.float32)
    level = mipmap_pyramid(fine, k + 1)[k]
    restored = restore_level(level, 65)
    assert restored.shape == (3, 65, 65) and restored.dtype == np.float32
    np.testing.assert_array_equal(restored[:, :: 2**k, :: 2**k], level)
    # A linear field is reproduced everywhere.
    g = np.linspace(0.0, 1.0, 65, dtype=np.float64)
    x, y = np.meshgrid(g, g)
    ramp = np.stack([x, y, 0.3 * x - 0.7 * y + 0.2]).astype(np.float32)
    coarse = mipmap_pyramid(ramp, k + 1)[k]
    np.testing.assert_allclose(restore_level(coarse, 65), ramp, atol=1e-6)


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_quantize_round_trip_error_is_half_a_step(bits: int) -> None:
    rng = np.random.default_rng(bits)
    image = (rng.random((3, 33, 33)) * [[[1.0]], [[0.5]], [[2.0]]] + [[[-0.2]], [[0.3]], [[0.0]]]).astype(np.float32)
    q = quantize(image, bits)
    assert q.codes.dtype == np.uint16 and q.codes.shape == image.shape and q.bits == bits
    for c in range(3):
        assert q.codes[c].min() == 0 and q.codes[c].max() == 2**bits - 1
        assert q.offset[c] == image[c].min()
        assert q.scale[c] == pytest.approx((float(image[c].max()) - float(image[c].min())) / (2**bits - 1), rel=1e-12)
    restored = dequantize(q.codes, q.offset, q.scale)
    assert restored.dtype == np.float32
    error = np.abs(restored.astype(np.float64) - image.astype(np.float64)).max(axis=(1, 2))
    # Half a step, plus the float32 rounding of dequantize's output (half an ulp of the largest value).
    float32_rounding = 0.5 * np.spacing(np.abs(image).max(axis=(1, 2)).astype(np.float32)).astype(np.float64)
    assert (error <= q.scale / 2 + float32_rounding).all()
    assert (error > q.scale / 8).all()  # the test is not vacuous: quantisation does lose information


def test_quantize_constant_channel_and_bad_input() -> None:
    image = np.zeros((3, 9, 9), dtype=np.float32)
    image[1] = 0.25
    image[2] = np.linspace(0, 1, 81).reshape(9, 9)
    q = quantize(image, 16)
    assert q.scale[0] == 1.0 and q.scale[1] == 1.0 and (q.codes[:2] == 0).all()
    np.testing.assert_array_equal(dequantize(q.codes, q.offset, q.scale)[:2], image[:2])
    for bits in (0, 17):
        with pytest.raises(ValueError):
            quantize(image, bits)
    image[2, 3, 3] = np.nan
    with pytest.raises(ValueError):
        quantize(image, 16)


def test_resample_planar_square_is_exact() -> None:
    uv, faces = _jittered_square_mesh()
    # Any affine embedding of the square is reproduced exactly by barycentric interpolation.
    vertices = np.column_stack([uv[:, 0], uv[:, 1], 0.3 * uv[:, 0] - 0.2 * uv[:, 1] + 0.1])
    image = resample_geometry_image(vertices, faces, uv, 33)
    assert image.shape == (3, 33, 33) and image.dtype == np.float32
    g = np.arange(33) / 32
    x, y = np.meshgrid(g, g)  # row y is v, column x is u
    np.testing.assert_allclose(image[0], x, atol=1e-6)
    np.testing.assert_allclose(image[1], y, atol=1e-6)
    np.testing.assert_allclose(image[2], 0.3 * x - 0.2 * y + 0.1, atol=1e-6)


def test_resample_rejects_a_map_that_misses_the_square() -> None:
    uv, faces = _jittered_square_mesh()
    vertices = np.column_stack([uv, np.zeros(len(uv))])
    with pytest.raises(ValueError, match="outside"):
        resample_geometry_image(vertices, faces, 0.1 + 0.8 * uv, 17)


@pytest.fixture(scope="module")
def spot_round_trip(spot) -> dict:
    """Spot at 257: map -> resample -> 16-bit codes -> pyramid -> dequantize -> mesh -> distances to the original."""
    result = parameterize_to_square(spot.vertices, spot.faces)
    distances = {}
    for method, param in (("ot", result.ot), ("harmonic", result.harmonic)):
        image = resample_geometry_image(result.disk.vertices, result.disk.faces, param.uv, 257)
        q = quantize(image, 16)
        for level, codes in enumerate(mipmap_pyramid(q.codes, 2)):
            vertices, faces = geometry_image_to_mesh(dequantize(codes, q.offset, q.scale))
            distances[method, level] = surface_distances(
                spot.vertices, spot.faces, vertices, faces, samples=50_000, seed=0
            )
    return distances


def test_spot_round_trip_bounds(spot_round_trip: dict) -> None:
    ot, harmonic = spot_round_trip["ot", 0], spot_round_trip["harmonic", 0]
    assert ot.samples == 50_000
    # Measured (seed 0, 50k samples): OT chamfer 9.51e-7, hausdorff 1.95e-2; harmonic 2.51e-6, 2.15e-2.
    assert ot.chamfer_l2 < 1.5e-6
    assert ot.hausdorff < 3.0e-2
    assert harmonic.chamfer_l2 < 4.0e-6
    assert harmonic.hausdorff < 3.3e-2
    assert ot.chamfer_l2 < harmonic.chamfer_l2
    # Level 1 (129x129) is coarser for both maps; OT stays ahead. Measured: OT 4.11e-6, harmonic 1.17e-5.
    assert spot_round_trip["ot", 1].chamfer_l2 < 6.5e-6
    assert ot.chamfer_l2 < spot_round_trip["ot", 1].chamfer_l2 < spot_round_trip["harmonic", 1].chamfer_l2


def test_stored_pyramid_and_level_distances_are_the_manual_chain(spot) -> None:
    """quantized_pyramid and restored_level_distances (the geometry-image task's math) equal the chain they wrap."""
    disk = cut_to_disk(spot.vertices, spot.faces)
    image = resample_geometry_image(disk.vertices, disk.faces, harmonic_parameterization(disk).uv, 33)
    quantized, levels = quantized_pyramid(image, 12, 2)
    manual = quantize(image, 12)
    np.testing.assert_array_equal(quantized.codes, manual.codes)
    assert [lv.shape for lv in levels] == [(3, 33, 33), (3, 17, 17)]
    for codes, expected in zip(levels, mipmap_pyramid(manual.codes, 2), strict=True):
        np.testing.assert_array_equal(codes, expected)
    restored = restore_level(dequantize(levels[1], manual.offset, manual.scale), 33)
    vertices, faces = geometry_image_to_mesh(restored)
    want = surface_distances(vertices, faces, spot.vertices, spot.faces, 2000, 0)
    got = restored_level_distances(levels[1], quantized, 33, spot.vertices, spot.faces, 2000, 0)
    assert got == want and got.chamfer_l2 > 0
