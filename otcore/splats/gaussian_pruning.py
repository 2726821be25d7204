"""Pruning baselines for Gaussian reduction: which ``count`` Gaussians of a 3DGS scene to keep.

All three keep a subset of the originals unchanged (no merging), the usual comparison for a reduction method:

* ``random``: a seeded uniform subset;
* ``top_opacity``: the most opaque Gaussians;
* ``lightgaussian``: the volume-aware importance of LightGaussian (Fan et al., NeurIPS 2024, Sec. 3.1) without its
  per-pixel hit counts (the scenes here come without training views): ``opacity * V_norm ** 0.1`` with
  ``V_norm = min(1, volume / q90(volume))`` and ``volume = prod(scales)``, their default ``v_pow = 0.1`` and
  90th-percentile normalisation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PRUNING_METHODS", "importance_scores", "select_subset"]

PRUNING_METHODS = ("random", "top_opacity", "lightgaussian")


def importance_scores(method: str, opacities: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Keep-priority of every Gaussian under a deterministic pruning ``method`` (higher is kept first).

    Args:
        method: ``"top_opacity"`` or ``"lightgaussian"``.
        opacities: float ``[N]`` activated opacities.
        scales: float ``[N, 3]`` activated scales (world units).

    Returns:
        float64 ``[N]`` scores.

    Raises:
        ValueError: on an unknown method.
    """
    o = np.asarray(opacities, dtype=np.float64)
    if method == "top_opacity":
        return o
    if method == "lightgaussian":
        volume = np.prod(np.asarray(scales, dtype=np.float64), axis=1)
        reference = max(float(np.quantile(volume, 0.9)), np.finfo(np.float64).tiny)
        return o * np.minimum(volume / reference, 1.0) ** 0.1
    raise ValueError(f"no importance score for pruning method {method!r}; known: {PRUNING_METHODS}")


def select_subset(method: str, opacities: np.ndarray, scales: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Indices of the ``count`` Gaussians a pruning ``method`` keeps, ascending.

    Args:
        method: one of :data:`PRUNING_METHODS`.
        opacities: float ``[N]`` activated opacities.
        scales: float ``[N, 3]`` activated scales.
        count: ``1 <= count <= N``.
        seed: seed of ``"random"``.

    Returns:
        int64 ``[count]`` sorted unique indices (ties broken by index, so the result is deterministic).

    Raises:
        ValueError: on an unknown method or a count out of range.
    """
    n = len(opacities)
    if not 1 <= count <= n:
        raise ValueError(f"count must be in [1, {n}], got {count}")
    if method == "random":
        keep = np.random.default_rng(seed).choice(n, size=count, replace=False)
    else:
        keep = np.argsort(-importance_scores(method, opacities, scales), kind="stable")[:count]
    return np.sort(keep).astype(np.int64)
