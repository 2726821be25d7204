"""OT-Net: a reusable neural solver of semi-discrete optimal transport (Brenier height network).

Li, Lei, Li, Luo, Jin, "OT-Net: A Reusable Neural Optimal Transport Solver", arXiv 2306.08233. Semi-discrete OT from
a continuous source ``mu`` (here the uniform measure on the unit cube ``[0,1]^d``) to ``sum_i nu_i delta_{y_i}`` is
given by Brenier's potential ``u(x) = max_i (<x, y_i> + h_i)``: the map ``grad u`` sends the cell of ``i`` to
``y_i`` and is piecewise constant, so discontinuous maps come out sharp. OT-Net represents the heights by a network
of the target point, ``h_i = f_theta(y_i)``, and trains ``theta`` on the convex semi-discrete dual
``E(h) = int u_h dmu - sum_i nu_i h_i``, whose gradient in ``h`` is ``mu(W_i(h)) - nu_i`` (cell mass minus target
mass), with (quasi-)Monte-Carlo estimates of the cell masses. A new target (moved points or new masses) starts from
the trained network instead of from zero: that is the reuse.

We work with power weights ``w_i = 2 h_i + |y_i|^2`` (cells ``argmin_i |x - y_i|^2 - w_i``, as in
:mod:`otcore.ot.power_diagram`), so the gradient in ``w`` is ``(mu(W_i) - nu_i) / 2``. Where we had to choose:

* **Per-target correction.** ``w_i = f_theta(y_i) + r_i``: a smooth network cannot separate sites that a harmonic
  map packs 1e-9 apart (crane: min distance 2.3e-9), nor represent the heights to the 1e-3 relative mass accuracy
  we need (measured: a 6.9k-parameter MLP alone stalled at max relative error 11 on spot). ``r`` carries the
  per-cell remainder, and with it the reuse between targets in correspondence (the frames of a sequence).
* **Two phases.** *Fit* is the paper's training: Adam on ``(theta, r)`` with the dual gradient, cell masses
  estimated by scrambled Sobol points (``mass_estimator="qmc"``, any dimension, GPU-ready) or, on the unit
  square, computed exactly from the power diagram (``"exact"``, the default there: Monte-Carlo noise on ``~1/N``
  masses is far above 1e-3). It takes ``fit_min_steps`` steps on every target (10 by default, so a solve called
  ``neural`` always trains the network and reports ``fit_steps > 0``), and more until every cell holds at least
  ``fit_min_ratio`` of its mass. *Refine* then takes damped Newton steps
  (:func:`otcore.ot.semi_discrete.solve_semi_discrete_ot`, exact power diagrams, 2-D only) from the best fit iterate
  (lowest max relative mass error, the start included) to ``tol``. Before issue 18 the fit ran only where Newton
  could not start, so on every real frame ``fit_steps`` was 0 and Newton did all the work. First-order steps do not
  reach 1e-3 on ``10^4`` cells: on spot's 2,975 cells Adam with exact gradients still had max relative error 5-10
  after 1,000 steps, and with a network step of 1e-3 it emptied cells that were not empty at the start.
* **Does the network beat Newton?** No case found (issue 18). ``nice python bench/ot_net_reuse.py --frames 31``:
  crane frames 0-30, 10,330 Diracs, tol 1e-6, statistics over frames 4-30, loaded 2-core machine (load 5.4);
  "start" = max relative cell-mass error where Newton starts, "failed" = starts with an empty cell:

  ===========================  ================  ======  ======================  ==============
  method                       start median/max  failed  Newton median (mean)    seconds median
  ===========================  ================  ======  ======================  ==============
  Newton from zero (4 frames)  14.2 / 21.8       0       8                       3.52
  weight reuse                 0.338 / 1.14      0       3 (2.78)                0.96
  secant ``2w1 - w2``          0.278 / 0.88      0       3 (2.81)                0.91
  OT-Net, 10 fit steps         0.338 / 1.14      0       3 (2.78)                3.18
  Neumann-512 predictor        0.247 / 5.08      1       3 (3.15)                1.06
  network across frames        0.204 / 0.93      0       3 (2.74)                1.94
  ===========================  ================  ======  ======================  ==============

  The network trained across the sequence (candidate (a): per-site Fourier and multi-scale mass-change features
  -> weight change, trained online on the linearised dual residual of the last 16 solved frames) lowers the start
  error, but the quadratic Newton tail hardly notices: 4 frames took one step fewer, 2 one more, and its training
  (50 Adam steps) costs about a second per frame. Over frames 4-60 (an earlier run of the same bench, load 4.4) it
  started lower on 43 of 57 frames (median 0.229 against reuse's 0.391) for 2.88 mean Newton steps against 2.90;
  at tol 1e-3 (frames 4-40) 0.247 against 0.340 for 1.92 steps against 1.89. Regressing the weight change in L2
  instead started from errors of 30-400. The paper's reuse (Adam from the previous network, exact masses) never
  lowered the start: on all 27 frames the best of its 10 iterates was the reused start, at 3.3x the seconds.
  First-order steps on the dual do not reduce the worst cell's error from a warm start (Adam with steps
  0.002-0.05 / N and Jacobi-scaled gradient steps alike raised it within 3 steps).
  On an H200 (Sobol-QMC fit, candidate (c)): from zero on crane frame 0, 200-400 steps at 2^20-2^22
  Sobol points brought the error from 11.1 to 8.8 and left 1-8 cells empty, in 31-235 s (Newton from zero: 8 steps,
  2.3 s; :func:`qmc_cell_masses` draws its Sobol points on the CPU, 0.5 s a step at 2^22 points);
  from the reused state 30 steps at 2^22 points did not improve on reuse (QMC noise floor 0.12 against reuse
  0.06-0.10). Candidate (b), 100k Diracs: on the augmented crane map (100,000 area samples) no cell is empty at
  zero weights and Newton converges cold (9 steps, 40 s) and warm (3 steps, 8.5 s); on the bunny's plain-cut map
  (65 empty Voronoi cells: sites closer than float64 power diagrams resolve) 40 QMC steps at 2^22 points left the
  same 65 cells empty and 17,803 cells without a sample. So the sequence job defaults to Newton warm-started from
  the previous frame's weights; ``neural`` stays as the paper's method, slower.
* **The fit does not rescue crowded starts.** Measured: on the unaugmented crane map (220 empty cells) the max
  relative error grew from 15 to 176 in 140 fit steps; on 100k bunny samples (64 empty cells) 60 fit steps left
  60,176 cells empty. Newton fails on both too; :mod:`otcore.mesh.cut_augmentation` is what makes the crane solvable.
* **What the network transfers.** Regressing the network onto the refined weights and evaluating it on moved
  targets was measured *worse* than ``h = 0`` (spot, sites moved by 1e-4: total variation 0.62 vs 0.38), so the
  reuse this module offers is the state of a solve in correspondence with the next one.
* **Steps** are fit steps plus Newton steps; both are reported. Measured on the 175 crane frames
  (``bench/sequence_warm_start.py``): a warm start takes a median 3 steps to ``tol=1e-6`` against 8 cold. The first
  warm Newton step is the linear predictor and leaves the quadratic remainder of the frame-to-frame mass change
  (worst cell 3-300%), so one step reaches only a 10% per-cell tolerance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from otcore.errors import OTConvergenceError
from otcore.ot.power_diagram import PowerCells, power_cells
from otcore.ot.semi_discrete import solve_semi_discrete_ot

__all__ = [
    "OTNetConfig",
    "OTNetState",
    "OTNetResult",
    "HeightNetwork",
    "qmc_cell_masses",
    "solve_ot_net",
]


@dataclass(frozen=True)
class OTNetConfig:
    """Settings of :func:`solve_ot_net`.

    Attributes:
        hidden: width of the height network's hidden layers.
        layers: number of hidden layers.
        frequencies: Fourier feature octaves of the target point (``sin/cos(2^k pi y)``, ``k < frequencies``).
        learning_rate: Adam step of the network parameters in the fit phase.
        correction_rate: Adam step of the per-target correction, in units of ``1 / N`` (a cell's area: the scale
            of the weight differences between neighbouring cells).
        fit_max_steps: cap on fit steps; reaching it raises :class:`OTConvergenceError`.
        fit_min_steps: fit steps taken on every target, even when the start already meets ``fit_min_ratio``, so
            that a ``neural`` solve always trains the network (:attr:`OTNetResult.fit_steps` ``>= fit_min_steps``;
            0 restores "fit only where Newton cannot start"). The refine phase starts from the admissible fit
            iterate with the lowest max relative mass error (the start included), so these steps never make
            Newton's start worse; after them the fit stops at the first admissible iterate, or at once if one was
            already seen.
        fit_min_ratio: the fit phase ends when every cell is non-empty and holds at least this fraction of its
            target mass (0: fit only where Newton cannot start, an empty cell).
        mass_estimator: ``"exact"`` (power diagram on the unit square) or ``"qmc"`` (scrambled Sobol points).
        qmc_samples: Sobol points per fit step for ``"qmc"``.
        tol: Newton tolerance on the max relative cell-mass error (refine phase).
        max_newton_steps: Newton iteration cap.
        seed: seeds the network initialisation and the Sobol scrambling.
        device: torch device of the network and the Monte-Carlo estimates (``"cpu"``, ``"cuda"``).
    """

    hidden: int = 64
    layers: int = 3
    frequencies: int = 6
    learning_rate: float = 1e-4
    correction_rate: float = 0.05
    fit_max_steps: int = 3000
    fit_min_steps: int = 10
    fit_min_ratio: float = 0.0
    mass_estimator: str = "exact"
    qmc_samples: int = 1 << 15
    tol: float = 1e-6
    max_newton_steps: int = 60
    seed: int = 0
    device: str = "cpu"


class HeightNetwork(nn.Module):
    """Brenier height network ``f_theta: [0,1]^d -> R`` (float64), Fourier features then a SiLU MLP.

    Input ``[N, d]`` target points, output ``[N]`` power weights (squared length units of the unit cube).
    """

    def __init__(self, dim: int, hidden: int = 64, layers: int = 3, frequencies: int = 6) -> None:
        super().__init__()
        self.register_buffer("scales", (2.0 ** torch.arange(frequencies, dtype=torch.float64)) * torch.pi)
        width = dim + 2 * dim * frequencies
        blocks: list[nn.Module] = []
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden, dtype=torch.float64), nn.SiLU()]
            width = hidden
        blocks.append(nn.Linear(width, 1, dtype=torch.float64))
        self.mlp = nn.Sequential(*blocks)
        nn.init.zeros_(self.mlp[-1].weight)  # start from h = 0 (the Voronoi diagram), the classical cold start
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        angles = points[:, :, None] * self.scales  # [N, d, F]
        features = torch.cat([points, angles.sin().flatten(1), angles.cos().flatten(1)], dim=1)
        return self.mlp(features)[:, 0]


@dataclass
class OTNetState:
    """What one solve hands to the next (the reusable part).

    Attributes:
        network: the height network's ``state_dict`` (CPU tensors).
        correction: ``[N]`` float64 per-target weight correction ``r`` (reused only for targets in correspondence:
            same count, same order).
        dim: dimension of the target points.
    """

    network: dict[str, torch.Tensor]
    correction: np.ndarray
    dim: int


@dataclass(frozen=True)
class OTNetResult:
    """Outcome of :func:`solve_ot_net`.

    Attributes:
        weights: ``[N]`` float64 power weights ``f_theta(y) + r``.
        cells: exact power cells at the solution (``None`` when ``refine=False`` and the domain is not 2-D).
        fit_steps: Adam steps on the dual (at least ``config.fit_min_steps``).
        newton_steps: damped Newton steps of the refine phase.
        mass_error: max over cells of ``|mass - nu| / nu`` at the solution.
        seconds: wall time.
        history: max relative mass error at the start and after each step (fit, then Newton; the Newton part
            continues from the best fit iterate, not necessarily the last).
        state: the trained network and correction, to warm-start the next target.
        warm: whether the solve started from a given state.
        refine_start_error: max relative mass error of the weights the refine phase starts from (the best fit
            iterate; with ``exact`` masses or ``refine=True`` exact, otherwise the QMC estimate).
    """

    weights: np.ndarray
    cells: PowerCells | None
    fit_steps: int
    newton_steps: int
    mass_error: float
    seconds: float
    history: tuple[float, ...]
    state: OTNetState
    warm: bool = field(default=False)
    refine_start_error: float = field(default=float("nan"))

    @property
    def steps(self) -> int:
        return self.fit_steps + self.newton_steps


def qmc_cell_masses(
    sites: torch.Tensor, weights: torch.Tensor, samples: int, seed: int, chunk: int = 4096
) -> torch.Tensor:
    """Quasi-Monte-Carlo estimate of the power-cell masses of the uniform measure on ``[0,1]^d``.

    Args:
        sites: ``[N, d]`` float64 target points.
        weights: ``[N]`` float64 power weights (cell of ``i``: ``argmin |x - y_i|^2 - w_i``).
        samples: number of scrambled Sobol points (a power of two keeps the sequence balanced).
        seed: scrambling seed (vary it per step so the estimate is unbiased over steps).
        chunk: Sobol points per batched argmax (memory ``chunk * N`` floats).

    Returns:
        ``[N]`` float64 masses on ``sites.device``, summing to 1.
    """
    n, dim = sites.shape
    points = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed).draw(samples, dtype=torch.float64)
    points = points.to(sites.device)
    # argmin |x - y|^2 - w == argmax 2<x, y> - |y|^2 + w: one matmul per chunk.
    offset = weights - (sites * sites).sum(1)
    counts = torch.zeros(n, dtype=torch.float64, device=sites.device)
    for start in range(0, samples, chunk):
        owner = torch.argmax(2.0 * points[start : start + chunk] @ sites.T + offset, dim=1)
        counts += torch.bincount(owner, minlength=n).to(torch.float64)
    return counts / samples


def solve_ot_net(
    sites: np.ndarray,
    masses: np.ndarray,
    state: OTNetState | None = None,
    config: OTNetConfig = OTNetConfig(),
    refine: bool = True,
    progress: Callable[[int, float], None] | None = None,
) -> OTNetResult:
    """Semi-discrete OT from the uniform measure on ``[0,1]^d`` to ``sum_i masses_i delta_{sites_i}`` by OT-Net.

    Args:
        sites: ``[N, d]`` float64 target points inside the unit cube (strictly inside the square for ``d = 2``).
        masses: ``[N]`` positive target masses (normalised to sum to 1 here).
        state: a previous solve's :attr:`OTNetResult.state` to start from (reuse); ``None`` for a cold start from
            ``h = 0``. The correction is reused only when the target count matches.
        config: :class:`OTNetConfig`.
        refine: run the Newton refine phase (requires ``d = 2``) from the best fit iterate; without it the
            result is that iterate (``fit_min_steps`` steps, more until ``fit_min_ratio`` is met).
        progress: called after every fit step with ``(step, max relative mass error before the step)``.

    Returns:
        :class:`OTNetResult`.

    Raises:
        ValueError: on bad shapes, non-positive masses, an unknown estimator, ``"exact"`` or ``refine`` with
            ``d != 2``, a state of another dimension, or a negative ``fit_min_steps``.
        OTConvergenceError: if no fit iterate reaches ``fit_min_ratio`` in ``max(fit_max_steps, fit_min_steps)``
            steps, or Newton does not reach ``tol``.
    """
    start = time.perf_counter()
    sites = np.asarray(sites, dtype=np.float64)
    masses = np.asarray(masses, dtype=np.float64)
    if sites.ndim != 2:
        raise ValueError(f"sites must be [N, d], got shape {sites.shape}")
    n, dim = sites.shape
    if masses.shape != (n,) or not np.all(np.isfinite(masses)) or masses.min() <= 0.0:
        raise ValueError(f"masses must be [N]={n} finite and positive")
    if config.mass_estimator not in ("exact", "qmc"):
        raise ValueError(f"mass_estimator must be 'exact' or 'qmc', got {config.mass_estimator!r}")
    if (config.mass_estimator == "exact" or refine) and dim != 2:
        raise ValueError(f"exact cell masses and Newton refinement need 2-D sites, got d={dim}")
    if state is not None and state.dim != dim:
        raise ValueError(f"state was trained on {state.dim}-D targets, sites are {dim}-D")
    if config.fit_min_steps < 0:
        raise ValueError(f"fit_min_steps must be >= 0, got {config.fit_min_steps}")
    nu = masses / masses.sum()

    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    network = HeightNetwork(dim, config.hidden, config.layers, config.frequencies).to(device)
    correction = np.zeros(n)
    if state is not None:
        network.load_state_dict(state.network)
        if len(state.correction) == n:
            correction = state.correction.copy()
    points = torch.from_numpy(sites).to(device)
    r = torch.tensor(correction, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([
        {"params": list(network.parameters()), "lr": config.learning_rate},
        {"params": [r], "lr": config.correction_rate / n},
    ])

    def current_weights() -> torch.Tensor:
        return network(points) + r

    def masses_at(weights: torch.Tensor, step: int) -> np.ndarray:
        if config.mass_estimator == "exact":
            return power_cells(sites, weights.detach().cpu().numpy()).areas
        estimate = qmc_cell_masses(points, weights.detach(), config.qmc_samples, config.seed * 1_000_003 + step)
        return estimate.cpu().numpy()

    history: list[float] = []
    fit_steps = 0
    best_error, best_weights = np.inf, None  # the refine phase starts from the best admissible fit iterate
    while True:
        weights = current_weights()
        cell_masses = masses_at(weights, fit_steps)
        history.append(float(np.max(np.abs(cell_masses - nu) / nu)))
        admissible = cell_masses.min() > 0.0 and np.min(cell_masses / nu) >= config.fit_min_ratio
        if admissible and history[-1] < best_error:
            best_error, best_weights = history[-1], weights.detach().cpu().numpy()
        if fit_steps >= config.fit_min_steps and (admissible or best_weights is not None):
            break
        if fit_steps >= max(config.fit_max_steps, config.fit_min_steps):
            raise OTConvergenceError(
                f"OT-Net fit left {int((cell_masses <= config.fit_min_ratio * nu).sum())} cells at or below "
                f"{config.fit_min_ratio:g} of their mass after {fit_steps} steps"
            )
        optimizer.zero_grad()
        # d E / d w = (mass - nu) / 2; the surrogate's gradient in (theta, r) is J^T of that.
        gradient = torch.from_numpy(0.5 * (cell_masses - nu)).to(device)
        (weights * gradient).sum().backward()
        optimizer.step()
        fit_steps += 1
        if progress is not None:
            progress(fit_steps, history[-1])

    with torch.no_grad():
        network_weights = network(points).cpu().numpy()
    weights_np = best_weights if best_weights is not None else network_weights + r.detach().cpu().numpy()
    cells: PowerCells | None = None
    newton_steps = 0
    refine_start_error = best_error if best_weights is not None else history[-1]
    if refine:
        solve = solve_semi_discrete_ot(sites, nu, tol=config.tol, max_iterations=config.max_newton_steps,
                                       initial_weights=weights_np)
        weights_np, cells, newton_steps = solve.weights, solve.cells, solve.iterations
        refine_start_error = solve.history[0]
        history.extend(solve.history[1:])
        mass_error = solve.mass_error
    else:
        mass_error = refine_start_error
    new_state = OTNetState(
        network={k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
        correction=weights_np - network_weights,
        dim=dim,
    )
    return OTNetResult(
        weights_np, cells, fit_steps, newton_steps, mass_error, time.perf_counter() - start, tuple(history),
        new_state, warm=state is not None, refine_start_error=refine_start_error,
    )
