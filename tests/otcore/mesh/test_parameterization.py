"""Tests of otcore.mesh.disk_cut, otcore.mesh.harmonic and otcore.mesh.parameterization on real meshes and closed
forms."""

from __future__ import annotations

import igl
import numpy as np
import pytest
import trimesh

from otcore.errors import (
    GeometryError,
    NonManifoldMeshError,
    OTConvergenceError,
    UnsupportedTopologyError,
)
from otcore.mesh.disk_cut import cut_to_disk, split_pinched_vertices
from otcore.mesh.geometry_image import grid_faces
from otcore.mesh.harmonic import flipped_triangles, harmonic_map, signed_areas, square_boundary
from otcore.mesh.parameterization import (
    area_distortion,
    feature_masses,
    harmonic_parameterization,
    mean_curvature,
    ot_parameterization,
    parameterize_frame,
    parameterize_to_square,
    vertex_areas,
)

# name -> (genus, boundary loops) of the source surface
MESHES = {"spot": (0, 0), "woody": (0, 1), "rocker-arm": (1, 0), "fandisk": (0, 0)}
CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


@pytest.fixture(scope="module", params=list(MESHES))
def case(request, sample_mesh):
    mesh = sample_mesh(request.param)
    return request.param, mesh, parameterize_to_square(mesh.vertices, mesh.faces)


def _triangle_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def _perimeter_parameter(uv: np.ndarray) -> np.ndarray:
    """Position ``t in [0, 4)`` of points on the unit square's perimeter, counter-clockwise from (0, 0)."""
    u, v = uv[:, 0], uv[:, 1]
    return np.select(
        [(v == 0.0) & (u < 1.0), (u == 1.0) & (v < 1.0), (v == 1.0) & (u > 0.0)],
        [u, 1.0 + v, 3.0 - u],
        default=4.0 - v,
    ) % 4.0


