"""Power diagrams of weighted sites restricted to the unit square.

The power of a point ``x`` with respect to site ``i`` is ``|x - p_i|^2 - w_i``; the power cell of ``i`` is where
that power is smallest. Cells are obtained exactly (up to floating point) from the regular triangulation, i.e.
the lower convex hull of the lifted points ``(p_i, |p_i|^2 - w_i)`` (computed by Qhull through scipy).

Clipping to the unit square uses mirror sites: a site whose cell may cross a side is reflected across it with the
same weight. For ``x`` inside the square a reflected site is never closer (in power) than its original, and the
power bisector of a site and its own reflection is the side itself, so the cells of the original sites in the
augmented diagram are exactly the original cells clipped to the square.

References: Aurenhammer, "Power diagrams: properties, algorithms and applications", SIAM J. Comput. 1987;
Kitagawa, Mérigot, Thibert, "Convergence of a Newton algorithm for semi-discrete optimal transport", JEMS 2019.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, QhullError

__all__ = ["PowerCells", "power_cells"]


@dataclass(frozen=True)
class PowerCells:
    """Power cells of ``N`` sites clipped to the unit square.

    Attributes:
        areas: ``[N]`` float64, cell areas (0 for hidden sites); they sum to 1.
        centroids: ``[N, 2]`` float64, cell centroids (the site itself for an empty cell).
        edge_i, edge_j: ``[E]`` int64, ordered pairs of sites whose cells share an edge (each pair appears in both
            orders).
        edge_length: ``[E]`` float64, length of the shared cell edge (the dual edge of ``(i, j)``).
        edge_distance: ``[E]`` float64, ``|p_i - p_j|``.
        mirrored: ``[N, 4]`` bool, sites reflected across x=0, x=1, y=0, y=1, plus those whose cell comes within
            ``_HINT_MARGIN`` of a side: a hint for the next diagram with nearby weights.
    """

    areas: np.ndarray
    centroids: np.ndarray
    edge_i: np.ndarray
    edge_j: np.ndarray
    edge_length: np.ndarray
    edge_distance: np.ndarray
    mirrored: np.ndarray


# Four far sites (zero weight) around the square, added only when Qhull finds the lifted points degenerate (fewer
# than four sites, collinear or cocircular sites with equal weights). They never own any part of the square for
# weights of the size OT uses; they are not always added because their large lifted height costs Qhull precision.
_HINT_MARGIN = 0.05  # cells this close to a side are mirrored in the next hinted diagram

_SENTINELS = np.array([[-10.0, -10.0], [11.0, -10.0], [11.0, 11.0], [-10.0, 11.0]])


def _regular_triangulation(points: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """Lower hull of the lifted points plus the sentinels (indices ``>= len(points)``): CCW triangles ``[T,3]``,
    their neighbours ``[T,3]`` (opposite each vertex), power centres ``[T,2]`` and a lower-facet mask ``[T]``."""
    lifted = np.column_stack([points, (points**2).sum(1) - weights])
    try:
        hull = ConvexHull(lifted, qhull_options="Qt")
    except QhullError:
        points = np.concatenate([points, _SENTINELS])
        lifted = np.concatenate([lifted, np.column_stack([_SENTINELS, (_SENTINELS**2).sum(1)])])
        hull = ConvexHull(lifted, qhull_options="Qt")
    equations = hull.equations
    # Power centre of a lower facet z = a x + b y + c is (a/2, b/2); from n.(x,y,z)+d=0: a = -n_x/n_z.
    with np.errstate(divide="ignore", invalid="ignore"):  # vertical facets (n_z = 0) are never lower facets
        centres = -equations[:, :2] / (2.0 * equations[:, 2:3])
    tri, nbr = hull.simplices.copy(), hull.neighbors.copy()
    p0, p1, p2 = points[tri[:, 0]], points[tri[:, 1]], points[tri[:, 2]]
    signed = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (p2[:, 0] - p0[:, 0])
    flip = signed < 0.0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    nbr[flip] = nbr[flip][:, [0, 2, 1]]
    return tri, nbr, centres, equations[:, 2] < 0.0


def _mirror_candidates(sites: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[N, 4]`` bool: whether the unclipped cell of each site may cross the sides x=0, x=1, y=0, y=1.

    Decided on the diagram of the original sites alone; adding mirror sites only shrinks cells, so this is
    conservative. Sites on the convex hull (unbounded cells) are mirrored across every side.
    """
    tri, nbr, centres, lower = _regular_triangulation(sites, weights)
    facets = np.flatnonzero(lower)
    site = tri[facets].ravel()
    centre = np.repeat(centres[facets], 3, axis=0)
    real = site < len(sites)
    site, centre = site[real], centre[real]
    crosses = np.zeros((len(sites), 4), dtype=bool)
    for side, beyond in enumerate(
        (centre[:, 0] <= 0.0, centre[:, 0] >= 1.0, centre[:, 1] <= 0.0, centre[:, 1] >= 1.0)
    ):
        crosses[site[beyond], side] = True
    unbounded = ~lower[nbr[facets]].all(1)  # a lower facet next to an upper one: its vertices are on the 2D hull
    hull_sites = tri[facets][unbounded].ravel()
    crosses[hull_sites[hull_sites < len(sites)]] = True
    return crosses


