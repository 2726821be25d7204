"""GHAP: global Gaussian reduction of a 3DGS scene by optimal transport within k-d-tree pens.

Wang, Li, Zeng, Meng, Zhang, "Gaussian Herding across Pens: An Optimal Transport Perspective on Global Gaussian
Reduction for 3DGS" (arXiv 2506.09534, 2025). The scene's geometry is read as a Gaussian mixture
``sum_i w_i N(mu_i, Sigma_i)`` with weights ``w_i`` from the opacities. The means are split into "pens" by a
balanced k-d tree (:func:`otcore.kd_tree.kd_split`), each pen receives its share of the target count, and within
every pen the mixture is reduced by minimising the composite transportation divergence (CTD; Zhang, Zhang & Chen,
IEEE T-IT 2023)

    CTD = min over couplings pi with marginal w of  sum_ij pi_ij c(phi_i, phi~_j)

with the majorisation-minimisation scheme of that paper, which alternates

* **assignment**: each original Gaussian goes, with all its mass, to its cheapest reduced Gaussian;
* **update**: each reduced Gaussian becomes the minimiser of ``sum_{i -> j} w_i c(phi_i, phi~_j)``.

**Cost** (``cost=``, :data:`GHAP_COSTS`). Two forms, both batched over all pens, both with a closed-form update that
is the exact minimiser, so every MM round lowers the CTD (up to float rounding; the re-seeding below cannot raise
it either: the re-seeded original costs nothing once its slot is updated to it):

* ``"kl"``: ``c = KL(phi_i || phi~_j)`` with *moment matching* as the update (weighted mean of the means; weighted
  mean of ``Sigma_i + mu_i mu_i^T`` minus ``mu~ mu~^T``, i.e. the covariance includes the spread of the means). The
  CTD paper (Zhang, Zhang & Chen, IEEE T-IT 2023, Sec. on clustering-based GMR) shows that KL with moment matching
  is the classical clustering reduction (Runnalls / Salmond family). Cost of an assignment:

      2 KL = tr(A_j Sigma_i) + (mu_i - mu~_j)^T A_j (mu_i - mu~_j) - 3 + log det Sigma~_j - log det Sigma_i,

  ``A_j = Sigma~_j^-1``, computed for all (original, reduced) pairs of all pens with two batched matmuls (the second
  moments ``Sigma_i + mu_i mu_i^T`` against ``A_j`` as 9-vectors), in float64 after centring every pen. It is
  scale-free (a change of units leaves every KL unchanged).
* ``"euclidean"``: ``c = ||mu_i - mu~_j||^2 + ||Sigma_i - Sigma~_j||_F^2``, the cost of the authors' released code;
  its minimiser is the weighted average of the means and, separately, of the covariances, *without* the
  spread-of-means term (a merged Gaussian is as thin as its members, however far apart they sit). All pairs are one
  batched ``cdist``-style matmul of 12-vectors ``(mu, vec Sigma)``. Not scale-free: the covariance term is in
  units^4 against units^2 for the means, so on a scene whose Gaussians are small against its extent it is nearly
  k-means on the means.

Which form the paper states, and which the code uses: the code indexed as the GHAP release (the public mirror of
``DrunkenPoet/GHAP`` holds only the README, the two run scripts and the figures; the Python files that carry its
class names ``KdGMR_CTD`` / ``GMM_Sampler`` and ``gaussian_model_reduction`` were read un-attributed) computes, in
a function it names ``TensorKL(means, covs)``, ``||mu2 - mu1||^2 + ||Sigma2 - Sigma1||_F^2``
(``torch.linalg.norm(mean_diff) ** 2 + torch.linalg.matrix_norm(cov_diff, ord='fro') ** 2``), and in
``GMM_Sampler._support_update`` averages means and covariances with the transport plan's columns, the
spread-of-means term commented out. The paper (arXiv 2506.09534) frames the method as CTD minimisation over a
k-d-tree partition with a generic cost ``c``; the stored copies available here (abstract, reviews) do not show the
cost it fixes in its method section, so this module does not claim either form as "the paper's": ``"kl"`` is the
CTD paper's clustering cost and this project's default (it measured better here, see ``bench/ghap_quality.py``),
``"euclidean"`` is the released code's. The released code also differs elsewhere: random initialisation, per-pen
weights normalised to 1, empty components dropped (fewer than ``target`` Gaussians), and in one version the kept
Gaussians are the originals nearest to the reduced ones (a pruning), not the reduced ones.

**Exact count.** Pens get ``round(target * pen_size / N)`` by largest remainders (the counts add up to the target
exactly); a reduced Gaussian that receives no original after an assignment (where the authors' code loses it and
falls short of the target) is re-seeded at the original with the largest weighted cost among those that are not
the last member of their own component, so no component is ever emptied and the output has exactly ``target``
Gaussians.

**Initialisation.** Each pen's originals are ordered by a deeper k-d split (spatially coherent runs) and cut into
as many contiguous runs as the pen has reduced Gaussians; the first update moment-matches the runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from otcore.kd_tree import as_points, kd_depth, kd_split

__all__ = [
    "GHAP_COSTS", "GHAPResult", "allocate_counts", "ghap_reduce", "covariances_to_scales_quats", "merge_appearance",
]

GHAP_COSTS = ("kl", "euclidean")
"""Cost forms of :func:`ghap_reduce` (module docstring)."""

_MAX_CHUNK_ENTRIES = 1 << 24  # cost entries (float64) per batch of pens: bounds memory at ~130 MB per buffer
_REL_RIDGE = 1e-9  # ridge on reduced covariances, relative to the pen's squared extent (keeps A_j finite)


@dataclass
class GHAPResult:
    """A reduced mixture and how the originals map onto it.

    Attributes:
        means: float64 ``[M, 3]`` reduced means (input units).
        covariances: float64 ``[M, 3, 3]`` reduced covariances (squared input units), symmetric positive definite.
        weights: float64 ``[M]`` total weight of the originals assigned to each reduced Gaussian (> 0).
        assignment: int64 ``[N]`` index of the reduced Gaussian each original is assigned to.
        costs: float64 ``[N]`` ``c(phi_i, phi~_assignment[i])`` under ``cost`` (KL: nats; euclidean: squared input
            units plus squared covariance units).
        pen: int64 ``[N]`` pen index of each original.
        n_pens: number of pens ``S``.
        iterations: assignment/update rounds run.
        ctd: weight-normalised CTD ``sum_i w_i c_i / sum_i w_i`` after each round's update (non-increasing, up to
            float rounding and, for ``"kl"``, the 1e-9 relative ridge).
        cost: the cost form, one of :data:`GHAP_COSTS`.
        reseeded: reduced Gaussians re-seeded because they received no original (summed over rounds).
    """

    means: np.ndarray
    covariances: np.ndarray
    weights: np.ndarray
    assignment: np.ndarray
    costs: np.ndarray
    pen: np.ndarray
    n_pens: int
    iterations: int
    ctd: list[float] = field(default_factory=list)
    reseeded: int = 0
    cost: str = "kl"


def allocate_counts(pen_sizes: np.ndarray | torch.Tensor, target: int) -> torch.Tensor:
    """Split ``target`` over pens proportionally to their sizes, by largest remainders.

    Args:
        pen_sizes: int ``[S]`` originals per pen (>= 0).
        target: total reduced count, ``1 <= target <= sum(pen_sizes)``.

    Returns:
        int64 ``[S]`` counts with ``counts.sum() == target`` and ``0 <= counts <= pen_sizes``.

    Raises:
        ValueError: if ``target`` is out of range.
    """
    sizes = torch.as_tensor(pen_sizes, dtype=torch.int64)
    total = int(sizes.sum())
    if not 1 <= target <= total:
        raise ValueError(f"target count must be in [1, {total}], got {target}")
    exact = sizes.double() * target / total
    counts = torch.floor(exact).long().minimum(sizes)
    short = target - int(counts.sum())
    if short:
        room = counts < sizes
        remainder = torch.where(room, exact - counts, torch.tensor(-1.0, dtype=torch.float64))
        order = torch.sort(remainder, descending=True, stable=True).indices[:short]
        counts[order] += 1
    return counts


def ghap_reduce(
    means: np.ndarray | torch.Tensor,
    covariances: np.ndarray | torch.Tensor,
    weights: np.ndarray | torch.Tensor,
    target: int,
    pen_size: int = 1024,
    max_iterations: int = 10,
    cost: str = "kl",
) -> GHAPResult:
    """Reduce the mixture ``sum_i w_i N(mu_i, Sigma_i)`` to exactly ``target`` Gaussians (GHAP, see module doc).

    All pens are processed together as padded ``[S, P, ...]`` batches (chunked over pens to bound memory) on the
    device of ``means``; there is no Python loop over pens or Gaussians.

    Args:
        means: float ``[N, 3]`` Gaussian centres.
        covariances: float ``[N, 3, 3]`` symmetric positive semi-definite covariances (squared units of ``means``).
        weights: float ``[N]`` non-negative mixture weights (3DGS: opacities); a pen whose weights are all zero is
            treated as uniform.
        target: number of reduced Gaussians, ``1 <= target <= N``.
        pen_size: at most this many originals per pen (balanced k-d leaves); pens are merged (fewer, larger) when
            there would be more pens than ``target``.
        max_iterations: assignment/update rounds; stops earlier when an assignment repeats.
        cost: ``"kl"`` (KL + moment matching) or ``"euclidean"`` (``||dmu||^2 + ||dSigma||_F^2`` + plain averages,
            the released code's); see the module docstring.

    Returns:
        :class:`GHAPResult` (numpy arrays).

    Raises:
        ValueError: on mismatched shapes, non-finite input, negative weights, a ``target`` out of range or an unknown
            ``cost``.
    """
    if cost not in GHAP_COSTS:
        raise ValueError(f"GHAP cost must be one of {GHAP_COSTS}, got {cost!r}")
    mu = as_points(means, "means").to(torch.float64)
    n = mu.shape[0]
    if mu.shape[1] != 3:
        raise ValueError(f"means must be [N, 3], got {tuple(mu.shape)}")
    cov = torch.as_tensor(covariances, dtype=torch.float64, device=mu.device)
    w = torch.as_tensor(weights, dtype=torch.float64, device=mu.device)
    if cov.shape != (n, 3, 3) or w.shape != (n,):
        raise ValueError(f"covariances must be [{n}, 3, 3] and weights [{n}], got {tuple(cov.shape)}, {tuple(w.shape)}")
    if not (torch.isfinite(cov).all() and torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("covariances and weights must be finite and weights non-negative")
    if not 1 <= target <= n:
        raise ValueError(f"target count must be in [1, {n}], got {target}")
    if pen_size < 1:
        raise ValueError(f"pen_size must be >= 1, got {pen_size}")

    depth = kd_depth(n, pen_size)
    while depth > 0 and (1 << depth) > target:
        depth -= 1
    # a deeper split refines the pens (same first levels): its order lists each pen's originals in spatial runs
    extra = max(0, math.ceil(math.log2(max(1.0, target / (1 << depth)))))
    fine = kd_split(mu, depth + extra)
    pen_offsets = fine.offsets[:: 1 << extra]
    sizes = pen_offsets[1:] - pen_offsets[:-1]
    n_pens = int(sizes.numel())
    # every pen keeps at least one Gaussian (2**depth <= target), the rest is shared by size
    counts = torch.ones_like(sizes)
    if target > n_pens:
        counts += allocate_counts((sizes - 1).cpu(), target - n_pens).to(mu.device)

    width, slots = int(sizes.max()), int(counts.max())
    rank = torch.arange(width, device=mu.device)
    valid = rank < sizes[:, None]  # [S, P]
    index = fine.order[(pen_offsets[:-1, None] + rank).clamp(max=n - 1)]  # [S, P]
    comp_valid = torch.arange(slots, device=mu.device) < counts[:, None]  # [S, M]
    init = torch.div(rank[None, :] * counts[:, None], sizes[:, None].clamp(min=1), rounding_mode="floor")

    out_means = torch.empty(n_pens, slots, 3, dtype=torch.float64, device=mu.device)
    out_cov = torch.empty(n_pens, slots, 3, 3, dtype=torch.float64, device=mu.device)
    out_w = torch.zeros(n_pens, slots, dtype=torch.float64, device=mu.device)
    assign = torch.zeros(n_pens, width, dtype=torch.int64, device=mu.device)
    costs = torch.zeros(n_pens, width, dtype=torch.float64, device=mu.device)
    weighted_costs = torch.zeros(max_iterations + 1, dtype=torch.float64)  # CTD after each round, summed over pens
    iterations, reseeded = 0, 0
    per_pen = max(1, _MAX_CHUNK_ENTRIES // max(1, width * slots))
    for start in range(0, n_pens, per_pen):
        sl = slice(start, min(n_pens, start + per_pen))
        result = _reduce_pens(mu, cov, w, index[sl], valid[sl], comp_valid[sl], init[sl], max_iterations, cost)
        out_means[sl], out_cov[sl], out_w[sl], assign[sl], costs[sl] = result[:5]
        weighted_costs[: len(result[5])] += torch.tensor(result[5], dtype=torch.float64)
        if len(result[5]) < len(weighted_costs):  # converged early: its last value holds for later rounds
            weighted_costs[len(result[5]) :] += result[5][-1]
        iterations = max(iterations, len(result[5]))
        reseeded += result[6]

    # compact the [S, M] slots to the target count; map every original to its global reduced index
    slot_to_global = torch.cumsum(comp_valid.flatten().long(), 0).reshape(n_pens, slots) - 1
    flat_valid = valid.flatten()
    original = index.flatten()[flat_valid]
    assignment = torch.empty(n, dtype=torch.int64, device=mu.device)
    assignment[original] = slot_to_global.gather(1, assign).flatten()[flat_valid]
    original_costs = torch.empty(n, dtype=torch.float64, device=mu.device)
    original_costs[original] = costs.flatten()[flat_valid]
    pen = torch.empty(n, dtype=torch.int64, device=mu.device)
    pen[original] = torch.arange(n_pens, device=mu.device).repeat_interleave(width)[flat_valid]
    total_weight = float(w.sum()) if float(w.sum()) > 0 else 1.0
    return GHAPResult(
        means=out_means[comp_valid].cpu().numpy(),
        covariances=out_cov[comp_valid].cpu().numpy(),
        weights=out_w[comp_valid].cpu().numpy(),
        assignment=assignment.cpu().numpy(),
        costs=original_costs.cpu().numpy(),
        pen=pen.cpu().numpy(),
        n_pens=n_pens,
        iterations=iterations,
        ctd=(weighted_costs[:iterations] / total_weight).tolist(),
        reseeded=reseeded,
        cost=cost,
    )


def _reduce_pens(mu, cov, w, index, valid, comp_valid, init, max_iterations, cost):
    """MM iterations for a batch of pens; returns per-slot means/covariances/weights, assignment, costs, the
    weighted cost after each round and the number of re-seeded slots."""
    pen_mu, pen_cov = mu[index], cov[index]  # [S, P, 3], [S, P, 3, 3]
    pen_w = torch.where(valid, w[index], 0.0)
    uniform = (pen_w.sum(1, keepdim=True) <= 0) & valid
    pen_w = torch.where(uniform, 1.0, pen_w)
    centre = (pen_w[..., None] * pen_mu).sum(1, keepdim=True) / pen_w.sum(1, keepdim=True)[..., None]
    pen_mu = pen_mu - centre
    if cost == "kl":
        second = pen_cov + pen_mu[..., :, None] * pen_mu[..., None, :]  # [S, P, 3, 3] second moments about the centre
        extent2 = torch.where(valid, (pen_mu**2).sum(-1), 0.0).amax(1).clamp(min=1e-30)  # [S]
        ridge = _REL_RIDGE * extent2[:, None, None, None] * torch.eye(3, dtype=mu.dtype, device=mu.device)
        sign, logdet_i = torch.linalg.slogdet(pen_cov)  # [S, P]; degenerate (flat) originals get the ridge
        logdet_i = torch.where(sign > 0, logdet_i, torch.logdet(pen_cov + ridge))
        logdet_i = torch.where(valid, logdet_i, 0.0)

        def update(assign):
            return _moment_match(assign, pen_w, pen_mu, second, comp_valid, ridge)[:2]

        def all_scores(red_mu, red_cov):
            return _assignment_scores(pen_mu, second, red_mu, red_cov, comp_valid)

        def to_cost(picked):  # KL from the assignment scores (they drop terms that depend on i only)
            return 0.5 * (picked - 3.0 - logdet_i)
    else:
        features = torch.cat([pen_mu, pen_cov.flatten(-2)], dim=-1)  # [S, P, 12]: (mu, vec Sigma)
        sq_norm = (features * features).sum(-1)  # [S, P]

        def update(assign):
            return _average(assign, pen_w, features, comp_valid)

        def all_scores(red_mu, red_cov):
            return _euclidean_scores(features, sq_norm, red_mu, red_cov, comp_valid)

        def to_cost(picked):
            return picked

    assign = torch.where(valid, init, 0)
    red_mu, red_cov = update(assign)
    history, reseeded = [], 0

    def cost_of(scores, chosen):  # cost of each original to its chosen slot, from the assignment scores
        picked = to_cost(scores.gather(2, chosen[..., None])[..., 0])
        return torch.where(valid, picked.clamp(min=0.0), 0.0)

    def ctd(scores):  # weighted cost of the current (assignment, reduced mixture) pair
        return float((cost_of(scores, assign) * pen_w).sum())

    for _ in range(max_iterations):
        scores = all_scores(red_mu, red_cov)  # [S, P, M]
        history.append(ctd(scores))
        new_assign = torch.where(valid, scores.argmin(dim=2), 0)
        new_assign, moved = _reseed_empty(new_assign, cost_of(scores, new_assign) * pen_w, valid, comp_valid)
        reseeded += moved
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
        red_mu, red_cov = update(assign)
    else:
        scores = all_scores(red_mu, red_cov)
        history.append(ctd(scores))
    costs = cost_of(scores, assign)
    red_w = torch.zeros(comp_valid.shape, dtype=pen_w.dtype, device=pen_w.device)
    red_w.scatter_add_(1, assign, torch.where(uniform, 0.0, pen_w))
    costs = torch.where(valid, costs, 0.0)
    return red_mu + centre, red_cov, red_w, assign, costs, history, reseeded


def _average(assign, pen_w, features, comp_valid):
    """Weighted averages per slot of the members' means and covariances (the minimiser of the euclidean cost):
    ``[S, M, 3]`` means, ``[S, M, 3, 3]`` covariances."""
    n_pens, slots = comp_valid.shape
    mass = torch.zeros(n_pens, slots, dtype=pen_w.dtype, device=pen_w.device).scatter_add_(1, assign, pen_w)
    total = torch.zeros(n_pens, slots, features.shape[-1], dtype=pen_w.dtype, device=pen_w.device)
    total.scatter_add_(1, assign[..., None].expand(-1, -1, features.shape[-1]), pen_w[..., None] * features)
    mean = total / mass.clamp(min=1e-300)[..., None]
    red_cov = mean[..., 3:].unflatten(-1, (3, 3))
    return mean[..., :3], 0.5 * (red_cov + red_cov.transpose(-1, -2))


def _euclidean_scores(features, sq_norm, red_mu, red_cov, comp_valid):
    """``||mu_i - mu~_j||^2 + ||Sigma_i - Sigma~_j||_F^2`` for all pairs of each pen: ``[S, P, M]``, ``inf`` on unused
    slots; ``|x_i|^2 - 2 x_i . y_j + |y_j|^2`` of the 12-vectors ``x = (mu, vec Sigma)``, one batched matmul."""
    red = torch.cat([red_mu, red_cov.flatten(-2)], dim=-1)  # [S, M, 12]
    const = torch.where(comp_valid, (red * red).sum(-1), torch.inf)  # [S, M]
    scores = torch.baddbmm(const[:, None, :] + sq_norm[..., None], features, red.transpose(1, 2), alpha=-2.0)
    return scores


def _moment_match(assign, pen_w, pen_mu, second, comp_valid, ridge):
    """Weighted moment matching per slot: ``[S, M, 3]`` means, ``[S, M, 3, 3]`` covariances, ``[S, M]`` weights."""
    n_pens, slots = comp_valid.shape
    mass = torch.zeros(n_pens, slots, dtype=pen_w.dtype, device=pen_w.device).scatter_add_(1, assign, pen_w)
    first = torch.zeros(n_pens, slots, 3, dtype=pen_w.dtype, device=pen_w.device)
    first.scatter_add_(1, assign[..., None].expand(-1, -1, 3), pen_w[..., None] * pen_mu)
    moment = torch.zeros(n_pens, slots, 9, dtype=pen_w.dtype, device=pen_w.device)
    moment.scatter_add_(1, assign[..., None].expand(-1, -1, 9), pen_w[..., None] * second.flatten(-2))
    safe = mass.clamp(min=1e-300)[..., None]
    red_mu = first / safe
    red_cov = (moment / safe).unflatten(-1, (3, 3)) - red_mu[..., :, None] * red_mu[..., None, :]
    red_cov = 0.5 * (red_cov + red_cov.transpose(-1, -2)) + ridge[:, :1]
    return red_mu, red_cov, mass


def _assignment_scores(pen_mu, second, red_mu, red_cov, comp_valid):
    """``2 KL(phi_i || phi~_j) + 3 + log det Sigma_i`` for all pairs of each pen: ``[S, P, M]``, ``inf`` on unused
    slots. The dropped terms depend on ``i`` only, so the argmin over ``j`` is the KL's; two fused batched matmuls:
    ``tr(A_j (Sigma_i + mu_i mu_i^T)) - 2 mu_i^T A_j mu~_j + (mu~_j^T A_j mu~_j + log det Sigma~_j)``."""
    eye = torch.eye(3, dtype=red_cov.dtype, device=red_cov.device)
    chol, _ = torch.linalg.cholesky_ex(torch.where(comp_valid[..., None, None], red_cov, eye))
    a = torch.cholesky_inverse(chol)  # [S, M, 3, 3]
    logdet_j = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # [S, M]
    b = (a @ red_mu[..., None])[..., 0]  # [S, M, 3]
    const = torch.where(comp_valid, (red_mu * b).sum(-1) + logdet_j, torch.inf)  # [S, M]
    n_pens, width = pen_mu.shape[:2]
    scores = torch.baddbmm(const[:, None, :].expand(n_pens, width, -1), second.flatten(-2),
                           a.flatten(-2).transpose(1, 2))
    return scores.baddbmm_(pen_mu, b.transpose(1, 2), alpha=-2.0)


def _reseed_empty(assign, weighted_cost, valid, comp_valid):
    """Give every slot that received no original the costliest original whose own slot keeps another member."""
    n_pens, slots = comp_valid.shape
    members = torch.zeros(n_pens, slots, dtype=torch.int64, device=assign.device)
    members.scatter_add_(1, assign, valid.long())
    empty = comp_valid & (members == 0)
    n_empty = int(empty.sum(1).max()) if bool(empty.any()) else 0
    if n_empty == 0:
        return assign, 0
    # rank each original within its slot by decreasing cost: rank 0 is the costliest; the cheapest stays
    key = torch.where(valid, weighted_cost, -torch.inf)
    by_cost = torch.sort(key, dim=1, descending=True, stable=True).indices
    by_slot = torch.sort(assign.gather(1, by_cost) + (~valid.gather(1, by_cost)).long() * slots, dim=1, stable=True)
    order = by_cost.gather(1, by_slot.indices)
    slot_sorted = assign.gather(1, order)
    starts = torch.cumsum(members, 1) - members
    rank_in_slot = torch.arange(assign.shape[1], device=assign.device) - starts.gather(1, slot_sorted)
    movable_sorted = valid.gather(1, order) & (rank_in_slot < members.gather(1, slot_sorted) - 1)
    movable = torch.zeros_like(valid).scatter_(1, order, movable_sorted)
    score = torch.where(movable, weighted_cost, -torch.inf)
    picks = torch.topk(score, n_empty, dim=1).indices  # [S, E] costliest movable originals
    empty_slots = torch.sort(empty.long(), dim=1, descending=True, stable=True).indices[:, :n_empty]  # [S, E]
    use = torch.arange(n_empty, device=assign.device) < empty.sum(1, keepdim=True)
    new_assign = assign.clone()
    rows = torch.arange(n_pens, device=assign.device)[:, None].expand(-1, n_empty)
    new_assign[rows[use], picks[use]] = empty_slots[use]
    return new_assign, int(use.sum())


def covariances_to_scales_quats(covariances: np.ndarray, min_scale: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """3DGS scales and rotations of covariances ``Sigma = R diag(s^2) R^T`` (Kerbl et al. 2023, Eq. 6).

    Args:
        covariances: float ``[M, 3, 3]`` symmetric positive semi-definite.
        min_scale: floor on the scales (the eigenvalues are clamped at ``min_scale^2``).

    Returns:
        ``(scales, quats)``: float32 ``[M, 3]`` standard deviations (ascending per row) and float32 ``[M, 4]`` unit
        quaternions ``w x y z`` of right-handed rotations (``det R = +1``) with ``w >= 0``.
    """
    cov = np.asarray(covariances, dtype=np.float64)
    values, vectors = np.linalg.eigh(0.5 * (cov + cov.transpose(0, 2, 1)))
    vectors[:, :, 2] *= np.sign(np.linalg.det(vectors))[:, None]  # reflections -> rotations
    scales = np.sqrt(np.maximum(values, min_scale**2))
    quats = Rotation.from_matrix(vectors).as_quat(scalar_first=True)
    quats *= np.where(quats[:, :1] < 0, -1.0, 1.0)
    return scales.astype(np.float32), quats.astype(np.float32)


def merge_appearance(
    assignment: np.ndarray,
    costs: np.ndarray,
    opacities: np.ndarray,
    sh: np.ndarray,
    n_reduced: int,
    mode: str = "weighted",
) -> tuple[np.ndarray, np.ndarray]:
    """Opacity and SH coefficients of each reduced Gaussian from the originals assigned to it.

    Args:
        assignment: int ``[N]`` reduced index of each original (every index in ``[0, n_reduced)`` used).
        costs: float ``[N]`` assignment cost of each original (used by ``"nearest"``).
        opacities: float ``[N]`` activated opacities in [0, 1].
        sh: float ``[N, C]`` SH coefficients flattened per Gaussian (``sh_dc`` and ``sh_rest``).
        n_reduced: ``M``.
        mode: ``"weighted"``: opacity-weighted averages of the members' SH and opacities (``sum o^2 / sum o``);
            ``"nearest"``: copy the member with the lowest cost.

    Returns:
        ``(opacities [M], sh [M, C])`` float32.

    Raises:
        ValueError: on an unknown mode or a reduced Gaussian without members.
    """
    a = np.asarray(assignment, dtype=np.int64)
    o = np.asarray(opacities, dtype=np.float64)
    sh = np.asarray(sh, dtype=np.float64).reshape(len(a), -1)
    members = np.bincount(a, minlength=n_reduced)
    if members.shape[0] != n_reduced or (members == 0).any():
        raise ValueError("every reduced Gaussian needs at least one assigned original")
    if mode == "weighted":
        weight = np.maximum(o, 1e-12)
        total = np.bincount(a, weights=weight, minlength=n_reduced)
        out_o = np.bincount(a, weights=weight * o, minlength=n_reduced) / total
        out_sh = np.zeros((n_reduced, sh.shape[1]))
        np.add.at(out_sh, a, weight[:, None] * sh)
        out_sh /= total[:, None]
    elif mode == "nearest":
        order = np.lexsort((np.asarray(costs, dtype=np.float64), a))  # by reduced index, then cost
        first = order[np.r_[0, np.flatnonzero(np.diff(a[order])) + 1]]
        out_o, out_sh = o[first], sh[first]
    else:
        raise ValueError(f"appearance mode must be 'weighted' or 'nearest', got {mode!r}")
    return out_o.astype(np.float32), out_sh.astype(np.float32)
