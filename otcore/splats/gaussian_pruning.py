"""Pruning baselines for Gaussian reduction: which ``count`` Gaussians of a 3DGS scene to keep.

All three keep a subset of the originals unchanged (no merging), the usual comparison for a reduction method:

* ``random``: a seeded uniform subset;
* ``top_opacity``: the most opaque Gaussians;
* ``lightgaussian``: LightGaussian's global significance (Fan et al., "LightGaussian: Unbounded 3D Gaussian
  Compression with 15x Reduction and 200+ FPS", NeurIPS 2024, Sec. 3.1, the score before their pruning)

      GS_j = sum over all training-view pixels i of 1(G_j, r_i) * sigma_j * gamma(Sigma_j),

  the number of pixels Gaussian ``j`` takes part in (its *hit count*, from rendering the original scene from the
  training cameras: :func:`otcore.splats.rasterizer.hit_counts`) times its opacity ``sigma_j`` times the volume
  term ``gamma = (V_j / V_ref) ** beta``, ``V_j = prod(scales_j)``, ``beta = 0.1``. ``V_ref`` is as in their
  released ``calculate_v_imp_score``: the volume at index ``int(0.9 N)`` of the volumes sorted in descending order,
  without a clamp (the paper writes ``min(max(V / V_max90, 0), 1)``; with no clamp the ranking does not depend on
  ``V_ref`` at all). Gaussians no training pixel sees score 0 and go first.

  The previous version of this baseline had no hit counts (``opacity * min(1, V / q90(V)) ** 0.1``); it measured
  below random pruning (issue 18) and was removed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LIGHTGAUSSIAN_VOLUME_POWER", "PRUNING_METHODS", "importance_scores", "select_subset"]

PRUNING_METHODS = ("random", "top_opacity", "lightgaussian")
LIGHTGAUSSIAN_VOLUME_POWER = 0.1
"""LightGaussian's ``v_pow`` (beta), their default."""


def importance_scores(method: str, opacities: np.ndarray, scales: np.ndarray,
                      hits: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Keep-priority of every Gaussian under a deterministic pruning ``method`` (higher is kept first).

    Args:
        method: ``"top_opacity"`` or ``"lightgaussian"``.
        opacities: float ``[N]`` activated opacities.
        scales: float ``[N, 3]`` activated scales (world units).
        hits: ``lightgaussian`` only: int or float ``[N]`` non-negative hit counts (pixels of the training views each
            Gaussian contributes to, :func:`otcore.splats.rasterizer.hit_counts`).

    Returns:
        float64 ``[N]`` scores (``lightgaussian``: hits x opacity x volume term, module docstring).

    Raises:
        ValueError: on an unknown method, or ``lightgaussian`` without ``hits`` of shape ``[N]`` (finite, >= 0).
    """
    o = np.asarray(opacities, dtype=np.float64)
    if method == "top_opacity":
        return o
    if method == "lightgaussian":
        if hits is None:
            raise ValueError("lightgaussian needs per-Gaussian hit counts from the training views (hits=...)")
        h = np.asarray(hits, dtype=np.float64)
        if h.shape != o.shape or not np.isfinite(h).all() or (h < 0).any():
            raise ValueError(f"hits must be [{len(o)}] finite non-negative counts, got shape {list(h.shape)}")
        volume = np.prod(np.asarray(scales, dtype=np.float64), axis=1)
        reference = np.sort(volume)[::-1][int(len(volume) * 0.9)] if len(volume) else 1.0
        reference = max(float(reference), np.finfo(np.float64).tiny)
        return h * o * (volume / reference) ** LIGHTGAUSSIAN_VOLUME_POWER
    raise ValueError(f"no importance score for pruning method {method!r}; known: {PRUNING_METHODS}")


def select_subset(method: str, opacities: np.ndarray, scales: np.ndarray, count: int, seed: int = 0,
                  hits: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Indices of the ``count`` Gaussians a pruning ``method`` keeps, ascending.

    Args:
        method: one of :data:`PRUNING_METHODS`.
        opacities: float ``[N]`` activated opacities.
        scales: float ``[N, 3]`` activated scales.
        count: ``1 <= count <= N``.
        seed: seed of ``"random"``.
        hits: hit counts ``[N]``, needed by ``"lightgaussian"`` (:func:`importance_scores`).

    Returns:
        int64 ``[count]`` sorted unique indices (ties broken by index, so the result is deterministic).

    Raises:
        ValueError: on an unknown method, a count out of range, or ``lightgaussian`` without hits.
    """
    n = len(opacities)
    if not 1 <= count <= n:
        raise ValueError(f"count must be in [1, {n}], got {count}")
    if method == "random":
        keep = np.random.default_rng(seed).choice(n, size=count, replace=False)
    else:
        keep = np.argsort(-importance_scores(method, opacities, scales, hits), kind="stable")[:count]
    return np.sort(keep).astype(np.int64)
