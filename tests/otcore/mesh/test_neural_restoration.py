"""The restoration network (otcore.mesh.neural_restoration) and its training (otcore.mesh.restoration_training)
on spot's real OT geometry image: the untrained network is bicubic interpolation, the output moves with a rigid
motion of the input, any output resolution decodes, and training resumes bit for bit from a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from otcore.mesh.geometry_image import mipmap_pyramid, resample_geometry_image
from otcore.mesh.metrics import sample_surface_with_normals
from otcore.mesh.neural_restoration import (
    RestorationConfig,
    RestorationNetwork,
    local_frames,
    restore_neural,
)
from otcore.mesh.parameterization import parameterize_to_square
from otcore.mesh.restoration_training import (
    RestorationTrainingConfig,
    RestorationTrainingState,
    TrainingPair,
    new_restoration_state,
    train_restoration,
)


@pytest.fixture(scope="module")
def spot_pyramid(spot) -> list[np.ndarray]:
    """Spot's OT geometry image at 257 and its mipmaps down to 17 (float32, unit bbox diagonal)."""
    square = parameterize_to_square(spot.vertices, spot.faces)
    image = resample_geometry_image(square.disk.vertices, square.disk.faces, square.ot.uv, 257)
    return mipmap_pyramid(image, 5)


def _perturbed(seed: int = 0) -> RestorationNetwork:
    torch.manual_seed(seed)
    network = RestorationNetwork(RestorationConfig())
    for parameter in network.decoder[-1].parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    return network


def test_untrained_network_is_bicubic_interpolation_through_the_stored_samples(spot_pyramid) -> None:
    coarse = spot_pyramid[3]  # 33 x 33
    restored = restore_neural(RestorationNetwork(), coarse, 257)
    bicubic = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None], size=(257, 257), mode="bicubic",
                                              align_corners=True)[0].numpy()
    assert np.abs(restored - bicubic).max() < 1e-6
    assert np.abs(restored[:, ::8, ::8] - coarse).max() < 1e-6


def test_output_moves_with_a_rigid_motion_of_the_input(spot_pyramid) -> None:
    network = _perturbed()
    coarse = spot_pyramid[3]
    rotation = Rotation.random(random_state=3).as_matrix().astype(np.float32)
    shift = np.array([0.3, -1.2, 0.7], dtype=np.float32)[:, None, None]
    moved = np.einsum("ij,jhw->ihw", rotation, coarse) + shift
    restored = restore_neural(network, coarse, 100)
    learned = np.abs(restored - restore_neural(RestorationNetwork(), coarse, 100)).max()
    assert learned > 1e-3  # the perturbed network displaces the interpolation
    expected = np.einsum("ij,jhw->ihw", rotation, restored) + shift
    # float32 rounding of the moved positions only: a non-equivariant network would be off by about `learned`
    assert np.abs(restore_neural(network, moved, 100) - expected).max() < 0.02 * learned


@pytest.mark.parametrize("resolution", [65, 97, 100, 150, 203, 257])
def test_decodes_any_output_resolution(spot_pyramid, resolution: int) -> None:
    restored = restore_neural(_perturbed(), spot_pyramid[3], resolution)
    assert restored.shape == (3, resolution, resolution) and np.isfinite(restored).all()


def test_local_frames_are_orthonormal_and_follow_the_grid(spot_pyramid) -> None:
    frames, scales = local_frames(torch.from_numpy(spot_pyramid[2])[None])
    gram = frames @ frames.transpose(-1, -2)
    regular = (frames.norm(dim=-1) > 0.5).all(-1)
    assert regular.float().mean() > 0.99
    assert torch.allclose(gram[regular], torch.eye(3).expand(int(regular.sum()), 3, 3), atol=1e-4)
    assert (scales > 0).all()


def test_rejects_images_it_cannot_restore() -> None:
    with pytest.raises(ValueError, match=r"\[3, h, w\]"):
        restore_neural(RestorationNetwork(), np.zeros((3, 1, 5), dtype=np.float32), 65)
    with pytest.raises(ValueError, match="non-finite"):
        restore_neural(RestorationNetwork(), np.full((3, 5, 5), np.nan, dtype=np.float32), 65)


def test_training_resumes_bit_for_bit_from_its_arrays(spot, spot_pyramid) -> None:
    points, normals = sample_surface_with_normals(spot.vertices, spot.faces, 5_000, 0)
    pairs = [TrainingPair("spot", spot_pyramid, points, normals)]
    config = RestorationTrainingConfig(epochs=2, steps_per_epoch=3, images_per_step=2, crop=8)
    straight = train_restoration(new_restoration_state(config), pairs)

    class Killed(Exception):
        pass

    def kill_at_step_4(state: RestorationTrainingState) -> None:
        if state.step == 4:
            raise Killed

    interrupted = new_restoration_state(config)
    with pytest.raises(Killed):
        train_restoration(interrupted, pairs, on_step=kill_at_step_4)
    arrays, meta = interrupted.to_arrays()
    resumed = train_restoration(RestorationTrainingState.from_arrays(arrays, meta), pairs)
    assert resumed.step == straight.step == 6
    assert [r.loss for r in resumed.records] == [r.loss for r in straight.records]
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert straight.model.state_dict()["decoder.4.weight"].abs().sum() > 0  # it did learn something