def _plane_grid(n: int, jitter: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = np.linspace(0.0, 1.0, n)
    x, y = np.meshgrid(g, g)
    uv = np.column_stack([x.ravel(), y.ravel()])
    interior = (uv > 0.0).all(1) & (uv < 1.0).all(1)
    uv[interior] += np.random.default_rng(seed).uniform(-jitter, jitter, (interior.sum(), 2)) / (n - 1)
    return uv, grid_faces(n, n)


def _check_square_map(disk, uv: np.ndarray) -> None:
    boundary = disk.boundary
    assert uv.shape == (len(disk.vertices), 2)
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    assert flipped_triangles(uv, disk.faces) == 0
    # Every boundary vertex lies exactly on a side; the four corners are boundary vertices, exactly.
    b = uv[boundary]
    assert np.minimum.reduce([b[:, 0], 1.0 - b[:, 0], b[:, 1], 1.0 - b[:, 1]]).max() == 0.0
    for corner in CORNERS:
        assert np.all(b == corner, axis=1).sum() == 1
    # Interior vertices are strictly inside.
    interior = np.setdiff1d(np.arange(len(uv)), boundary)
    assert (uv[interior] > 0.0).all() and (uv[interior] < 1.0).all()
    # The loop goes once around the perimeter, in order (a simple boundary polygon).
    t = _perimeter_parameter(b)
    step = (np.roll(t, -1) - t) % 4.0
    if step.sum() > 4.0 + 1e-9:  # clockwise traversal
        step = (t - np.roll(t, -1)) % 4.0
    assert (step > 0.0).all() and step.sum() == pytest.approx(4.0, abs=1e-9)
    # The map covers the square exactly once.
    areas = signed_areas(uv, disk.faces)
    assert areas[areas > 0].sum() == pytest.approx(1.0, abs=1e-9)


def test_cut_to_disk_gives_a_disk(case) -> None:
    name, mesh, result = case
    disk = result.disk
    assert (disk.genus, disk.boundary_loops) == MESHES[name]
    assert igl.euler_characteristic(disk.faces) == 1
    loops = igl.boundary_loop_all(disk.faces)
    assert len(loops) == 1
    assert len(loops[0]) == len(disk.boundary) and set(loops[0]) == set(disk.boundary.tolist())
    assert igl.is_edge_manifold(disk.faces)[0] and igl.is_vertex_manifold(disk.faces).all()
    # No interior edge joins two boundary vertices (chords were split).
    on_boundary = np.zeros(len(disk.vertices), dtype=bool)
    on_boundary[disk.boundary] = True
    boundary_edges = {frozenset(e) for e in zip(disk.boundary.tolist(), np.roll(disk.boundary, -1).tolist())}
    chords = [e for e in igl.edges(disk.faces).tolist() if on_boundary[e].all() and frozenset(e) not in boundary_edges]
    assert chords == []
    # Geometry is unchanged: vertices come from source vertices (or midpoints), total area is preserved.
    np.testing.assert_allclose(
        disk.vertices, 0.5 * (mesh.vertices[disk.source[:, 0]] + mesh.vertices[disk.source[:, 1]]), atol=1e-15
    )
    assert _triangle_areas(disk.vertices, disk.faces).sum() == pytest.approx(
        _triangle_areas(mesh.vertices, mesh.faces).sum(), rel=1e-12
    )
    assert len(disk.faces) >= len(mesh.faces)


def test_harmonic_map_is_a_bijection_onto_the_square(case) -> None:
    _, _, result = case
    disk = result.disk
    assert result.harmonic.method == "harmonic" and result.harmonic.flipped_triangles == 0
    _check_square_map(disk, result.harmonic.uv)
    np.testing.assert_array_equal(harmonic_map(disk.vertices, disk.faces, disk.boundary), result.harmonic.uv)


def test_ot_map_is_a_bijection_with_less_area_distortion(case) -> None:
    _, _, result = case
    disk, ot = result.disk, result.ot
    assert ot.method == "ot" and ot.flipped_triangles == 0
    _check_square_map(disk, ot.uv)
    assert ot.ot is not None and ot.ot.mass_error < 1e-6
    assert ot.area_distortion == pytest.approx(area_distortion(disk.vertices, disk.faces, ot.uv), rel=1e-12)
    # Measured harmonic -> OT: spot 1.44 -> 0.84, woody 1.26 -> 0.74, rocker-arm 1.10 -> 0.58, fandisk 0.90 -> 0.10.
    assert ot.area_distortion < 0.75 * result.harmonic.area_distortion
    # Newton cells carry the disk's barycentric vertex areas.
    masses = vertex_areas(disk.vertices, disk.faces)
    np.testing.assert_allclose(ot.ot.cells.areas, masses / masses.sum(), rtol=1e-6)


def test_feature_weight_changes_masses_and_still_converges(spot) -> None:
    plain = parameterize_to_square(spot.vertices, spot.faces)
    weighted = parameterize_to_square(spot.vertices, spot.faces, feature_weight=1.0)
    disk = weighted.disk
    assert weighted.ot.flipped_triangles == 0 and weighted.ot.ot.mass_error < 1e-6
    _check_square_map(disk, weighted.ot.uv)
    # Expected masses: vertex area * (1 + |H| / area-weighted mean |H|), |H| carried from the source mesh.
    curvature = mean_curvature(spot.vertices, spot.faces)
    curvature = curvature / np.average(curvature, weights=vertex_areas(spot.vertices, spot.faces))
    carried = 0.5 * (curvature[disk.source[:, 0]] + curvature[disk.source[:, 1]])
    masses = vertex_areas(disk.vertices, disk.faces) * (1.0 + carried)
    np.testing.assert_allclose(weighted.ot.ot.cells.areas, masses / masses.sum(), rtol=1e-6)
    np.testing.assert_allclose(feature_masses(spot.vertices, spot.faces, disk, 1.0), masses, rtol=1e-12)
    np.testing.assert_array_equal(
        feature_masses(spot.vertices, spot.faces, disk, 0.0), vertex_areas(disk.vertices, disk.faces)
    )
    with pytest.raises(ValueError, match="feature_weight"):
        feature_masses(spot.vertices, spot.faces, disk, -1.0)
    relative_change = np.abs(weighted.ot.ot.cells.areas / plain.ot.ot.cells.areas - 1.0)
    assert relative_change.max() > 0.5
    assert np.abs(weighted.ot.uv - plain.ot.uv).max() > 1e-2


def test_negative_feature_weight_raises(spot) -> None:
    with pytest.raises(ValueError, match="feature_weight"):
        parameterize_to_square(spot.vertices, spot.faces, feature_weight=-0.5)


def test_cow_plain_cut_reports_crowding(sample_mesh) -> None:
    cow = sample_mesh("cow")
    assert not igl.is_vertex_manifold(cow.faces).all()  # pinched vertices in the source
    disk = cut_to_disk(cow.vertices, cow.faces)
    assert igl.euler_characteristic(disk.faces) == 1 and len(igl.boundary_loop_all(disk.faces)) == 1
    assert igl.is_vertex_manifold(disk.faces).all()
    assert len(disk.vertices) > len(np.unique(cow.faces))
    result = parameterize_to_square(cow.vertices, cow.faces, cut_paths=0)  # the OT failure is reported
    assert result.ot is None and isinstance(result.ot_error, OTConvergenceError)
    assert "empty Voronoi cells" in str(result.ot_error)
    assert len(result.disk.vertices) == len(disk.vertices)
    assert result.harmonic.uv.shape == (len(disk.vertices), 2)


def test_cow_gets_an_ot_map_with_the_augmented_cut(sample_mesh) -> None:
    """The augmented cut opens cow's legs (its pinched vertices split first) and the OT step succeeds."""
    cow = sample_mesh("cow")
    result = parameterize_to_square(cow.vertices, cow.faces)
    assert result.ot_error is None
    _check_square_map(result.disk, result.ot.uv)
    assert result.ot.ot.mass_error < 1e-6
    # The centroid map flips triangles; the convex-combination repair removes them without re-placing vertices.
    assert result.ot.centroid_flips > 0 and result.ot.untangled_vertices == 0
    # Measured: harmonic 2.99 -> OT 0.85 (the untangle repair keeps 2.16).
    assert result.ot.area_distortion < 0.5 * result.harmonic.area_distortion
    np.testing.assert_allclose(
        result.disk.vertices, 0.5 * (cow.vertices[result.disk.source[:, 0]] + cow.vertices[result.disk.source[:, 1]]),
        atol=1e-15)


def test_two_components_raise_unsupported_topology() -> None:
    uv, faces = _plane_grid(4)
    vertices = np.column_stack([uv, np.zeros(len(uv))])
    both_v = np.concatenate([vertices, vertices + [3.0, 0.0, 0.0]])
    both_f = np.concatenate([faces, faces + len(vertices)])
    with pytest.raises(UnsupportedTopologyError, match="2 connected components"):
        cut_to_disk(both_v, both_f)
    with pytest.raises(GeometryError):
        parameterize_to_square(both_v, both_f)
    assert issubclass(UnsupportedTopologyError, ValueError)


def test_pinched_vertex_is_split_and_the_strip_is_cut_to_a_disk() -> None:
    """A strip whose two end corners are glued into one (pinched) vertex: splitting restores the plain strip."""
    uv, faces = _plane_grid(6)
    vertices = np.column_stack([uv, np.zeros(len(uv))])
    faces = faces[(uv[faces].mean(1)[:, 1] < 0.25)]  # the bottom row of quads: a 6 x 2 strip, vertices 0..11
    glued = np.where(faces == 5, 0, faces)  # the strip's far corner becomes its first vertex
    assert not igl.is_vertex_manifold(glued).all()
    split_vertices, split_faces, source = split_pinched_vertices(vertices, glued)
    assert igl.is_vertex_manifold(split_faces).all() and len(split_vertices) == 12
    np.testing.assert_array_equal(split_vertices, vertices[source])
    assert np.bincount(source).max() == 2 and (source == 0).sum() == 2
    disk = cut_to_disk(vertices, glued)
    assert len(igl.boundary_loop_all(disk.faces)) == 1 and igl.euler_characteristic(disk.faces) == 1
    result = parameterize_to_square(vertices, glued)
    assert result.ot.flipped_triangles == 0


def test_truck_like_multi_component_mesh_is_rejected(sample_mesh) -> None:
    """Several components are rejected with a typed error (no chart packing), also with the augmented cut."""
    spot = sample_mesh("spot")
    both_v = np.concatenate([spot.vertices, spot.vertices + [2.0, 0.0, 0.0]])
    both_f = np.concatenate([spot.faces, spot.faces + len(spot.vertices)])
    with pytest.raises(UnsupportedTopologyError, match="2 connected components; a square map needs one"):
        parameterize_to_square(both_v, both_f)


def test_edge_with_three_faces_raises_non_manifold() -> None:
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, -1, 0], [0.5, 0, 1]], dtype=float)
    faces = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]])
    with pytest.raises(NonManifoldMeshError):
        cut_to_disk(vertices, faces)
    with pytest.raises(NonManifoldMeshError):
        parameterize_to_square(vertices, faces)


