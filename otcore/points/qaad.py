"""Training criteria of NeuralQAAD: augmented Chamfer, QAAD_GREEDY and QAAD_REASSIGNMENT.

NeuralQAAD (Wagner & Schwanecke, VISAPP 2022, Sec. 3.2-3.3) trains a point-cloud decoder against a *bijection*
``sigma`` between its output points and the target points instead of against nearest neighbours: with the
assignment fixed, the loss is the mean squared error ``|y_i - t_sigma(i)|^2``, and the assignment itself is
improved alongside gradient descent. Minimising this surrogate of a quadratic assignment problem implicitly
minimises the EMD, which Chamfer training does not (Chamfer lets many outputs collapse onto one target).

- :func:`augmented_chamfer` is the warm-up loss.
- :func:`qaad_greedy` builds the initial bijection: the two clouds are split by balanced k-d trees with the same
  axis order (as for EM-kD), and inside each leaf pair every output point takes its nearest free target; when
  several outputs want the same target, the closest one wins and the others propose again among the remaining
  targets (collision resolution), until every point is matched.
- :func:`qaad_reassignment` is Alg. 2, run every step on the points sampled for that step: each output point
  proposes the target (among the sampled subset's targets) nearest to its current prediction; the two points
  swap targets when the summed squared error of the pair does not increase.
"""

from __future__ import annotations

import torch

from otcore.kd_tree import kd_partition

__all__ = ["augmented_chamfer", "qaad_greedy", "qaad_reassignment"]


