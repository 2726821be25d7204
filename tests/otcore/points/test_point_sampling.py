"""Tests of otcore.points.point_sampling on the bundled real collections: on-surface, correspondence, area
uniformity."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import igl
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from otcore.points.point_sampling import (
    face_area_weights,
    interpolate_barycentric,
    sample_correspondent_surface,
    sample_face_barycentrics,
    shape_points,
)
from storage.collections import read_collection


@cache
def _collection(path: str) -> tuple[np.ndarray, np.ndarray]:
    collection, failures = read_collection(path)
    assert not failures and collection.faces is not None
    return collection.vertices, collection.faces


@pytest.fixture(scope="module")
def crane(consistent_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return _collection(str(consistent_dir / "crane-16.npz"))


@pytest.fixture(scope="module")
def horse(consistent_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return _collection(str(consistent_dir / "horse-gallop"))


def _distance_to_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    squared, _, _ = igl.point_mesh_squared_distance(
        np.asarray(points, np.float64), np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    )
    return np.sqrt(squared)


def _areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    v = np.asarray(vertices, np.float64)
    return 0.5 * np.linalg.norm(np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]]), axis=1)


def test_count_shape_dtype_and_seed(crane: tuple[np.ndarray, np.ndarray]) -> None:
    vertices, faces = crane
    samples = sample_correspondent_surface(vertices, faces, 3000, seed=7)
    assert samples.shape == (16, 3000, 3) and samples.dtype == np.float32
    assert np.isfinite(samples).all()
    np.testing.assert_array_equal(samples, sample_correspondent_surface(vertices, faces, 3000, seed=7))
    assert not np.allclose(samples, sample_correspondent_surface(vertices, faces, 3000, seed=8))
    assert sample_correspondent_surface(vertices[:1], faces, 1).shape == (1, 1, 3)


def test_samples_lie_on_each_surface(crane: tuple[np.ndarray, np.ndarray]) -> None:
    vertices, faces = crane
    face_index, barycentric = sample_face_barycentrics(face_area_weights(vertices, faces), 4000, seed=1)
    assert (barycentric >= 0).all() and np.allclose(barycentric.sum(axis=1), 1.0)
    exact = interpolate_barycentric(vertices, faces, face_index, barycentric)  # float64
    samples = sample_correspondent_surface(vertices, faces, 4000, seed=1)
    np.testing.assert_allclose(samples, exact, rtol=0, atol=1e-6)  # the float32 result of the same draw
    for shape in (0, 9, 15):
        assert _distance_to_mesh(exact[shape], vertices[shape], faces).max() < 1e-10
        assert _distance_to_mesh(samples[shape], vertices[shape], faces).max() < 1e-6  # float32 rounding


def test_samples_correspond_across_shapes(horse: tuple[np.ndarray, np.ndarray]) -> None:
    """Sample k of shape a, located on mesh a (closest face + barycentrics), is sample k of shape b."""
    vertices, faces = horse
    samples = sample_correspondent_surface(vertices, faces, 2000, seed=3).astype(np.float64)
    v64 = vertices.astype(np.float64)
    _, face_a, closest = igl.point_mesh_squared_distance(samples[0], v64[0], faces)
    corners = faces[face_a]
    barycentric = igl.barycentric_coordinates(closest, *(v64[0][corners[:, k]] for k in range(3)))
    for shape in (1, 2):
        mapped = interpolate_barycentric(v64[shape], faces, face_a, barycentric)
        assert np.abs(mapped - samples[shape]).max() < 1e-5
    # shapes do differ (the test is not trivially satisfied)
    assert np.abs(samples[1] - samples[0]).max() > 0.1


def test_per_shape_similarity_maps_samples(horse: tuple[np.ndarray, np.ndarray]) -> None:
    """Face weights pool per-shape area *fractions*, so moving/scaling one shape rigidly moves its samples only."""
    vertices, faces = horse
    rng = np.random.default_rng(0)
    rotations = Rotation.random(len(vertices), random_state=1).as_matrix()
    scales = np.array([0.5, 1.0, 3.0])
    shifts = rng.normal(size=(len(vertices), 1, 3))
    moved = scales[:, None, None] * np.einsum("sij,svj->svi", rotations, vertices.astype(np.float64)) + shifts
    samples = sample_correspondent_surface(vertices, faces, 1000, seed=5).astype(np.float64)
    expected = scales[:, None, None] * np.einsum("sij,svj->svi", rotations, samples) + shifts
    np.testing.assert_allclose(sample_correspondent_surface(moved, faces, 1000, seed=5), expected, atol=2e-5)


def test_area_uniform_on_a_single_shape(crane: tuple[np.ndarray, np.ndarray]) -> None:
    vertices, faces = crane
    shape = vertices[4]
    count = 100_000
    samples = sample_correspondent_surface(shape[None], faces, count, seed=11)[0]
    _, closest_face, _ = igl.point_mesh_squared_distance(samples.astype(np.float64), shape.astype(np.float64), faces)
    areas = _areas(shape, faces)
    # the first half of the faces (47% of the area) and the larger half (far more than 50% of the area)
    for subset in (np.arange(len(faces)) < len(faces) // 2, areas > np.median(areas)):
        area_fraction = areas[subset].sum() / areas.sum()
        assert abs(area_fraction - subset.mean()) > 0.02  # face-uniform sampling would fail
        sample_fraction = np.isin(closest_face, np.flatnonzero(subset)).mean()
        assert abs(sample_fraction - area_fraction) < 4.0 * np.sqrt(0.25 / count)  # 4 sigma
    # one shape: the mean-area and mean-shape weights agree and are the area fractions
    np.testing.assert_allclose(face_area_weights(shape[None], faces), areas / areas.sum(), rtol=1e-9)
    np.testing.assert_allclose(face_area_weights(shape[None], faces, "mean_shape"), areas / areas.sum(), rtol=1e-9)


def test_weights_pool_area_fractions(crane: tuple[np.ndarray, np.ndarray]) -> None:
    vertices, faces = crane
    fractions = np.stack([_areas(v, faces) / _areas(v, faces).sum() for v in vertices])
    weights = face_area_weights(vertices, faces)
    np.testing.assert_allclose(weights, fractions.mean(axis=0), rtol=1e-9)
    assert weights.sum() == pytest.approx(1.0)
    # the mean shape of a moving performer is a poor proxy: its weights are further from every frame's own
    total_variation = 0.5 * np.abs(fractions - face_area_weights(vertices, faces, "mean_shape")).sum(axis=1)
    assert (total_variation > 0.5 * np.abs(fractions - weights).sum(axis=1)).all()


def test_bad_inputs_raise(crane: tuple[np.ndarray, np.ndarray]) -> None:
    vertices, faces = crane
    for count in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="count"):
            sample_correspondent_surface(vertices, faces, count)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[S, V, 3\]"):
        sample_correspondent_surface(vertices[0], faces, 10)
    with pytest.raises(ValueError, match="faces"):
        sample_correspondent_surface(vertices, faces[:, :2], 10)
    with pytest.raises(ValueError, match="face indices"):
        sample_correspondent_surface(vertices[:, :100], faces, 10)
    with pytest.raises(ValueError, match="zero total surface area"):
        sample_correspondent_surface(np.zeros_like(vertices[:2]), faces, 10)
    with pytest.raises(ValueError, match="zero total surface area"):
        sample_correspondent_surface(np.zeros_like(vertices[:2]), faces, 10, area_weighting="mean_shape")
    broken = vertices[:2].copy()
    broken[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sample_correspondent_surface(broken, faces, 10)
    with pytest.raises(ValueError, match="area_weighting"):
        sample_correspondent_surface(vertices, faces, 10, area_weighting="max")  # type: ignore[arg-type]


def test_shape_points_modes(horse: tuple[np.ndarray, np.ndarray]) -> None:
    vertices, faces = horse
    points = shape_points(vertices.astype(np.float64), faces, "vertices", None, seed=0)
    assert points.dtype == np.float32 and points.shape == vertices.shape
    np.testing.assert_array_equal(points, vertices)
    np.testing.assert_array_equal(
        shape_points(vertices, faces, "surface", 500, seed=2), sample_correspondent_surface(vertices, faces, 500, 2)
    )
    with pytest.raises(ValueError, match="needs faces"):
        shape_points(vertices, None, "surface", 500, seed=0)
    with pytest.raises(ValueError, match="sample count"):
        shape_points(vertices, faces, "surface", None, seed=0)
    with pytest.raises(ValueError, match="mode"):
        shape_points(vertices, faces, "voxels", 500, seed=0)
    with pytest.raises(ValueError, match="count=500"):
        shape_points(vertices, faces, "vertices", 500, seed=0)
