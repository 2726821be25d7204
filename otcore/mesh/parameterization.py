"""Area-preserving parameterization of a surface onto the unit square by semi-discrete optimal transport.

Neural Geometry Images with OT (Gao et al. 2025, arXiv 2511.18679), parameterization stage:

1. cut the surface to a disk (:func:`otcore.mesh.disk_cut.cut_to_disk`), by default augmenting the cut through the
   most compressed appendages (:func:`otcore.mesh.cut_augmentation.augment_cut`, ``cut_paths=8``: it took cow from
   27 empty power cells to a valid OT map, and lowered the OT distortion of every crowded mesh), and map it
   harmonically onto the square (:func:`otcore.mesh.harmonic.harmonic_map`), which fixes the layout but distorts
   areas;
2. solve semi-discrete OT from the uniform measure on the square to Diracs at the vertices' harmonic positions
   with masses equal to their 3D one-ring areas (optionally multiplied by ``1 + lambda |H|``, the paper's fix for
   undersampled feature-rich regions), by damped Newton (:func:`otcore.ot.semi_discrete.solve_semi_discrete_ot`);
3. move every vertex to the centroid of its power cell. Boundary vertices keep the coordinate that puts them on
   the square's side (corners stay corners), so the map still covers the whole square;
4. where the harmonic map crowded vertices (appendages, ears), neighbouring centroids can swap order and flip
   triangles (``centroid_flips``). The default repair (``repair="convex"``) replaces the centroid map by the
   convex-combination map whose mean-value weights are taken from the centroid layout
   (:func:`otcore.mesh.convex_combination.convex_combination_map`): fold-free by Floater's theorem, and a fixed
   point on a valid layout, so it stays close to the centroid map (measured: median vertex shift under half an
   edge length) and the OT correction survives. The older repair (``repair="untangle"``,
   :func:`otcore.mesh.harmonic.untangle`) re-solves the flipped regions harmonically, which on crowded maps
   (bunny: 76% of the vertices) undid most of the OT step. Vertices the final
   :func:`~otcore.mesh.harmonic.untangle` pass still had to re-place are reported as ``untangled_vertices``.

The domain stays the cut square for every topology. The seamless sphere domain
(:mod:`otcore.mesh.spherical_parameterization`) has 2.6-7.5x lower Hausdorff on closed genus-0 meshes, but it is
not the default for them: on a 50k-vertex closed scan it had not finished after 55 minutes where the square took 2
(issue 20 allows 2x), so it stays opt-in (``domain="sphere"`` in the geometry-image task).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import igl
import numpy as np

from otcore.errors import OTConvergenceError
from otcore.mesh.convex_combination import convex_combination_map
from otcore.mesh.cut_augmentation import augment_cut
from otcore.mesh.disk_cut import DiskMesh, cut_to_disk
from otcore.mesh.harmonic import flipped_triangles, harmonic_map, untangle
from otcore.ot.ot_net import OTNetConfig, OTNetResult, OTNetState, solve_ot_net
from otcore.ot.semi_discrete import SemiDiscreteOTResult, solve_semi_discrete_ot

__all__ = [
    "Parameterization",
    "SquareParameterizations",
    "vertex_areas",
    "mean_curvature",
    "area_distortion",
    "feature_masses",
    "harmonic_parameterization",
    "cut_and_map",
    "OT_SOLVERS",
    "REPAIRS",
    "ot_parameterization",
    "parameterize_frame",
    "square_sites",
    "parameterize_to_square",
]

# Sites are pulled this far (relative) toward the square's centre so none lies on a side of the OT domain.
_SITE_INSET = 1e-4

REPAIRS = ("convex", "untangle")
"""Repairs of centroid-map flips: convex-combination map (default) or local harmonic re-solves."""

OT_SOLVERS = ("newton", "neural")
"""Semi-discrete OT solvers: damped Newton (:mod:`otcore.ot.semi_discrete`) and OT-Net (:mod:`otcore.ot.ot_net`)."""


@dataclass(frozen=True)
class Parameterization:
    """A map of a disk mesh onto ``[0, 1]^2``.

    Attributes:
        method: ``"harmonic"`` or ``"ot"``.
        uv: ``[V, 2]`` float64.
        area_distortion: std over triangles of ``log(uv area share / 3D area share)`` (0 = area-preserving).
        flipped_triangles: triangles with non-positive uv area (0 for a bijective map).
        ot: the OT solve (``None`` for the harmonic map): a Newton
            :class:`~otcore.ot.semi_discrete.SemiDiscreteOTResult` or an OT-Net :class:`~otcore.ot.ot_net.OTNetResult`.
        untangled_vertices: vertices re-placed by :func:`otcore.mesh.harmonic.untangle` after the OT step (and the
            convex-combination repair, if any).
        centroid_flips: flipped triangles of the raw centroid map, before any repair (0 for the harmonic map).
        fallback_vertices: vertices of the convex-combination repair whose centroid-layout weights were
            degenerate (see :func:`otcore.mesh.convex_combination.convex_combination_map`).
    """

    method: str
    uv: np.ndarray
    area_distortion: float
    flipped_triangles: int
    ot: SemiDiscreteOTResult | OTNetResult | None = None
    untangled_vertices: int = 0
    centroid_flips: int = 0
    fallback_vertices: int = 0

    @property
    def solver(self) -> str | None:
        """``"newton"``, ``"neural"`` or ``None`` (harmonic)."""
        if self.ot is None:
            return None
        return "neural" if isinstance(self.ot, OTNetResult) else "newton"


@dataclass(frozen=True)
class SquareParameterizations:
    """Both parameterizations of one surface: the harmonic baseline and its OT area correction.

    Attributes:
        disk: the cut mesh both maps are of.
        harmonic: the harmonic baseline.
        ot: the OT map, ``None`` when its step failed.
        ot_error: why the OT step failed (``None`` when it succeeded).
    """

    disk: DiskMesh
    harmonic: Parameterization
    ot: Parameterization | None
    ot_error: ValueError | ArithmeticError | OTConvergenceError | None = None


def vertex_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Barycentric vertex areas ``[V]`` float64: one third of the areas of the incident triangles (area units)."""
    a, b, c = (np.asarray(vertices, dtype=np.float64)[faces[:, k]] for k in range(3))
    face_area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    return np.bincount(faces.ravel(), weights=np.repeat(face_area / 3.0, 3), minlength=len(vertices))


