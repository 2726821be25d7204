"""Tests of otcore.ot.power_diagram: power cells of weighted sites clipped to the unit square."""

from __future__ import annotations

import numpy as np
import pytest

from otcore.ot.power_diagram import power_cells


def _grid_sites(k: int) -> np.ndarray:
    g = (np.arange(k) + 0.5) / k
    x, y = np.meshgrid(g, g)
    return np.column_stack([x.ravel(), y.ravel()])


def _random_problem(seed: int = 1, n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 0.95, (n, 2)), rng.uniform(-0.005, 0.005, n)


def _dense_hessian(cells, n: int) -> np.ndarray:
    """d area_i / d w_j predicted from the dual edges: -|e_ij| / (2 |p_i - p_j|) off the diagonal, rows sum to 0."""
    h = np.zeros((n, n))
    np.add.at(h, (cells.edge_i, cells.edge_j), -cells.edge_length / (2.0 * cells.edge_distance))
    h[np.arange(n), np.arange(n)] = -h.sum(1)
    return h


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_areas_sum_to_one_and_first_moment_is_square_centre(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 200
    sites = rng.uniform(0.001, 0.999, (n, 2))
    weights = rng.uniform(-0.002, 0.002, n)
    cells = power_cells(sites, weights)
    assert cells.areas.shape == (n,) and cells.centroids.shape == (n, 2)
    assert abs(cells.areas.sum() - 1.0) < 1e-12
    assert cells.areas.min() >= 0.0
    # sum_i A_i c_i = integral of x over the square = (1/2, 1/2).
    np.testing.assert_allclose(cells.areas @ cells.centroids, [0.5, 0.5], atol=1e-12)
    # Every centroid lies in the square.
    assert cells.centroids.min() >= 0.0 and cells.centroids.max() <= 1.0


def test_regular_grid_zero_weights_gives_equal_square_cells() -> None:
    sites = _grid_sites(10)
    cells = power_cells(sites, np.zeros(100))
    np.testing.assert_allclose(cells.areas, 0.01, rtol=0, atol=1e-14)
    np.testing.assert_allclose(cells.centroids, sites, rtol=0, atol=1e-13)
    # Edge-adjacent grid neighbours share an edge of length 1/10 at distance 1/10; diagonal ones touch at a point.
    long = cells.edge_length > 1e-9
    np.testing.assert_allclose(cells.edge_length[long], 0.1, atol=1e-13)
    np.testing.assert_allclose(cells.edge_distance[long], 0.1, atol=1e-13)
    assert long.sum() == 2 * (2 * 10 * 9)  # 180 undirected grid edges, both orders


def test_constant_weight_shift_changes_nothing() -> None:
    sites, weights = _random_problem(seed=3)
    a = power_cells(sites, weights)
    b = power_cells(sites, weights + 0.37)
    np.testing.assert_allclose(b.areas, a.areas, atol=1e-12)
    np.testing.assert_allclose(b.centroids, a.centroids, atol=1e-12)


def test_hidden_site_has_zero_area_and_centroid_at_site() -> None:
    sites = _grid_sites(3)
    weights = np.zeros(9)
    weights[4] = -3.0  # power of the centre site exceeds every other site's everywhere in the square
    cells = power_cells(sites, weights)
    assert cells.areas[4] == 0.0
    np.testing.assert_array_equal(cells.centroids[4], sites[4])
    assert abs(cells.areas.sum() - 1.0) < 1e-12
    assert 4 not in set(cells.edge_i.tolist()) | set(cells.edge_j.tolist())


def test_matches_brute_force_argmin_of_power() -> None:
    sites, weights = _random_problem(seed=1, n=30)
    cells = power_cells(sites, weights)
    m = 640  # 409,600 midpoint samples
    g = (np.arange(m) + 0.5) / m
    qx, qy = np.meshgrid(g, g)
    query = np.column_stack([qx.ravel(), qy.ravel()])
    power = ((query[:, None, :] - sites[None]) ** 2).sum(-1) - weights[None]
    label = power.argmin(1)
    count = np.bincount(label, minlength=len(sites))
    areas = count / len(query)
    centroids = np.column_stack(
        [np.bincount(label, query[:, 0], len(sites)), np.bincount(label, query[:, 1], len(sites))]
    ) / np.maximum(count, 1)[:, None]
    assert (count > 0).all()
    assert np.abs(areas - cells.areas).max() < 5e-4  # measured 1.8e-5
    assert np.abs(centroids - cells.centroids).max() < 2e-3  # measured 2.3e-4


def test_edges_are_symmetric() -> None:
    sites, weights = _random_problem(seed=4, n=60)
    cells = power_cells(sites, weights)
    assert len(cells.edge_i) == len(cells.edge_j) == len(cells.edge_length) == len(cells.edge_distance)
    assert (cells.edge_i != cells.edge_j).all()
    forward = {(i, j): (length, dist) for i, j, length, dist in zip(
        cells.edge_i.tolist(), cells.edge_j.tolist(), cells.edge_length.tolist(), cells.edge_distance.tolist()
    )}
    assert len(forward) == len(cells.edge_i)  # no duplicate pairs
    for (i, j), (length, dist) in forward.items():
        back_length, back_dist = forward[(j, i)]
        assert back_length == pytest.approx(length, abs=1e-14)
        assert back_dist == dist
        assert dist == pytest.approx(float(np.linalg.norm(sites[i] - sites[j])), rel=1e-14)
    assert (cells.edge_length >= 0.0).all()


def test_hessian_matches_finite_differences() -> None:
    sites, weights = _random_problem(seed=1, n=30)
    n = len(sites)
    cells = power_cells(sites, weights)
    predicted = _dense_hessian(cells, n)
    eps = 1e-7
    measured = np.empty((n, n))
    for j in range(n):
        up, down = weights.copy(), weights.copy()
        up[j] += eps
        down[j] -= eps
        measured[:, j] = (power_cells(sites, up).areas - power_cells(sites, down).areas) / (2 * eps)
    scale = np.abs(predicted).max()
    assert scale > 1.0
    assert np.abs(measured - predicted).max() < 1e-4 * scale  # measured 3e-10 relative
    # Growing w_j grows cell j and shrinks its neighbours; total area is conserved.
    assert (np.diag(measured) > 0).all()
    assert np.abs(measured.sum(0)).max() < 1e-5 * scale


@pytest.mark.parametrize(
    ("sites", "weights"),
    [
        (np.array([[0.0, 0.5], [0.5, 0.5], [0.3, 0.2], [0.7, 0.8]]), np.zeros(4)),  # on the side x=0
        (np.array([[0.5, 1.0], [0.5, 0.5], [0.3, 0.2], [0.7, 0.8]]), np.zeros(4)),  # on the side y=1
        (np.array([[1.2, 0.5], [0.5, 0.5], [0.3, 0.2], [0.7, 0.8]]), np.zeros(4)),  # outside
        (np.array([[np.nan, 0.5], [0.5, 0.5], [0.3, 0.2], [0.7, 0.8]]), np.zeros(4)),
        (np.array([[0.1, 0.5], [0.5, 0.5], [0.3, 0.2], [0.7, 0.8]]), np.array([0.0, np.nan, 0.0, 0.0])),
        (np.array([[0.1, 0.5], [0.5, 0.5], [0.3, 0.2], [0.7, 0.8]]), np.array([0.0, np.inf, 0.0, 0.0])),
        (np.array([[0.1, 0.5, 0.1], [0.5, 0.5, 0.1], [0.3, 0.2, 0.1], [0.7, 0.8, 0.1]]), np.zeros(4)),
        (np.array([[0.1, 0.5], [0.5, 0.5], [0.3, 0.2], [0.7, 0.8]]), np.zeros(3)),
        (np.array([0.1, 0.5, 0.5, 0.5]), np.zeros(4)),
        (np.zeros((0, 2)), np.zeros(0)),
    ],
)
def test_bad_inputs_raise_value_error(sites: np.ndarray, weights: np.ndarray) -> None:
    with pytest.raises(ValueError):
        power_cells(sites, weights)


@pytest.mark.parametrize(
    ("sites", "areas", "centroids"),
    [
        (np.array([[0.5, 0.5]]), [1.0], [[0.5, 0.5]]),
        (np.array([[0.25, 0.5], [0.75, 0.5]]), [0.5, 0.5], [[0.25, 0.5], [0.75, 0.5]]),
        (
            np.array([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]),
            [0.25] * 4,
            [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]],
        ),
        (
            np.array([[0.1, 0.5], [0.3, 0.5], [0.5, 0.5], [0.7, 0.5], [0.9, 0.5]]),
            [0.2] * 5,
            [[0.1, 0.5], [0.3, 0.5], [0.5, 0.5], [0.7, 0.5], [0.9, 0.5]],
        ),
    ],
    ids=["one-site", "two-sites", "four-cocircular", "five-collinear"],
)
def test_degenerate_but_valid_site_sets(sites: np.ndarray, areas: list, centroids: list) -> None:
    cells = power_cells(sites, np.zeros(len(sites)))
    np.testing.assert_allclose(cells.areas, areas, atol=1e-12)
    np.testing.assert_allclose(cells.centroids, centroids, atol=1e-12)
