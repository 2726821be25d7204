"""Optimal-transport solvers: semi-discrete damped Newton, power diagrams, exact and auction assignment, OT-Net, ICNN
potentials and spherical OT (HOTS3D).
"""

from __future__ import annotations

from otcore.ot.assignment import as_cloud_pair, exact_assignment, exact_emd
from otcore.ot.auction import AUCTION_REL_TOL, AuctionResult, auction_assignment
from otcore.ot.icnn import ICNN, potential_gradient
from otcore.ot.ot_net import HeightNetwork, OTNetConfig, OTNetResult, OTNetState, qmc_cell_masses, solve_ot_net
from otcore.ot.power_diagram import PowerCells, power_cells
from otcore.ot.semi_discrete import SemiDiscreteOTResult, solve_semi_discrete_ot
from otcore.ot.spherical_ot import (
    SphericalOTConfig,
    SphericalOTMap,
    SphericalOTResult,
    energy_distance,
    spherical_cost,
    tangential_gradient,
    train_spherical_ot,
    transport_from_gradient,
    uniform_sphere,
)

__all__ = [
    "AUCTION_REL_TOL",
    "AuctionResult",
    "HeightNetwork",
    "ICNN",
    "OTNetConfig",
    "OTNetResult",
    "OTNetState",
    "PowerCells",
    "SemiDiscreteOTResult",
    "SphericalOTConfig",
    "SphericalOTMap",
    "SphericalOTResult",
    "as_cloud_pair",
    "auction_assignment",
    "energy_distance",
    "exact_assignment",
    "exact_emd",
    "potential_gradient",
    "power_cells",
    "qmc_cell_masses",
    "solve_ot_net",
    "solve_semi_discrete_ot",
    "spherical_cost",
    "tangential_gradient",
    "train_spherical_ot",
    "transport_from_gradient",
    "uniform_sphere",
]
