"""The ``brenier`` CLI is built from the config models: every option of the typer CLI it replaced still parses to
the same config, defaults and help text come from the models' fields, and the default run ids are unchanged."""

from __future__ import annotations

import pytest

from flows.runtime.cli import RunOptions, app
from tasks.align_embeddings import AlignmentConfig
from tasks.autodecoder import AutodecoderConfig
from tasks.gaussian_reduction import GaussianReductionConfig
from tasks.geometry_image_sequence import SequenceConfig
from tasks.geometry_images import GeometryImageConfig
from tasks.restoration import TrainRestorationConfig


def parse(command: str) -> dict:
    _, bound, *_ = app.parse_args(command.split())
    return dict(bound.arguments)


def test_old_option_names_parse_to_the_config() -> None:
    args = parse("geometry-images meshes --store /tmp/s --resolution 33 --levels 2 --feature-weight 0.5 --samples 100 "
                 "--seed 1 --ot-solver neural --domain sphere --workers 2 --dask-address tcp://h:1 --run-id r")
    assert args["config"] == GeometryImageConfig(resolution=33, levels=2, feature_weight=0.5, samples=100, seed=1,
                                                 ot_solver="neural", domain="sphere")
    assert args["run"] == RunOptions(store="/tmp/s", workers=2, dask_address="tcp://h:1", run_id="r")
    args = parse("reduce-gaussians scene.ply --ratio 0.1 --ratio 0.2 --method ghap --method random --pen-size 8 "
                 "--iterations 3 --appearance nearest --resolution 32 --views 2 --train-views 4 --finetune-steps 0")
    assert args["ratio"] == [0.1, 0.2]
    assert args["config"] == GaussianReductionConfig(methods=["ghap", "random"], pen_size=8, max_iterations=3,
                                                     appearance="nearest", resolution=32, views=2, train_views=4,
                                                     finetune_steps=0)
    args = parse("autodecoder crane.npz --variant neuralqaad --variant atlasnetv2 --latent-size 8 --patches 4 "
                 "--chamfer-epochs 1 --qaad-epochs 2 --checkpoint-every 5 --device cpu")
    assert args["variant"] == ["neuralqaad", "atlasnetv2"]
    assert args["config"] == AutodecoderConfig(latent_size=8, patches=4, chamfer_epochs=1, qaad_epochs=2,
                                               checkpoint_every=5, device="cpu")
    args = parse("encode shapes --model run/item --model-store m --chamfer-steps 3 --qaad-steps 4 --samples 64")
    assert (args["model"], args["model_store"], args["chamfer_steps"], args["qaad_steps"]) == ("run/item", "m", 3, 4)
    args = parse("geometry-image-sequence crane.npz --ot-solver newton --no-warm-start --frames 3 --tol 1e-3 "
                 "--frames-per-task 2")
    assert args["config"] == SequenceConfig(ot_solver="newton", warm_start=False, frames=3, tol=1e-3,
                                            frames_per_task=2)
    args = parse("align-embeddings a.npy b.npy c.npy --hidden 8 --layers 1 --steps 2 --batch-size 16 --lr 0.01")
    assert args["target"] == ("b.npy", "c.npy")
    assert args["config"] == AlignmentConfig(hidden=8, layers=1, steps=2, batch_size=16, lr=0.01)


def test_defaults_are_the_models_and_run_ids_are_unchanged() -> None:
    """The demo's run id (README, runs/demo/<run_id>) is the one the hand-written run ids produced."""
    args = parse("geometry-images meshes")
    assert args.get("config", GeometryImageConfig()) == GeometryImageConfig()
    # pipeline version 3 (rate_distortion rows per restoration, --restoration): new geometry-image run ids
    assert GeometryImageConfig().default_run_id() == "geometry-images-5d908da349"
    assert TrainRestorationConfig().default_run_id() == TrainRestorationConfig(device="cpu").default_run_id()
    assert SequenceConfig().default_run_id() == "geometry-image-sequence-c0f2d317ac"
    assert AutodecoderConfig().default_run_id() == "autodecoder-590a0036d6"
    # pipeline version 2 (orbit cameras on opacity-weighted percentiles): a new Gaussian-reduction run id
    assert GaussianReductionConfig().default_run_id() == "reduce-7726506964"
    assert AlignmentConfig().default_run_id() == "align-83baa48c4c"
    # Scheduling fields do not change what a run computes, so they leave its id alone.
    assert SequenceConfig(device="cpu", frames_per_task=1).default_run_id() == SequenceConfig().default_run_id()
    assert GeometryImageConfig(samples=1).default_run_id() != GeometryImageConfig().default_run_id()


@pytest.mark.parametrize("field", ["resolution", "levels", "feature_weight", "samples", "domain"])
def test_help_text_comes_from_the_model(field: str, capsys) -> None:
    with pytest.raises(SystemExit):
        app.meta(["geometry-images", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    description = " ".join(GeometryImageConfig.model_fields[field].description.split())
    assert f"--{field.replace('_', '-')}" in out and description[:40] in out
