"""Training of the geometry-image restoration network (:mod:`otcore.mesh.neural_restoration`) across meshes.

Each step draws one input level (a coarse mip, 17^2 to 129^2) for ``images_per_step`` random training meshes,
each under a random symmetry of the square (the 8 of the dihedral group; 3D rotations need no augmentation, the
network is rotation equivariant by construction), an output resolution ``R`` uniform in ``[max(65, h), 257]``
(continuous level of detail) and a ``crop x crop`` window of the ``R x R`` output grid. The loss is measured in 3D:

- position: the error against the full-resolution geometry image, bilinearly sampled at the query (exact at its
  own grid points), split along the reference's normal (``normal_l1``, what Chamfer and Hausdorff see) and across
  it (the tangential part, weighted low: it only moves samples within the surface);
- ``edge_l1``: L1 of the differences between neighbouring outputs against the same differences of the reference
  (the grid's edges, hence its normals);
- ``surface_l1``: point-to-plane distance from each output to its nearest sample of the *original* mesh (the true
  surface, which the 257^2 image only approximates), with that sample's face normal.

Adam with cosine decay, seeded. Training resumes bit for bit: :class:`RestorationTrainingState` converts to and from
named arrays that the caller checkpoints wherever it likes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy.spatial import cKDTree

from otcore.mesh.neural_restoration import RestorationConfig, RestorationNetwork, local_frames

__all__ = ["RestorationTrainingConfig", "TrainingPair", "EpochRecord", "RestorationTrainingState",
           "new_restoration_state", "train_restoration"]


@dataclass(frozen=True)
class RestorationTrainingConfig:
    """Hyper-parameters of one restoration training run.

    Attributes:
        network: the network's shape.
        epochs, steps_per_epoch: length of the run (an epoch is a fixed number of steps: meshes differ in size).
        images_per_step: meshes per step; crop: side of the output window per mesh.
        input_levels: mip levels the input is drawn from (0 = finest), with ``level_weights`` as probabilities.
        min_output: smallest output resolution drawn.
        learning_rate: Adam step size (cosine decay to 5% over the run).
        tangent_weight, edge_weight, surface_weight: weights of the tangential error, the edge and the
            point-to-surface terms (the error along the reference's normal has weight 1: it is what Chamfer and
            Hausdorff see; the tangential one only keeps the samples' placement in the parameterization).
        seed: initialisation and sampling.
    """

    network: RestorationConfig = field(default_factory=RestorationConfig)
    epochs: int = 40
    steps_per_epoch: int = 100
    images_per_step: int = 8
    crop: int = 24
    input_levels: tuple[int, ...] = (1, 2, 3, 4)
    level_weights: tuple[float, ...] = (0.15, 0.3, 0.4, 0.15)
    min_output: int = 65
    learning_rate: float = 2e-3
    tangent_weight: float = 0.25
    edge_weight: float = 0.5
    surface_weight: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.input_levels) != len(self.level_weights) or not self.input_levels:
            raise ValueError("input_levels and level_weights must be non-empty and of equal length")
        if min(self.epochs, self.steps_per_epoch, self.images_per_step) < 1 or self.crop < 2:
            raise ValueError(f"epochs, steps_per_epoch, images_per_step must be >= 1 and crop >= 2, got {self}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RestorationTrainingConfig:
        values = json.loads(text)
        values["network"] = RestorationConfig(**values["network"])
        values["input_levels"] = tuple(values["input_levels"])
        values["level_weights"] = tuple(values["level_weights"])
        return cls(**values)


@dataclass
class TrainingPair:
    """One training mesh: its decoded pyramid and samples of its original surface.

    Attributes:
        item_id: the mesh.
        levels: ``[3, R_k, R_k]`` float32 dequantised pyramid levels, finest first (``R_0`` = 257 by default).
        samples, normals: ``[N, 3]`` samples of the original mesh and their unit normals (same units).
    """

    item_id: str
    levels: list[np.ndarray]
    samples: np.ndarray
    normals: np.ndarray
    _tree: cKDTree | None = field(default=None, repr=False)

    @property
    def tree(self) -> cKDTree:
        if self._tree is None:
            self._tree = cKDTree(self.samples)
        return self._tree


@dataclass
class EpochRecord:
    """Mean losses of one epoch (units of the positions; the pipeline's: unit bbox diagonal).

    ``bilinear_position_l1`` is bilinear upsampling's position L1 on the same queries, so
    ``position_l1 / bilinear_position_l1`` is the fraction of the bilinear error left.
    """

    epoch: int
    step: int
    loss: float
    position_l1: float
    normal_l1: float
    edge_l1: float
    surface_l1: float
    bilinear_position_l1: float
    learning_rate: float
    seconds: float


@dataclass
class RestorationTrainingState:
    """Everything a resumed run needs: model, optimiser, sampling generator, position and the epochs so far."""

    config: RestorationTrainingConfig
    model: RestorationNetwork
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    records: list[EpochRecord] = field(default_factory=list)
    _sums: dict[str, float] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.config.steps_per_epoch

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """Named arrays and JSON metadata of the state (for a checkpoint)."""
        arrays = {f"model.{k}": v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        for index, values in optimizer["state"].items():
            for key, value in values.items():
                arrays[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().numpy()
        arrays["generator"] = self.generator.get_state().numpy()
        meta = {"config": self.config.to_json(), "step": self.step, "records": [asdict(r) for r in self.records],
                "sums": self._sums, "optimizer_groups": optimizer["param_groups"]}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict, device: torch.device | str = "cpu"
                    ) -> RestorationTrainingState:
        """Inverse of :meth:`to_arrays`."""
        state = new_restoration_state(RestorationTrainingConfig.from_json(meta["config"]), device)
        state.model.load_state_dict({k[6:]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                                     if k.startswith("model.")})
        optimizer_state: dict[int, dict] = {}
        for name, value in arrays.items():
            if name.startswith("optimizer."):
                _, index, key = name.split(".", 2)
                optimizer_state.setdefault(int(index), {})[key] = torch.from_numpy(np.array(value)).to(device)
        for values in optimizer_state.values():
            values["step"] = values["step"].cpu()
        state.optimizer.load_state_dict({"state": optimizer_state, "param_groups": meta["optimizer_groups"]})
        state.generator.set_state(torch.from_numpy(np.array(arrays["generator"])))
        state.step = int(meta["step"])
        state.records = [EpochRecord(**r) for r in meta["records"]]
        state._sums = dict(meta["sums"])
        return state


def new_restoration_state(config: RestorationTrainingConfig, device: torch.device | str = "cpu"
                          ) -> RestorationTrainingState:
    """A fresh, seeded training state on ``device``."""
    torch.manual_seed(config.seed)
    model = RestorationNetwork(config.network).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    return RestorationTrainingState(config, model, optimizer, generator)


def _symmetry(image: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 symmetries of the square (bit 0: transpose, bit 1: flip rows, bit 2: flip columns)."""
    if code & 1:
        image = image.transpose(0, 2, 1)
    if code & 2:
        image = image[:, ::-1]
    if code & 4:
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


def _draw(state: RestorationTrainingState, pairs: list[TrainingPair]):
    """Sample one step's batch: coarse inputs, fine references, queries (crop grids) and the cell size."""
    config, generator = state.config, state.generator
    levels = torch.tensor(config.level_weights, dtype=torch.float64)
    level = config.input_levels[int(torch.multinomial(levels, 1, generator=generator))]
    chosen = torch.randint(len(pairs), (config.images_per_step,), generator=generator).tolist()
    symmetries = torch.randint(8, (config.images_per_step,), generator=generator).tolist()
    fine_side = pairs[0].levels[0].shape[-1]
    coarse_side = pairs[0].levels[level].shape[-1]
    low = max(config.min_output, coarse_side)
    resolution = int(torch.randint(low, fine_side + 1, (1,), generator=generator))
    crop = min(config.crop, resolution)
    corners = torch.randint(resolution - crop + 1, (config.images_per_step, 2), generator=generator)
    offsets = torch.stack(torch.meshgrid(torch.arange(crop), torch.arange(crop), indexing="ij"), -1).flip(-1)
    queries = (corners[:, None, None, :] + offsets[None]).reshape(config.images_per_step, -1, 2) / (resolution - 1)
    coarse = np.stack([_symmetry(pairs[i].levels[level], s) for i, s in zip(chosen, symmetries)])
    fine = np.stack([_symmetry(pairs[i].levels[0], s) for i, s in zip(chosen, symmetries)])
    return chosen, torch.from_numpy(coarse), torch.from_numpy(fine), queries.float(), crop, \
        (coarse_side - 1) / (resolution - 1)


def _sample_fine(fine: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of ``[B, 3, H, W]`` at ``[B, Q, 2]`` (u, v) in [0, 1]: ``[B, Q, 3]``."""
    grid = (queries * 2 - 1)[:, :, None, :]
    return torch.nn.functional.grid_sample(fine, grid, mode="bilinear", align_corners=True)[..., 0].transpose(1, 2)


def _losses(state: RestorationTrainingState, pairs: list[TrainingPair], batch) -> dict[str, torch.Tensor]:
    chosen, coarse, fine, queries, crop, cell = batch
    config = state.config
    device = next(state.model.parameters()).device
    coarse, fine, queries = coarse.to(device), fine.to(device), queries.to(device)
    predicted = state.model(coarse, queries, cell)
    reference = _sample_fine(fine, queries)
    with torch.no_grad():
        bilinear = _sample_fine(coarse, queries)  # the baseline the table compares against
        normals = _sample_fine(local_frames(fine)[0][..., 2, :].permute(0, 3, 1, 2), queries)  # the grid's normals
        normals = normals / (normals.norm(dim=-1, keepdim=True) + 1e-12)
    error = predicted - reference
    normal_error = (error * normals).sum(-1, keepdim=True)
    tangent_error = error - normal_error * normals
    grid_p = predicted.view(len(chosen), crop, crop, 3)
    grid_r = reference.view(len(chosen), crop, crop, 3)
    edge = ((grid_p.diff(dim=1) - grid_r.diff(dim=1)).abs().mean()
            + (grid_p.diff(dim=2) - grid_r.diff(dim=2)).abs().mean()) / 2
    points = predicted.detach().cpu().numpy().astype(np.float64)
    nearest = [pairs[i].tree.query(points[b])[1] for b, i in enumerate(chosen)]
    samples = torch.from_numpy(np.stack([pairs[i].samples[n] for i, n in zip(chosen, nearest)])).to(predicted)
    surface_normals = torch.from_numpy(np.stack([pairs[i].normals[n] for i, n in zip(chosen, nearest)]))
    surface = ((predicted - samples) * surface_normals.to(predicted)).sum(-1).abs().mean()
    normal = normal_error.abs().mean()
    loss = (config.tangent_weight * tangent_error.norm(dim=-1).mean() + normal + config.edge_weight * edge
            + config.surface_weight * surface)
    return {"loss": loss, "position_l1": error.abs().mean(), "normal_l1": normal, "edge_l1": edge,
            "surface_l1": surface, "bilinear_position_l1": (bilinear - reference).abs().mean()}


def _learning_rate(config: RestorationTrainingConfig, step: int, total: int) -> float:
    return config.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0))))


def train_restoration(
    state: RestorationTrainingState,
    pairs: list[TrainingPair],
    on_step: Callable[[RestorationTrainingState], None] | None = None,
    on_epoch: Callable[[RestorationTrainingState, EpochRecord], None] | None = None,
) -> RestorationTrainingState:
    """Run (or continue) training until ``config.epochs`` epochs are done.

    Args:
        state: from :func:`new_restoration_state`, possibly restored from a checkpoint.
        pairs: the training meshes; their levels must share one pyramid shape.
        on_step: called after every step (e.g. to checkpoint); may raise to stop training.
        on_epoch: called after every finished epoch with its record.

    Returns:
        ``state``, trained in place.

    Raises:
        ValueError: if ``pairs`` is empty, their pyramids differ in shape, or an input level does not exist.
    """
    if not pairs:
        raise ValueError("no training meshes")
    shapes = {tuple(level.shape for level in pair.levels) for pair in pairs}
    if len(shapes) != 1:
        raise ValueError(f"training pyramids differ in shape: {sorted(shapes)}")
    if max(state.config.input_levels) >= len(pairs[0].levels):
        raise ValueError(f"input level {max(state.config.input_levels)} but the pyramids have "
                         f"{len(pairs[0].levels)} levels")
    config = state.config
    state.model.train()
    start = time.perf_counter()
    while not state.finished:
        rate = _learning_rate(config, state.step, state.total_steps)
        for group in state.optimizer.param_groups:
            group["lr"] = rate
        losses = _losses(state, pairs, _draw(state, pairs))
        state.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        state.optimizer.step()
        for key, value in losses.items():
            state._sums[key] = state._sums.get(key, 0.0) + float(value.detach())
        state.step += 1
        if state.step % config.steps_per_epoch == 0:
            means = {key: value / config.steps_per_epoch for key, value in state._sums.items()}
            record = EpochRecord(epoch=state.step // config.steps_per_epoch - 1, step=state.step,
                                 learning_rate=rate, seconds=time.perf_counter() - start, **means)
            state.records.append(record)
            state._sums = {}
            start = time.perf_counter()
            if on_epoch is not None:
                on_epoch(state, record)
        if on_step is not None:
            on_step(state)
    state.model.eval()
    return state
