"""OT-Net (otcore.ot.ot_net) against the damped Newton solver on real meshes, its reuse, and its QMC cell masses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otcore.mesh.disk_cut import cut_to_disk
from otcore.mesh.parameterization import feature_masses, harmonic_parameterization, square_sites
from otcore.ot.ot_net import qmc_cell_masses, solve_ot_net
from otcore.ot.power_diagram import power_cells
from otcore.ot.semi_discrete import solve_semi_discrete_ot


@pytest.fixture(scope="module")
def spot_problem(spot):
    disk = cut_to_disk(spot.vertices, spot.faces)
    sites = square_sites(harmonic_parameterization(disk).uv)
    area = feature_masses(spot.vertices, spot.faces, disk, 0.0)
    curved = feature_masses(spot.vertices, spot.faces, disk, 0.5)  # a new target: curvature-weighted masses
    return sites, area, curved


def test_cell_masses_match_newton_to_1e_3(spot_problem) -> None:
    sites, masses, _ = spot_problem
    newton = solve_semi_discrete_ot(sites, masses)
    neural = solve_ot_net(sites, masses)
    relative = np.abs(neural.cells.areas - newton.cells.areas) / newton.cells.areas
    assert relative.max() < 1e-3
    assert neural.mass_error < 1e-6
    # Same potential up to a constant: the power diagram determines the weights up to a shift.
    shift = (neural.weights - newton.weights).mean()
    assert np.abs(neural.weights - newton.weights - shift).max() < 1e-5


def test_reuse_needs_fewer_steps_than_a_cold_start(spot_problem) -> None:
    sites, masses, curved = spot_problem
    first = solve_ot_net(sites, masses)
    cold = solve_ot_net(sites, curved)
    warm = solve_ot_net(sites, curved, state=first.state)
    assert warm.warm and not cold.warm
    assert warm.mass_error < 1e-6
    assert warm.steps < cold.steps
    assert warm.history[0] < cold.history[0]  # the reused potential starts closer


def test_qmc_cell_masses_converge_to_the_exact_areas(spot_problem) -> None:
    sites, masses, _ = spot_problem
    subset = sites[::20]  # ~150 cells, ~440 Sobol points per cell
    weights = solve_semi_discrete_ot(subset, masses[::20]).weights
    exact = power_cells(subset, weights).areas
    estimate = qmc_cell_masses(torch.from_numpy(subset), torch.from_numpy(weights), 1 << 16, seed=3).numpy()
    assert estimate.sum() == pytest.approx(1.0)
    assert 0.5 * np.abs(estimate - exact).sum() < 0.02


def test_bad_input_raises() -> None:
    sites = np.random.default_rng(0).uniform(0.1, 0.9, (10, 3))
    with pytest.raises(ValueError, match="2-D"):
        solve_ot_net(sites, np.ones(10))
    with pytest.raises(ValueError, match="masses"):
        solve_ot_net(sites[:, :2], -np.ones(10))
    from otcore.ot.ot_net import OTNetConfig

    with pytest.raises(ValueError, match="fit_min_steps"):
        solve_ot_net(sites[:, :2], np.ones(10), config=OTNetConfig(fit_min_steps=-1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ot_net_on_gpu_matches_cpu(spot_problem) -> None:
    from otcore.ot.ot_net import OTNetConfig

    sites, masses, curved = spot_problem
    cpu = solve_ot_net(sites, masses)
    gpu = solve_ot_net(sites, masses, config=OTNetConfig(device="cuda"))
    assert np.abs(gpu.cells.areas - cpu.cells.areas).max() / cpu.cells.areas.min() < 1e-3
    reused = solve_ot_net(sites, curved, state=gpu.state, config=OTNetConfig(device="cuda"))
    assert reused.warm and reused.mass_error < 1e-6
    subset = torch.from_numpy(sites[::20]).cuda()
    estimate = qmc_cell_masses(subset, torch.zeros(len(subset), dtype=torch.float64, device="cuda"), 1 << 14, 0)
    assert estimate.device.type == "cuda" and float(estimate.sum()) == pytest.approx(1.0)


def test_every_solve_trains_the_network_and_newton_starts_from_the_best_iterate(spot_problem) -> None:
    """Issue 18: a ``neural`` solve runs ``fit_min_steps`` Adam steps even from a reused state that Newton could
    start from, and the refine phase starts from the best fit iterate, never worse than the reused start."""
    from otcore.ot.ot_net import OTNetConfig

    sites, masses, curved = spot_problem
    first = solve_ot_net(sites, masses)
    assert first.fit_steps >= OTNetConfig().fit_min_steps > 0
    warm = solve_ot_net(sites, curved, state=first.state, config=OTNetConfig(fit_min_steps=6))
    assert warm.fit_steps == 6 and warm.newton_steps > 0 and warm.mass_error < 1e-6
    assert len(warm.history) == warm.fit_steps + 1 + warm.newton_steps
    fit_errors = warm.history[: warm.fit_steps + 1]
    assert warm.refine_start_error == pytest.approx(min(fit_errors))
    assert warm.refine_start_error <= warm.history[0]
    newton_only = solve_ot_net(sites, curved, state=first.state, config=OTNetConfig(fit_min_steps=0))
    assert newton_only.fit_steps == 0 and newton_only.refine_start_error == newton_only.history[0]