def test_inconsistent_orientation_raises_non_manifold(spot) -> None:
    faces = np.array(spot.faces)
    faces[10] = faces[10, ::-1]
    with pytest.raises(NonManifoldMeshError):
        cut_to_disk(spot.vertices, faces)


def test_square_boundary_closed_form() -> None:
    # A loop around an axis-aligned 2x2 square with 3 vertices per side: arc length maps it onto the unit square.
    loop = np.array([[0, 0], [1, 0], [2, 0], [2, 1], [2, 2], [1, 2], [0, 2], [0, 1]], dtype=float)
    vertices = np.column_stack([loop, np.zeros(8)])
    uv = square_boundary(vertices, np.arange(8))
    np.testing.assert_array_equal(uv, loop / 2.0)
    with pytest.raises(UnsupportedTopologyError):
        square_boundary(vertices, np.arange(3))


def test_vertex_areas_and_area_distortion_closed_forms() -> None:
    uv, faces = _plane_grid(9, jitter=0.3)
    vertices = np.column_stack([uv, np.zeros(len(uv))])
    areas = vertex_areas(vertices, faces)
    assert areas.sum() == pytest.approx(1.0, abs=1e-14)
    assert (areas > 0).all()
    # A similarity of the surface is area-preserving up to a global factor: zero distortion.
    rotated = np.column_stack([uv @ np.array([[0.6, 0.8], [-0.8, 0.6]]) * 3.0, np.zeros(len(uv))])
    assert area_distortion(rotated, faces, uv) < 1e-12
    # A triangle soup whose first half of 3D triangles is scaled by sqrt(2) about their centroids (double area):
    # the log area-share ratios take two values and their std is known in closed form.
    tri = uv[faces]
    factor = np.ones(len(faces))
    factor[: len(faces) // 2] = 2.0
    centre = tri.mean(1, keepdims=True)
    scaled = centre + (tri - centre) * np.sqrt(factor)[:, None, None]
    soup_vertices = np.column_stack([scaled.reshape(-1, 2), np.zeros(3 * len(faces))])
    soup_faces = np.arange(3 * len(faces)).reshape(-1, 3)
    base = signed_areas(uv, faces)
    expected = np.std(np.log((base / base.sum()) / (base * factor / (base * factor).sum())))
    assert expected > 0.1
    assert area_distortion(soup_vertices, soup_faces, tri.reshape(-1, 2)) == pytest.approx(expected, rel=1e-9)


def test_mean_curvature_closed_forms(sample_mesh) -> None:
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    h = mean_curvature(np.asarray(sphere.vertices, dtype=float), np.asarray(sphere.faces, dtype=np.int64))
    np.testing.assert_allclose(h, 2.0, rtol=1e-4)  # |H| = 1 / R; measured max deviation 9e-6
    uv, faces = _plane_grid(11, jitter=0.3)
    assert np.abs(mean_curvature(np.column_stack([uv, np.zeros(len(uv))]), faces)).max() < 1e-9
    woody = sample_mesh("woody")
    h = mean_curvature(woody.vertices, woody.faces)
    boundary = np.unique(np.concatenate(igl.boundary_loop_all(woody.faces)))
    assert len(boundary) > 0 and (h[boundary] == 0.0).all()
    assert (h[np.setdiff1d(np.arange(len(h)), boundary)] > 0).mean() > 0.9


def test_parameterize_frame_is_ot_with_area_masses(spot) -> None:
    """The sequence task's per-frame step: OT onto the square with the frame's own vertex areas as masses."""
    disk = cut_to_disk(spot.vertices, spot.faces)
    harmonic = harmonic_parameterization(disk)
    frame = parameterize_frame(disk, harmonic.uv)
    manual = ot_parameterization(disk, harmonic.uv, vertex_areas(disk.vertices, disk.faces))
    np.testing.assert_array_equal(frame.uv, manual.uv)
    assert frame.method == "ot" and frame.flipped_triangles == 0 and frame.ot.mass_error < 1e-6
