"""Exact optimal bijection of two equal-size point clouds for the Euclidean cost (linear sum assignment).

Convention (shared with :mod:`otcore.ot.auction` and :mod:`otcore.points.em_kd`):
``EMD(x, y) = min_phi (1/N) sum_i ||x_i - y_phi(i)||_2`` over bijections ``phi`` of two ``[N, d]`` clouds:
Euclidean (not squared) distance, mean over points, in the length units of the input. Solved by
``scipy.optimize.linear_sum_assignment`` (a shortest augmenting path method, Crouse 2016).
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.spatial.distance
import torch

from otcore.kd_tree import as_points

__all__ = ["as_cloud_pair", "exact_assignment", "exact_emd"]


def as_cloud_pair(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two equal-size clouds ``[N, d]`` as tensors (:func:`otcore.kd_tree.as_points`).

    Raises:
        ValueError: on unequal sizes or dimensions (naming both), bad shapes or non-finite coordinates.
    """
    x, y = as_points(x, "x"), as_points(y, "y")
    if x.shape != y.shape:
        raise ValueError(
            f"EMD needs clouds of equal size and dimension: x has {x.shape[0]} points in {x.shape[1]}-D, "
            f"y has {y.shape[0]} points in {y.shape[1]}-D"
        )
    return x, y




def exact_assignment(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> np.ndarray:
    """Optimal bijection of two equal-size clouds for the Euclidean cost (exact, ``scipy`` LSAP).

    Args:
        x, y: ``[N, d]`` float arrays or tensors (same ``N`` and ``d``).

    Returns:
        int64 ``[N]``: the index into ``y`` matched to each point of ``x``.

    Raises:
        ValueError: on unequal sizes or dimensions, bad shapes or non-finite coordinates.

    Dense ``O(N^2)`` memory and roughly ``O(N^3)`` time (Crouse's shortest augmenting path, as in
    ``scipy.optimize.linear_sum_assignment``): meant for ``N`` up to about 8192 (two 8,192-point crane frames take
    ~150 s on the 2-core dev machine; 1,024 points ~0.5 s).
    """
    x, y = as_cloud_pair(x, y)
    xs = x.detach().to("cpu", torch.float64).numpy()
    ys = y.detach().to("cpu", torch.float64).numpy()
    rows, cols = scipy.optimize.linear_sum_assignment(scipy.spatial.distance.cdist(xs, ys))
    assignment = np.empty(len(rows), dtype=np.int64)
    assignment[rows] = cols
    return assignment


def exact_emd(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Exact EMD ``min_phi (1/N) sum_i ||x_i - y_phi(i)||_2`` of two ``[N, d]`` clouds, in their length units.

    Same inputs, errors and cost as :func:`exact_assignment` (about ``N <= 8192``).
    """
    assignment = exact_assignment(x, y)
    xs, ys = (torch.as_tensor(t).detach().to("cpu", torch.float64).numpy() for t in as_cloud_pair(x, y))
    return float(np.linalg.norm(xs - ys[assignment], axis=1).mean())
