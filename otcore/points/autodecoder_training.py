"""Training, encoding and evaluation of point-cloud autodecoders (NeuralQAAD, Wagner & Schwanecke, VISAPP 2022).

Schedule ``"qaad"`` (the paper's): augmented-Chamfer warm-up epochs, then QAAD_GREEDY builds one bijection per
shape from the current outputs and the remaining epochs minimise the MSE against the assigned targets, with
QAAD_REASSIGNMENT improving the assignment on every step's sampled points. Schedule ``"chamfer"``: augmented
Chamfer for the whole budget (the ablation). Each step takes ``shapes_per_step`` shapes and
``points_per_shape`` points of each (equally many from every patch, and the same output points are compared
with their assigned targets, or with an equally large random subset of the target for Chamfer). Adam, seeded.

Paper switches (:class:`TrainingConfig`; defaults follow the paper, ``False``/the other value is the earlier
behaviour, kept for the ablation): ``encoder_init`` (a PointNet encoder produces the codes during the Chamfer
warm-up, then initialises the latent table, after which the table is autodecoded), ``refeed_points`` (the
per-patch layer re-takes ``q_i``), ``chamfer_form`` (Eq. 11's sums of unsquared distances, or the max of mean
squared distances), ``assignment``/``reassign`` (the initial bijection and whether QAAD_REASSIGNMENT runs).
:data:`VARIANTS` names the columns of the paper's Table 1 plus the AtlasNetV2 baseline.

Training is resumable bit for bit: :class:`TrainingState` carries the model, the optimiser, the assignment, the
sampling generator and the position (epoch, step), and converts to and from plain named arrays so that the
caller can checkpoint it anywhere (the flow writes it to the Zarr store).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from otcore.points.autodecoder import Autodecoder, PointNetEncoder
from otcore.points.chamfer import chamfer_l2
from otcore.points.em_kd import EM_KD_SPLITS, em_kd
from otcore.points.qaad import CHAMFER_FORMS, QAAD_ASSIGNMENTS, augmented_chamfer, qaad_greedy, qaad_reassignment

__all__ = [
    "BASELINE_PATCHES",
    "VARIANTS",
    "variant_config",
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
        assignment: QAAD_GREEDY's initial bijection (:func:`otcore.points.qaad.qaad_greedy`): ``"auction"`` (the
            paper's per-leaf linear assignment), ``"exact"`` (scipy per leaf) or ``"random"`` (Table 1's "MSE").
        assignment_split: k-d split of QAAD_GREEDY's paired leaves, ``"pca"`` or ``"axis"`` (the paper's order).
        assignment_tolerance: certified relative gap of QAAD_GREEDY's per-leaf auction (default 1e-3, as EM-kD;
            3e-2 halved its time on 16 x 4,096 crane points at +0.4% cost).
        reassign: run QAAD_REASSIGNMENT every QAAD step (Table 1's "+ REASSIGN"); False keeps the initial one.
        encoder_init: the paper trains a PointNet encoder in the Chamfer phase (codes = encoder(sampled target
            points)) and initialises the latent table with its codes when the phase ends; autodecoding follows.
            False: the table is autodecoded from small random codes throughout (the earlier behaviour).
        refeed_points: the per-patch layer takes the shared features and ``q_i``, as the paper's folding does
            ("features and q_i"); False: features only (earlier).
        chamfer_form: ``"eq11"`` (the paper's Eq. 11: sums of unsquared nearest-neighbour distances) or
            ``"squared-mean"`` (earlier: max of mean squared distances); :func:`otcore.points.qaad.augmented_chamfer`.
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
    assignment: str = "auction"
    assignment_split: str = "pca"
    assignment_tolerance: float = 1e-3
    reassign: bool = True
    encoder_init: bool = True
    refeed_points: bool = True
    chamfer_form: str = "eq11"

    def __post_init__(self):
        if self.architecture not in ("neuralqaad", "atlasnetv2"):
            raise ValueError(f"architecture must be 'neuralqaad' or 'atlasnetv2', got {self.architecture!r}")
        if self.schedule not in ("qaad", "chamfer"):
            raise ValueError(f"schedule must be 'qaad' or 'chamfer', got {self.schedule!r}")
        if self.points_per_shape < self.n_patches:
            raise ValueError("points_per_shape must be at least n_patches")
        if self.assignment not in QAAD_ASSIGNMENTS:
            raise ValueError(f"assignment must be one of {QAAD_ASSIGNMENTS}, got {self.assignment!r}")
        if self.assignment_split not in EM_KD_SPLITS:
            raise ValueError(f"assignment_split must be one of {EM_KD_SPLITS}, got {self.assignment_split!r}")
        if self.chamfer_form not in CHAMFER_FORMS:
            raise ValueError(f"chamfer_form must be one of {CHAMFER_FORMS}, got {self.chamfer_form!r}")

    @property
    def epochs(self) -> int:
        return self.chamfer_epochs + self.qaad_epochs

    def phase(self, epoch: int) -> str:
        return "qaad" if self.schedule == "qaad" and epoch >= self.chamfer_epochs else "chamfer"

    def encoding(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` takes its codes from the PointNet encoder (``encoder_init``, warm-up epochs)."""
        return self.encoder_init and epoch < self.chamfer_epochs


