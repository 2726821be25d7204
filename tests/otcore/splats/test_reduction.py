"""otcore.splats.reduction.reduce and otcore.splats.scene on the bundled real 3DGS sample (donut, 8,192 Gaussians):
exact counts, valid Gaussians, and bit-for-bit agreement with the GHAP chain and the pruning subsets it wraps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from otcore.splats.cameras import orbit_cameras
from otcore.splats.gaussian_pruning import select_subset
from otcore.splats.ghap import covariances_to_scales_quats, ghap_reduce, merge_appearance
from otcore.splats.rasterizer import hit_counts
from otcore.splats.reduction import REDUCTION_METHODS, reduce
from otcore.splats.scene import covariances, quats_to_rotations, scene_tensors
from storage.gaussians import GaussianScene, read_scene

DONUT = Path(__file__).resolve().parents[3] / "data" / "samples" / "gaussians" / "donut-8k.ply"
COUNT = 819


@pytest.fixture(scope="module")
def donut() -> GaussianScene:
    return read_scene(str(DONUT))


@pytest.fixture(scope="module")
def hits(donut: GaussianScene) -> np.ndarray:
    """The originals' pixel hit counts in 3 small training views (lightgaussian's input)."""
    t = scene_tensors(donut.means, donut.scales, donut.quats, donut.opacities, donut.sh_dc, donut.sh_rest)
    cameras = orbit_cameras(donut.means, n_views=3, width=32, height=32, seed=1, weights=donut.opacities)
    return hit_counts(t["means"], t["quats"], t["scales"], t["opacities"], cameras).numpy()


def _reduce(method: str, scene: GaussianScene, count: int = COUNT, **kwargs):
    return reduce(method, scene.means, scene.scales, scene.quats, scene.opacities, scene.sh_dc, scene.sh_rest, count,
                  **kwargs)


def test_covariances_match_the_scene_reader(donut: GaussianScene) -> None:
    np.testing.assert_array_equal(covariances(donut.scales, donut.quats), donut.covariances())
    rotations = quats_to_rotations(donut.quats)
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rotations.shape),
                               atol=1e-12)


@pytest.mark.parametrize("method", REDUCTION_METHODS)
def test_every_method_returns_count_valid_gaussians(donut: GaussianScene, hits: np.ndarray, method: str) -> None:
    reduced = _reduce(method, donut, pen_size=512, max_iterations=4, hits=hits)
    k = donut.sh_rest.shape[1]
    assert reduced.means.shape == (COUNT, 3) and reduced.scales.shape == (COUNT, 3)
    assert reduced.quats.shape == (COUNT, 4) and reduced.opacities.shape == (COUNT,)
    assert reduced.sh_dc.shape == (COUNT, 3) and reduced.sh_rest.shape == (COUNT, k, 3)
    assert np.isfinite(reduced.means).all() and np.isfinite(reduced.sh_dc).all()
    assert (reduced.scales > 0).all() and np.isfinite(reduced.scales).all()
    np.testing.assert_allclose(np.linalg.norm(reduced.quats, axis=1), 1.0, atol=1e-5)
    assert ((reduced.opacities >= 0) & (reduced.opacities <= 1)).all()
    GaussianScene(donut.scene_id, "", reduced.means, reduced.scales, reduced.quats, reduced.opacities,
                  reduced.sh_dc, reduced.sh_rest, None)  # the writer's own validation accepts it
    if method.startswith("ghap"):
        assert reduced.kept is None
    else:
        assert reduced.kept.shape == (COUNT,) and np.unique(reduced.kept).size == COUNT


@pytest.mark.parametrize("appearance", ["weighted", "nearest"])
def test_ghap_is_the_chain_it_replaces_bit_for_bit(donut: GaussianScene, appearance: str) -> None:
    """The task used to chain these calls itself; reduce must give the identical arrays."""
    reduced = _reduce("ghap", donut, pen_size=512, max_iterations=4, appearance=appearance)
    result = ghap_reduce(donut.means, donut.covariances(), donut.opacities, COUNT, pen_size=512, max_iterations=4)
    scales, quats = covariances_to_scales_quats(result.covariances)
    sh = np.concatenate([donut.sh_dc[:, None, :], donut.sh_rest], axis=1).reshape(len(donut), -1)
    opacities, merged = merge_appearance(result.assignment, result.costs, donut.opacities, sh, COUNT, appearance)
    merged = merged.reshape(COUNT, -1, 3)
    for got, want in [(reduced.means, result.means), (reduced.scales, scales), (reduced.quats, quats),
                      (reduced.opacities, opacities), (reduced.sh_dc, merged[:, 0]), (reduced.sh_rest, merged[:, 1:])]:
        np.testing.assert_array_equal(got, want)


def test_ghap_cost_option_and_method_names(donut: GaussianScene) -> None:
    """``ghap`` follows ``cost``; ``ghap-kl`` / ``ghap-euclidean`` fix it (so one run can hold both)."""
    kl = _reduce("ghap", donut, pen_size=512, max_iterations=4)
    euclidean = _reduce("ghap", donut, pen_size=512, max_iterations=4, cost="euclidean")
    for name, want in (("ghap-kl", kl), ("ghap-euclidean", euclidean)):
        got = _reduce(name, donut, pen_size=512, max_iterations=4, cost="euclidean" if name == "ghap-kl" else "kl")
        np.testing.assert_array_equal(got.means, want.means)
        np.testing.assert_array_equal(got.scales, want.scales)
    assert not np.array_equal(kl.means, euclidean.means)
    with pytest.raises(ValueError, match="cost"):
        _reduce("ghap", donut, cost="l2")


@pytest.mark.parametrize("method", ["random", "top_opacity", "lightgaussian"])
def test_pruning_keeps_the_selected_rows(donut: GaussianScene, hits: np.ndarray, method: str) -> None:
    reduced = _reduce(method, donut, seed=3, hits=hits)
    keep = select_subset(method, donut.opacities, donut.scales, COUNT, seed=3, hits=hits)
    np.testing.assert_array_equal(reduced.kept, keep)
    for got, want in [(reduced.means, donut.means), (reduced.scales, donut.scales), (reduced.quats, donut.quats),
                      (reduced.opacities, donut.opacities), (reduced.sh_dc, donut.sh_dc),
                      (reduced.sh_rest, donut.sh_rest)]:
        np.testing.assert_array_equal(got, want[keep])


def test_unknown_method_and_bad_count(donut: GaussianScene) -> None:
    with pytest.raises(ValueError):
        _reduce("median", donut)
    with pytest.raises(ValueError):
        _reduce("ghap", donut, count=0)
    with pytest.raises(ValueError):
        _reduce("top_opacity", donut, count=len(donut) + 1)