def mean_curvature(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unsigned discrete mean curvature ``|H|`` ``[V]`` float64 (1 / length units): ``|M^-1 L x| / 2``.

    ``L`` is the cotangent Laplacian and ``M`` the Voronoi mass matrix (Meyer et al. 2003). Boundary vertices get 0.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    laplacian = igl.cotmatrix(vertices, faces)
    mass = igl.massmatrix(vertices, faces, igl.MASSMATRIX_TYPE_VORONOI).diagonal()
    curvature = 0.5 * np.linalg.norm(laplacian @ vertices, axis=1) / np.maximum(mass, 1e-300)
    curvature[np.unique(igl.boundary_facets(faces)[0])] = 0.0
    return curvature


def area_distortion(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray) -> float:
    """Std over triangles of ``log((A_uv / sum A_uv) / (A_3d / sum A_3d))`` (dimensionless; 0 = area-preserving).

    Triangles with zero 3D area are ignored; non-positive uv areas are floored at 1e-300 (they also count as
    flipped, see :func:`otcore.mesh.harmonic.flipped_triangles`).
    """
    a, b, c = (np.asarray(vertices, dtype=np.float64)[faces[:, k]] for k in range(3))
    area3 = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    p, q, r = uv[faces[:, 0]], uv[faces[:, 1]], uv[faces[:, 2]]
    area2 = 0.5 * ((q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0]))
    keep = area3 > 0.0
    ratio = (np.maximum(area2[keep], 1e-300) / area2[keep].clip(0).sum()) / (area3[keep] / area3[keep].sum())
    return float(np.std(np.log(ratio)))