BASELINE_PATCHES = 2
"""Patches of the AtlasNetV2 baseline: the paper uses fewer patches than NeuralQAAD, each an MLP with 4 hidden
layers of 128. Two is the power of two whose parameter count is closest to NeuralQAAD's decoder at the defaults
(latent 64, K = 64: 117,254 against 88,128; one patch, 58,627, would no longer be an atlas), so the baseline is
not smaller than the model it is compared with."""

VARIANTS: dict[str, dict[str, object]] = {
    "chamfer-only": {"architecture": "neuralqaad", "schedule": "chamfer"},  # Table 1 "Chamfer"
    "mse-random": {"architecture": "neuralqaad", "schedule": "qaad", "assignment": "random", "reassign": False},
    "greedy": {"architecture": "neuralqaad", "schedule": "qaad", "assignment": "auction", "reassign": False},
    "neuralqaad": {"architecture": "neuralqaad", "schedule": "qaad", "assignment": "auction", "reassign": True},
    "atlasnetv2": {"architecture": "atlasnetv2", "schedule": "chamfer"},  # the paper's baseline (4 x 128 MLPs)
}
"""Training variants, the columns of NeuralQAAD's Table 1 in order, then the baseline: ``chamfer-only`` (Chamfer
throughout), ``mse-random`` (Chamfer warm-up, then MSE against a random bijection, no reassignment), ``greedy``
(+ QAAD_GREEDY's bijection, no reassignment), ``neuralqaad`` (+ QAAD_REASSIGNMENT: the full method) and
``atlasnetv2`` (independent per-patch MLPs, :data:`BASELINE_PATCHES` patches, Chamfer throughout). Values are
:class:`TrainingConfig` fields."""


