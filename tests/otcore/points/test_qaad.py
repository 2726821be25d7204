"""QAAD_GREEDY as the paper states it (paired k-d leaves, per-leaf auction, repair and random fill), the batched
k-d split and EM-kD behind it, and the paper switches of the autodecoder (PointNet codes, q_i re-feed, Eq. 11,
the AtlasNetV2 baseline, the Table 1 variants), on the bundled crane frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otcore.kd_tree import kd_split, kd_split_batch, kd_split_pair
from otcore.points.autodecoder import (
    ATLASNETV2_HIDDEN,
    AtlasNetV2Decoder,
    Autodecoder,
    NeuralQAADDecoder,
    PointNetEncoder,
    count_parameters,
)
from otcore.points.autodecoder_training import (
    BASELINE_PATCHES,
    VARIANTS,
    TrainingConfig,
    new_training_state,
    normalization,
    train,
    variant_config,
)
from otcore.points.em_kd import em_kd
from otcore.points.qaad import augmented_chamfer, leafwise_assignment, qaad_greedy, repair_bijection


@pytest.fixture(scope="module")
def crane(consistent_dir) -> torch.Tensor:
    """All 16 bundled crane frames, 2048 vertices each (a fixed subset), normalised as training does."""
    vertices = np.load(consistent_dir / "crane-16.npz")["vertices"]
    subset = np.random.default_rng(0).choice(vertices.shape[1], 2048, replace=False)
    points = vertices[:, np.sort(subset)]
    centre, scale = normalization(points)
    return torch.from_numpy((points - centre) / scale).float()


def _is_permutation(sigma: torch.Tensor) -> bool:
    return bool(torch.equal(torch.sort(sigma, dim=-1).values, torch.arange(sigma.shape[-1]).expand_as(sigma)))


def _cost(outputs: torch.Tensor, targets: torch.Tensor, sigma: torch.Tensor) -> float:
    return float((outputs.double() - targets.double()[sigma]).norm(dim=1).mean())


@pytest.mark.parametrize(("a", "b", "noise", "split"), [
    (0, 0, 0.01, "pca"),  # a decoder output near its target: a noisy copy
    (0, 1, 0.0, "pca"),  # the next frame
    (3, 12, 0.0, "pca"),  # a distant pose
    (5, 15, 0.02, "axis"),  # the paper's cyclic axis split
])
def test_qaad_greedy_is_within_5_percent_of_the_exact_per_leaf_assignment(crane, a, b, noise, split):
    generator = torch.Generator().manual_seed(a * 100 + b)
    outputs = crane[a] + noise * torch.randn(crane[a].shape, generator=generator)
    sigma = qaad_greedy(outputs, crane[b], leaf_size=512, split=split)
    assert _is_permutation(sigma)
    exact = em_kd(outputs, crane[b], leaf_size=512, solver="exact", split=split).em_kd  # scipy LSAP, same leaves
    cost = _cost(outputs, crane[b], sigma)
    assert exact * (1 - 1e-9) <= cost <= 1.05 * exact
    assert cost <= (1 + 1e-3) * exact  # in fact the auction's certified per-leaf gap
    reference = qaad_greedy(outputs, crane[b], leaf_size=512, split=split, assignment="exact")
    assert _cost(outputs, crane[b], reference) == pytest.approx(exact, rel=1e-9)


def test_qaad_greedy_is_batched_and_recovers_a_permutation(crane):
    generator = torch.Generator().manual_seed(1)
    perms = torch.stack([torch.randperm(crane.shape[1], generator=generator) for _ in range(3)])
    shuffled = crane[:3].gather(1, perms[:, :, None].expand(-1, -1, 3))
    sigma = qaad_greedy(shuffled, crane[:3], leaf_size=256)
    assert sigma.shape == (3, crane.shape[1]) and torch.equal(sigma, perms)
    # a chunk of one shape at a time gives the same bijections as one auction over all leaves
    assert torch.equal(qaad_greedy(shuffled, crane[:3], leaf_size=256, max_cost_entries=1), perms)


def test_random_assignment_is_a_seeded_permutation(crane):
    first = qaad_greedy(crane[:2], crane[2:4], assignment="random", generator=torch.Generator().manual_seed(4))
    again = qaad_greedy(crane[:2], crane[2:4], assignment="random", generator=torch.Generator().manual_seed(4))
    assert _is_permutation(first) and torch.equal(first, again)
    greedy = qaad_greedy(crane[:2], crane[2:4], leaf_size=512)
    random_cost = sum(_cost(crane[i], crane[2 + i], first[i]) for i in range(2))
    assert sum(_cost(crane[i], crane[2 + i], greedy[i]) for i in range(2)) < 0.5 * random_cost
    with pytest.raises(ValueError, match="assignment"):
        qaad_greedy(crane[0], crane[1], assignment="nearest")


def test_repair_resolves_collisions_by_distance_and_fills_at_random():
    outputs = torch.tensor([[[0.0, 0, 0], [0.1, 0, 0], [5.0, 0, 0], [9.0, 0, 0]]])
    targets = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]]])
    sigma = torch.tensor([[0, 0, -1, 3]])  # rows 0 and 1 collide on target 0; row 2 is unassigned
    repaired = repair_bijection(sigma, outputs, targets, torch.Generator().manual_seed(0))
    assert _is_permutation(repaired)
    assert repaired[0, 0] == 0 and repaired[0, 3] == 3  # the closer claimant keeps target 0; row 3 untouched
    assert set(repaired[0, 1:3].tolist()) == {1, 2}  # the others got the free targets
    fills = {tuple(repair_bijection(sigma, outputs, targets, torch.Generator().manual_seed(s))[0, 1:3].tolist())
             for s in range(20)}
    assert fills == {(1, 2), (2, 1)}  # in random order
    complete = torch.tensor([[3, 2, 1, 0]])
    assert torch.equal(repair_bijection(complete, outputs, targets), complete)


@pytest.mark.parametrize("split", ["pca", "axis"])
def test_kd_split_batch_equals_the_per_pair_splits(crane, split):
    order_x, order_y, offsets = kd_split_batch(crane[:3], crane[3:6], 4, split)
    for b in range(3):
        if split == "pca":
            part_x, part_y = kd_split_pair(crane[b], crane[3 + b], 4)
        else:
            part_x, part_y = kd_split(crane[b], 4), kd_split(crane[3 + b], 4)
        assert torch.equal(offsets, part_x.offsets)
        for order, part in ((order_x[b], part_x), (order_y[b], part_y)):
            for leaf in range(16):  # same leaves (the order inside a leaf is free)
                lo, hi = int(offsets[leaf]), int(offsets[leaf + 1])
                assert torch.equal(order[lo:hi].sort().values, part.order[lo:hi].sort().values)


@pytest.mark.parametrize("split", ["pca", "axis"])
def test_batched_leafwise_auction_gives_em_kd(crane, split):
    outputs = crane[:4] + 0.01 * torch.randn(crane[:4].shape, generator=torch.Generator().manual_seed(5))
    targets = crane[[2, 6, 9, 13]]
    sigma = leafwise_assignment(outputs, targets, leaf_size=512, split=split)
    for b in range(4):
        value = _cost(outputs[b], targets[b], sigma[b])
        exact = em_kd(outputs[b], targets[b], leaf_size=512, solver="exact", split=split).em_kd
        assert exact * (1 - 1e-9) <= value <= exact * (1 + 1e-3)


def test_q_refeed_and_baseline_follow_the_paper():
    torch.manual_seed(0)
    refed, plain = NeuralQAADDecoder(8, 16), NeuralQAADDecoder(8, 16, refeed_points=False)
    assert count_parameters(refed) - count_parameters(plain) == 8 * 3 * 3  # q_i (3) -> 3 outputs per patch
    points, codes = torch.randn(2, 8, 5, 3), torch.randn(2, 16)
    # with the feature part of the head fixed, the output still moves with q_i through the re-fed inputs
    out = refed(points, codes)
    with torch.no_grad():
        refed.head.weight[:, -3:] += 0.5
    assert not torch.allclose(refed(points, codes), out)
    baseline = AtlasNetV2Decoder(BASELINE_PATCHES, 64)
    widths = [layer.weight.shape[2] for layer in baseline.layers]
    assert ATLASNETV2_HIDDEN == (128, 128, 128, 128) and widths == [128, 128, 128, 3]
    assert baseline.point_in.weight.shape == (BASELINE_PATCHES, 3, 128)
    # two 4 x 128 patches: the power of two whose size is closest to NeuralQAAD's decoder at the defaults
    ours = count_parameters(NeuralQAADDecoder(64, 64))
    sizes = {k: count_parameters(AtlasNetV2Decoder(k, 64)) for k in (1, 2, 4)}
    assert min(sizes, key=lambda k: abs(sizes[k] - ours)) == BASELINE_PATCHES == 2
    config = variant_config("atlasnetv2", TrainingConfig())
    assert (config.architecture, config.n_patches, config.schedule) == ("atlasnetv2", 2, "chamfer")


def test_pointnet_encoder_is_order_invariant():
    torch.manual_seed(1)
    encoder = PointNetEncoder(8)
    points = torch.randn(3, 50, 3)
    codes = encoder(points)
    assert codes.shape == (3, 8)
    torch.testing.assert_close(encoder(points[:, torch.randperm(50)]), codes)
    assert not torch.allclose(codes[0], codes[1])


def test_eq11_and_squared_mean_differ_in_gradient():
    generator = torch.Generator().manual_seed(2)
    # spread outputs around a compact target: the output -> target direction is the larger one
    outputs = (4.0 * torch.rand(1, 40, 3, generator=generator) + 1.0).requires_grad_(True)
    targets = 0.1 * torch.rand(1, 50, 3, generator=generator)
    grads = []
    for form in ("eq11", "squared-mean"):
        outputs.grad = None
        augmented_chamfer(outputs, targets, form).backward()
        grads.append(outputs.grad.clone())
    # Eq. 11 pulls every point with unit force (unsquared distance); squared-mean with force 2 d / S
    torch.testing.assert_close(grads[0].norm(dim=2), torch.ones(1, 40))
    distance = (outputs.detach()[:, :, None] - targets[:, None]).norm(dim=3).amin(dim=2)
    torch.testing.assert_close(grads[1].norm(dim=2), 2 * distance / 40)


def _small(variant: str, **overrides) -> TrainingConfig:
    fields = dict(latent_size=8, n_patches=4, points_per_shape=256, shapes_per_step=3, chamfer_epochs=2,
                  qaad_epochs=2, learning_rate=3e-3, latent_learning_rate=3e-3, leaf_size=256, seed=0)
    base = TrainingConfig(**{**fields, **overrides})
    return variant_config(variant, base)


def test_table1_variants_switch_assignment_and_reassignment(crane):
    shapes = crane[:6, :1024]
    assert list(VARIANTS) == ["chamfer-only", "mse-random", "greedy", "neuralqaad", "atlasnetv2"]
    swaps, assignments, losses = {}, {}, {}
    for variant in ("mse-random", "greedy", "neuralqaad"):
        state = train(new_training_state(_small(variant, chamfer_epochs=12, qaad_epochs=3), shapes), shapes)
        swaps[variant] = sum(r.swaps for r in state.history)
        assignments[variant] = state.assignment
        losses[variant] = state.history[-1].loss
        assert _is_permutation(state.assignment)
    assert swaps["mse-random"] == 0 and swaps["greedy"] == 0 and swaps["neuralqaad"] > 0
    assert not torch.equal(assignments["mse-random"], assignments["greedy"])
    # the MSE against a random bijection stays far above the MSE against QAAD_GREEDY's
    assert losses["mse-random"] > 2 * losses["greedy"]
    chamfer = train(new_training_state(_small("chamfer-only"), shapes), shapes)
    assert chamfer.assignment is None and {r.phase for r in chamfer.history} == {"chamfer"}


def test_encoder_codes_initialise_the_latent_table(crane):
    shapes = crane[:6, :1024]
    state = new_training_state(_small("neuralqaad"), shapes)
    initial = state.model.latents.detach().clone()
    seen = {}

    def on_epoch(s, record):
        seen[record.epoch] = s.model.latents.detach().clone()

    train(state, shapes, on_epoch=on_epoch)
    assert state.encoder is not None and state.latents_from_encoder
    torch.testing.assert_close(seen[1], initial, rtol=0, atol=0)  # warm-up: the codes come from the encoder
    assert not torch.allclose(seen[3], initial)
    # without the switch the table is autodecoded from the start
    plain = new_training_state(_small("neuralqaad", encoder_init=False), shapes)
    assert plain.encoder is None
    train(plain, shapes)
    assert not plain.latents_from_encoder


def test_refeed_switch_reaches_the_model(crane):
    with_q = new_training_state(_small("neuralqaad"), crane[:3, :512]).model
    without = new_training_state(_small("neuralqaad", refeed_points=False), crane[:3, :512]).model
    assert with_q.refeed_points and not without.refeed_points
    assert count_parameters(with_q.decoder) == count_parameters(without.decoder) + 4 * 9
    assert isinstance(with_q, Autodecoder)
