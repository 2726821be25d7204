"""NeuralQAAD models, QAAD assignment steps, training, resume and encoding on the bundled crane frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otcore.points.autodecoder import (
    AtlasNetV2Decoder,
    Autodecoder,
    NeuralQAADDecoder,
    count_parameters,
    matched_baseline_width,
    patch_layout,
)
from otcore.points.autodecoder_training import (
    TrainingConfig,
    encode,
    evaluate,
    new_training_state,
    normalization,
    train,
)
from otcore.points.em_kd import em_kd
from otcore.points.qaad import augmented_chamfer, qaad_greedy, qaad_reassignment


@pytest.fixture(scope="module")
def crane(consistent_dir) -> torch.Tensor:
    """First 6 bundled crane frames, 2048 vertices each (a fixed subset), normalised as training does."""
    vertices = np.load(consistent_dir / "crane-16.npz")["vertices"][:6]
    subset = np.random.default_rng(0).choice(vertices.shape[1], 2048, replace=False)
    points = vertices[:, np.sort(subset)]
    centre, scale = normalization(points)
    return torch.from_numpy((points - centre) / scale).float()


def test_patch_layout_covers_every_point_once(crane):
    layout = patch_layout(crane[0], 16)
    flat = layout.flat_index()
    assert sorted(flat.tolist()) == list(range(crane.shape[1]))
    sizes = layout.valid.sum(dim=1)
    assert int(sizes.max() - sizes.min()) <= 1
    with pytest.raises(ValueError, match="power of two"):
        patch_layout(crane[0], 12)


def test_baseline_matches_parameter_count():
    for patches, latent in ((16, 64), (32, 128)):
        shared = count_parameters(NeuralQAADDecoder(patches, latent))
        baseline = count_parameters(AtlasNetV2Decoder(patches, latent, matched_baseline_width(patches, latent)))
        assert abs(baseline - shared) / shared < 0.02


def test_grouped_layers_equal_per_patch_mlps():
    torch.manual_seed(0)
    model = AtlasNetV2Decoder(4, 8, 16)
    points, latents = torch.randn(2, 4, 5, 3), torch.randn(2, 8)
    out = model(points, latents)
    for k in range(4):  # patch k alone, through its own weights
        h = points[:, k] @ model.point_in.weight[k] + model.point_in.bias[k] + (latents @ model.latent_in[k])[:, None]
        h = torch.selu(h)
        for layer in model.layers[:-1]:
            h = torch.selu(h @ layer.weight[k] + layer.bias[k])
        h = h @ model.layers[-1].weight[k] + model.layers[-1].bias[k]
        torch.testing.assert_close(out[:, k], h, rtol=1e-5, atol=1e-6)


def test_decode_returns_input_order(crane):
    model = Autodecoder(3, 8, crane[0], 8)
    full = model.decode(model.latents[:2])
    index = model.patch_index.unsqueeze(0).expand(2, -1, -1)
    parts = model.decode_points(index, model.latents[:2])
    torch.testing.assert_close(full[:, model.patch_index[0, 0]], parts[:, 0, 0])
    assert full.shape == (2, crane.shape[1], 3)


def test_greedy_recovers_a_permutation(crane):
    perm = torch.randperm(crane.shape[1], generator=torch.Generator().manual_seed(1))
    sigma = qaad_greedy(crane[0][perm], crane[0], leaf_size=256)
    assert torch.equal(sigma, perm)


def test_greedy_is_a_bijection_no_worse_than_leafwise_order(crane):
    outputs = crane[0] + 0.02 * torch.randn(crane[0].shape, generator=torch.Generator().manual_seed(2))
    sigma = qaad_greedy(outputs, crane[1], leaf_size=256)
    assert torch.equal(torch.sort(sigma).values, torch.arange(crane.shape[1]))
    greedy_cost = (outputs - crane[1][sigma]).norm(dim=1).mean()
    # the greedy bijection is far better than a random one and within a small factor of the optimal leaf-wise one
    random_cost = (outputs - crane[1][torch.randperm(crane.shape[1])]).norm(dim=1).mean()
    optimal_leafwise = em_kd(outputs, crane[1], leaf_size=256, solver="exact").em_kd
    assert greedy_cost < 0.2 * random_cost
    assert optimal_leafwise <= greedy_cost <= 1.6 * optimal_leafwise


def test_reassignment_never_increases_error():
    generator = torch.Generator().manual_seed(3)
    predictions = torch.rand(4, 300, 3, generator=generator)
    shuffled = predictions[:, torch.randperm(300, generator=generator)]
    targets = shuffled + 0.01 * torch.randn(4, 300, 3, generator=generator)
    before = (predictions - targets).square().sum(dim=2).sum(dim=1)
    partner, swaps = qaad_reassignment(predictions, targets)
    assert swaps > 0
    for b in range(4):  # partner is an involution: a set of disjoint swaps
        assert torch.equal(partner[b][partner[b]], torch.arange(300))
    after = (predictions - targets.gather(1, partner.unsqueeze(2).expand(-1, -1, 3))).square().sum(dim=2).sum(dim=1)
    assert torch.all(after <= before + 1e-6) and torch.all(after < before)
    # repeated reassignment keeps decreasing the error towards the planted matching
    for _ in range(30):
        targets = targets.gather(1, partner.unsqueeze(2).expand(-1, -1, 3))
        partner, _ = qaad_reassignment(predictions, targets)
    final = (predictions - targets).square().sum(dim=2).sum(dim=1)
    assert torch.all(final < 0.2 * before)


def test_augmented_chamfer_is_the_larger_direction():
    x = torch.zeros(1, 4, 3)
    y = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]]])
    # x -> y: all 0; y -> x: mean of 0, 1, 4, 9 (squared-mean) or sum of 0, 1, 2, 3 (Eq. 11, unsquared)
    assert float(augmented_chamfer(x, y, form="squared-mean")) == pytest.approx(3.5)
    assert float(augmented_chamfer(x, y)) == pytest.approx(6.0, abs=1e-5)
    with pytest.raises(ValueError, match="form"):
        augmented_chamfer(x, y, form="sum")


def _config(**overrides) -> TrainingConfig:
    base = dict(latent_size=16, n_patches=8, points_per_shape=512, shapes_per_step=3, chamfer_epochs=15,
                qaad_epochs=25, learning_rate=3e-3, latent_learning_rate=3e-3, leaf_size=256, seed=0)
    return TrainingConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def trained(crane):
    state = new_training_state(_config(), crane)
    initial = evaluate(state.model, crane, leaf_size=256)["em_kd"].mean()
    train(state, crane)
    return state, initial


def test_training_reduces_em_kd_and_qaad_phase_runs(trained, crane):
    state, initial = trained
    final = evaluate(state.model, crane, leaf_size=256)
    assert final["em_kd"].mean() < 0.5 * initial
    phases = [r.phase for r in state.history]
    assert phases == ["chamfer"] * 15 + ["qaad"] * 25
    assert sum(r.swaps for r in state.history) > 0
    assert state.history[-1].loss < state.history[15].loss  # MSE against the assignment decreases
    # the assignment stays a bijection per shape after all swaps
    assert torch.equal(torch.sort(state.assignment, dim=1).values, torch.arange(crane.shape[1]).expand(6, -1))


def test_evaluate_auction_matches_exact_per_leaf(trained, crane):
    state, _ = trained
    auction = evaluate(state.model, crane[:3], state.model.latents[:3].detach(), leaf_size=256)
    exact = evaluate(state.model, crane[:3], state.model.latents[:3].detach(), leaf_size=256, solver="exact")
    np.testing.assert_allclose(auction["chamfer_l2"], exact["chamfer_l2"], rtol=1e-12)
    assert np.all(auction["em_kd"] >= exact["em_kd"] * (1 - 1e-6))  # an assignment never beats the optimum
    assert np.all(auction["em_kd"] <= exact["em_kd"] * (1 + 1e-3))  # the certified bound of the auction


def test_resume_from_arrays_is_exact(crane):
    config = _config(chamfer_epochs=2, qaad_epochs=2)
    reference = train(new_training_state(config, crane), crane)

    class Interrupt(Exception):
        """Raised from the step callback, as a crash would stop training."""

    saved = {}

    def stop_at_step_5(state):
        if state.epoch * 2 + state.step == 5:
            saved["checkpoint"] = state.to_arrays()
            raise Interrupt

    with pytest.raises(Interrupt):
        train(new_training_state(config, crane), crane, on_step=stop_at_step_5)
    resumed = new_training_state(config, crane)
    resumed.load_arrays(*saved["checkpoint"])
    assert resumed.assignment is not None and (resumed.epoch, resumed.step) == (2, 1)
    train(resumed, crane)
    torch.testing.assert_close(resumed.model.latents, reference.model.latents, rtol=0, atol=0)
    assert torch.equal(resumed.assignment, reference.assignment)
    assert [r.loss for r in resumed.history] == [r.loss for r in reference.history]


def test_encode_fits_codes_with_frozen_decoder(trained, crane):
    state, _ = trained
    decoder_before = {k: v.clone() for k, v in state.model.state_dict().items()}
    latents = encode(state.model, crane[:2], chamfer_steps=40, qaad_steps=60, points_per_shape=512, leaf_size=256)
    for key, value in state.model.state_dict().items():
        assert torch.equal(value, decoder_before[key])
    fitted = evaluate(state.model, crane[:2], latents, leaf_size=256)["em_kd"]
    trained_codes = evaluate(state.model, crane[:2], state.model.latents[:2].detach(), leaf_size=256)["em_kd"]
    mean_code = state.model.latents.detach().mean(dim=0, keepdim=True).repeat(2, 1)
    start = evaluate(state.model, crane[:2], mean_code, leaf_size=256)["em_kd"]
    assert np.all(fitted < start) and np.all(fitted < 1.5 * trained_codes)
