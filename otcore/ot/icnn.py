"""Input-convex neural networks (ICNN): scalar potentials ``u: R^d -> R`` that are convex in their input.

Amos, Xu, Kolter, "Input Convex Neural Networks", ICML 2017; used as Kantorovich/Brenier potentials by Makkuva,
Taghvaei, Oh, Lee, "Optimal transport mapping via input convex neural networks", ICML 2020, and by HOTS3D (Li,
Wang, Zhao, Li, Lei, Gu, arXiv 2407.14419) on the sphere.

.. math::

    z_1 = \\sigma(W_0 x + b_0), \\qquad
    z_{k+1} = \\sigma(A_k z_k + W_k x + b_k), \\qquad
    u(x) = a^\\top z_L + w^\\top x + \\tfrac{s}{2}\\lVert x\\rVert^2

with ``A_k >= 0``, ``a >= 0``, ``s >= 0`` and ``sigma`` convex and non-decreasing: ``u`` is convex in ``x``
(a non-negative combination of convex non-decreasing functions of convex functions). Non-negativity is a
reparameterisation, not a penalty or a clamp after the step: the stored parameters are unconstrained and the
weights used are their ``softplus``, so every optimiser step keeps the network convex. ``sigma`` is softplus
(smooth, so the transport maps built from ``grad u`` are smooth too).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ICNN", "potential_gradient"]


def _inverse_softplus(value: float) -> float:
    return math.log(math.expm1(value))


class ICNN(nn.Module):
    """A convex potential ``u: R^d -> R`` (module docstring for the architecture).

    Args:
        dim: input dimension ``d``.
        hidden: width of every hidden layer.
        layers: number of hidden layers ``L`` (>= 1).
        output_scale: initial size of the non-negative output weights ``a`` (small: the potential starts nearly
            flat, so maps built from its gradient start near the identity).

    Shapes: :meth:`forward` takes ``x`` ``[N, d]`` float32/float64 and returns ``u(x)`` ``[N]`` (same dtype).

    Raises:
        ValueError: if ``dim``, ``hidden`` or ``layers`` is < 1.
    """

    def __init__(self, dim: int, hidden: int = 64, layers: int = 3, output_scale: float = 1e-2) -> None:
        super().__init__()
        if dim < 1 or hidden < 1 or layers < 1:
            raise ValueError(f"ICNN needs dim, hidden, layers >= 1, got {dim}, {hidden}, {layers}")
        self.dim, self.hidden, self.layers = dim, hidden, layers
        self.input_layers = nn.ModuleList([nn.Linear(dim, hidden) for _ in range(layers)])
        # Unconstrained parameters of the non-negative hidden-to-hidden weights A_k (used as softplus(raw)).
        raw = _inverse_softplus(1.0 / hidden)
        self.convex_raw = nn.ParameterList(
            [nn.Parameter(raw + 0.1 * torch.randn(hidden, hidden)) for _ in range(layers - 1)]
        )
        self.output_raw = nn.Parameter(torch.full((hidden,), _inverse_softplus(output_scale)))
        self.linear = nn.Parameter(torch.zeros(dim))
        self.quadratic_raw = nn.Parameter(torch.tensor(_inverse_softplus(output_scale)))

    def convex_weights(self) -> list[torch.Tensor]:
        """The non-negative weights actually used: ``A_1..A_{L-1}`` ``[hidden, hidden]`` and ``a`` ``[hidden]``."""
        return [F.softplus(raw) for raw in self.convex_raw] + [F.softplus(self.output_raw)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"ICNN expects x of shape [N, {self.dim}], got {tuple(x.shape)}")
        z = F.softplus(self.input_layers[0](x))
        for layer, raw in zip(self.input_layers[1:], self.convex_raw):
            z = F.softplus(z @ F.softplus(raw).T + layer(x))
        quadratic = 0.5 * F.softplus(self.quadratic_raw) * (x * x).sum(1)
        return z @ F.softplus(self.output_raw) + x @ self.linear + quadratic


def potential_gradient(potential: nn.Module, x: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """Euclidean gradient ``grad u(x)`` ``[N, d]`` of a scalar potential at ``x`` ``[N, d]`` (autograd).

    ``create_graph=True`` keeps the graph so a loss of the gradient can be differentiated w.r.t. the parameters.
    """
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = potential(x).sum()
        (grad,) = torch.autograd.grad(value, x, create_graph=create_graph)
    return grad
