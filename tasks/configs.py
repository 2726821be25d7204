"""The pipelines' parameters: one pydantic model per job, the options of its command line.

These modules import nothing heavy (no torch, Prefect, Zarr or trimesh): the command line builds every option,
default and help text from these models, and ``brenier CMD --help`` or a bad option must answer at once. A model
converts itself to the computing core's own config only inside a method, importing it there.

Every model derives its run id and its items' fingerprints from its fields (:class:`PipelineConfig`).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from cyclopts import Parameter  # command-line aliases of config fields (flows/runtime/cli.py)
from pydantic import BaseModel, Field, field_validator, model_validator

if TYPE_CHECKING:
    from otcore.mesh.restoration_training import RestorationTrainingConfig
    from otcore.points.autodecoder_training import TrainingConfig
    from storage.image_codecs import CodecSetting
    from tasks.shared.restoration import Restoration

__all__ = ["run_id", "PipelineConfig", "GeometryImageConfig", "SequenceConfig", "AutodecoderConfig",
           "GaussianReductionConfig", "TrainRestorationConfig", "AlignmentConfig", "CodecName", "VARIANTS",
           "BASELINE_PATCHES", "REDUCTION_METHODS", "DEFAULT_REDUCTION_METHODS", "DEFAULT_RATIOS"]

# The command line's copies of the core's names, so that help and option errors need no torch or Zarr import;
# tests/tasks/test_configs.py asserts each equals the core's.
CodecName = Literal["jpeg2k", "jpegxl", "png", "zstd"]
"""Image codecs of the stored pyramid levels (:data:`storage.image_codecs.CodecName`)."""
VARIANTS = ("chamfer-only", "mse-random", "greedy", "neuralqaad", "atlasnetv2")
"""Autodecoder training variants (:data:`otcore.points.autodecoder_training.VARIANTS`): the columns of
NeuralQAAD's Table 1 -- chamfer-only ("Chamfer"), mse-random ("MSE", random bijection), greedy ("+ GREEDY"),
neuralqaad ("+ REASSIGN", the full method) -- and the atlasnetv2 baseline."""
BASELINE_PATCHES = 2
"""Patches of the AtlasNetV2 baseline (:data:`otcore.points.autodecoder_training.BASELINE_PATCHES`)."""
REDUCTION_METHODS = ("ghap", "ghap-kl", "ghap-euclidean", "random", "top_opacity", "lightgaussian")
"""Gaussian-reduction methods (:data:`otcore.splats.reduction.REDUCTION_METHODS`)."""
DEFAULT_REDUCTION_METHODS = ("ghap", "random", "top_opacity", "lightgaussian")
DEFAULT_RATIOS = (0.1, 0.2, 0.5)
"""Target ratios of the Gaussian-reduction job: kept Gaussians / original Gaussians."""


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


class GeometryImageConfig(PipelineConfig):
    """Parameters of the geometry-image pipeline (documented defaults)."""

    RUN_PREFIX: ClassVar[str] = "geometry-images"
    # bump when outputs of unchanged inputs would change: invalidates finished items
    # 2: cut augmentation by default, convex-combination repair of centroid flips; image-coded pyramid levels with
    #    side info, rate_distortion rows stored with the item
    # 3: rate_distortion rows per restoration (restore, restore_seconds, model_bytes); --restoration
    PIPELINE_VERSION: ClassVar[str] = "3"
    # strict / follow_symlinks only decide whether a mesh is read at all (refused or repaired / followed), never
    # what a readable mesh gives: default run ids are unchanged
    # item_timeout only decides whether a slow mesh finishes, never what a finished one gives
    IDENTITY_EXCLUDE: ClassVar[frozenset[str]] = frozenset({"strict", "follow_symlinks", "item_timeout"})

    resolution: int = Field(257, description="geometry image side, 2^n + 1")
    levels: int = Field(5, ge=1, description="mipmap levels (257 -> 129, 65, 33, 17)")
    feature_weight: float = Field(0.0, ge=0.0, description="lambda in masses * (1 + lambda |H| / mean |H|)")
    bits: int = Field(14, ge=10, le=16, description="quantisation bits per channel (10..16); 14 (Draco's default) "
                      "keeps the quantisation error (<= 2e-5 of the bbox diagonal) about 100x below the sampling error "
                      "at 257 and stores about 0.7x the bytes of 16 bits")
    codec: CodecName = Field("jpeg2k", description="image codec of the stored pyramid levels: jpeg2k | jpegxl | "
                             "png | zstd (storage.image_codecs)")
    codec_quality: float | None = Field(None, description="None: lossless; jpeg2k: target PSNR in dB; jpegxl: "
                                        "quality 0..100")
    rate_distortion: list[str] = Field(
        default_factory=list, description="further codec settings ('jpeg2k:60', 'jpegxl:lossless', ...) coded in "
        "memory and measured per level for the rate_distortion table, besides the stored one")
    restoration: str | None = Field(
        None, description="model file of a trained restoration network (brenier train-restoration): adds "
        "restore=neural rows of the OT map's levels beside restore=bilinear to the rate_distortion table")
    samples: int = Field(50_000, ge=1, description="area-uniform samples per surface for chamfer_l2 / hausdorff")
    seed: int = Field(0, description="sampling seed")
    tol: float = Field(1e-6, gt=0.0, description="Newton tolerance on max relative cell-mass error")
    max_newton_iterations: int = Field(60, ge=1)
    cut_paths: int = Field(8, ge=0, description="most cut-augmentation paths through appendages (0: plain cut)")
    ot_solver: Literal["newton", "neural"] = Field(
        "newton", description="semi-discrete OT solver: damped Newton from zero weights, or OT-Net (otcore.ot.ot_net: "
        "at least 10 Adam steps of the height network on the dual, then Newton from the best iterate; slower, see "
        "bench/ot_net_reuse.py)")
    domain: Literal["square", "sphere"] = Field(
        "square", description="square: cut to a disk, OT onto [0,1]^2; sphere: closed genus-0 meshes only, "
        "spherical OT (HOTS3D) + seamless octahedral geometry image")
    sphere_ot_steps: int = Field(100, ge=1, description="domain=sphere: HOTS3D min-max steps")
    sphere_polish_iterations: int = Field(1000, ge=0, description="domain=sphere: L-BFGS iterations of the polish")
    strict: bool = Field(False, description="refuse meshes with degenerate or duplicate faces instead of repairing "
                         "them")
    follow_symlinks: bool = Field(False, description="read symbolic links that point outside the dataset folder")
    item_timeout: float | None = Field(None, gt=0, description="seconds one mesh may take (parameterize + encode); "
                                       "past it the mesh gets an ItemTimeoutError failure row and the run goes on")

    @field_validator("resolution")
    @classmethod
    def _check_resolution(cls, value: int) -> int:
        if value < 3 or (value - 1) & (value - 2):
            raise ValueError("must be 2^n + 1, e.g. 65, 129, 257 or 513")
        return value

    @model_validator(mode="after")
    def _check_codec(self) -> GeometryImageConfig:
        # the fields' own bounds cover a lossless setting; the codec module checks qualities and setting texts
        if self.rate_distortion or self.codec_quality is not None:
            from storage.image_codecs import CodecSetting

            for text in self.rate_distortion:  # a bad setting raises CodecSettingError, a ValueError
                CodecSetting.parse(text, self.bits)
            CodecSetting(self.codec, self.codec_quality, self.bits)
        return self

    @property
    def restorations(self) -> list[Restoration]:
        """Bilinear, then the neural restoration of :attr:`restoration` when one is set.

        Raises:
            storage.models.ModelFileError: the model file is missing or not a restoration model.
        """
        from tasks.shared.restoration import BILINEAR, load_restoration

        return [BILINEAR] + ([load_restoration(self.restoration)] if self.restoration else [])

    @property
    def codec_setting(self) -> CodecSetting:
        """The setting of the stored pyramid levels."""
        from storage.image_codecs import CodecSetting

        return CodecSetting(self.codec, self.codec_quality, self.bits)

    @property
    def rate_distortion_settings(self) -> list[CodecSetting]:
        """The stored setting first, then the further :attr:`rate_distortion` settings (duplicates dropped)."""
        from storage.image_codecs import CodecSetting

        settings = [self.codec_setting]
        for text in self.rate_distortion:
            setting = CodecSetting.parse(text, self.bits)
            if setting not in settings:
                settings.append(setting)
        return settings


class SequenceConfig(PipelineConfig):
    """Parameters of the geometry-image sequence job (documented defaults)."""

    RUN_PREFIX: ClassVar[str] = "geometry-image-sequence"
    # 2: convex-combination repair of centroid flips (otcore.mesh.convex_combination)
    # 3: ot_solver="neural" trains the network on every frame (OTNetConfig.fit_min_steps) and Newton starts from
    #    the best fit iterate; the default solver is Newton warm-started from the previous frame's weights (issue 18)
    PIPELINE_VERSION: ClassVar[str] = "3"
    # follow_symlinks only decides whether a file is read at all, never what a readable one gives: default run ids
    # are unchanged
    IDENTITY_EXCLUDE: ClassVar[frozenset[str]] = frozenset({"frames_per_task", "device", "follow_symlinks"})

    ot_solver: Literal["newton", "neural"] = Field("newton", description=(
        "newton: damped Newton, each frame started from the previous frame's weights (--no-warm-start: from zero); "
        "neural: OT-Net (arXiv 2306.08233), at least 10 Adam steps of the height network from the previous frame's "
        "network, then Newton from the best iterate. On crane the network never saved a Newton step and took about "
        "3x the seconds (bench/ot_net_reuse.py, otcore.ot.ot_net)"))
    warm_start: bool = Field(True, description="start each frame's solve from the previous frame's solution")
    frames: int | None = Field(None, ge=1, description="only the first N frames (default: all)")
    cut_paths: int = Field(8, ge=0, description="most cut-augmentation paths (Gu-Gortler-Hoppe 2002)")
    resolution: int = Field(257, description="geometry image side, 2^n + 1")
    levels: int = Field(5, ge=1, description="mipmap levels")
    bits: int = Field(16, ge=10, le=16, description="quantisation bits per channel (10..16)")
    samples: int = Field(20_000, ge=1, description="samples per surface for chamfer_l2 / hausdorff")
    seed: int = Field(0, description="sampling and network seed")
    tol: float = Field(1e-6, gt=0.0, description=(
        "max relative cell-mass error of every solve (1e-3 moves the map by ~1e-3 texel at 257^2 and took 14-27% "
        "less time per warm frame in two runs of bench/sequence_warm_start.py)"))
    max_newton_iterations: int = Field(60, ge=1)
    frames_per_task: int = Field(16, ge=1, description="frames encoded per Prefect task")
    device: str = Field("auto", description="torch device of OT-Net: auto = the worker's GPU if any")
    follow_symlinks: bool = Field(False, description="read symbolic links that point outside the dataset folder")


class AutodecoderConfig(PipelineConfig):
    """Parameters of the autodecoder pipeline (documented defaults; training ones follow NeuralQAAD)."""

    RUN_PREFIX: ClassVar[str] = "autodecoder"
    # 2: EM-kD scored with the principal-axis k-d split (otcore.points.em_kd.em_kd split="pca")
    # 3: paper fidelity (issue 18): QAAD_GREEDY by per-leaf auction, PointNet-initialised codes, q_i re-fed to the
    #    per-patch layer, Eq. 11 Chamfer, the paper's AtlasNetV2 baseline (2 patches x 4 x 128), Table 1 variants
    PIPELINE_VERSION: ClassVar[str] = "3"
    # follow_symlinks only decides whether a file is read at all, never what a readable one gives: default run ids
    # are unchanged
    IDENTITY_EXCLUDE: ClassVar[frozenset[str]] = frozenset({"device", "checkpoint_every", "follow_symlinks"})

    point_source: str = Field("vertices", pattern="^(vertices|surface)$",
                              description="train on the vertices, or on area-uniform surface samples")
    samples: int = Field(65_536, ge=16, description="surface samples per shape (point_source='surface')")
    latent_size: int = Field(64, ge=1)
    patches: int = Field(64, ge=1, description="K, a power of two")
    points_per_shape: int = Field(2048, ge=1, description="points sampled per shape per step")
    shapes_per_step: int = Field(8, ge=1)
    chamfer_epochs: int = Field(20, ge=0, description="augmented-Chamfer warm-up epochs")
    qaad_epochs: int = Field(80, ge=0, description="QAAD epochs (Chamfer variants train the same total)")
    learning_rate: float = Field(1e-3, gt=0)
    latent_learning_rate: float = Field(1e-3, gt=0)
    leaf_size: int = Field(1024, ge=1, description="k-d leaf size of QAAD_GREEDY and EM-kD")
    encoder_init: bool = Field(True, description="train a PointNet encoder in the Chamfer phase and initialise the "
                                                 "latent table from its codes (the paper); off: random codes")
    refeed_points: bool = Field(True, description="the per-patch layer takes the features and q_i (the paper's "
                                                  "folding); off: features only")
    chamfer_form: str = Field("eq11", pattern="^(eq11|squared-mean)$",
                              description="augmented Chamfer: eq11 (the paper: sums of unsquared nearest-neighbour "
                                          "distances) or squared-mean (max of mean squared distances)")
    baseline_patches: int = Field(BASELINE_PATCHES, ge=1,
                                  description="patches of the atlasnetv2 baseline (power of two; 4 x 128 MLP each)")
    seed: int = 0
    device: str = Field("auto", description="'auto' (CUDA when the worker has it), 'cpu', 'cuda', 'cuda:1', ...")
    checkpoint_every: int = Field(50, ge=1, description="training steps between checkpoints")
    follow_symlinks: bool = Field(False, description="read symbolic links that point outside the dataset folder")

    def training(self, variant: str) -> TrainingConfig:
        """The :class:`otcore.points.autodecoder_training.TrainingConfig` of ``variant`` (one of :data:`VARIANTS`)
        under this config.

        Raises:
            ValueError: unknown variant.
        """
        from otcore.points.autodecoder_training import TrainingConfig, variant_config

        return variant_config(variant, TrainingConfig(
            latent_size=self.latent_size,
            n_patches=self.patches,
            points_per_shape=self.points_per_shape,
            shapes_per_step=self.shapes_per_step,
            chamfer_epochs=self.chamfer_epochs,
            qaad_epochs=self.qaad_epochs,
            learning_rate=self.learning_rate,
            latent_learning_rate=self.latent_learning_rate,
            leaf_size=self.leaf_size,
            seed=self.seed,
            encoder_init=self.encoder_init,
            refeed_points=self.refeed_points,
            chamfer_form=self.chamfer_form,
        ), self.baseline_patches)


class GaussianReductionConfig(PipelineConfig):
    """Parameters of the Gaussian-reduction pipeline (documented defaults)."""

    RUN_PREFIX: ClassVar[str] = "reduce"
    # 2: orbit cameras framed on opacity-weighted percentiles of the means (floaters barely count)
    # 3: GHAP cost option (``cost``, methods ghap-kl / ghap-euclidean), lightgaussian from training-view hit counts,
    #    fine-tuning with cached frozen geometry, 100 steps at twice the learning rates (was 200)
    PIPELINE_VERSION: ClassVar[str] = "3"
    # follow_symlinks only decides whether a scene is read at all, never what a readable scene gives: default run
    # ids are unchanged
    IDENTITY_EXCLUDE: ClassVar[frozenset[str]] = frozenset({"device", "follow_symlinks"})

    methods: Annotated[list[str], Parameter(alias="--method")] = Field(
        default_factory=lambda: list(DEFAULT_REDUCTION_METHODS),
        description=f"repeatable; some of {', '.join(REDUCTION_METHODS)}")
    pen_size: int = Field(1024, ge=1, description="GHAP: at most this many Gaussians per k-d pen")
    max_iterations: Annotated[int, Parameter(alias="--iterations")] = Field(
        10, ge=1, description="GHAP: assignment/update rounds")
    cost: str = Field("kl", pattern="^(kl|euclidean)$",
                      description="GHAP cost of method 'ghap': KL + moment matching, or the released code's "
                                  "|dmu|^2 + |dSigma|_F^2 (methods ghap-kl / ghap-euclidean fix it)")
    appearance: str = Field("weighted", pattern="^(weighted|nearest)$",
                            description="GHAP colour/opacity: opacity-weighted average of members, or nearest member")
    resolution: int = Field(128, ge=16, description="render width = height in pixels")
    views: int = Field(8, ge=1, description="held-out orbit cameras for psnr/ssim")
    train_views: int = Field(16, ge=1, description="orbit cameras of the fine-tuning targets")
    finetune_steps: int = Field(100, ge=0, description="appearance fine-tuning steps (0: none)")
    seed: int = Field(0, description="random baseline and fine-tuning view order")
    device: str = Field("auto", description="'auto' (CUDA when the worker has it), 'cpu', 'cuda', ...")
    follow_symlinks: bool = Field(False, description="read symbolic links that point outside the dataset folder")
