"""HOTS3D: optimal transport between distributions on the unit sphere ``S^{d-1}`` with ICNN potentials.

Li, Wang, Zhao, Li, Lei, Gu, "HOTS3D: Hyper-Spherical Optimal Transport for Semantic Alignment of Text-to-3D
Generation", arXiv 2407.14419; training scheme of Makkuva et al., "Optimal transport mapping via input convex
neural networks", ICML 2020. The map is a closed formula of the potential's gradient: no exponential map, no
geodesics, any dimension ``d``.

**Cost (a choice; the paper and the public code differ).** The paper derives its map from Villani's reflector
cost ``-log(1 - <x, y>)``; the public training code uses ``log(2 - <x, y>)``. We use the reflector cost composed
with the antipodal map,

.. math::

    c(x, y) = -\\log\\frac{1 + \\langle x, y\\rangle}{2} = -2\\log\\cos\\frac{\\theta(x, y)}{2},

i.e. Villani's reflector cost between ``x`` and ``-y`` (shifted by ``log 2`` so ``c(x, x) = 0``). Reasons: the
reflector cost itself is smallest at *antipodal* pairs, so its optimal map between two equal distributions is
the antipodal map, not the identity an alignment needs; the composition keeps every property that makes the
reflector cost the right one (it satisfies the twist condition, ``y -> grad_x c(x, y)`` is injective, and the
Ma–Trudinger–Wang condition, so optimal maps exist, are unique and are smooth for smooth densities; Loeper 2011)
and is a strictly increasing function of the geodesic distance ``theta``. The code's ``log(2 - <x, y>)`` is not
twisted (``|grad_x c|`` vanishes at ``theta = 0`` *and* ``theta = pi``), so its "map from a potential" is not
well defined.

**Map (the same in training and inference).** From the first-order condition of the c-transform, with
``p = grad_S u(x) = grad u(x) - <grad u(x), x> x`` the tangential gradient of the potential ``u``,

.. math::

    T(x) = \\frac{(1 - \\lVert p\\rVert^2)\\, x + 2 p}{1 + \\lVert p\\rVert^2},
    \\qquad c(x, T(x)) = \\log(1 + \\lVert p\\rVert^2),

which is on the sphere by construction (``|T(x)| = 1``) and moves ``x`` by the angle ``2 arctan |p|`` towards
``p``. The public code trains with ``normalize(x - grad f / (1 - <x, grad f>))`` and infers with the Euclidean
Brenier map ``grad g(y)`` (not on the sphere); we use the closed form above in both.

**Training (min-max, Makkuva et al. 2020, Eq. 6; as in HOTS3D's training loop).** With ``u`` (the map's
potential, an :class:`~otcore.ot.icnn.ICNN`) and ``psi`` (the dual potential, also an ICNN),

.. math::

    W_c(\\mu, \\nu) = \\sup_{\\psi} \\; \\mathbb{E}_\\nu\\, \\psi(y)
        + \\inf_{u} \\mathbb{E}_\\mu \\big[c(x, T_u(x)) - \\psi(T_u(x))\\big]

``inner_steps`` Adam steps on ``u`` (minimise the bracket), then one on ``psi`` (maximise the whole); both
expectations are Monte Carlo over batches (``mu`` may carry weights, e.g. vertex areas). The ICNN makes ``u``
convex in ``R^d``, an inductive bias (as in HOTS3D), not a proof of c-convexity on the sphere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from otcore.ot.icnn import ICNN, potential_gradient

__all__ = [
    "spherical_cost",
    "tangential_gradient",
    "transport_from_gradient",
    "SphericalOTConfig",
    "SphericalOTResult",
    "SphericalOTMap",
    "train_spherical_ot",
    "uniform_sphere",
    "energy_distance",
]


def spherical_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``c(x, y) = -log((1 + <x, y>) / 2)`` ``[N]`` for paired unit vectors ``x, y`` ``[N, d]`` (module docstring).

    ``0`` at ``x = y``, ``+inf`` at ``y = -x``; the inner product is clamped at ``-1 + 1e-7``.
    """
    inner = (x * y).sum(-1).clamp(min=-1.0 + 1e-7, max=1.0)
    return -torch.log(0.5 * (1.0 + inner))


