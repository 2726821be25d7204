"""Tests of otcore.ot.semi_discrete: damped Newton semi-discrete OT from the uniform square to weighted Diracs."""

from __future__ import annotations

import numpy as np
import pytest

from otcore.errors import OTConvergenceError
from otcore.ot.power_diagram import power_cells
from otcore.ot.semi_discrete import solve_semi_discrete_ot


def _grid_sites(k: int) -> np.ndarray:
    g = (np.arange(k) + 0.5) / k
    x, y = np.meshgrid(g, g)
    return np.column_stack([x.ravel(), y.ravel()])


def _check_result(result, sites: np.ndarray, masses: np.ndarray, tol: float) -> None:
    nu = masses / masses.sum()
    relative = np.abs(result.cells.areas - nu) / nu
    assert relative.max() < tol
    assert result.mass_error == pytest.approx(relative.max(), rel=1e-12, abs=1e-300)
    assert result.weights[0] == 0.0
    assert len(result.history) == result.iterations + 1
    assert result.history[-1] == result.mass_error
    assert result.seconds > 0.0
    # The returned cells are the power cells of the returned weights.
    again = power_cells(sites, result.weights)
    np.testing.assert_allclose(again.areas, result.cells.areas, rtol=0, atol=1e-12)


def test_uniform_masses_on_jittered_grid() -> None:
    rng = np.random.default_rng(0)
    sites = _grid_sites(12) + rng.uniform(-0.03, 0.03, (144, 2))
    masses = np.full(144, 3.0)  # any positive scale: normalised by the solver
    reported: list[tuple[int, float]] = []
    result = solve_semi_discrete_ot(sites, masses, tol=1e-6, progress=lambda *args: reported.append(args))
    _check_result(result, sites, masses, 1e-6)
    # One progress call per Newton iteration, with that iteration's max relative mass error.
    assert reported == list(zip(range(1, result.iterations + 1), result.history[1:]))
    np.testing.assert_allclose(result.cells.areas, 1.0 / 144, rtol=1e-6)
    assert result.history[0] > 1e-2  # the jitter made the initial Voronoi cells unequal
    assert result.iterations < 30


@pytest.mark.parametrize(
    "density",
    [
        lambda x, y: 0.5 + x,
        lambda x, y: 1.0 + 0.8 * np.sin(2 * np.pi * x) * np.sin(2 * np.pi * y),
    ],
    ids=["linear", "sinusoidal"],
)
def test_non_uniform_density_converges_quadratically(density) -> None:
    sites = _grid_sites(15)
    masses = density(sites[:, 0], sites[:, 1])
    result = solve_semi_discrete_ot(sites, masses, tol=1e-6)
    _check_result(result, sites, masses, 1e-6)
    assert result.iterations < 30
    assert result.history[0] > 0.1
    assert result.history[-1] < result.history[0] * 1e-4
    # Newton's endgame: the last step gains far more than a linear rate would.
    assert result.history[-1] < result.history[-2] ** 1.5
    nu = masses / masses.sum()
    assert np.corrcoef(result.cells.areas, nu)[0, 1] > 0.999999


def test_two_columns_closed_form() -> None:
    """Sites at x = 1/4 and 3/4 on three rows, masses 0.3 : 0.7 per row: cells split at x = 0.3 exactly."""
    rows = (np.arange(3) + 0.5) / 3
    sites = np.array([[x, y] for y in rows for x in (0.25, 0.75)])
    masses = np.array([0.3, 0.7] * 3) / 3
    result = solve_semi_discrete_ot(sites, masses, tol=1e-10)
    np.testing.assert_allclose(result.cells.areas, masses, atol=1e-10)
    expected = np.array([[x, y] for y in rows for x in (0.15, 0.65)])
    np.testing.assert_allclose(result.cells.centroids, expected, atol=1e-9)
    # Power bisector at x = 0.3: (0.3-0.25)^2 - w_left = (0.3-0.75)^2 - w_right => w_right - w_left = 0.2.
    np.testing.assert_allclose(result.weights[1::2] - result.weights[0::2], 0.2, atol=1e-9)
    np.testing.assert_allclose(result.weights[0::2], 0.0, atol=1e-9)


def test_two_sites_closed_form() -> None:
    sites = np.array([[0.25, 0.5], [0.75, 0.5]])
    result = solve_semi_discrete_ot(sites, np.array([0.3, 0.7]), tol=1e-10)
    np.testing.assert_allclose(result.cells.areas, [0.3, 0.7], atol=1e-10)
    np.testing.assert_allclose(result.cells.centroids, [[0.15, 0.5], [0.65, 0.5]], atol=1e-9)


@pytest.mark.parametrize(
    "masses",
    [
        np.array([1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        np.array([1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        np.array([1.0, np.nan, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        np.ones(8),
    ],
    ids=["zero", "negative", "nan", "wrong-length"],
)
def test_bad_masses_raise_value_error(masses: np.ndarray) -> None:
    with pytest.raises(ValueError):
        solve_semi_discrete_ot(_grid_sites(3), masses)


def test_sites_outside_square_raise_value_error() -> None:
    sites = _grid_sites(3)
    sites[0] = [1.0, 0.5]
    with pytest.raises(ValueError):
        solve_semi_discrete_ot(sites, np.ones(9))


def test_iteration_cap_raises_convergence_error() -> None:
    rng = np.random.default_rng(0)
    sites = rng.uniform(0.01, 0.99, (300, 2))
    masses = rng.uniform(0.1, 10.0, 300)  # 100x mass ratios on random sites: several damped Newton steps
    with pytest.raises(OTConvergenceError, match="did not reach"):
        solve_semi_discrete_ot(sites, masses, max_iterations=1)
    # The same problem is fine with the default cap (measured: 7 iterations).
    result = solve_semi_discrete_ot(sites, masses)
    assert result.iterations > 1 and result.iterations < 30
    _check_result(result, sites, masses, 1e-6)
    assert result.history[-1] < result.history[0] * 1e-4


def test_already_solved_problem_takes_no_iteration() -> None:
    sites = _grid_sites(6)
    result = solve_semi_discrete_ot(sites, np.ones(36), max_iterations=0)
    assert result.iterations == 0
    assert result.history == (result.mass_error,)
    assert result.mass_error < 1e-12
    np.testing.assert_array_equal(result.weights, 0.0)