def feature_masses(vertices: np.ndarray, faces: np.ndarray, disk: DiskMesh, feature_weight: float) -> np.ndarray:
    """OT target masses ``[Vd]`` float64 of a disk mesh: vertex areas times ``1 + lambda |H| / mean|H|``.

    ``|H|`` is the mean curvature of the *source* surface (``vertices`` ``[V, 3]``, ``faces`` ``[F, 3]``, so the cut
    does not create spurious boundary curvature), normalised by its area-weighted mean so ``lambda`` is scale-free,
    and carried to the disk through ``disk.source``. ``feature_weight = 0`` gives pure area masses.

    Raises:
        ValueError: if ``feature_weight < 0``.
    """
    if feature_weight < 0.0:
        raise ValueError(f"feature_weight must be >= 0, got {feature_weight}")
    masses = vertex_areas(disk.vertices, disk.faces)
    if feature_weight == 0.0:
        return masses
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    curvature = mean_curvature(vertices, faces)
    curvature = curvature / max(np.average(curvature, weights=vertex_areas(vertices, faces)), 1e-300)
    disk_curvature = 0.5 * (curvature[disk.source[:, 0]] + curvature[disk.source[:, 1]])
    return masses * (1.0 + feature_weight * disk_curvature)


def harmonic_parameterization(disk: DiskMesh) -> Parameterization:
    """Harmonic baseline map of a disk mesh onto the square (:func:`otcore.mesh.harmonic.harmonic_map`), with
    its metrics.

    Raises:
        UnsupportedTopologyError: if the boundary loop is shorter than 4 vertices.
    """
    uv = harmonic_map(disk.vertices, disk.faces, disk.boundary)
    return Parameterization(
        "harmonic", uv, area_distortion(disk.vertices, disk.faces, uv), flipped_triangles(uv, disk.faces)
    )


def cut_and_map(vertices: np.ndarray, faces: np.ndarray, cut_paths: int = 8) -> tuple[DiskMesh, Parameterization]:
    """Cut a surface to a disk (augmented by up to ``cut_paths`` paths) and map it harmonically onto the square.

    Args:
        vertices: ``[V, 3]`` float positions; faces: ``[F, 3]`` int triangles.
        cut_paths: most cut-augmentation paths (:func:`otcore.mesh.cut_augmentation.augment_cut`); 0 = the plain
            topological cut.

    Returns:
        ``(disk, harmonic)``: the :class:`~otcore.mesh.disk_cut.DiskMesh` and its harmonic :class:`Parameterization`.

    Raises:
        NonManifoldMeshError, UnsupportedTopologyError: from the cut (several connected components included).
    """
    if cut_paths == 0:
        disk = cut_to_disk(vertices, faces)
        return disk, harmonic_parameterization(disk)
    cut = augment_cut(vertices, faces, max_paths=cut_paths)
    return cut.disk, Parameterization(
        "harmonic", cut.uv, area_distortion(cut.disk.vertices, cut.disk.faces, cut.uv),
        flipped_triangles(cut.uv, cut.disk.faces))


def square_sites(uv: np.ndarray) -> np.ndarray:
    """Dirac positions ``[V, 2]`` of a square map: ``uv`` pulled toward the centre so none lies on a side."""
    return 0.5 + (np.asarray(uv, dtype=np.float64) - 0.5) * (1.0 - 2.0 * _SITE_INSET)


