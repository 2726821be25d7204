"""Tests of otcore.ot.assignment, otcore.ot.auction, otcore.points.em_kd and otcore.points.chamfer: balanced k-d
partition, exact EMD, batched auction, EM-kD and Chamfer-L2."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
import torch
import trimesh

import otcore.ot.auction as auction
import otcore.points.chamfer as chamfer
from otcore.kd_tree import kd_partition, kd_split_pair
from otcore.mesh.metrics import normalize_to_unit_diagonal
from otcore.ot.assignment import exact_assignment, exact_emd
from otcore.ot.auction import AUCTION_REL_TOL, auction_assignment
from otcore.points.chamfer import chamfer_l2
from otcore.points.em_kd import em_kd

CRANE = Path(__file__).resolve().parents[3] / "data" / "samples" / "consistent" / "crane-16.npz"


@pytest.fixture(scope="module")
def shapes(spot) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two poses ``[V, 3]`` (unit diagonal) sharing ``faces``: bundled crane frames, else spot and a bent spot."""
    if CRANE.exists():
        with np.load(CRANE) as data:
            vertices, faces = data["vertices"], data["faces"]
        return normalize_to_unit_diagonal(vertices[0])[0], normalize_to_unit_diagonal(vertices[1])[0], faces
    bent = spot.vertices + 0.1 * np.sin(4.0 * spot.vertices[:, [1, 2, 0]])
    return spot.vertices, normalize_to_unit_diagonal(bent)[0], spot.faces


def _sample(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int) -> np.ndarray:
    points, _ = trimesh.sample.sample_surface(trimesh.Trimesh(vertices, faces, process=False), count, seed=seed)
    return np.asarray(points, dtype=np.float64)


def _exact_cost(cost: np.ndarray) -> float:
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return float(cost[rows, cols].sum())


# ----------------------------------------------------------------------------------------------------------------
# k-d partition


