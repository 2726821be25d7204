"""Balanced median k-d partition of point sets, shared by EM-kD leaves, NeuralQAAD patches and GHAP pens.

The split is the one NeuralQAAD's EM-kD (Wagner & Schwanecke, VISAPP 2022, Eq. 14) prescribes: every node is split
at its median along the axes in a fixed cyclic order, so two clouds of equal size get leaves of identical sizes
that can be paired leaf by leaf.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["KDPartition", "as_points", "kd_depth", "kd_partition", "kd_split"]


def as_points(points: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """``[N, d]`` float tensor view of a numpy array or tensor (float64 unless already float32/64).

    Raises:
        ValueError: naming ``name``, if the array is not a non-empty ``[N, d]`` array or has NaN/Inf entries.
    """
    if isinstance(points, torch.Tensor):
        tensor = points
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(points))
    if tensor.ndim != 2 or tensor.shape[0] < 1 or tensor.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty [N, d] array, got shape {tuple(tensor.shape)}")
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.to(torch.float64)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} has non-finite coordinates")
    return tensor


# ----------------------------------------------------------------------------------------------------------------
# Balanced k-d partition


@dataclass(frozen=True)
class KDPartition:
    """Leaves of a balanced k-d tree over ``N`` points.

    Attributes:
        order: int64 ``[N]`` point indices; the leaves are stored consecutively.
        offsets: int64 ``[L + 1]``; leaf ``s`` is ``order[offsets[s]:offsets[s + 1]]``.
    """

    order: torch.Tensor
    offsets: torch.Tensor

    @property
    def sizes(self) -> torch.Tensor:
        """int64 ``[L]`` leaf sizes (they differ by at most one)."""
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def n_leaves(self) -> int:
        """Number of leaves ``L`` (a power of two)."""
        return int(self.offsets.numel()) - 1


def kd_depth(n_points: int, leaf_size: int) -> int:
    """Smallest depth ``D`` with ``ceil(n_points / 2**D) <= leaf_size``."""
    depth = 0
    while -(-n_points // (1 << depth)) > leaf_size:
        depth += 1
    return depth


def kd_partition(points: np.ndarray | torch.Tensor, leaf_size: int = 1024) -> KDPartition:
    """Balanced median k-d split of ``[N, d]`` points into leaves of at most ``leaf_size`` points.

    Every node above depth ``D`` (the smallest depth with ``ceil(N / 2**D) <= leaf_size``) is split; a node at depth
    ``k`` is split along axis ``k % d`` (the same axis order for every cloud, which makes the leaves of two clouds
    comparable): its ``n // 2`` points of smallest coordinate go left, the other ``n - n // 2`` right (ties broken by
    position). Leaf sizes therefore depend only on ``N`` and ``leaf_size``: two clouds of equal ``N`` get identical
    ``offsets``, and all ``2**D`` leaves have ``floor`` or ``ceil`` of ``N / 2**D`` points (some empty if
    ``N < 2**D``, i.e. ``leaf_size`` 1 with ``N`` not a power of two). Vectorised by level (a median selection per
    node, all nodes at once), on the device of ``points``.

    Args:
        points: ``[N, d]`` float array or tensor (any length unit).
        leaf_size: maximum points per leaf, ``>= 1``.

    Returns:
        :class:`KDPartition` (int64 tensors on the device of ``points``; CPU for numpy input), leaves in tree order
        (left before right at every depth).

    Raises:
        ValueError: on a bad shape, non-finite coordinates or ``leaf_size < 1``.
    """
    if leaf_size < 1:
        raise ValueError(f"leaf_size must be >= 1, got {leaf_size}")
    pts = as_points(points, "points").detach()
    return kd_split(pts, kd_depth(pts.shape[0], leaf_size))


def kd_split(pts: torch.Tensor, depth: int) -> KDPartition:
    """The balanced k-d partition of ``pts`` ``[N, d]`` down to ``depth`` (see :func:`kd_partition`).

    Each level partitions all nodes at once around their medians: the nodes are rows of a padded ``[S, width]``
    matrix (sizes differ by at most one), ``torch.kthvalue`` finds each row's ``n // 2``-th smallest coordinate, and
    a stable partition (ties to the left in position order until the left half is full) replaces a full sort.
    """
    n_points, dim = pts.shape
    device = pts.device
    order = torch.arange(n_points, device=device)
    offsets = torch.tensor([0, n_points], device=device)
    for level in range(depth):
        sizes = offsets[1:] - offsets[:-1]
        width = int(sizes.max())
        slot = torch.arange(width, device=device)
        valid = slot < sizes[:, None]
        members = order[(offsets[:-1, None] + slot).clamp(max=n_points - 1)]
        coord = torch.where(valid, pts[:, level % dim][members], torch.inf)
        half = sizes // 2
        k_low, k_high = max(1, int(half.min())), max(1, int(half.max()))
        median = torch.kthvalue(coord, k_low, dim=1).values
        if k_high != k_low:
            median = torch.where(half == k_high, torch.kthvalue(coord, k_high, dim=1).values, median)
        median = torch.where(half > 0, median, -torch.inf)
        less = coord < median[:, None]
        equal = coord == median[:, None]
        left = less | (equal & (equal.cumsum(1) <= (half - less.sum(1))[:, None]))
        position = torch.where(left, left.cumsum(1) - 1, half[:, None] + (valid & ~left).cumsum(1) - 1)
        position = torch.where(valid, position, slot)
        order = torch.empty_like(members).scatter_(1, position, members)[valid]
        middle = offsets[:-1] + half
        offsets = torch.cat([torch.stack([offsets[:-1], middle], 1).reshape(-1), offsets[-1:]])
    return KDPartition(order, offsets)
