"""GHAP reduction (otcore.splats.ghap, both cost forms) and the pruning baselines on the bundled real 3DGS sample
(donut, 8,192 Gaussians)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from otcore.splats.cameras import orbit_cameras
from otcore.splats.gaussian_pruning import importance_scores, select_subset
from otcore.splats.ghap import GHAP_COSTS, allocate_counts, covariances_to_scales_quats, ghap_reduce, merge_appearance
from otcore.splats.rasterizer import hit_counts
from otcore.splats.scene import scene_tensors
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


@pytest.fixture(scope="module")
def donut_hits(donut):
    """Pixel hit counts of the donut's Gaussians in 4 small orbit views (the lightgaussian baseline's input)."""
    scene, _ = donut
    t = scene_tensors(scene.means, scene.scales, scene.quats, scene.opacities, scene.sh_dc, scene.sh_rest)
    cameras = orbit_cameras(scene.means, n_views=4, width=40, height=40, seed=1, weights=scene.opacities)
    return hit_counts(t["means"], t["quats"], t["scales"], t["opacities"], cameras).numpy()


def test_pruning_baselines(donut, donut_hits):
    scene, _ = donut
    for method in ("random", "top_opacity", "lightgaussian"):
        keep = select_subset(method, scene.opacities, scene.scales, 819, seed=3, hits=donut_hits)
        assert len(np.unique(keep)) == 819
        assert np.array_equal(keep, select_subset(method, scene.opacities, scene.scales, 819, seed=3, hits=donut_hits))
    top = select_subset("top_opacity", scene.opacities, scene.scales, 819)
    assert scene.opacities[top].min() >= np.sort(scene.opacities)[-819]
    assert not np.array_equal(select_subset("random", scene.opacities, scene.scales, 819, seed=4),
                              select_subset("random", scene.opacities, scene.scales, 819, seed=3))
    with pytest.raises(ValueError, match="pruning method"):
        select_subset("bogus", scene.opacities, scene.scales, 10)


def test_lightgaussian_is_the_global_significance(donut, donut_hits):
    """GS_j = hits_j * opacity_j * (V_j / V_ref)^0.1 (Fan et al. 2024): unseen Gaussians go first, and the kept set is
    neither the most opaque nor the most seen Gaussians alone."""
    scene, _ = donut
    hits = donut_hits
    assert (hits == 0).any() and hits.max() > 10  # some Gaussians are hidden or off-screen in every view
    scores = importance_scores("lightgaussian", scene.opacities, scene.scales, hits)
    volume = np.prod(scene.scales.astype(np.float64), axis=1)
    reference = np.sort(volume)[::-1][int(0.9 * len(volume))]
    np.testing.assert_allclose(scores, hits * scene.opacities * (volume / reference) ** 0.1, rtol=1e-12)
    assert np.all(scores[hits == 0] == 0)
    keep = select_subset("lightgaussian", scene.opacities, scene.scales, 819, hits=hits)
    assert hits[keep].min() > 0  # far more than 819 Gaussians are seen, so no unseen one is kept
    assert scores[keep].min() >= np.delete(scores, keep).max()
    top = select_subset("top_opacity", scene.opacities, scene.scales, 819)
    most_seen = np.sort(np.argsort(-hits, kind="stable")[:819])
    assert not np.array_equal(keep, top) and not np.array_equal(keep, most_seen)
    with pytest.raises(ValueError, match="hit counts"):
        select_subset("lightgaussian", scene.opacities, scene.scales, 10)
    with pytest.raises(ValueError, match="hits must be"):
        importance_scores("lightgaussian", scene.opacities, scene.scales, hits[:10])


@pytest.mark.parametrize("cost", GHAP_COSTS)
def test_each_cost_lowers_the_composite_divergence_every_round(donut, cost):
    """The MM scheme of the CTD paper: every round (assignment + exact update, with the exact-count re-seeding)
    lowers the weighted CTD, for the KL form and for the released code's Euclidean + Frobenius form."""
    scene, cov = donut
    result = ghap_reduce(scene.means, cov, scene.opacities, 819, pen_size=1024, max_iterations=40, cost=cost)
    assert result.cost == cost and result.means.shape == (819, 3) and result.iterations >= 3
    assert np.bincount(result.assignment, minlength=819).min() >= 1
    ctd = np.asarray(result.ctd)
    assert np.all(np.diff(ctd) <= 1e-9 * ctd[:-1]), ctd  # non-increasing up to rounding (KL: the 1e-9 ridge)
    assert ctd[-1] < 0.9 * ctd[0]
    w = scene.opacities.astype(np.float64)
    assert ctd[-1] == pytest.approx((w * result.costs).sum() / w.sum(), rel=1e-9)


def test_euclidean_cost_averages_without_the_spread_of_means(donut):
    """The released code's form: each reduced Gaussian is the weighted average of its members' means and of their
    covariances (no spread-of-means term), and every original sits with its cheapest reduced Gaussian in its pen."""
    scene, cov = donut
    mu, w = scene.means.astype(np.float64), scene.opacities.astype(np.float64)
    result = ghap_reduce(mu, cov, w, 300, pen_size=2048, max_iterations=200, cost="euclidean")
    mass = np.bincount(result.assignment, weights=w, minlength=300)
    means = np.stack([np.bincount(result.assignment, weights=w * mu[:, d], minlength=300) for d in range(3)], 1)
    np.testing.assert_allclose(result.means, means / mass[:, None], rtol=1e-9, atol=1e-9)
    covs = np.zeros((300, 3, 3))
    np.add.at(covs, result.assignment, w[:, None, None] * cov)
    np.testing.assert_allclose(result.covariances, covs / mass[:, None, None], rtol=1e-8, atol=1e-14)
    kl_result = ghap_reduce(mu, cov, w, 300, pen_size=2048, max_iterations=200, cost="kl")
    # moment matching adds the spread of the means: the KL form's merged Gaussians are larger
    assert np.trace(kl_result.covariances, axis1=1, axis2=2).sum() > np.trace(result.covariances, axis1=1,
                                                                               axis2=2).sum()
    for pen in range(result.n_pens):
        members = np.flatnonzero(result.pen == pen)
        slots = np.unique(result.assignment[members])
        cost = (((mu[members, None] - result.means[None, slots]) ** 2).sum(-1)
                + ((cov[members, None] - result.covariances[None, slots]) ** 2).sum((-1, -2)))
        chosen = np.searchsorted(slots, result.assignment[members])
        np.testing.assert_allclose(result.costs[members], cost[np.arange(len(members)), chosen], rtol=1e-6,
                                   atol=1e-15)
        assert np.all(cost[np.arange(len(members)), chosen] <= cost.min(axis=1) * (1 + 1e-9) + 1e-18)
    with pytest.raises(ValueError, match="cost"):
        ghap_reduce(mu, cov, w, 10, cost="wasserstein")
