"""Tests of otcore.mesh.metrics: normalisation, surface sampling, point-to-surface distances and size arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from otcore.mesh.geometry_image import grid_faces
from otcore.mesh.metrics import (
    compression_ratio,
    normalize_to_unit_diagonal,
    point_to_surface_distances,
    raw_mesh_bytes,
    sample_surface,
    surface_distances,
)


def _plane(n: int = 5, z: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    g = np.linspace(0.0, 1.0, n)
    x, y = np.meshgrid(g, g)
    return np.column_stack([x.ravel(), y.ravel(), np.full(n * n, z)]), grid_faces(n, n)


def test_surface_distances_to_itself_vanish(spot) -> None:
    d = surface_distances(spot.vertices, spot.faces, spot.vertices, spot.faces, samples=20_000, seed=3)
    assert d.samples == 20_000
    assert d.chamfer_l2 < 1e-12
    assert d.hausdorff < 1e-6


@pytest.mark.parametrize("t", [1e-3, 0.05, 0.4])
def test_translated_plane_closed_form(t: float) -> None:
    vertices, faces = _plane()
    moved = vertices + [0.0, 0.0, t]
    d = surface_distances(vertices, faces, moved, faces, samples=5_000, seed=0)
    assert d.chamfer_l2 == pytest.approx(2 * t**2, abs=1e-9)
    assert d.hausdorff == pytest.approx(t, abs=1e-9)


def test_point_to_surface_closed_forms() -> None:
    vertices, faces = _plane()
    points = np.array([[0.3, 0.7, 0.25], [0.5, 0.5, -2.0], [1.3, 0.5, 0.4], [-0.3, -0.4, 0.0], [0.2, 0.2, 0.0]])
    expected = [0.25, 2.0, 0.5, 0.5, 0.0]
    np.testing.assert_allclose(point_to_surface_distances(points, vertices, faces), expected, atol=1e-12)


def test_sample_surface_is_seeded_and_on_the_mesh(spot) -> None:
    a = sample_surface(spot.vertices, spot.faces, 4_000, seed=7)
    b = sample_surface(spot.vertices, spot.faces, 4_000, seed=7)
    c = sample_surface(spot.vertices, spot.faces, 4_000, seed=8)
    assert a.shape == (4_000, 3) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    assert point_to_surface_distances(a, spot.vertices, spot.faces).max() < 1e-9


def test_sample_surface_is_area_uniform() -> None:
    # Two disjoint triangles of areas 1/2 and 3/2: a quarter of the samples on the first.
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 0, 0], [8, 0, 0], [5, 1, 0]], dtype=float)
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    points = sample_surface(vertices, faces, 40_000, seed=0)
    on_first = points[:, 0] < 2.0
    assert on_first.mean() == pytest.approx(0.25, abs=0.01)  # 4.6 sigma
    # Uniform inside a triangle: the sample mean is the centroid (1/3, 1/3); x + y <= 1.
    first = points[on_first]
    np.testing.assert_allclose(first[:, :2].mean(0), [1 / 3, 1 / 3], atol=0.01)
    assert (first[:, :2] >= -1e-15).all() and (first[:, 0] + first[:, 1] <= 1.0 + 1e-12).all()
    assert np.mean(first[:, 0] + first[:, 1] < np.sqrt(0.5)) == pytest.approx(0.5, abs=0.02)


def test_sample_surface_bad_input() -> None:
    vertices, faces = _plane()
    with pytest.raises(ValueError):
        sample_surface(vertices, faces, 0, seed=0)
    with pytest.raises(ValueError):
        sample_surface(np.zeros((3, 3)), np.array([[0, 1, 2]]), 10, seed=0)


def test_size_arithmetic() -> None:
    assert raw_mesh_bytes(100, 200) == 12 * 100 + 12 * 200 == 3600
    assert raw_mesh_bytes(0, 0) == 0
    assert compression_ratio(100, 200, 1200) == 3.0
    assert compression_ratio(2930, 5856, 3 * 17 * 17 * 2) == pytest.approx(12 * (2930 + 5856) / 1734, rel=1e-15)
    for stored in (0, -5):
        with pytest.raises(ValueError):
            compression_ratio(100, 200, stored)


def test_normalize_to_unit_diagonal() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 3)) * [3.0, 0.5, 10.0] + [100.0, -4.0, 2.0]
    normalized, offset, scale = normalize_to_unit_diagonal(points)
    np.testing.assert_allclose(normalized.min(0), 0.0, atol=1e-15)
    assert np.linalg.norm(normalized.max(0) - normalized.min(0)) == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(normalized * scale + offset, points, atol=1e-12)
    np.testing.assert_array_equal(offset, points.min(0))
    # A flat (planar) mesh is fine: only the full diagonal must be positive.
    flat, _, _ = normalize_to_unit_diagonal(np.array([[0.0, 0.0, 1.0], [3.0, 4.0, 1.0]]))
    np.testing.assert_allclose(flat, [[0, 0, 0], [0.6, 0.8, 0]], atol=1e-15)


@pytest.mark.parametrize(
    "points",
    [np.ones((4, 3)), np.array([[0.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 0.0], [np.nan, 1.0, 1.0]]),
     np.array([[0.0, 0.0, 0.0], [np.inf, 1.0, 1.0]])],
    ids=["coincident", "single", "nan", "inf"],
)
def test_normalize_degenerate_raises(points: np.ndarray) -> None:
    with pytest.raises(ValueError):
        normalize_to_unit_diagonal(points)
