"""The pipelines' parameters: one pydantic model per job, the options of its command line.

These modules import nothing heavy (no torch, Prefect, Zarr or trimesh): the command line builds every option,
default and help text from these models, and ``brenier CMD --help`` or a bad option must answer at once. A model
converts itself to the computing core's own config only inside a method, importing it there.

Every model derives its run id and its items' fingerprints from its fields (:class:`PipelineConfig`).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from otcore.mesh.restoration_training import RestorationTrainingConfig

__all__ = ["run_id", "PipelineConfig", "TrainRestorationConfig", "AlignmentConfig"]


def run_id(prefix: str, payload: str) -> str:
    """``<prefix>-<first 10 hex digits of sha256(payload)>``: a run id fixed by what the run computes."""
    return f"{prefix}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


class PipelineConfig(BaseModel):
    """Base of the pipelines' config models: the run id and the item fingerprint derived from the config.

    Subclasses set ``RUN_PREFIX``, ``PIPELINE_VERSION`` (bump it when outputs of unchanged inputs would change:
    it invalidates finished items) and ``IDENTITY_EXCLUDE``, the fields that change how a run is scheduled but not
    what it computes (device, checkpoint interval, batch sizes of the task fan-out).
    """

    RUN_PREFIX: ClassVar[str]
    PIPELINE_VERSION: ClassVar[str]
    IDENTITY_EXCLUDE: ClassVar[frozenset[str]] = frozenset()

    def default_run_id(self) -> str:
        """Run id fixed by the config, so re-running the same job finds (and resumes or skips) its items."""
        return run_id(self.RUN_PREFIX, self.model_dump_json(exclude=set(self.IDENTITY_EXCLUDE)) + self.PIPELINE_VERSION)

    def fingerprint(self, *inputs: Any) -> str:
        """Identity of an item's outputs: its inputs (e.g. the source's sha256), the config and the version.

        Args:
            inputs: JSON-serialisable values identifying the item's inputs, in a fixed order.

        Returns:
            64 hex digits (sha256).
        """
        config = self.model_dump(exclude=set(self.IDENTITY_EXCLUDE))
        payload = json.dumps([*inputs, config, self.PIPELINE_VERSION], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


class TrainRestorationConfig(PipelineConfig):
    """Parameters of the train-restoration pipeline (documented defaults; the pyramids are the geometry-images
    flow's defaults)."""

    RUN_PREFIX: ClassVar[str] = "restoration"
    PIPELINE_VERSION: ClassVar[str] = "1"
    IDENTITY_EXCLUDE: ClassVar[frozenset[str]] = frozenset({"device", "checkpoint_every", "threads"})

    epochs: int = Field(40, ge=1, description="training epochs")
    steps_per_epoch: int = Field(150, ge=1, description="steps per epoch")
    images_per_step: int = Field(8, ge=1, description="meshes per step")
    crop: int = Field(24, ge=2, description="side of the output window per mesh and step")
    window: int = Field(5, ge=3, description="neighbourhood side of the encoder's input (odd)")
    width: int = Field(24, ge=1, description="encoder channels")
    blocks: int = Field(1, ge=0, description="residual 3x3 blocks of the encoder")
    decoder_width: int = Field(32, ge=1, description="hidden width of the decoder MLP")
    learning_rate: float = Field(2e-3, gt=0)
    tangent_weight: float = Field(0.25, ge=0, description="weight of the error across the surface normal (the "
                                  "error along it has weight 1)")
    edge_weight: float = Field(0.5, ge=0, description="weight of the edge term")
    surface_weight: float = Field(2.0, ge=0, description="weight of the point-to-surface term")
    surface_samples: int = Field(100_000, ge=1, description="samples of each original mesh for the surface term")
    seed: int = 0
    device: str = Field("auto", description="'auto' (CUDA when the worker has it), 'cpu', 'cuda', ...")
    checkpoint_every: int = Field(50, ge=1, description="training steps between checkpoints")
    threads: int | None = Field(None, ge=1, description="torch CPU threads of the training task (default: the "
                                "worker's, one in a Dask worker process); the task runs alone after the images")

    def training(self) -> RestorationTrainingConfig:
        """The :class:`otcore.mesh.restoration_training.RestorationTrainingConfig` of these parameters."""
        from otcore.mesh.neural_restoration import RestorationConfig
        from otcore.mesh.restoration_training import RestorationTrainingConfig

        return RestorationTrainingConfig(
            network=RestorationConfig(window=self.window, width=self.width, blocks=self.blocks,
                                      decoder_width=self.decoder_width),
            epochs=self.epochs, steps_per_epoch=self.steps_per_epoch, images_per_step=self.images_per_step,
            crop=self.crop, learning_rate=self.learning_rate, tangent_weight=self.tangent_weight,
            edge_weight=self.edge_weight,
            surface_weight=self.surface_weight, seed=self.seed)


class AlignmentConfig(PipelineConfig):
    """Parameters of the embedding-alignment job (documented defaults)."""

    RUN_PREFIX: ClassVar[str] = "align"
    PIPELINE_VERSION: ClassVar[str] = "1"
    IDENTITY_EXCLUDE: ClassVar[frozenset[str]] = frozenset({"device"})

    hidden: int = Field(128, ge=1, description="ICNN width")
    layers: int = Field(3, ge=1, description="ICNN hidden layers")
    steps: int = Field(300, ge=1, description="min-max outer steps")
    inner_steps: int = Field(5, ge=1, description="map-potential steps per dual step")
    batch_size: int = Field(512, ge=1)
    lr: float = Field(3e-3, gt=0.0, description="Adam learning rate of both potentials")
    seed: int = Field(0)
    device: str = Field("auto", description="auto: cuda when the worker has a GPU, else cpu")
    distance_points: int = Field(4000, ge=2, description="points per set for the energy distance (subsampled)")