def ot_parameterization(
    disk: DiskMesh,
    harmonic_uv: np.ndarray,
    masses: np.ndarray,
    tol: float = 1e-6,
    max_iterations: int = 60,
    solver: str = "newton",
    initial_weights: np.ndarray | None = None,
    ot_net_state: OTNetState | None = None,
    ot_net_config: OTNetConfig | None = None,
    repair: str = "convex",
    progress: Callable[[int, float], None] | None = None,
) -> Parameterization:
    """OT area correction of a square map: vertices move to their power-cell centroids.

    Args:
        disk: the disk mesh (``vertices`` ``[V, 3]``, ``faces`` ``[F, 3]``, ``boundary`` ``[B]``).
        harmonic_uv: ``[V, 2]`` float64 initial bijective map onto the square (the Diracs' positions).
        masses: ``[V]`` positive target masses (e.g. vertex areas times a feature weight).
        tol: tolerance on the max relative cell-mass error.
        max_iterations: Newton iteration cap.
        solver: ``"newton"`` or ``"neural"`` (OT-Net, :func:`otcore.ot.ot_net.solve_ot_net`).
        initial_weights: ``[V]`` Newton warm start (e.g. the previous frame's weights); Newton only.
        ot_net_state: OT-Net warm start (the previous solve's ``state``); neural only.
        ot_net_config: OT-Net settings (``tol`` and ``max_iterations`` above override its own).
        repair: ``"convex"`` (convex-combination map on the centroid layout's mean-value weights) or
            ``"untangle"`` (local harmonic re-solves) for centroid-map flips; see the module docstring.
        progress: called with ``(iteration, max relative mass error)`` during the solve (Newton iterations, or
            OT-Net fit steps).

    Returns:
        :class:`Parameterization` with ``method="ot"`` and the solve in ``.ot``.

    Raises:
        ValueError: on an unknown solver or repair.
        OTConvergenceError: if the solve does not reach ``tol``.
        FlippedMapError: if flipped triangles cannot be untangled.
    """
    if repair not in REPAIRS:
        raise ValueError(f"repair must be one of {REPAIRS}, got {repair!r}")
    sites = square_sites(harmonic_uv)
    if solver == "newton":
        result = solve_semi_discrete_ot(sites, masses, tol=tol, max_iterations=max_iterations,
                                        initial_weights=initial_weights, progress=progress)
    elif solver == "neural":
        config = replace(ot_net_config or OTNetConfig(), tol=tol, max_newton_steps=max_iterations)
        result = solve_ot_net(sites, masses, state=ot_net_state, config=config, progress=progress)
    else:
        raise ValueError(f"solver must be one of {OT_SOLVERS}, got {solver!r}")
    uv = result.cells.centroids.copy()
    boundary_uv = harmonic_uv[disk.boundary]
    on_side = (boundary_uv == 0.0) | (boundary_uv == 1.0)
    snapped = uv[disk.boundary]
    snapped[on_side] = boundary_uv[on_side]
    uv[disk.boundary] = snapped
    centroid_flips = flipped_triangles(uv, disk.faces)
    fallback = 0
    if centroid_flips and repair == "convex":
        convex = convex_combination_map(uv, disk.vertices, disk.faces, disk.boundary)
        uv, fallback = convex.uv, convex.fallback_vertices
    uv, moved = untangle(uv, disk.vertices, disk.faces, disk.boundary)
    return Parameterization("ot", uv, area_distortion(disk.vertices, disk.faces, uv), flipped_triangles(uv, disk.faces),
                            result, moved, centroid_flips, fallback)


def parameterize_frame(
    disk: DiskMesh,
    harmonic_uv: np.ndarray,
    tol: float = 1e-6,
    max_iterations: int = 60,
    solver: str = "newton",
    initial_weights: np.ndarray | None = None,
    ot_net_state: OTNetState | None = None,
    ot_net_config: OTNetConfig | None = None,
) -> Parameterization:
    """OT map of one frame of a shape sequence that shares one cut and one harmonic map (area masses).

    The frame's masses are its disk's vertex areas (:func:`vertex_areas` of ``disk.vertices``), so every frame gets
    its own area-preserving map of the shared layout; warm starts carry the previous frame's solve.

    Args:
        disk: the frame's disk mesh (its ``[Vd, 3]`` vertices; faces and boundary shared by every frame).
        harmonic_uv: ``[Vd, 2]`` the shared harmonic map (the Diracs' positions).
        tol, max_iterations, solver, initial_weights, ot_net_state, ot_net_config: as in :func:`ot_parameterization`.

    Returns:
        :class:`Parameterization` with ``method="ot"``.

    Raises:
        ValueError, OTConvergenceError, FlippedMapError: as :func:`ot_parameterization`.
    """
    masses = vertex_areas(disk.vertices, disk.faces)
    return ot_parameterization(disk, harmonic_uv, masses, tol, max_iterations, solver=solver,
                               initial_weights=initial_weights, ot_net_state=ot_net_state, ot_net_config=ot_net_config)