def tangential_gradient(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Project Euclidean gradients ``[N, d]`` at unit vectors ``x`` ``[N, d]`` onto the tangent spaces ``[N, d]``."""
    return grad - (grad * x).sum(-1, keepdim=True) * x


def transport_from_gradient(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The map ``T(x) = ((1 - |p|^2) x + 2 p) / (1 + |p|^2)`` ``[N, d]`` (unit vectors) from tangent ``p`` ``[N, d]``.

    Exact on the sphere; a final renormalisation only removes float rounding.
    """
    sq = (p * p).sum(-1, keepdim=True)
    y = ((1.0 - sq) * x + 2.0 * p) / (1.0 + sq)
    return F.normalize(y, dim=-1)


def uniform_sphere(count: int, dim: int, generator: torch.Generator, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``count`` samples ``[count, dim]`` of the uniform measure on ``S^{dim-1}`` (normalised Gaussians)."""
    z = torch.randn(count, dim, generator=generator, dtype=dtype, device="cpu").to(device)
    return F.normalize(z, dim=-1)


@dataclass(frozen=True)
class SphericalOTConfig:
    """Hyper-parameters of :func:`train_spherical_ot` (documented defaults).

    Attributes:
        hidden: ICNN width. layers: ICNN hidden layers.
        steps: outer min-max steps (each: ``inner_steps`` map updates, one dual update).
        inner_steps: map-potential updates per dual update (Makkuva et al. use 10; HOTS3D 16).
        batch_size: samples of each measure per step.
        lr: Adam learning rate of both networks. betas: Adam betas (Makkuva et al.: (0.5, 0.9)).
        seed: seeds the initial weights and the batch sampling.
    """

    hidden: int = 64
    layers: int = 3
    steps: int = 300
    inner_steps: int = 5
    batch_size: int = 512
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.9)
    seed: int = 0


class SphericalOTMap(torch.nn.Module):
    """The trained map ``T_u`` of a potential ``u`` (module docstring); callable on ``[N, d]`` unit vectors."""

    def __init__(self, potential: ICNN) -> None:
        super().__init__()
        self.potential = potential

    def forward(self, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        x = F.normalize(x, dim=-1)
        p = tangential_gradient(potential_gradient(self.potential, x, create_graph=create_graph), x)
        return transport_from_gradient(x, p)

    @torch.no_grad()
    def transport(self, x: np.ndarray, batch: int = 8192) -> np.ndarray:
        """Map unit vectors ``x`` ``[N, d]`` (any float) to ``[N, d]`` float64 unit vectors, in batches."""
        param = next(self.potential.parameters())
        out = []
        for start in range(0, len(x), batch):
            chunk = torch.as_tensor(np.asarray(x[start:start + batch]), dtype=param.dtype, device=param.device)
            with torch.enable_grad():
                out.append(self.forward(chunk).detach().cpu().double().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.potential.dim))


@dataclass
class SphericalOTResult:
    """A trained spherical OT map and its training record.

    Attributes:
        map: the map ``T_u`` (``map.potential`` is the ICNN ``u``).
        dual: the dual potential ``psi``.
        loss_history: ``[steps]`` float64, the dual objective estimate
            ``E_mu[c(x, T x) - psi(T x)] + E_nu[psi(y)]`` per step (an estimate of ``W_c``).
        cost_history: ``[steps]`` float64, ``E_mu c(x, T x)`` per step (mean transport cost).
        steps: outer steps run. seconds: wall time. device: where it trained.
    """

    map: SphericalOTMap
    dual: ICNN
    loss_history: np.ndarray
    cost_history: np.ndarray
    steps: int
    seconds: float
    device: str
    config: SphericalOTConfig = field(default_factory=SphericalOTConfig)


def _check_unit(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 2:
        raise ValueError(f"{name} must be [N, d] with N >= 1 and d >= 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has non-finite values")
    norms = np.linalg.norm(x, axis=1)
    if (norms < 1e-12).any():
        raise ValueError(f"{name} has {(norms < 1e-12).sum()} zero vectors (no direction on the sphere)")
    return x / norms[:, None]


def train_spherical_ot(
    source: np.ndarray,
    target: np.ndarray | Callable[[int, torch.Generator], torch.Tensor],
    config: SphericalOTConfig = SphericalOTConfig(),
    source_weights: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> SphericalOTResult:
    """Train the HOTS3D min-max (module docstring) from ``source`` to ``target`` on ``S^{d-1}``.

    Args:
        source: ``[N, d]`` float unit vectors (normalised here), samples or Dirac locations of ``mu``.
        target: ``[M, d]`` float unit vectors of ``nu``, or a sampler ``(count, generator) -> [count, d]`` tensor
            on the CPU (e.g. the uniform measure: ``lambda n, g: uniform_sphere(n, d, g)``).
        config: hyper-parameters (:class:`SphericalOTConfig`).
        source_weights: ``[N]`` non-negative masses of the source points (``None``: uniform); batches are drawn
            with these probabilities.
        device: torch device (``"cuda"`` on a GPU worker); float32 throughout.

    Returns:
        :class:`SphericalOTResult` (networks on ``device``).

    Raises:
        ValueError: on wrong shapes, non-finite or zero vectors, dimension mismatch, or bad weights.
    """
    source = _check_unit("source", source)
    dim = source.shape[1]
    device = torch.device(device)
    generator = torch.Generator().manual_seed(config.seed)  # batches; the weights are seeded below
    if callable(target):
        sample_target = target
    else:
        target_arr = _check_unit("target", target)
        if target_arr.shape[1] != dim:
            raise ValueError(f"source is in d={dim} but target in d={target_arr.shape[1]}")
        target_t = torch.as_tensor(target_arr, dtype=torch.float32)

        def sample_target(n: int, g: torch.Generator) -> torch.Tensor:
            return target_t[torch.randint(len(target_t), (n,), generator=g)]

    if source_weights is None:
        probs = torch.full((len(source),), 1.0 / len(source), dtype=torch.float64)
    else:
        w = np.asarray(source_weights, dtype=np.float64)
        if w.shape != (len(source),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"source_weights must be [{len(source)}] finite, >= 0, positive sum")
        probs = torch.as_tensor(w / w.sum())
    source_t = torch.as_tensor(source, dtype=torch.float32)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        potential = ICNN(dim, config.hidden, config.layers).to(device)
        dual = ICNN(dim, config.hidden, config.layers).to(device)
    transport = SphericalOTMap(potential)
    opt_u = torch.optim.Adam(potential.parameters(), lr=config.lr, betas=config.betas)
    opt_psi = torch.optim.Adam(dual.parameters(), lr=config.lr, betas=config.betas)

    def source_batch() -> torch.Tensor:
        idx = torch.multinomial(probs, config.batch_size, replacement=True, generator=generator)
        return source_t[idx].to(device)

    losses, costs = [], []
    start = time.perf_counter()
    for _ in range(config.steps):
        for _ in range(config.inner_steps):
            x = source_batch()
            y = transport(x, create_graph=True)
            loss_u = (spherical_cost(x, y) - dual(y)).mean()
            opt_u.zero_grad(set_to_none=True)
            loss_u.backward()
            opt_u.step()
        x = source_batch()
        y_true = sample_target(config.batch_size, generator).to(device=device, dtype=torch.float32)
        y = transport(x).detach()
        cost = spherical_cost(x, y).mean()
        loss_psi = dual(y).mean() - dual(y_true).mean()
        opt_psi.zero_grad(set_to_none=True)
        loss_psi.backward()
        opt_psi.step()
        losses.append(float((cost - loss_psi).detach()))
        costs.append(float(cost))
    return SphericalOTResult(
        map=transport, dual=dual, loss_history=np.asarray(losses), cost_history=np.asarray(costs),
        steps=config.steps, seconds=time.perf_counter() - start, device=str(device), config=config,
    )


def energy_distance(x: np.ndarray, y: np.ndarray, max_points: int = 4000, seed: int = 0) -> float:
    """Energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` between two point sets ``[N, d]``, ``[M, d]`` (>= 0).

    Székely & Rizzo 2013, with the chordal (Euclidean) distance of the unit vectors; zero iff the distributions
    agree. Sets larger than ``max_points`` are subsampled (seeded). V-statistic (diagonals included).
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) > max_points:
        x = x[rng.choice(len(x), max_points, replace=False)]
    if len(y) > max_points:
        y = y[rng.choice(len(y), max_points, replace=False)]
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    xy = torch.cdist(xt, yt).mean()
    xx = torch.cdist(xt, xt).mean()
    yy = torch.cdist(yt, yt).mean()
    return float(2 * xy - xx - yy)
