"""Spherical parameterization (otcore.mesh.spherical_parameterization) and octahedral geometry images
(otcore.mesh.octahedral) on a real closed genus-0 mesh (spot, decimated so the test stays quick)."""

from __future__ import annotations

import igl
import numpy as np
import pytest

from otcore.errors import UnsupportedTopologyError
from otcore.mesh.geometry_image import geometry_image_to_mesh, mipmap_pyramid, restore_level
from otcore.mesh.metrics import surface_distances
from otcore.mesh.octahedral import (
    octahedral_decode,
    octahedral_encode,
    resample_spherical_geometry_image,
)
from otcore.mesh.parameterization import mean_curvature
from otcore.mesh.spherical_parameterization import (
    check_closed_genus0,
    face_masses,
    initial_spherical_map,
    spherical_area_distortion,
    spherical_flips,
    spherical_parameterizations,
    spherical_triangle_areas,
)
from otcore.ot.spherical_ot import SphericalOTConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_spot(spot):
    vertices, faces = igl.decimate(np.asarray(spot.vertices), np.asarray(spot.faces, dtype=np.int64), 800)[:2]
    return np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)


@pytest.fixture(scope="module")
def spot_parameterizations(small_spot):
    vertices, faces = small_spot
    config = SphericalOTConfig(hidden=32, layers=2, steps=20, inner_steps=2, batch_size=256, seed=0)
    return spherical_parameterizations(vertices, faces, config, polish_steps=150)


def test_initial_map_is_a_flip_free_covering(small_spot):
    vertices, faces = small_spot
    sphere = initial_spherical_map(vertices, faces)
    assert np.allclose(np.linalg.norm(sphere, axis=1), 1.0)
    assert spherical_flips(sphere, faces) == 0
    assert spherical_triangle_areas(sphere, faces).sum() == pytest.approx(4 * np.pi, rel=1e-9)


def test_spherical_ot_reduces_area_distortion_5x_without_flips(spot_parameterizations, small_spot):
    """Measured on this 800-face spot: initial 2.01, after OT 2.02, after the polish 0.025 (x79), no flips."""
    vertices, faces = small_spot
    initial, ot = spot_parameterizations
    assert initial.flipped_triangles == 0 and ot.flipped_triangles == 0
    assert initial.area_distortion / ot.area_distortion >= 5.0
    assert ot.area_distortion == pytest.approx(spherical_area_distortion(vertices, faces, ot.sphere))
    assert ot.neural_distortion is not None and ot.neural_step > 0


def test_octahedral_map_round_trip_equal_area_and_seams():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(octahedral_decode(octahedral_encode(x)), x, atol=1e-12)
    # equal area: uniform (u, v) gives uniform directions (second moment I/3)
    s = octahedral_decode(rng.random((200_000, 2)))
    assert np.allclose(s.T @ s / len(s), np.eye(3) / 3, atol=5e-3)
    t = np.linspace(0, 1, 33)
    for edge in (np.column_stack([t, np.ones_like(t)]), np.column_stack([np.zeros_like(t), t])):
        mirrored = edge.copy()
        mirrored[:, 0 if edge[0, 1] == 1 else 1] = 1 - mirrored[:, 0 if edge[0, 1] == 1 else 1]
        assert np.allclose(octahedral_decode(edge), octahedral_decode(mirrored), atol=1e-12)


def test_spherical_geometry_image_is_seamless_and_faithful(spot_parameterizations, small_spot):
    vertices, faces = small_spot
    _, ot = spot_parameterizations
    image = resample_spherical_geometry_image(vertices, faces, ot.sphere, 65)
    assert image.shape == (3, 65, 65)
    # seams: mirrored border samples are the same surface point, at every mipmap level
    for level in mipmap_pyramid(image, 3):
        assert np.allclose(level[:, 0, :], level[:, 0, ::-1], atol=1e-6)
        assert np.allclose(level[:, -1, :], level[:, -1, ::-1], atol=1e-6)
        assert np.allclose(level[:, :, 0], level[:, ::-1, 0], atol=1e-6)
        assert np.allclose(level[:, :, -1], level[:, ::-1, -1], atol=1e-6)
    restored = geometry_image_to_mesh(restore_level(image, 65))
    distances = surface_distances(*restored, vertices, faces, samples=5000, seed=0)
    assert distances.hausdorff < 0.05  # 65^2 samples of an 800-face mesh of unit diagonal


def test_rejects_surfaces_that_are_not_closed_genus_0(sample_mesh, spot):
    alligator = sample_mesh("alligator")  # a disk
    with pytest.raises(UnsupportedTopologyError, match="boundary"):
        check_closed_genus0(alligator.vertices, alligator.faces)
    with pytest.raises(UnsupportedTopologyError, match="boundary"):
        check_closed_genus0(spot.vertices, np.asarray(spot.faces)[:-1])  # one face removed: a hole
    # two copies of a closed surface: closed, but two components
    faces = np.asarray(spot.faces)
    doubled = np.concatenate([faces, faces + len(spot.vertices)])
    with pytest.raises(UnsupportedTopologyError, match="2 components"):
        check_closed_genus0(np.concatenate([spot.vertices, spot.vertices + 2.0]), doubled)


def test_feature_weight_gives_curved_triangles_more_of_the_sphere(small_spot):
    vertices, faces = small_spot
    masses = face_masses(vertices, faces, feature_weight=2.0)
    area = face_masses(vertices, faces)
    curvature = mean_curvature(vertices, faces)[faces].mean(1)
    config = SphericalOTConfig(hidden=16, layers=1, steps=5, inner_steps=1, batch_size=128, seed=0)
    _, ot = spherical_parameterizations(vertices, faces, config, polish_steps=150, feature_weight=2.0)
    shares = spherical_triangle_areas(ot.sphere, faces) / (4 * np.pi)
    ratio = shares / (area / area.sum())
    high = curvature > np.quantile(curvature, 0.8)
    low = curvature < np.quantile(curvature, 0.2)
    assert ot.flipped_triangles == 0
    assert np.median(ratio[high]) > 1.5 * np.median(ratio[low])
    assert not np.allclose(masses / area, masses[0] / area[0])  # the weights do vary
