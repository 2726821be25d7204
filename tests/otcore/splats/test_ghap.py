"""GHAP reduction (otcore.splats.ghap) and the pruning baselines on the bundled real 3DGS sample (donut, 8,192
Gaussians)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from otcore.splats.gaussian_pruning import importance_scores, select_subset
from otcore.splats.ghap import allocate_counts, covariances_to_scales_quats, ghap_reduce, merge_appearance
from storage.gaussians import quats_to_rotations, read_scene

DONUT = Path(__file__).resolve().parents[3] / "data" / "samples" / "gaussians" / "donut-8k.ply"


@pytest.fixture(scope="module")
def donut():
    scene = read_scene(str(DONUT))
    return scene, scene.covariances()


def _kl_matrix(mu_i, cov_i, mu_j, cov_j) -> np.ndarray:
    """Plain KL(N_i || N_j) for all pairs, straight from the textbook formula (float64)."""
    inv = np.linalg.inv(cov_j)
    diff = mu_j[None, :, :] - mu_i[:, None, :]
    trace = np.einsum("jab,iba->ij", inv, cov_i)
    maha = np.einsum("ija,jab,ijb->ij", diff, inv, diff)
    logdet = np.linalg.slogdet(cov_j)[1][None, :] - np.linalg.slogdet(cov_i)[1][:, None]
    return 0.5 * (trace + maha - 3.0 + logdet)


def test_allocate_counts_is_exact_and_proportional():
    sizes = np.array([512, 511, 511, 7, 0, 1000])
    for target in (1, 6, 100, 255, 2541):
        counts = allocate_counts(sizes, target)
        assert int(counts.sum()) == target
        assert bool((counts <= torch.as_tensor(sizes)).all())
        assert bool(((counts - torch.as_tensor(sizes) * target / sizes.sum()).abs() < 1).all())
    with pytest.raises(ValueError, match="target count"):
        allocate_counts(sizes, 0)


@pytest.mark.parametrize("target", [1, 5, 819, 1000, 4096, 8191])
def test_hits_the_target_count_exactly(donut, target):
    scene, cov = donut
    result = ghap_reduce(scene.means, cov, scene.opacities, target, pen_size=512, max_iterations=4)
    assert result.means.shape == (target, 3) and result.covariances.shape == (target, 3, 3)
    members = np.bincount(result.assignment, minlength=target)
    assert members.shape == (target,) and members.min() >= 1  # every reduced Gaussian holds some original
    assert np.all(np.linalg.eigvalsh(result.covariances) > 0)


def test_moment_matching_conserves_mass_and_moments(donut):
    scene, cov = donut
    w = scene.opacities.astype(np.float64)
    mu = scene.means.astype(np.float64)
    result = ghap_reduce(mu, cov, w, 819)
    assert result.weights.sum() == pytest.approx(w.sum(), rel=1e-12)
    np.testing.assert_allclose(result.weights, np.bincount(result.assignment, weights=w, minlength=819), rtol=1e-10)
    first = (result.weights[:, None] * result.means).sum(0)
    np.testing.assert_allclose(first, (w[:, None] * mu).sum(0), rtol=1e-9, atol=1e-9)
    outer = np.einsum("ja,jb->jab", result.means, result.means)
    second = np.einsum("j,jab->ab", result.weights, result.covariances + outer)
    original = np.einsum("i,iab->ab", w, cov + np.einsum("ia,ib->iab", mu, mu))
    np.testing.assert_allclose(second, original, rtol=1e-6)


def test_converged_assignment_is_the_kl_argmin_within_each_pen(donut):
    scene, cov = donut
    mu = scene.means.astype(np.float64)
    result = ghap_reduce(mu, cov, scene.opacities, 300, pen_size=2048, max_iterations=100)
    assert result.ctd == sorted(result.ctd, reverse=True) or result.reseeded > 0
    assert result.ctd[-1] < result.ctd[0]
    for pen in range(result.n_pens):
        members = np.flatnonzero(result.pen == pen)
        slots = np.unique(result.assignment[members])
        kl = _kl_matrix(mu[members], cov[members], result.means[slots], result.covariances[slots])
        chosen = np.searchsorted(slots, result.assignment[members])
        np.testing.assert_allclose(result.costs[members], kl[np.arange(len(members)), chosen], rtol=1e-5, atol=1e-6)
        # a fixed point of the alternation: nobody has a strictly cheaper reduced Gaussian in its pen
        assert np.all(kl[np.arange(len(members)), chosen] <= kl.min(axis=1) + 1e-6 * (1 + np.abs(kl.min(axis=1))))


def test_no_reduction_keeps_every_gaussian(donut):
    scene, cov = donut
    subset = slice(0, 600)
    result = ghap_reduce(scene.means[subset], cov[subset], scene.opacities[subset], 600, pen_size=128)
    order = np.argsort(result.assignment)
    np.testing.assert_allclose(result.means[result.assignment], scene.means[subset], atol=1e-6)
    assert np.all(result.costs < 1e-4) and len(np.unique(result.assignment[order])) == 600


def test_bad_input_is_rejected(donut):
    scene, cov = donut
    with pytest.raises(ValueError, match="target count"):
        ghap_reduce(scene.means, cov, scene.opacities, 0)
    with pytest.raises(ValueError, match="non-negative"):
        ghap_reduce(scene.means, cov, -scene.opacities, 10)
    with pytest.raises(ValueError, match=r"\[8192, 3, 3\]"):
        ghap_reduce(scene.means, cov[:10], scene.opacities, 10)


def test_covariances_to_scales_quats_round_trip(donut):
    scene, cov = donut
    scales, quats = covariances_to_scales_quats(cov)
    rotations = quats_to_rotations(quats)
    assert np.allclose(np.linalg.det(rotations), 1.0, atol=1e-5) and np.all(quats[:, 0] >= 0)
    rebuilt = np.einsum("nij,nj,nkj->nik", rotations, scales.astype(np.float64) ** 2, rotations)
    scale2 = (scene.scales.astype(np.float64) ** 2).max(1)[:, None, None]
    assert np.abs(rebuilt - cov).max(axis=(1, 2)).max() < 1e-5 * scale2.max()
    np.testing.assert_allclose(np.sort(scales, 1), np.sort(np.maximum(scene.scales, 1e-7), 1), rtol=2e-3, atol=1e-7)


def test_merge_appearance_modes():
    assignment = np.array([0, 0, 1, 1, 1])
    opacities = np.array([0.2, 0.8, 0.5, 0.5, 1.0])
    sh = np.arange(10, dtype=np.float64).reshape(5, 2)
    costs = np.array([0.3, 0.1, 0.5, 0.05, 0.2])
    o, s = merge_appearance(assignment, costs, opacities, sh, 2, "weighted")
    np.testing.assert_allclose(o, [(0.04 + 0.64) / 1.0, (0.25 + 0.25 + 1.0) / 2.0], rtol=1e-6)
    np.testing.assert_allclose(s[0], (0.2 * sh[0] + 0.8 * sh[1]) / 1.0, rtol=1e-6)
    o, s = merge_appearance(assignment, costs, opacities, sh, 2, "nearest")
    np.testing.assert_array_equal(s, sh[[1, 3]])
    with pytest.raises(ValueError, match="at least one"):
        merge_appearance(assignment, costs, opacities, sh, 3)


def test_pruning_baselines(donut):
    scene, _ = donut
    for method in ("random", "top_opacity", "lightgaussian"):
        keep = select_subset(method, scene.opacities, scene.scales, 819, seed=3)
        assert len(np.unique(keep)) == 819
        assert np.array_equal(keep, select_subset(method, scene.opacities, scene.scales, 819, seed=3))
    top = select_subset("top_opacity", scene.opacities, scene.scales, 819)
    assert scene.opacities[top].min() >= np.sort(scene.opacities)[-819]
    scores = importance_scores("lightgaussian", scene.opacities, scene.scales)
    assert np.all(scores <= scene.opacities + 1e-7) and np.all(scores >= 0)
    assert not np.array_equal(select_subset("random", scene.opacities, scene.scales, 819, seed=4),
                              select_subset("random", scene.opacities, scene.scales, 819, seed=3))
    with pytest.raises(ValueError, match="pruning method"):
        select_subset("bogus", scene.opacities, scene.scales, 10)
