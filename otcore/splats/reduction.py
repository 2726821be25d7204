"""One entry point of Gaussian-scene reduction: GHAP or a pruning baseline down to exactly ``count`` Gaussians.

``reduce("ghap", ...)`` chains :func:`otcore.splats.ghap.ghap_reduce` on the scene's covariances, the factorisation
of the reduced covariances into scales and rotations, and :func:`otcore.splats.ghap.merge_appearance` for opacities
and SH coefficients. The pruning baselines (:data:`otcore.splats.gaussian_pruning.PRUNING_METHODS`) keep a subset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otcore.splats.gaussian_pruning import PRUNING_METHODS, select_subset
from otcore.splats.ghap import covariances_to_scales_quats, ghap_reduce, merge_appearance
from otcore.splats.scene import covariances

__all__ = ["GHAP_METHODS", "REDUCTION_METHODS", "ReducedGaussians", "reduce"]

GHAP_METHODS = ("ghap", "ghap-kl", "ghap-euclidean")
"""``ghap`` uses the ``cost`` argument; ``ghap-kl`` / ``ghap-euclidean`` fix the cost (both in one run)."""
REDUCTION_METHODS = GHAP_METHODS + PRUNING_METHODS


@dataclass(frozen=True)
class ReducedGaussians:
    """A reduced scene: ``means [M, 3]``, ``scales [M, 3]``, ``quats [M, 4]`` (``w x y z``), ``opacities [M]``,
    ``sh_dc [M, 3]``, ``sh_rest [M, K, 3]``; ``kept`` int ``[M]`` indices of the kept originals for a pruning
    method, ``None`` for GHAP (whose Gaussians are new)."""

    means: np.ndarray
    scales: np.ndarray
    quats: np.ndarray
    opacities: np.ndarray
    sh_dc: np.ndarray
    sh_rest: np.ndarray
    kept: np.ndarray | None


def reduce(
    method: str,
    means: np.ndarray,
    scales: np.ndarray,
    quats: np.ndarray,
    opacities: np.ndarray,
    sh_dc: np.ndarray,
    sh_rest: np.ndarray,
    count: int,
    *,
    pen_size: int = 1024,
    max_iterations: int = 10,
    appearance: str = "weighted",
    seed: int = 0,
    cost: str = "kl",
    hits: np.ndarray | None = None,
) -> ReducedGaussians:
    """Reduce a 3DGS scene to exactly ``count`` Gaussians by ``method`` (one of :data:`REDUCTION_METHODS`).

    Args:
        method: ``"ghap"`` (Wang et al. 2025, :mod:`otcore.splats.ghap`, cost ``cost``), ``"ghap-kl"`` /
            ``"ghap-euclidean"`` (GHAP with that cost) or a pruning baseline (:mod:`otcore.splats.gaussian_pruning`).
        means, scales, quats, opacities, sh_dc, sh_rest: the scene (``[N, 3]``, ``[N, 3]`` activated, ``[N, 4]``
            ``w x y z``, ``[N]`` activated, ``[N, 3]``, ``[N, K, 3]``; see :mod:`otcore.splats.scene`).
        count: ``M``, the number of Gaussians kept, ``1 <= M <= N``.
        pen_size: GHAP: at most this many Gaussians per k-d pen.
        max_iterations: GHAP: assignment/update rounds.
        appearance: GHAP colours and opacities: ``"weighted"`` (opacity-weighted average of the members) or
            ``"nearest"`` (the cheapest member's).
        seed: the random baseline's seed.
        cost: GHAP cost form of ``"ghap"``, ``"kl"`` or ``"euclidean"`` (:data:`otcore.splats.ghap.GHAP_COSTS`).
        hits: ``"lightgaussian"``: int ``[N]`` pixel hit counts of the originals in the training views
            (:func:`otcore.splats.rasterizer.hit_counts`).

    Returns:
        :class:`ReducedGaussians` of ``count`` Gaussians: GHAP's means float64, scales, quats, opacities and SH
        float32; a pruning method's rows of the inputs (their dtypes).

    Raises:
        ValueError: an unknown method or cost, a count out of range, or ``lightgaussian`` without hits.
    """
    if method in GHAP_METHODS:
        cost = cost if method == "ghap" else method.removeprefix("ghap-")
        result = ghap_reduce(means, covariances(scales, quats), opacities, count, pen_size=pen_size,
                             max_iterations=max_iterations, cost=cost)
        new_scales, new_quats = covariances_to_scales_quats(result.covariances)
        sh = np.concatenate([sh_dc[:, None, :], sh_rest], axis=1).reshape(len(means), -1)
        new_opacities, merged = merge_appearance(result.assignment, result.costs, opacities, sh, count, appearance)
        merged = merged.reshape(count, -1, 3)
        return ReducedGaussians(result.means, new_scales, new_quats, new_opacities, merged[:, 0], merged[:, 1:], None)
    keep = select_subset(method, opacities, scales, count, seed=seed, hits=hits)
    return ReducedGaussians(means[keep], scales[keep], quats[keep], opacities[keep], sh_dc[keep], sh_rest[keep], keep)
