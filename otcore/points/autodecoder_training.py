"""Training, encoding and evaluation of point-cloud autodecoders (NeuralQAAD, Wagner & Schwanecke, VISAPP 2022).

Schedule ``"qaad"`` (the paper's): augmented-Chamfer warm-up epochs, then QAAD_GREEDY builds one bijection per
shape from the current outputs and the remaining epochs minimise the MSE against the assigned targets, with
QAAD_REASSIGNMENT improving the assignment on every step's sampled points. Schedule ``"chamfer"``: augmented
Chamfer for the whole budget (the ablation). Each step takes ``shapes_per_step`` shapes and
``points_per_shape`` points of each (equally many from every patch, and the same output points are compared
with their assigned targets, or with an equally large random subset of the target for Chamfer). Adam, seeded.

Training is resumable bit for bit: :class:`TrainingState` carries the model, the optimiser, the assignment, the
sampling generator and the position (epoch, step), and converts to and from plain named arrays so that the
caller can checkpoint it anywhere (the flow writes it to the Zarr store).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from otcore.points.autodecoder import Autodecoder
from otcore.points.chamfer import chamfer_l2
from otcore.points.em_kd import em_kd
from otcore.points.qaad import augmented_chamfer, qaad_greedy, qaad_reassignment

__all__ = [
    "TrainingConfig",
    "EpochRecord",
    "TrainingState",
    "normalization",
    "new_training_state",
    "train",
    "evaluate",
    "encode",
]


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of one autodecoder training run (defaults follow the paper where it gives them).

    Attributes:
        architecture: ``"neuralqaad"`` (shared layers) or ``"atlasnetv2"`` (independent per-patch MLPs, same size).
        schedule: ``"qaad"`` (Chamfer warm-up, then QAAD) or ``"chamfer"`` (augmented Chamfer throughout).
        latent_size: length ``l`` of each shape's code.
        n_patches: ``K``, a power of two.
        points_per_shape: points sampled per shape per step (rounded down to a multiple of ``K``).
        shapes_per_step: shapes per step.
        chamfer_epochs: warm-up epochs (schedule ``"qaad"``); for ``"chamfer"`` all epochs use Chamfer.
        qaad_epochs: epochs after the warm-up.
        learning_rate: Adam step size of the network and the input cloud.
        latent_learning_rate: Adam step size of the latent table.
        leaf_size: k-d leaf size of QAAD_GREEDY and EM-kD.
        seed: seeds initialisation and sampling.
    """

    architecture: str = "neuralqaad"
    schedule: str = "qaad"
    latent_size: int = 64
    n_patches: int = 64
    points_per_shape: int = 2048
    shapes_per_step: int = 8
    chamfer_epochs: int = 20
    qaad_epochs: int = 80
    learning_rate: float = 1e-3
    latent_learning_rate: float = 1e-3
    leaf_size: int = 1024
    seed: int = 0

    def __post_init__(self):
        if self.architecture not in ("neuralqaad", "atlasnetv2"):
            raise ValueError(f"architecture must be 'neuralqaad' or 'atlasnetv2', got {self.architecture!r}")
        if self.schedule not in ("qaad", "chamfer"):
            raise ValueError(f"schedule must be 'qaad' or 'chamfer', got {self.schedule!r}")
        if self.points_per_shape < self.n_patches:
            raise ValueError("points_per_shape must be at least n_patches")

    @property
    def epochs(self) -> int:
        return self.chamfer_epochs + self.qaad_epochs

    def phase(self, epoch: int) -> str:
        return "qaad" if self.schedule == "qaad" and epoch >= self.chamfer_epochs else "chamfer"


@dataclass(frozen=True)
class EpochRecord:
    """Metrics of one finished epoch (a row of the ``autodecoder_epochs`` table)."""

    epoch: int
    phase: str
    loss: float
    swaps: int
    seconds: float