def _nearest(points: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """int64 ``[B, S]``: index of the nearest row of ``others`` ``[B, T, 3]`` for each row of ``points`` ``[B, S, 3]``.

    Squared distances as ``|p|^2 - 2 p.q + |q|^2`` (one batched matmul), without autograd: only the argmin is needed.
    """
    with torch.no_grad():
        squared = torch.baddbmm(others.square().sum(dim=2).unsqueeze(1), points, others.transpose(1, 2), alpha=-2.0)
        return squared.argmin(dim=2)


def augmented_chamfer(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Augmented Chamfer distance: the larger of the two directional mean squared nearest-neighbour distances.

    Taking the max instead of the sum (the "augmented" Chamfer used by NeuralQAAD for its warm-up) penalises
    whichever side is worse covered, so outputs cannot ignore part of the target. Nearest neighbours are found
    without autograd and the loss is the exact squared distance to them, so the gradient equals that of the
    min-over-distances formulation at a fraction of the cost of differentiating a distance matrix.

    Args:
        outputs: ``[B, S, 3]`` float (differentiable).
        targets: ``[B, T, 3]`` float.

    Returns:
        scalar: mean over the batch, squared input units.
    """
    to_target = targets.gather(1, _nearest(outputs, targets).unsqueeze(2).expand(-1, -1, 3))
    to_output = outputs.gather(1, _nearest(targets, outputs).unsqueeze(2).expand(-1, -1, 3))
    forward = (outputs - to_target).square().sum(dim=2).mean(dim=1)
    backward = (targets - to_output).square().sum(dim=2).mean(dim=1)
    return torch.maximum(forward, backward).mean()


def _padded_leaves(order: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sizes = offsets[1:] - offsets[:-1]
    width = int(sizes.max())
    rank = torch.arange(width, device=order.device).unsqueeze(0)
    valid = rank < sizes.unsqueeze(1)
    position = offsets[:-1].unsqueeze(1) + torch.minimum(rank, (sizes - 1).unsqueeze(1))
    return order[position], valid


@torch.no_grad()
def qaad_greedy(outputs: torch.Tensor, targets: torch.Tensor, leaf_size: int = 1024) -> torch.Tensor:
    """QAAD_GREEDY: k-d leaf-wise greedy nearest-neighbour bijection with collision resolution.

    Args:
        outputs: ``[M, 3]`` float, the decoder's current output cloud.
        targets: ``[M, 3]`` float, the shape's points (same count).
        leaf_size: k-d leaf size (both trees use the same axis order, so leaf ``s`` pairs with leaf ``s``).

    Returns:
        int64 ``[M]``: ``sigma``, the target index assigned to each output point (a permutation).

    Raises:
        ValueError: if the clouds' point counts differ.
    """
    if outputs.shape != targets.shape:
        raise ValueError(f"outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} must have equal shapes")
    device = outputs.device
    out_part = kd_partition(outputs, leaf_size)
    tgt_part = kd_partition(targets, leaf_size)
    out_index, valid = _padded_leaves(out_part.order.to(device), out_part.offsets.to(device))
    tgt_index, _ = _padded_leaves(tgt_part.order.to(device), tgt_part.offsets.to(device))
    cost = torch.cdist(outputs[out_index], targets[tgt_index])  # [L, n, n]
    n_leaves, width = valid.shape
    match = torch.full((n_leaves, width), -1, dtype=torch.long, device=device)
    pending = valid.clone()
    taken = ~valid  # padding columns are never free
    while bool(pending.any()):
        leaf, row = pending.nonzero(as_tuple=True)
        distance, best = cost[leaf, row].masked_fill_(taken[leaf], float("inf")).min(dim=1)
        # collision resolution: per (leaf, target) the closest proposer wins
        slot = leaf * width + best
        winner_distance = torch.full((n_leaves * width,), float("inf"), device=device)
        winner_distance.scatter_reduce_(0, slot, distance, reduce="amin")
        wins = distance == winner_distance[slot]
        # exact distance ties: keep only the lowest row per slot
        first_row = torch.full((n_leaves * width,), width, dtype=torch.long, device=device)
        first_row.scatter_reduce_(0, slot[wins], row[wins], reduce="amin")
        wins &= row == first_row[slot]
        match[leaf[wins], row[wins]] = best[wins]
        pending[leaf[wins], row[wins]] = False
        taken[leaf[wins], best[wins]] = True
    sigma = torch.empty(outputs.shape[0], dtype=torch.long, device=device)
    sigma[out_index[valid]] = tgt_index.gather(1, match.clamp(min=0))[valid]
    return sigma


@torch.no_grad()
def qaad_reassignment(predictions: torch.Tensor, assigned_targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """QAAD_REASSIGNMENT (NeuralQAAD Alg. 2) on a sampled subset, batched over shapes.

    Each sampled output ``i`` proposes the subset position ``j`` whose current target is nearest to its prediction;
    ``i`` and ``j`` exchange targets when ``|y_i - t_j|^2 + |y_j - t_i|^2 <= |y_i - t_i|^2 + |y_j - t_j|^2``.
    Proposals sharing a point are resolved by gain: a swap is applied only if it has the largest gain among all
    proposals touching either of its points, so every point takes part in at most one swap per call.

    Args:
        predictions: ``[B, S, 3]`` float, the decoder's outputs for the sampled points (detached).
        assigned_targets: ``[B, S, 3]`` float, their currently assigned target points.

    Returns:
        (``partner`` int64 ``[B, S]``: the subset position whose target each point takes after the swaps, identity
        where nothing changed; number of swaps made).
    """
    batch, size, _ = predictions.shape
    device = predictions.device
    squared = torch.cdist(predictions, assigned_targets).square()  # [B, S, S]: |y_i - t_j|^2
    current = squared.diagonal(dim1=1, dim2=2)
    proposal = squared.argmin(dim=2)
    cross = squared.gather(2, proposal.unsqueeze(2)).squeeze(2)  # |y_i - t_j|^2
    batch_index, point_index = torch.arange(batch, device=device)[:, None], torch.arange(size, device=device)[None, :]
    back = squared[batch_index, proposal, point_index]  # |y_j - t_i|^2
    gain = current + current.gather(1, proposal) - cross - back
    rows = torch.arange(size, device=device).expand(batch, size)
    candidate = (gain >= 0) & (proposal != rows)
    # unique rank per proposal, best (largest gain) first; non-candidates rank last
    key = torch.where(candidate, gain, torch.full_like(gain, -float("inf")))
    rank = torch.empty_like(rows)
    rank.scatter_(1, key.argsort(dim=1, descending=True), rows)
    rank = torch.where(candidate, rank, torch.full_like(rank, size))
    best = torch.full_like(rank, size)
    best.scatter_reduce_(1, rows, rank, reduce="amin")
    best.scatter_reduce_(1, proposal, rank, reduce="amin")
    accepted = candidate & (rank == best) & (rank == best.gather(1, proposal))
    partner = rows.clone()
    b_idx, i_idx = accepted.nonzero(as_tuple=True)
    j_idx = proposal[b_idx, i_idx]
    partner[b_idx, i_idx] = j_idx
    partner[b_idx, j_idx] = i_idx
    return partner, int(accepted.sum())