@pytest.mark.parametrize(("count", "leaf_size"), [(1, 4), (5, 1), (1000, 64), (2049, 256), (4096, 1024), (300, 7)])
def test_kd_partition_is_a_balanced_median_split(count: int, leaf_size: int) -> None:
    points = np.random.default_rng(count).random((count, 3))
    part = kd_partition(points, leaf_size)
    order, sizes = part.order.numpy(), part.sizes.numpy()
    depth = int(np.log2(part.n_leaves))
    assert part.n_leaves == 2**depth
    assert -(-count // 2**depth) <= leaf_size and (depth == 0 or -(-count // 2 ** (depth - 1)) > leaf_size)
    np.testing.assert_array_equal(np.sort(order), np.arange(count))
    assert sizes.max() <= leaf_size and sizes.max() - sizes.min() <= 1
    offsets = part.offsets.numpy()
    # At every depth k, the left child's points lie at or below the right child's along axis k % 3.
    for level in range(depth):
        span = 2 ** (depth - level)  # leaves per node at this depth
        for node in range(2**level):
            first, middle, last = (offsets[node * span + i * span // 2] for i in range(3))
            coordinate = points[order, level % 3]
            left, right = coordinate[first:middle], coordinate[middle:last]
            if left.size and right.size:
                assert left.max() <= right.min()
            assert right.size - left.size in (0, 1)


def test_kd_partition_offsets_depend_only_on_size() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random((3001, 3)), rng.normal(size=(3001, 3)) * 5.0
    part_a, part_b = kd_partition(a, 100), kd_partition(torch.from_numpy(b), 100)
    assert part_a.n_leaves == part_b.n_leaves == 32
    torch.testing.assert_close(part_a.offsets, part_b.offsets)
    torch.testing.assert_close(kd_partition(torch.from_numpy(a), 100).order, part_a.order)


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((0, 3)), np.array([[0.0, np.nan, 1.0]])])
def test_kd_partition_rejects_bad_points(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        kd_partition(bad, 4)
    with pytest.raises(ValueError, match="leaf_size"):
        kd_partition(np.zeros((4, 3)), 0)


# ----------------------------------------------------------------------------------------------------------------
# Auction


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [1, 2, 7, 33, 120])
@pytest.mark.parametrize("numpy_end_game", [True, False])
def test_auction_is_within_its_bound_of_the_optimum(
    dtype: torch.dtype, size: int, numpy_end_game: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not numpy_end_game:
        monkeypatch.setattr(auction, "_SMALL_ROWS", 0)
    generator = torch.Generator().manual_seed(size)
    cost = torch.rand(3, size, size, generator=generator, dtype=dtype) * 2.0
    for epsilon in (None, 1e-3):
        result = auction_assignment(cost, epsilon=epsilon)
        assert result.assignment.shape == (3, size) and result.cost.shape == (3,)
        for b in range(3):
            assert sorted(result.assignment[b].tolist()) == list(range(size))
            optimum = _exact_cost(cost[b].double().numpy())
            achieved = float(cost[b].double().gather(1, result.assignment[b][:, None]).sum())
            assert float(result.cost[b]) == pytest.approx(achieved, rel=1e-12)
            assert optimum - 1e-5 <= achieved <= optimum + size * result.epsilon + 1e-9
            if epsilon is None:
                assert achieved <= optimum * (1 + AUCTION_REL_TOL) + 1e-9
            else:
                assert result.epsilon == pytest.approx(epsilon)


def test_auction_on_point_clouds_is_certified(shapes) -> None:
    v0, v1, faces = shapes
    x = torch.from_numpy(_sample(v0, faces, 4 * 256, 3)).float().view(4, 256, 3)
    y = torch.from_numpy(_sample(v1, faces, 4 * 256, 4)).float().view(4, 256, 3)
    cost = torch.cdist(x, y)
    result = auction_assignment(cost)
    for b in range(4):
        optimum = _exact_cost(cost[b].double().numpy())
        assert optimum - 1e-4 <= float(result.cost[b]) <= optimum * (1 + AUCTION_REL_TOL)


def test_auction_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        auction_assignment(torch.zeros(3, 4))
    with pytest.raises(ValueError):
        auction_assignment(torch.zeros(1, 3, 4))
    with pytest.raises(ValueError):
        auction_assignment(torch.zeros(1, 3, 3, dtype=torch.int64))
    with pytest.raises(ValueError):
        auction_assignment(torch.full((1, 2, 2), float("nan")))
    with pytest.raises(ValueError):
        auction_assignment(torch.zeros(1, 3, 3), epsilon=0.0)
    with pytest.raises(ValueError):
        auction_assignment(torch.zeros(1, 3, 3), scaling=1.0)


# ----------------------------------------------------------------------------------------------------------------
# EM-kD and exact EMD


def test_em_kd_bounds_the_exact_emd_from_above(shapes) -> None:
    v0, v1, faces = shapes
    for count, seed, leaves in ((2048, 0, (256, 512)), (1024, 1, (128, 256)), (1536, 2, (192,))):
        x, y = _sample(v0, faces, count, seed), _sample(v1, faces, count, seed + 100)
        exact = exact_emd(x, y)
        for leaf_size in leaves:
            per_leaf = em_kd(x, y, leaf_size, solver="exact")
            auction = em_kd(x, y, leaf_size)
            assert per_leaf.n_leaves == auction.n_leaves == 2 ** int(np.ceil(np.log2(count / leaf_size)))
            assert per_leaf.em_kd >= exact - 1e-12
            # Every leaf is certified within AUCTION_REL_TOL of its optimum, hence so is the sum.
            assert per_leaf.em_kd - 1e-7 <= auction.em_kd <= per_leaf.em_kd * (1 + AUCTION_REL_TOL)
            for result in (per_leaf, auction):
                assert sorted(result.assignment.tolist()) == list(range(count))


def test_single_leaf_em_kd_is_the_exact_emd(shapes) -> None:
    v0, v1, faces = shapes
    x, y = _sample(v0, faces, 700, 5), _sample(v1, faces, 700, 6)
    exact = exact_emd(x, y)
    assert exact == pytest.approx(np.linalg.norm(x - y[exact_assignment(x, y)], axis=1).mean())
    per_leaf = em_kd(x, y, leaf_size=700, solver="exact")
    assert per_leaf.n_leaves == 1
    assert per_leaf.em_kd == pytest.approx(exact, rel=1e-9)
    auction = em_kd(x, y, leaf_size=4096)
    assert exact - 1e-7 <= auction.em_kd <= exact * (1 + AUCTION_REL_TOL)
    tight = em_kd(x, y, leaf_size=4096, epsilon=1e-7)
    assert tight.em_kd == pytest.approx(exact, rel=1e-5)


def test_em_kd_of_a_permuted_copy_is_zero(shapes) -> None:
    v0, _, faces = shapes
    x = _sample(v0, faces, 3000, 7)  # leaf 256: 16 leaves of 187 or 188 points (padded); leaf 1024: 4 of 750
    perm = np.random.default_rng(0).permutation(len(x))
    for leaf_size in (256, 1024):
        result = em_kd(x, x[perm], leaf_size)
        assert result.em_kd == 0.0
        np.testing.assert_array_equal(perm[result.assignment.numpy()], np.arange(len(x)))


def test_em_kd_with_uneven_leaves_is_a_valid_upper_bound() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.random((1003, 3)), rng.random((1003, 3)) + [0.3, 0.0, 0.0]
    auction = em_kd(torch.from_numpy(x).float(), y, leaf_size=100)
    per_leaf = em_kd(x, y, leaf_size=100, solver="exact")
    assert auction.n_leaves == 16 and auction.leaf_size == 100 and auction.solver == "auction"
    assert sorted(auction.assignment.tolist()) == list(range(1003))
    assert per_leaf.em_kd - 1e-6 <= auction.em_kd <= per_leaf.em_kd * (1 + AUCTION_REL_TOL) + 1e-6
    assert auction.em_kd >= exact_emd(x, y)
    # Five points in leaves of one: eight leaves, three of them empty.
    tiny_x, tiny_y = x[:5], y[:5]
    partitions = {"axis": (kd_partition(tiny_x, 1), kd_partition(tiny_y, 1)),
                  "pca": kd_split_pair(torch.from_numpy(tiny_x), torch.from_numpy(tiny_y), 3)}
    for solver, split in itertools.product(("auction", "exact"), ("axis", "pca")):
        result = em_kd(tiny_x, tiny_y, leaf_size=1, solver=solver, split=split)
        assert result.n_leaves == 8 and sorted(result.assignment.tolist()) == list(range(5))
        part_x, part_y = partitions[split]
        paired = np.empty(5, dtype=np.int64)
        paired[part_x.order.numpy()] = part_y.order.numpy()  # leaf s of x with leaf s of y, one point each
        np.testing.assert_array_equal(result.assignment.numpy(), paired)


def test_emd_functions_reject_unequal_clouds() -> None:
    x, y = np.zeros((1000, 3)), np.ones((999, 3))
    for call in (lambda: em_kd(x, y), lambda: em_kd(x, y, solver="exact"), lambda: exact_emd(x, y)):
        with pytest.raises(ValueError, match="1000.*999"):
            call()
    with pytest.raises(ValueError, match="dimension"):
        exact_assignment(np.zeros((5, 3)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="solver"):
        em_kd(x, x, solver="sinkhorn")
    with pytest.raises(ValueError, match="split"):
        em_kd(x, x, split="median")
    with pytest.raises(ValueError, match="non-finite"):
        em_kd(np.full((4, 3), np.inf), x[:4])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_em_kd_on_gpu_matches_cpu(shapes) -> None:
    v0, v1, faces = shapes
    x, y = _sample(v0, faces, 8192, 8), _sample(v1, faces, 8192, 9)
    gpu = em_kd(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda())
    cpu = em_kd(x, y, solver="exact")
    assert gpu.assignment.device.type == "cuda"
    assert cpu.em_kd - 1e-7 <= gpu.em_kd <= cpu.em_kd * (1 + AUCTION_REL_TOL)


# ----------------------------------------------------------------------------------------------------------------
# Chamfer-L2


def _chamfer_numpy(x: np.ndarray, y: np.ndarray) -> float:
    squared = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return float(squared.min(1).mean() + squared.min(0).mean())


def test_chamfer_l2_matches_brute_force_and_is_symmetric() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.random((300, 3)), rng.random((200, 3))
    value = chamfer_l2(x, y, chunk=64)
    assert value.ndim == 0 and value.dtype == torch.float64
    assert float(value) == pytest.approx(_chamfer_numpy(x, y), rel=1e-12)
    assert float(chamfer_l2(y, x)) == pytest.approx(float(value), rel=1e-12)
    assert float(chamfer_l2(x, x)) == 0.0
    assert float(chamfer_l2(x, x[rng.permutation(300)])) == 0.0


def test_chamfer_l2_batched_and_differentiable() -> None:
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.random((2, 150, 3))).requires_grad_(True)
    y = torch.from_numpy(rng.random((2, 90, 3)))
    value = chamfer_l2(x, y, chunk=32)
    assert value.shape == (2,)
    for b in range(2):
        expected = _chamfer_numpy(x[b].detach().numpy(), y[b].numpy())
        assert float(value[b].detach()) == pytest.approx(expected, rel=1e-12)
    value.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Finite-difference check of one coordinate (the nearest neighbours do not change for a tiny step).
    step = 1e-7
    moved = x.detach().clone()
    moved[1, 7, 2] += step
    numeric = (chamfer_l2(moved, y).sum() - value.sum().detach()) / step
    assert float(x.grad[1, 7, 2]) == pytest.approx(float(numeric), rel=1e-4, abs=1e-9)


def test_brute_force_neighbours_match_the_kd_tree() -> None:
    # The chunked brute-force search serves non-CPU devices; on CPU chamfer_l2 queries a k-d tree.
    rng = np.random.default_rng(6)
    a, b = torch.from_numpy(rng.random((2, 700, 3))), torch.from_numpy(rng.random((2, 500, 3)))
    brute = chamfer._nearest_both(a, b, chunk=128)
    tree = chamfer._nearest_kdtree(a, b)
    for found, expected in zip(brute, tree):
        torch.testing.assert_close(found, expected)


def test_chamfer_l2_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        chamfer_l2(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError):
        chamfer_l2(np.zeros((2, 4, 3)), np.zeros((3, 4, 3)))
    with pytest.raises(ValueError):
        chamfer_l2(np.zeros((0, 3)), np.zeros((4, 3)))
