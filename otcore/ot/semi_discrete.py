"""Semi-discrete optimal transport from the uniform measure on the unit square to weighted Diracs.

Gu–Luo–Yau variational principle (Gu, Luo, Sun, Yau, "Variational principles for Minkowski type problems, discrete
optimal transport, and discrete Monge–Ampère equations", Asian J. Math. 2016): the OT map sends each power cell
``W_i(h)`` to the site ``p_i``, where the weights ``h`` minimise the convex energy

.. math::  E(h) = \\int_0^h \\sum_i (A_i(\\eta) - \\nu_i)\\, d\\eta_i,

with gradient ``A_i(h) - nu_i`` (cell area minus target mass) and Hessian ``-|e_ij| / (2 |p_i - p_j|)`` off the
diagonal (``e_ij`` the shared cell edge), rows summing to zero. We follow the damped Newton method of Kitagawa,
Mérigot and Thibert (JEMS 2019, Alg. 1): the step is halved until every cell keeps at least ``eps0`` area and the
gradient norm decreases by the factor ``1 - step/2``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from otcore.errors import OTConvergenceError
from otcore.ot.power_diagram import PowerCells, power_cells

__all__ = ["SemiDiscreteOTResult", "solve_semi_discrete_ot"]


@dataclass(frozen=True)
class SemiDiscreteOTResult:
    """Outcome of :func:`solve_semi_discrete_ot`.

    Attributes:
        weights: ``[N]`` float64 power weights ``h`` (defined up to a constant; ``weights[0] == 0``).
        cells: power cells at the solution (areas ``[N]``, centroids ``[N, 2]``).
        iterations: Newton iterations taken.
        mass_error: max over cells of ``|area - mass| / mass`` at the solution.
        seconds: wall time of the solve.
        history: max relative mass error after each iteration (entry 0 is the initial error).
    """

    weights: np.ndarray
    cells: PowerCells
    iterations: int
    mass_error: float
    seconds: float
    history: tuple[float, ...]


def _hessian(cells: PowerCells, n: int) -> sp.csr_matrix:
    """Sparse ``[N, N]`` Jacobian of the cell areas with respect to the weights (positive semidefinite)."""
    coupling = cells.edge_length / (2.0 * cells.edge_distance)
    off = sp.coo_matrix((-coupling, (cells.edge_i, cells.edge_j)), shape=(n, n))
    diag = sp.diags(np.bincount(cells.edge_i, weights=coupling, minlength=n))
    return (off + diag).tocsr()


def solve_semi_discrete_ot(
    sites: np.ndarray,
    masses: np.ndarray,
    tol: float = 1e-6,
    max_iterations: int = 60,
    initial_weights: np.ndarray | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> SemiDiscreteOTResult:
    """Damped Newton solve of semi-discrete OT: uniform measure on ``[0,1]^2`` -> ``sum_i masses_i delta_{sites_i}``.

    Args:
        sites: ``[N, 2]`` float64, distinct Dirac positions strictly inside the unit square.
        masses: ``[N]`` float64, positive target masses (normalised here to sum to 1, the square's area).
        tol: stop when ``max_i |A_i - nu_i| / nu_i < tol``.
        max_iterations: Newton iteration cap.
        initial_weights: ``[N]`` float64 warm start (e.g. the previous frame's solution); zeros (the Voronoi
            diagram) by default. Every cell must be non-empty at the start: damped Newton cannot revive an empty
            cell (its row of the Hessian is zero).
        progress: called after every Newton iteration with ``(iteration, max relative mass error)``, for logging
            long solves.

    Returns:
        :class:`SemiDiscreteOTResult`; ``cells.centroids`` are the images of the area-preserving map.

    Raises:
        ValueError: on bad shapes, non-positive masses or sites outside the open square.
        OTConvergenceError: if ``tol`` is not reached within ``max_iterations``, a step cannot be damped, or a
            cell is empty at the start.
    """
    start = time.perf_counter()
    sites = np.asarray(sites, dtype=np.float64)
    masses = np.asarray(masses, dtype=np.float64)
    n = len(sites)
    if masses.shape != (n,) or not np.all(np.isfinite(masses)) or masses.min() <= 0.0:
        raise ValueError(f"masses must be [N]={n} finite and positive")
    nu = masses / masses.sum()

    if initial_weights is None:
        weights = np.zeros(n)
    else:
        weights = np.array(initial_weights, dtype=np.float64)
        if weights.shape != (n,) or not np.all(np.isfinite(weights)):
            raise ValueError(f"initial_weights must be [N]={n} finite floats")
    cells = power_cells(sites, weights)
    error = float(np.max(np.abs(cells.areas - nu) / nu))
    history = [error]
    eps0 = 0.5 * min(cells.areas.min(), nu.min())
    if eps0 <= 0.0:
        empty = int((cells.areas <= 0.0).sum())
        start_diagram = "Voronoi cells at zero weights" if initial_weights is None else "cells at the initial weights"
        raise OTConvergenceError(
            f"{empty} sites have empty {start_diagram}: the initial map packs sites closer than the power diagram "
            "resolves in float64 (crowded map: otcore.mesh.cut_augmentation opens appendages up)"
        )

    iteration = 0
    step = 1.0
    while error >= tol:
        if iteration == max_iterations:
            raise OTConvergenceError(
                f"semi-discrete OT did not reach tol={tol:g} in {max_iterations} iterations (error {error:.3e})"
            )
        gradient = cells.areas - nu
        hessian = _hessian(cells, n)
        # The Hessian's kernel is the constants: pin weights[0] by solving on the remaining sites.
        direction = np.zeros(n)
        direction[1:] = spla.spsolve(hessian[1:, 1:].tocsc(), -gradient[1:])
        norm = np.linalg.norm(gradient)
        # Start from twice the last accepted step: far from the solution KMT's halving would otherwise redo the
        # same failed trials at every iteration.
        step = min(1.0, 4.0 * step)
        while True:
            trial_weights = weights + step * direction
            trial = power_cells(sites, trial_weights, mirror_hint=cells.mirrored)
            if trial.areas.min() >= eps0 and np.linalg.norm(trial.areas - nu) <= (1.0 - 0.5 * step) * norm:
                break
            step *= 0.5
            if step < 1e-12:
                raise OTConvergenceError(f"damped Newton step vanished at iteration {iteration} (error {error:.3e})")
        weights, cells = trial_weights, trial
        error = float(np.max(np.abs(cells.areas - nu) / nu))
        history.append(error)
        iteration += 1
        if progress is not None:
            progress(iteration, error)

    return SemiDiscreteOTResult(weights, cells, iteration, error, time.perf_counter() - start, tuple(history))