@dataclass
class TrainingState:
    """Everything needed to continue a training run exactly where it stopped.

    Attributes:
        config: the run's :class:`TrainingConfig`.
        model: the :class:`Autodecoder`.
        optimizer: Adam over the model's parameters.
        generator: CPU generator of all sampling.
        assignment: int64 ``[N, M]`` bijection per shape (QAAD phase) or None before it.
        epoch, step: position of the next step (``step`` counts steps inside ``epoch``).
        history: finished epochs.
        epoch_loss, epoch_swaps, epoch_seconds: accumulators of the current epoch.
    """

    config: TrainingConfig
    model: Autodecoder
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    assignment: torch.Tensor | None = None
    epoch: int = 0
    step: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    epoch_loss: float = 0.0
    epoch_swaps: int = 0
    epoch_seconds: float = 0.0

    @property
    def finished(self) -> bool:
        return self.epoch >= self.config.epochs

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """Named numpy arrays + JSON-able metadata; :meth:`from_arrays` inverts it (no pickles involved)."""
        arrays = {f"model/{k}": v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        optimizer_state = self.optimizer.state_dict()
        for index, slots in optimizer_state["state"].items():
            for key, value in slots.items():
                arrays[f"optimizer/{index}/{key}"] = torch.as_tensor(value).detach().cpu().numpy()
        arrays["generator"] = self.generator.get_state().numpy()
        if self.assignment is not None:
            arrays["assignment"] = self.assignment.cpu().numpy().astype(np.int32)
        meta = {
            "config": asdict(self.config),
            "param_groups": optimizer_state["param_groups"],
            "epoch": self.epoch,
            "step": self.step,
            "history": [asdict(r) for r in self.history],
            "epoch_loss": self.epoch_loss,
            "epoch_swaps": self.epoch_swaps,
            "epoch_seconds": self.epoch_seconds,
        }
        return arrays, json.loads(json.dumps(meta))

    def load_arrays(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore a state written by :meth:`to_arrays` into this (freshly built, same-config) state.

        Raises:
            ValueError: if the checkpoint was written with a different config.
        """
        if meta["config"] != asdict(self.config):
            raise ValueError("checkpoint was written with a different training config")
        device = self.model.input_points.device
        model_state = {k[len("model/") :]: torch.from_numpy(np.array(v))
                       for k, v in arrays.items() if k.startswith("model/")}
        self.model.load_state_dict(model_state)
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in arrays.items():
            if name.startswith("optimizer/"):
                _, index, key = name.split("/")
                tensor = torch.from_numpy(np.array(value))
                slots.setdefault(int(index), {})[key] = tensor if key == "step" else tensor.to(device)
        self.optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
        self.generator.set_state(torch.from_numpy(np.array(arrays["generator"])))
        self.assignment = (
            torch.from_numpy(np.array(arrays["assignment"]).astype(np.int64)).to(device)
            if "assignment" in arrays else None
        )
        self.epoch, self.step = int(meta["epoch"]), int(meta["step"])
        self.history = [EpochRecord(**r) for r in meta["history"]]
        self.epoch_loss, self.epoch_swaps = float(meta["epoch_loss"]), int(meta["epoch_swaps"])
        self.epoch_seconds = float(meta["epoch_seconds"])


def normalization(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and scale shared by a whole collection ``[N, M, 3]``: the mean point and the largest bbox diagonal.

    Training runs on ``(points - centre) / scale`` so that every collection has a comparable extent.
    """
    centre = points.reshape(-1, 3).mean(axis=0)
    diagonals = np.linalg.norm(points.max(axis=1) - points.min(axis=1), axis=1)
    return centre.astype(np.float32), float(diagonals.max())


def new_training_state(config: TrainingConfig, targets: torch.Tensor) -> TrainingState:
    """Fresh model, optimiser and generator for normalised ``targets`` ``[N, M, 3]`` (float32, on the device).

    The input cloud ``Q`` starts as the first shape's points, as in the paper ("a sample of the dataset").
    """
    model = Autodecoder(
        n_shapes=targets.shape[0],
        latent_size=config.latent_size,
        init_points=targets[0].cpu(),
        n_patches=config.n_patches,
        architecture=config.architecture,
        seed=config.seed,
    ).to(targets.device)
    network = [p for name, p in model.named_parameters() if name != "latents"]
    optimizer = torch.optim.Adam(
        [{"params": network, "lr": config.learning_rate},
         {"params": [model.latents], "lr": config.latent_learning_rate}]
    )
    generator = torch.Generator().manual_seed(config.seed)
    return TrainingState(config, model, optimizer, generator)


def _sample_patch_points(model: Autodecoder, batch: int, per_patch: int, generator: torch.Generator) -> torch.Tensor:
    """int64 ``[B, K, s]``: distinct points of every patch, drawn uniformly without replacement."""
    keys = torch.rand((batch, *model.patch_valid.shape), generator=generator)
    keys = keys.to(model.patch_valid.device).masked_fill(~model.patch_valid, 2.0)
    ranks = keys.argsort(dim=2)[:, :, :per_patch]
    return model.patch_index.unsqueeze(0).expand(batch, -1, -1).gather(2, ranks)


def _epoch_order(config: TrainingConfig, n_shapes: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n_shapes, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))


@torch.no_grad()
def _greedy_assignment(
    model: Autodecoder, targets: torch.Tensor, latents: torch.Tensor, leaf_size: int
) -> torch.Tensor:
    outputs = model.decode(latents)
    return torch.stack([qaad_greedy(outputs[i], targets[i], leaf_size) for i in range(targets.shape[0])])


def _step(
    state: TrainingState, targets: torch.Tensor, shapes: torch.Tensor, latents: torch.Tensor, phase: str
) -> tuple[torch.Tensor, int]:
    """Loss of one step on ``shapes`` (indices into ``targets`` / ``state.assignment``); may reassign targets."""
    config, model = state.config, state.model
    per_patch = min(config.points_per_shape // model.n_patches, int(model.patch_valid.sum(dim=1).min()))
    point_index = _sample_patch_points(model, shapes.shape[0], per_patch, state.generator)
    outputs = model.decode_points(point_index, latents).flatten(1, 2)  # [B, S, 3]
    flat_index = point_index.flatten(1)
    if phase == "chamfer":
        picks = torch.rand((shapes.shape[0], targets.shape[1]), generator=state.generator).argsort(dim=1)
        picks = picks[:, : flat_index.shape[1]].to(targets.device)
        return augmented_chamfer(outputs, targets[shapes.unsqueeze(1), picks]), 0
    sigma = state.assignment[shapes.unsqueeze(1), flat_index]  # [B, S] target index of each sampled output
    assigned = targets[shapes.unsqueeze(1), sigma]
    partner, swaps = qaad_reassignment(outputs.detach(), assigned)
    sigma = sigma.gather(1, partner)
    state.assignment[shapes.unsqueeze(1), flat_index] = sigma
    assigned = targets[shapes.unsqueeze(1), sigma]
    return (outputs - assigned).square().sum(dim=2).mean(), swaps


def train(
    state: TrainingState,
    targets: torch.Tensor,
    on_step: Callable[[TrainingState], None] | None = None,
    on_epoch: Callable[[TrainingState, EpochRecord], None] | None = None,
) -> TrainingState:
    """Run (or continue) training until ``state.config.epochs`` epochs are done.

    Args:
        state: from :func:`new_training_state`, possibly restored from a checkpoint.
        targets: float32 ``[N, M, 3]`` normalised shapes, on the model's device; ``M`` must equal the model's
            point count (the QAAD bijection needs equal counts).
        on_step: called after every step (e.g. to checkpoint every n steps); may raise to stop training.
        on_epoch: called after every finished epoch with its record.

    Returns:
        ``state``, trained in place.

    Raises:
        ValueError: if ``targets`` does not match the model.
    """
    config, model = state.config, state.model
    if targets.shape[1:] != (model.n_points, 3) or targets.shape[0] != model.latents.shape[0]:
        raise ValueError(f"targets {tuple(targets.shape)} do not match the model "
                         f"({model.latents.shape[0]} shapes x {model.n_points} points)")
    n_shapes = targets.shape[0]
    steps_per_epoch = math.ceil(n_shapes / config.shapes_per_step)
    model.train()
    while not state.finished:
        phase = config.phase(state.epoch)
        if phase == "qaad" and state.assignment is None:
            state.assignment = _greedy_assignment(model, targets, model.latents.detach(), config.leaf_size)
        order = _epoch_order(config, n_shapes, state.epoch).to(targets.device)
        start = time.perf_counter()
        shapes = order[state.step * config.shapes_per_step : (state.step + 1) * config.shapes_per_step]
        loss, swaps = _step(state, targets, shapes, model.latents[shapes], phase)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.epoch_loss += float(loss.detach()) * shapes.shape[0] / n_shapes
        state.epoch_swaps += swaps
        state.step += 1
        state.epoch_seconds += time.perf_counter() - start
        if state.step == steps_per_epoch:
            record = EpochRecord(state.epoch, phase, state.epoch_loss, state.epoch_swaps, state.epoch_seconds)
            state.history.append(record)
            state.epoch, state.step = state.epoch + 1, 0
            state.epoch_loss, state.epoch_swaps, state.epoch_seconds = 0.0, 0, 0.0
            if on_epoch is not None:
                on_epoch(state, record)
        if on_step is not None:
            on_step(state)
    return state


@torch.no_grad()
def evaluate(
    model: Autodecoder,
    targets: torch.Tensor,
    latents: torch.Tensor | None = None,
    leaf_size: int = 1024,
    solver: str = "auction",
) -> dict[str, np.ndarray]:
    """Per-shape ``em_kd`` and ``chamfer_l2`` of the decoded clouds against ``targets``.

    Args:
        model: trained :class:`Autodecoder`.
        targets: float32 ``[N, M, 3]`` (normalised units).
        latents: ``[N, l]`` codes; defaults to the model's table.
        leaf_size: EM-kD leaf size.
        solver: per-leaf EMD solver of :func:`otcore.points.em_kd.em_kd` (``"exact"`` or ``"auction"``).

    Returns:
        dict of float64 ``[N]`` arrays ``em_kd`` (Euclidean, input units) and ``chamfer_l2`` (squared units), and the
        decoded clouds under ``"decoded"`` (float32 ``[N, M, 3]``).
    """
    model.eval()
    latents = model.latents if latents is None else latents
    decoded = model.decode(latents)
    em = np.array([em_kd(decoded[i], targets[i], leaf_size=leaf_size, solver=solver).em_kd
                   for i in range(targets.shape[0])])
    cd = np.array([float(chamfer_l2(decoded[i], targets[i])) for i in range(targets.shape[0])])
    return {"em_kd": em, "chamfer_l2": cd, "decoded": decoded.cpu().numpy()}


def encode(
    model: Autodecoder,
    targets: torch.Tensor,
    chamfer_steps: int = 100,
    qaad_steps: int = 300,
    points_per_shape: int = 2048,
    learning_rate: float = 1e-2,
    leaf_size: int = 1024,
    seed: int = 0,
) -> torch.Tensor:
    """Autodecoder inference: fit codes for new shapes with the decoder frozen.

    The same two phases as training (augmented Chamfer, then QAAD_GREEDY + MSE with QAAD_REASSIGNMENT) optimise
    only a new latent table, starting from the mean of the trained codes.

    Args:
        model: trained :class:`Autodecoder` (not modified).
        targets: float32 ``[N, M, 3]`` new shapes in the model's normalised frame, ``M == model.n_points``.

    Returns:
        float32 ``[N, l]`` codes.

    Raises:
        ValueError: if the point count differs from the model's.
    """
    if targets.shape[1:] != (model.n_points, 3):
        raise ValueError(f"shapes have {targets.shape[1]} points, the model decodes {model.n_points}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        latents = model.latents.detach().mean(dim=0, keepdim=True).repeat(targets.shape[0], 1).requires_grad_(True)
        optimizer = torch.optim.Adam([latents], lr=learning_rate)
        config = TrainingConfig(
            architecture=model.architecture,
            latent_size=model.latent_size,
            n_patches=model.n_patches,
            points_per_shape=points_per_shape,
            shapes_per_step=targets.shape[0],
            chamfer_epochs=chamfer_steps,
            qaad_epochs=qaad_steps,
            leaf_size=leaf_size,
            seed=seed,
        )
        state = TrainingState(config, model, optimizer, torch.Generator().manual_seed(seed))
        shapes = torch.arange(targets.shape[0], device=targets.device)
        for step in range(config.epochs):
            phase = config.phase(step)
            if phase == "qaad" and state.assignment is None:
                state.assignment = _greedy_assignment(model, targets, latents.detach(), leaf_size)
            loss, _ = _step(state, targets, shapes, latents, phase)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return latents.detach()
    finally:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
