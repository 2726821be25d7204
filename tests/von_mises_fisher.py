"""Sampling von Mises–Fisher distributions and their mixtures on ``S^{d-1}`` (test and benchmark measures).

Wood, "Simulation of the von Mises Fisher distribution", Comm. Stat. Simul. Comput. 1994 (rejection sampling
of the cosine ``w = <x, mu>``, then a uniform tangent direction).
"""

from __future__ import annotations

import numpy as np

__all__ = ["sample_vmf", "sample_vmf_mixture", "shifted_vmf_mixtures"]


def sample_vmf(mean: np.ndarray, kappa: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` samples ``[count, d]`` float64 of vMF(``mean``, ``kappa``) on ``S^{d-1}``.

    Args:
        mean: ``[d]`` mean direction (normalised here). kappa: concentration (> 0). count: samples (>= 0).

    Raises:
        ValueError: if ``kappa <= 0``, ``d < 2`` or ``mean`` is zero.
    """
    mean = np.asarray(mean, dtype=np.float64)
    d = mean.shape[0]
    if kappa <= 0 or d < 2 or not np.linalg.norm(mean) > 0:
        raise ValueError(f"vMF needs kappa > 0, d >= 2 and a non-zero mean, got kappa={kappa}, d={d}")
    mean = mean / np.linalg.norm(mean)
    b = (d - 1) / (2 * kappa + np.sqrt(4 * kappa**2 + (d - 1) ** 2))
    x0 = (1 - b) / (1 + b)
    c = kappa * x0 + (d - 1) * np.log(1 - x0**2)
    w = np.empty(0)
    while len(w) < count:
        n = 2 * (count - len(w)) + 16
        z = rng.beta((d - 1) / 2, (d - 1) / 2, n)
        cand = (1 - (1 + b) * z) / (1 - (1 - b) * z)
        accept = kappa * cand + (d - 1) * np.log(1 - x0 * cand) - c >= np.log(rng.random(n))
        w = np.concatenate([w, cand[accept]])
    w = w[:count]
    v = rng.standard_normal((count, d))
    v -= (v @ mean)[:, None] * mean
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return w[:, None] * mean + np.sqrt(np.clip(1 - w**2, 0, None))[:, None] * v


def sample_vmf_mixture(
    means: np.ndarray, kappas: np.ndarray, weights: np.ndarray, count: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Samples of a vMF mixture: ``(points [count, d] float64, component labels [count] int64)``.

    Args:
        means: ``[K, d]`` component mean directions. kappas: ``[K]`` concentrations. weights: ``[K]`` mixture
            weights (normalised here). count: samples. seed: RNG seed.
    """
    rng = np.random.default_rng(seed)
    weights = np.asarray(weights, dtype=np.float64)
    labels = rng.choice(len(means), size=count, p=weights / weights.sum())
    points = np.empty((count, np.asarray(means).shape[1]))
    for k in range(len(means)):
        sel = labels == k
        points[sel] = sample_vmf(means[k], float(kappas[k]), int(sel.sum()), rng)
    return points, labels


def shifted_vmf_mixtures(
    dim: int, count: int, shift: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A spherical OT test problem with known structure: a 3-component vMF mixture and the same mixture moved.

    The source means are random unit vectors (the coordinate axes for ``dim = 3``, well separated on S^2); each
    target mean is its source mean rotated by ``shift`` radians in a random tangent direction. Concentration
    ``kappa = 30`` (``dim = 3``) or ``4 * dim``, equal weights; the draw is seeded by ``dim``.

    Args:
        dim: ambient dimension ``d >= 2`` (points on ``S^{d-1}``).
        count: samples per set.
        shift: rotation of every component mean, radians.

    Returns:
        ``source [count, d]``, its component ``labels [count]`` (int64), ``target [count, d]`` (float64) and the
        target means ``[3, d]``: an OT map should carry each source component onto its own target component.
    """
    rng = np.random.default_rng(dim)
    means = rng.standard_normal((3, dim))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    if dim == 3:
        means = np.eye(3)
    tangent = rng.standard_normal((3, dim))
    tangent -= (tangent * means).sum(1, keepdims=True) * means
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    target_means = np.cos(shift) * means + np.sin(shift) * tangent
    kappa = np.full(3, 30.0 if dim == 3 else 4.0 * dim)
    source, labels = sample_vmf_mixture(means, kappa, np.ones(3), count, seed=1)
    target, _ = sample_vmf_mixture(target_means, kappa, np.ones(3), count, seed=2)
    return source, labels, target, target_means
