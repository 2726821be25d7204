"""Tests of otcore.mesh.convex_combination: fold-free maps on real meshes, linear precision, closed-form weights."""

from __future__ import annotations

import numpy as np
import pytest

from otcore.mesh.convex_combination import convex_combination_map, mean_value_weights
from otcore.mesh.harmonic import flipped_triangles, signed_areas
from otcore.mesh.parameterization import cut_and_map, feature_masses, ot_parameterization


@pytest.fixture(scope="module", params=["spot", "cow", "woody"])
def mapped(request, sample_mesh):
    mesh = sample_mesh(request.param)
    disk, harmonic = cut_and_map(mesh.vertices, mesh.faces)
    return mesh, disk, harmonic


def _interior(disk) -> np.ndarray:
    inside = np.ones(len(disk.vertices), dtype=bool)
    inside[disk.boundary] = False
    return np.flatnonzero(inside)


def test_scrambled_layout_becomes_fold_free(mapped) -> None:
    """Any layout with the square boundary, however tangled, gives a bijection (Floater 2003, Thm. 6.1)."""
    _, disk, harmonic = mapped
    uv = harmonic.uv.copy()
    interior = _interior(disk)
    uv[interior] = np.random.default_rng(0).permutation(uv[interior])  # every one-ring tangled
    assert flipped_triangles(uv, disk.faces) > len(disk.faces) // 4
    result = convex_combination_map(uv, disk.vertices, disk.faces, disk.boundary)
    assert flipped_triangles(result.uv, disk.faces) == 0
    np.testing.assert_array_equal(result.uv[disk.boundary], uv[disk.boundary])
    assert (result.uv[interior] > 0.0).all() and (result.uv[interior] < 1.0).all()
    # A fold-free map onto the square covers it exactly once.
    assert signed_areas(result.uv, disk.faces).sum() == pytest.approx(1.0, abs=1e-9)


def test_fold_free_layout_is_reproduced(mapped) -> None:
    """Mean-value coordinates have linear precision: a layout without folds is a fixed point."""
    _, disk, harmonic = mapped
    result = convex_combination_map(harmonic.uv, disk.vertices, disk.faces, disk.boundary)
    assert result.fallback_vertices == 0
    np.testing.assert_allclose(result.uv, harmonic.uv, atol=1e-9)


def test_ot_centroid_flips_are_repaired_and_ot_kept(mapped) -> None:
    """On the real OT centroid map the repair leaves no flip, re-places no vertex, and keeps the OT gain."""
    mesh, disk, harmonic = mapped
    masses = feature_masses(mesh.vertices, mesh.faces, disk, 0.0)
    convex = ot_parameterization(disk, harmonic.uv, masses)
    untangled = ot_parameterization(disk, harmonic.uv, masses, repair="untangle")
    assert convex.centroid_flips == untangled.centroid_flips > 0
    assert convex.flipped_triangles == 0 and convex.untangled_vertices == 0
    assert untangled.untangled_vertices > 0
    # Measured (distortion harmonic / convex / untangle): spot 1.03 / 0.38 / 0.47, cow 2.99 / 0.85 / 2.16,
    # woody 1.26 / 0.45 / 0.74.
    assert convex.area_distortion < untangled.area_distortion < harmonic.area_distortion
    # Most vertices stay within a fraction of an edge of their power-cell centroids.
    centroids = convex.ot.cells.centroids
    interior = _interior(disk)
    edges = np.concatenate([disk.faces[:, [0, 1]], disk.faces[:, [1, 2]], disk.faces[:, [2, 0]]])
    edge_length = np.median(np.linalg.norm(convex.uv[edges[:, 0]] - convex.uv[edges[:, 1]], axis=1))
    moved = np.linalg.norm(convex.uv[interior] - centroids[interior], axis=1)
    assert np.median(moved) < 0.5 * edge_length
    with pytest.raises(ValueError, match="repair"):
        ot_parameterization(disk, harmonic.uv, masses, repair="none")


def test_coincident_points_fall_back_and_stay_fold_free(spot) -> None:
    disk, harmonic = cut_and_map(spot.vertices, spot.faces)
    uv = harmonic.uv.copy()
    interior = _interior(disk)
    # Collapse one interior vertex's whole one-ring onto it: its weights and its neighbours' are undefined.
    center = interior[len(interior) // 2]
    ring = np.unique(disk.faces[(disk.faces == center).any(1)])
    ring = ring[np.isin(ring, interior)]
    uv[ring] = uv[center]
    result = convex_combination_map(uv, disk.vertices, disk.faces, disk.boundary)
    assert result.fallback_vertices >= len(ring)
    assert flipped_triangles(result.uv, disk.faces) == 0


def test_mean_value_weights_closed_form() -> None:
    """Regular hexagon around the origin: every angle is 60 deg, so w = 2 tan(30 deg) / 1 for all six edges."""
    angles = np.arange(6) * np.pi / 3.0
    points = np.vstack([[0.0, 0.0], np.column_stack([np.cos(angles), np.sin(angles)])])
    faces = np.column_stack([np.zeros(6, dtype=int), 1 + np.arange(6), 1 + (np.arange(6) + 1) % 6])
    weights, degenerate = mean_value_weights(points, faces)
    np.testing.assert_allclose(weights[0].toarray().ravel()[1:], 2.0 * np.tan(np.pi / 6.0), rtol=1e-12)
    assert not degenerate.any()
    # The same fan lifted to 3-D (a flat plane in space) has the same weights.
    lifted = np.column_stack([points, np.zeros(7)]) @ np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    np.testing.assert_allclose(mean_value_weights(lifted, faces)[0].toarray(), weights.toarray(), rtol=1e-9)
    # Weights are positive even on a folded fan (unsigned angles): the centre moved outside its ring.
    moved = points.copy()
    moved[0] = [3.0, 0.0]
    folded, _ = mean_value_weights(moved, faces)
    assert (folded[0].toarray().ravel()[1:] > 0.0).all()
    with pytest.raises(ValueError, match="same V"):
        convex_combination_map(points, np.zeros((3, 3)), faces, np.arange(1, 7))