def variant_config(variant: str, base: TrainingConfig, baseline_patches: int = BASELINE_PATCHES) -> TrainingConfig:
    """``base`` with the fields of :data:`VARIANTS` ``[variant]`` (and ``n_patches = baseline_patches`` for
    ``atlasnetv2``).

    Raises:
        ValueError: unknown variant.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    fields = dict(VARIANTS[variant])
    if fields["architecture"] == "atlasnetv2":
        fields["n_patches"] = baseline_patches
    return replace(base, **fields)


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
        encoder: the PointNet encoder of the warm-up (``config.encoder_init``), else None; not part of the model.
        latents_from_encoder: True once the latent table has been initialised from the encoder's codes.
        epoch, step: position of the next step (``step`` counts steps inside ``epoch``).
        history: finished epochs.
        epoch_loss, epoch_swaps, epoch_seconds: accumulators of the current epoch.
    """

    config: TrainingConfig
    model: Autodecoder
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    assignment: torch.Tensor | None = None
    encoder: PointNetEncoder | None = None
    latents_from_encoder: bool = False
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
        if self.encoder is not None:
            arrays.update({f"encoder/{k}": v.detach().cpu().numpy() for k, v in self.encoder.state_dict().items()})
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
            "latents_from_encoder": self.latents_from_encoder,
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
        if self.encoder is not None:
            self.encoder.load_state_dict({k[len("encoder/") :]: torch.from_numpy(np.array(v))
                                          for k, v in arrays.items() if k.startswith("encoder/")})
        self.latents_from_encoder = bool(meta.get("latents_from_encoder", False))
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

    The input cloud ``Q`` starts as the first shape's points, as in the paper ("a sample of the dataset"). With
    ``config.encoder_init`` (and warm-up epochs) a :class:`PointNetEncoder` is built too, trained by the same Adam
    (a third parameter group, the network's learning rate).
    """
    model = Autodecoder(
        n_shapes=targets.shape[0],
        latent_size=config.latent_size,
        init_points=targets[0].cpu(),
        n_patches=config.n_patches,
        architecture=config.architecture,
        seed=config.seed,
        refeed_points=config.refeed_points,
    ).to(targets.device)
    network = [p for name, p in model.named_parameters() if name != "latents"]
    groups = [{"params": network, "lr": config.learning_rate},
              {"params": [model.latents], "lr": config.latent_learning_rate}]
    encoder = None
    if config.encoder_init and config.chamfer_epochs > 0:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(config.seed + 1)
        try:
            encoder = PointNetEncoder(config.latent_size).to(targets.device)
        finally:
            torch.random.set_rng_state(generator_state)
        groups.append({"params": list(encoder.parameters()), "lr": config.learning_rate})
    optimizer = torch.optim.Adam(groups)
    generator = torch.Generator().manual_seed(config.seed)
    return TrainingState(config, model, optimizer, generator, encoder=encoder)


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
    model: Autodecoder, targets: torch.Tensor, latents: torch.Tensor, config: TrainingConfig
) -> torch.Tensor:
    """QAAD_GREEDY's bijections ``[N, M]`` for all shapes from the current outputs (one batched call; its own
    generator, so the sampling stream of training is untouched)."""
    outputs = model.decode(latents)
    generator = torch.Generator().manual_seed(config.seed * 100_003 + 7)
    return qaad_greedy(outputs, targets, config.leaf_size, assignment=config.assignment,
                       split=config.assignment_split, generator=generator,
                       relative_tolerance=config.assignment_tolerance)


def _restart_moments(optimizer: torch.optim.Optimizer) -> None:
    """Re-start Adam's moments at the first step of the assigned MSE (call between ``backward`` and ``step``).

    The Chamfer warm-up and the MSE have different gradient scales (Eq. 11 sums unsquared distances over the
    sampled points: about ``S / distance`` times the MSE's gradients). Moments carried over keep stepping along
    the warm-up's directions for tens of steps while the stale second moment mutes the MSE's gradients: measured on
    6 crane frames (2,048 points, 15 + 25 epochs), the MSE *rose* from 0.015 to 0.081 after the switch and EM-kD
    ended at 0.24 against 0.04. Clearing the state instead makes Adam's first steps full-size sign steps of every
    parameter, which threw the MSE from 0.05 to 0.2. So the first moment is zeroed and the second set to the
    current squared gradient: the first MSE step is a tenth of a sign step and the moments then follow the MSE.
    """
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            slots = optimizer.state.get(parameter)
            if not slots or parameter.grad is None:
                continue
            slots["exp_avg"].zero_()
            slots["exp_avg_sq"].copy_(parameter.grad.square())


def _random_picks(
    batch: int, n_points: int, count: int, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """int64 ``[B, count]`` on ``device``: distinct target points per shape, uniformly without replacement (keys
    drawn from the CPU ``generator``, sorted on ``device``: at 65,536 points a CPU sort per step costs more than
    the GPU step itself)."""
    return torch.rand((batch, n_points), generator=generator).to(device).argsort(dim=1)[:, :count]


@torch.no_grad()
def _init_latents_from_encoder(state: TrainingState, targets: torch.Tensor, chunk: int = 32) -> None:
    """Set the latent table to the encoder's codes of every shape (``points_per_shape`` random points each)."""
    config, model = state.config, state.model
    for start in range(0, targets.shape[0], chunk):
        shapes = torch.arange(start, min(start + chunk, targets.shape[0]), device=targets.device)
        picks = _random_picks(shapes.shape[0], targets.shape[1], config.points_per_shape, state.generator,
                              targets.device)
        model.latents[shapes] = state.encoder(targets[shapes.unsqueeze(1), picks])
    state.latents_from_encoder = True


def _step(
    state: TrainingState, targets: torch.Tensor, shapes: torch.Tensor, latents: torch.Tensor | None, phase: str
) -> tuple[torch.Tensor, int]:
    """Loss of one step on ``shapes`` (indices into ``targets`` / ``state.assignment``); may reassign targets.

    ``latents`` None: the codes come from the PointNet encoder applied to the step's Chamfer target points.
    """
    config, model = state.config, state.model
    per_patch = min(config.points_per_shape // model.n_patches, int(model.patch_valid.sum(dim=1).min()))
    point_index = _sample_patch_points(model, shapes.shape[0], per_patch, state.generator)
    flat_index = point_index.flatten(1)
    if phase == "chamfer":
        picks = _random_picks(shapes.shape[0], targets.shape[1], flat_index.shape[1], state.generator,
                              targets.device)
        chamfer_targets = targets[shapes.unsqueeze(1), picks]
        if latents is None:
            latents = state.encoder(chamfer_targets)
        outputs = model.decode_points(point_index, latents).flatten(1, 2)  # [B, S, 3]
        return augmented_chamfer(outputs, chamfer_targets, config.chamfer_form), 0
    outputs = model.decode_points(point_index, latents).flatten(1, 2)  # [B, S, 3]
    sigma = state.assignment[shapes.unsqueeze(1), flat_index]  # [B, S] target index of each sampled output
    swaps = 0
    if config.reassign:
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
        start = time.perf_counter()
        if state.encoder is not None and not state.latents_from_encoder and not config.encoding(state.epoch):
            _init_latents_from_encoder(state, targets)
        restart = phase == "qaad" and state.assignment is None
        if restart:
            state.assignment = _greedy_assignment(model, targets, model.latents.detach(), config)
        order = _epoch_order(config, n_shapes, state.epoch).to(targets.device)
        shapes = order[state.step * config.shapes_per_step : (state.step + 1) * config.shapes_per_step]
        latents = None if config.encoding(state.epoch) and state.encoder is not None else model.latents[shapes]
        loss, swaps = _step(state, targets, shapes, latents, phase)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if restart:
            _restart_moments(state.optimizer)
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
    if state.encoder is not None and not state.latents_from_encoder:  # warm-up only: the table takes its codes
        _init_latents_from_encoder(state, targets)
    return state


@torch.no_grad()
def evaluate(
    model: Autodecoder,
    targets: torch.Tensor,
    latents: torch.Tensor | None = None,
    leaf_size: int = 1024,
    solver: str = "auction",
    splits: tuple[str, ...] = ("pca",),
) -> dict[str, np.ndarray]:
    """Per-shape ``em_kd`` and ``chamfer_l2`` of the decoded clouds against ``targets``.

    Args:
        model: trained :class:`Autodecoder`.
        targets: float32 ``[N, M, 3]`` (normalised units).
        latents: ``[N, l]`` codes; defaults to the model's table.
        leaf_size: EM-kD leaf size.
        solver: per-leaf EMD solver of :func:`otcore.points.em_kd.em_kd` (``"exact"`` or ``"auction"``).
        splits: k-d splits of EM-kD (``"pca"``, ``"axis"``); ``em_kd`` is the first, each also as ``em_kd_<split>``.

    Returns:
        dict of float64 ``[N]`` arrays ``em_kd`` (Euclidean, input units), ``em_kd_<split>`` and ``chamfer_l2``
        (squared units), and the decoded clouds under ``"decoded"`` (float32 ``[N, M, 3]``).
    """
    model.eval()
    latents = model.latents if latents is None else latents
    decoded = model.decode(latents)
    result = {}
    for split in splits:
        result[f"em_kd_{split}"] = np.array([
            em_kd(decoded[i], targets[i], leaf_size=leaf_size, solver=solver, split=split).em_kd
            for i in range(targets.shape[0])])
    result["em_kd"] = result[f"em_kd_{splits[0]}"]
    result["chamfer_l2"] = np.array([float(chamfer_l2(decoded[i], targets[i])) for i in range(targets.shape[0])])
    result["decoded"] = decoded.cpu().numpy()
    return result


def encode(
    model: Autodecoder,
    targets: torch.Tensor,
    chamfer_steps: int = 100,
    qaad_steps: int = 300,
    points_per_shape: int = 2048,
    learning_rate: float = 1e-2,
    leaf_size: int = 1024,
    seed: int = 0,
    chamfer_form: str = "eq11",
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
            encoder_init=False,
            refeed_points=model.refeed_points,
            chamfer_form=chamfer_form,
        )
        state = TrainingState(config, model, optimizer, torch.Generator().manual_seed(seed))
        shapes = torch.arange(targets.shape[0], device=targets.device)
        restart = False
        for step in range(config.epochs):
            phase = config.phase(step)
            if phase == "qaad" and state.assignment is None:
                state.assignment = _greedy_assignment(model, targets, latents.detach(), config)
                restart = True
            loss, _ = _step(state, targets, shapes, latents, phase)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if restart:
                _restart_moments(optimizer)
                restart = False
            optimizer.step()
        return latents.detach()
    finally:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