def _mirrored(sites: np.ndarray, weights: np.ndarray, crosses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sites followed by their reflections across the sides flagged in ``crosses`` ``[N, 4]``."""
    points, point_weights = [sites], [weights]
    for side, (axis, line) in enumerate(((0, 0.0), (0, 1.0), (1, 0.0), (1, 1.0))):
        chosen = np.flatnonzero(crosses[:, side])
        reflected = sites[chosen].copy()
        reflected[:, axis] = 2.0 * line - reflected[:, axis]
        points.append(reflected)
        point_weights.append(weights[chosen])
    return np.concatenate(points), np.concatenate(point_weights)


def power_cells(sites: np.ndarray, weights: np.ndarray, mirror_hint: np.ndarray | None = None) -> PowerCells:
    """Power diagram of weighted sites, clipped to the unit square ``[0, 1]^2``.

    Args:
        sites: ``[N, 2]`` float64, distinct points strictly inside the unit square.
        weights: ``[N]`` float64, power weights (squared length units).
        mirror_hint: ``[N, 4]`` bool, a guess of which sites to mirror (e.g. ``.mirrored`` of a nearby diagram).
            The result is verified (every vertex of every cell inside the square) and recomputed without the
            hint if the guess was short, so a hint only saves time (one convex hull instead of two).

    Returns:
        :class:`PowerCells` with areas, centroids and the adjacency used by the Newton Hessian.

    Raises:
        ValueError: on wrong shapes, non-finite input or sites outside the open unit square.
    """
    sites = np.asarray(sites, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    n = len(sites)
    if sites.ndim != 2 or sites.shape[1] != 2 or weights.shape != (n,):
        raise ValueError(f"sites must be [N,2] and weights [N]; got {sites.shape} and {weights.shape}")
    if n < 1 or not (np.isfinite(sites).all() and np.isfinite(weights).all()):
        raise ValueError("sites and weights must be non-empty and finite")
    if sites.min() <= 0.0 or sites.max() >= 1.0:
        raise ValueError("sites must lie strictly inside the unit square")

    if mirror_hint is not None:
        diagram = _clipped_diagram(sites, weights, mirror_hint)
        if diagram is not None:
            return _cells(sites, *diagram)
    return _cells(sites, *_clipped_diagram(sites, weights, _mirror_candidates(sites, weights), verify=False))


def _clipped_diagram(sites: np.ndarray, weights: np.ndarray, crosses: np.ndarray, verify: bool = True) -> tuple | None:
    """Directed cell edges of the diagram with the mirrors in ``crosses``; with ``verify``, ``None`` if a cell of
    an original site leaves the square (the mirror set was too small)."""
    n = len(sites)
    points, all_weights = _mirrored(sites, weights, crosses)
    tri, nbr, centres, lower = _regular_triangulation(points, all_weights)
    facets = np.flatnonzero(lower)
    # Directed edge a->b of a CCW facet has the facet on its left; the facet across it is opposite vertex c.
    tails = np.concatenate([tri[facets, 0], tri[facets, 1], tri[facets, 2]])
    heads = np.concatenate([tri[facets, 1], tri[facets, 2], tri[facets, 0]])
    across = np.concatenate([nbr[facets, 2], nbr[facets, 0], nbr[facets, 1]])
    left = np.tile(facets, 3)
    keep = tails < n  # cells of original sites only
    tails, heads, across, left = tails[keep], heads[keep], across[keep], left[keep]
    if verify:
        corners = centres[left]
        slack = 1e-9
        if not (lower[across].all() and corners.min() >= -slack and corners.max() <= 1.0 + slack):
            return None
    return tails, heads, across, left, centres, crosses


def _cells(
    sites: np.ndarray,
    tails: np.ndarray,
    heads: np.ndarray,
    across: np.ndarray,
    left: np.ndarray,
    centres: np.ndarray,
    crosses: np.ndarray,
) -> PowerCells:
    """Areas, centroids and adjacency from the directed cell edges of a clipped diagram."""
    n = len(sites)
    # Going counter-clockwise around the tail site, the cell boundary runs from the right facet's power centre
    # to the left facet's: shoelace terms relative to the site for precision.
    anchor = sites[tails]
    c_right = centres[across] - anchor
    c_left = centres[left] - anchor
    cross = c_right[:, 0] * c_left[:, 1] - c_right[:, 1] * c_left[:, 0]
    areas = np.bincount(tails, weights=cross, minlength=n) / 2.0
    moment = (c_right + c_left) * cross[:, None] / 6.0
    safe = np.where(areas > 0.0, areas, 1.0)
    centroids = sites + np.column_stack(
        [np.bincount(tails, weights=moment[:, 0], minlength=n), np.bincount(tails, weights=moment[:, 1], minlength=n)]
    ) / safe[:, None]
    centroids[areas <= 0.0] = sites[areas <= 0.0]

    # Only edges between two original sites depend on the weights (a site's border with its own reflection is
    # the square's side; borders with other reflections have zero length).
    inner = heads < n
    ei, ej = tails[inner], heads[inner]
    length = np.linalg.norm(centres[left[inner]] - centres[across[inner]], axis=1)
    distance = np.linalg.norm(sites[ei] - sites[ej], axis=1)
    lo = np.full((n, 2), np.inf)
    hi = np.full((n, 2), -np.inf)
    np.minimum.at(lo, tails, centres[left])
    np.maximum.at(hi, tails, centres[left])
    near = np.column_stack([lo[:, 0], 1.0 - hi[:, 0], lo[:, 1], 1.0 - hi[:, 1]]) < _HINT_MARGIN
    hint = crosses | near
    return PowerCells(areas, centroids, ei.astype(np.int64), ej.astype(np.int64), length, distance, hint)