def parameterize_to_square(
    vertices: np.ndarray,
    faces: np.ndarray,
    feature_weight: float = 0.0,
    tol: float = 1e-6,
    max_iterations: int = 60,
    solver: str = "newton",
    ot_net_config: OTNetConfig | None = None,
    cut_paths: int = 8,
    repair: str = "convex",
    progress: Callable[[int, float], None] | None = None,
) -> SquareParameterizations:
    """Cut, harmonic map and OT area correction of a surface (the full parameterization stage).

    Args:
        vertices: ``[V, 3]`` float positions (normalise to unit bounding-box diagonal first for comparable units).
        faces: ``[F, 3]`` int triangles.
        feature_weight: ``lambda >= 0``; masses are vertex areas times ``1 + lambda |H| / mean|H|`` (``|H|`` mean
            curvature, normalised by its area-weighted mean so ``lambda`` is scale-free). 0 = pure area.
        tol: tolerance on the max relative cell-mass error.
        max_iterations: Newton iteration cap.
        solver: ``"newton"`` or ``"neural"`` (see :func:`ot_parameterization`).
        ot_net_config: OT-Net settings (neural solver only).
        cut_paths: most cut-augmentation paths (see :func:`cut_and_map`; 0 = the plain topological cut).
        repair: centroid-flip repair, ``"convex"`` or ``"untangle"`` (see :func:`ot_parameterization`).
        progress: OT progress callback ``(iteration, max relative mass error)``, for logging long solves.

    Returns:
        :class:`SquareParameterizations`: the disk mesh, the harmonic baseline and the OT map. When the OT step
        fails with a :class:`~otcore.errors.GeometryError` (e.g. flips that cannot be untangled), an
        :class:`~otcore.errors.OTConvergenceError`, or another ``ValueError`` / ``ArithmeticError`` of the
        numerics (e.g. a power diagram of overflowing coordinates), ``ot`` is ``None`` and ``ot_error`` holds the
        error with its own type: the harmonic map is still a result.

    Raises:
        NonManifoldMeshError, UnsupportedTopologyError: from the cut or the harmonic map (several connected
            components included).
        ValueError: if ``feature_weight < 0``, ``solver`` or ``repair`` is unknown.
    """
    # a caller's errors, raised as such, not recorded as a failed OT step
    if feature_weight < 0.0:
        raise ValueError(f"feature_weight must be >= 0, got {feature_weight}")
    if solver not in OT_SOLVERS:
        raise ValueError(f"solver must be one of {OT_SOLVERS}, got {solver!r}")
    if repair not in REPAIRS:
        raise ValueError(f"repair must be one of {REPAIRS}, got {repair!r}")
    disk, harmonic = cut_and_map(vertices, faces, cut_paths)
    try:
        masses = feature_masses(vertices, faces, disk, feature_weight)
        ot = ot_parameterization(disk, harmonic.uv, masses, tol, max_iterations, solver=solver,
                                 ot_net_config=ot_net_config, repair=repair, progress=progress)
    except (ValueError, ArithmeticError, OTConvergenceError) as error:  # GeometryError is a ValueError
        return SquareParameterizations(disk, harmonic, None, error)
    return SquareParameterizations(disk, harmonic, ot)
