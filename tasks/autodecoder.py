"""Prefect tasks of the autodecoder pipeline: train a NeuralQAAD (or baseline) model on a shape collection, and
encode new shapes with a trained one.

An item is one collection x one training variant. Its Zarr group (``<store>/<run_id>/<item_id>``) holds the
checkpoints while training (model, optimiser, assignment, sampling generator; two alternating slots), then the
trained model (``model/*``), the latent table, and the decoded clouds. A re-run after an interruption resumes
from the last checkpoint; a re-run of a finished item returns its stored rows without work.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from prefect import task

from otcore.device import resolve_device
from otcore.points.autodecoder import Autodecoder, matched_baseline_width
from otcore.points.autodecoder_training import (
    TrainingState,
    encode,
    evaluate,
    new_training_state,
    normalization,
    train,
)
from otcore.points.point_sampling import shape_points
from storage.collections import ShapeCollection, read_collection
from storage.errors import InputError
from storage.zarr_store import ItemStore
from tasks.configs import VARIANTS, AutodecoderConfig
from tasks.shared.progress import ProgressClock, report_progress, task_logger
from tasks.shared.records import ItemResult, failure_row

__all__ = ["AutodecoderConfig", "VARIANTS", "train_autodecoder", "encode_collection", "PIPELINE_VERSION", "load_model"]

PIPELINE_VERSION = AutodecoderConfig.PIPELINE_VERSION


def _read(
    collection_uri: str, run_id: str, suffix: str, follow_symlinks: bool = False
) -> tuple[ItemResult, ShapeCollection | None]:
    """Read a collection: the item's result (id ``<collection>--<suffix>``, read failure rows) and the collection.

    The collection is None when it is unusable as a whole (its failure row is then in the result).
    """
    try:
        collection, shape_failures = read_collection(collection_uri, follow_symlinks=follow_symlinks)
    except InputError as error:
        item_id = f"{error.item_id}--{suffix}"
        return ItemResult(item_id, failures=[failure_row(run_id, item_id, collection_uri, "read", error)]), None
    item_id = f"{collection.collection_id}--{suffix}"
    return ItemResult(item_id, failures=[
        failure_row(run_id, item_id, f"{collection_uri}#{f.shape_id}", "read", f.error) for f in shape_failures
    ]), collection


def _points(collection: ShapeCollection, config: AutodecoderConfig) -> np.ndarray:
    count = config.samples if config.point_source == "surface" else None
    return shape_points(collection.vertices, collection.faces, config.point_source, count, config.seed)


def _unit_diagonal_factors(points: np.ndarray, scale: float) -> np.ndarray:
    """Per shape: factor from normalised collection units to that shape's unit-bbox-diagonal units."""
    diagonals = np.linalg.norm(points.max(axis=1) - points.min(axis=1), axis=1)
    return scale / diagonals


@task(name="train-autodecoder", retries=1, retry_delay_seconds=2)
def train_autodecoder(
    collection_uri: str, variant: str, store: str, run_id: str, config: AutodecoderConfig
) -> ItemResult:
    """Train one variant on one collection (resuming from its last checkpoint), evaluate, write the model.

    Returns:
        The item's :class:`ItemResult`: tables ``autodecoder_epochs``, ``autodecoder_shapes`` and
        ``autodecoder_models`` (which records ``resumed_from_step``), and the read failures of bad shapes.
    """
    logger = task_logger(__name__)
    started = time.perf_counter()
    result, collection = _read(collection_uri, run_id, variant, config.follow_symlinks)
    if collection is None:
        return result
    item_id = result.item_id
    failures = result.failures
    resumed_from_step = None
    for failure in failures:
        logger.warning("%s: shape skipped: %s: %s", item_id, failure["error_type"], failure["message"])

    fingerprint = config.fingerprint(collection.sha256, variant, list(collection.shape_ids))
    item_store = ItemStore(store, run_id, item_id)
    if item_store.is_complete(fingerprint):
        return ItemResult(item_id, ItemResult.split_stored(item_store.completed_rows()), failures, skipped=True)

    try:
        points = _points(collection, config)
    except ValueError as error:
        failures.append(failure_row(run_id, item_id, collection_uri, "points", error))
        return result
    centre, scale = normalization(points)
    device = resolve_device(config.device)
    targets = torch.from_numpy((points - centre) / scale).float().to(device)
    training = config.training(variant)
    state = new_training_state(training, targets)

    resume_step = item_store.checkpoint_step(fingerprint)
    if resume_step is not None:
        arrays, meta = item_store.read_checkpoint()
        state.load_arrays(arrays, meta)
        resumed_from_step = resume_step
        logger.info("%s: resuming from checkpoint at step %d (epoch %d)", item_id, resume_step, state.epoch)
    else:
        item_store.begin(fingerprint, {
            "collection_id": collection.collection_id, "source_uri": collection.uri,
            "source_sha256": collection.sha256, "variant": variant, "config": config.model_dump(),
            "shape_ids": list(collection.shape_ids), "pipeline_version": PIPELINE_VERSION,
        })
    logger.info("%s: %d shapes x %d points, %s on %s, %d epochs", item_id, points.shape[0], points.shape[1],
                variant, device, training.epochs)

    steps_per_epoch = -(-points.shape[0] // training.shapes_per_step)

    def global_step(s: TrainingState) -> int:
        return s.epoch * steps_per_epoch + s.step

    def on_step(s: TrainingState) -> None:
        if global_step(s) % config.checkpoint_every == 0 or s.finished:
            arrays, meta = s.to_arrays()
            item_store.write_checkpoint(arrays, meta, global_step(s))

    clock = ProgressClock()

    def on_epoch(s: TrainingState, record) -> None:
        if clock.due(final=s.finished):
            report_progress(logger, "%s: epoch %d/%d %s loss %.3e swaps %d (%.1f s per epoch, %.0f s)", item_id,
                            record.epoch + 1, training.epochs, record.phase, record.loss, record.swaps,
                            record.seconds, clock.elapsed)

    train(state, targets, on_step=on_step, on_epoch=on_epoch)
    train_seconds = sum(r.seconds for r in state.history)

    metrics = evaluate(state.model, targets, leaf_size=config.leaf_size)
    factors = _unit_diagonal_factors(points, scale)
    em = metrics["em_kd"] * factors
    cd = metrics["chamfer_l2"] * factors**2
    _write_model(item_store, state.model, metrics["decoded"] * scale + centre, centre, scale, variant, collection)

    network_floats, latent_floats = state.model.stored_floats()
    dataset_floats = int(points.size)
    common = {"run_id": run_id, "item_id": item_id, "collection_id": collection.collection_id, "variant": variant}
    tables = {
        "autodecoder_epochs": [{**common, "epoch": r.epoch, "phase": r.phase, "loss": r.loss, "swaps": r.swaps,
                                "seconds": r.seconds} for r in state.history],
        "autodecoder_shapes": [{**common, "shape_id": shape_id, "shape_index": i, "points": points.shape[1],
                                "em_kd": float(em[i]), "chamfer_l2": float(cd[i]),
                                "distance_normalization": "unit_bbox_diagonal"}
                               for i, shape_id in enumerate(collection.shape_ids)],
        "autodecoder_models": [{**common, "source_uri": collection.uri, "source_sha256": collection.sha256,
                                "architecture": training.architecture, "schedule": training.schedule,
                                "shapes": points.shape[0], "points": points.shape[1],
                                "point_source": config.point_source, "latent_size": config.latent_size,
                                "patches": state.model.n_patches, "epochs": training.epochs,
                                "steps": training.epochs * steps_per_epoch, "network_floats": network_floats,
                                "latent_floats": latent_floats, "dataset_floats": dataset_floats,
                                "compression_ratio": dataset_floats / (network_floats + latent_floats),
                                "mean_em_kd": float(em.mean()), "mean_chamfer_l2": float(cd.mean()),
                                "device": str(device), "resumed_from_step": resumed_from_step,
                                "train_seconds": train_seconds,
                                "seconds": time.perf_counter() - started}],
    }
    result.tables = tables
    item_store.finish(result.stored_rows(), failures)
    logger.info("%s: mean em_kd %.3e, chamfer_l2 %.3e, compression ratio %.1f", item_id, em.mean(), cd.mean(),
                tables["autodecoder_models"][0]["compression_ratio"])
    return result


def _write_model(item_store: ItemStore, model: Autodecoder, decoded: np.ndarray, centre: np.ndarray, scale: float,
                 variant: str, collection: ShapeCollection) -> None:
    for name, value in model.state_dict().items():
        item_store.write_array(f"model/{name}", value.detach().cpu().numpy())
    item_store.write_array("latents", model.latents.detach().cpu().numpy(),
                           attrs={"shape_ids": list(collection.shape_ids)})
    item_store.write_array("decoded", decoded.astype(np.float32), chunks=(1, decoded.shape[1], 3),
                           attrs={"units": "input units", "shape_ids": list(collection.shape_ids)})
    item_store.write_array("normalization/centre", centre)
    item_store.write_array("normalization/scale", np.array([scale], dtype=np.float64))
    item_store.write_array("model_spec", np.zeros(0), attrs={
        "architecture": model.architecture, "n_shapes": int(model.latents.shape[0]), "latent_size": model.latent_size,
        "n_patches": model.n_patches, "n_points": model.n_points, "state_keys": list(model.state_dict()),
        "refeed_points": model.refeed_points, "baseline_hidden": model.baseline_hidden,
    })


def load_model(store: str, run_id: str, item_id: str,
               device: torch.device | str = "cpu") -> tuple[Autodecoder, np.ndarray, float]:
    """A trained model from a finished item of the store, with its normalisation (centre ``[3]``, scale).

    Raises:
        FileNotFoundError: no such item; RuntimeError: the item is not finished.
    """
    item_store = ItemStore(store, run_id, item_id)
    if item_store.read_attrs().get("complete") is not True:
        raise RuntimeError(f"{item_store.uri} is not a finished training run")
    spec = item_store.read_attrs("model_spec")
    state = {k: torch.from_numpy(item_store.read_array(f"model/{k}")) for k in spec["state_keys"]}
    # items written before pipeline version 3 have the width-matched baseline and no q_i re-feed
    hidden = spec.get("baseline_hidden") or matched_baseline_width(spec["n_patches"], spec["latent_size"])
    model = Autodecoder(spec["n_shapes"], spec["latent_size"], state["input_points"].numpy(), spec["n_patches"],
                        spec["architecture"], refeed_points=spec.get("refeed_points", False),
                        baseline_hidden=hidden if isinstance(hidden, int) else tuple(hidden))
    model.load_state_dict(state)
    centre = item_store.read_array("normalization/centre")
    scale = float(item_store.read_array("normalization/scale")[0])
    return model.to(device), centre, scale


@task(name="encode-collection", retries=1, retry_delay_seconds=2)
def encode_collection(
    collection_uri: str, model_store: str, model_run_id: str, model_item_id: str, store: str, run_id: str,
    config: AutodecoderConfig, chamfer_steps: int = 100, qaad_steps: int = 300,
) -> ItemResult:
    """Fit latent codes for the shapes of a new collection with a trained decoder (autodecoder inference).

    Writes ``latents`` and ``decoded`` under ``<store>/<run_id>/<collection>--encoded`` and returns
    ``autodecoder_shapes`` rows (variant ``"encoded"``) and failure rows.
    """
    logger = task_logger(__name__)
    result, collection = _read(collection_uri, run_id, "encoded", config.follow_symlinks)
    if collection is None:
        return result
    item_id = result.item_id
    device = resolve_device(config.device)
    model, centre, scale = load_model(model_store, model_run_id, model_item_id, device)
    try:
        points = _points(collection, config)
        if points.shape[1] != model.n_points:
            raise ValueError(f"shapes have {points.shape[1]} points, the model decodes {model.n_points}")
    except ValueError as error:
        result.failures.append(failure_row(run_id, item_id, collection_uri, "points", error))
        return result
    fingerprint = config.fingerprint(collection.sha256, model_run_id, model_item_id, chamfer_steps, qaad_steps)
    item_store = ItemStore(store, run_id, item_id)
    if item_store.is_complete(fingerprint):
        return ItemResult(item_id, ItemResult.split_stored(item_store.completed_rows()), result.failures,
                          skipped=True)
    item_store.begin(fingerprint, {"collection_id": collection.collection_id, "source_uri": collection.uri,
                                   "model": f"{model_store}/{model_run_id}/{model_item_id}"})
    targets = torch.from_numpy((points - centre) / scale).float().to(device)
    logger.info("%s: encoding %d shapes with %s", item_id, points.shape[0], model_item_id)
    latents = encode(model, targets, chamfer_steps=chamfer_steps, qaad_steps=qaad_steps,
                     points_per_shape=config.points_per_shape, leaf_size=config.leaf_size, seed=config.seed,
                     chamfer_form=config.chamfer_form)
    metrics = evaluate(model, targets, latents, leaf_size=config.leaf_size)
    factors = _unit_diagonal_factors(points, scale)
    item_store.write_array("latents", latents.cpu().numpy(), attrs={"shape_ids": list(collection.shape_ids)})
    item_store.write_array("decoded", (metrics["decoded"] * scale + centre).astype(np.float32),
                           chunks=(1, points.shape[1], 3))
    rows = [{"run_id": run_id, "item_id": item_id, "collection_id": collection.collection_id, "variant": "encoded",
             "shape_id": shape_id, "shape_index": i, "points": points.shape[1],
             "em_kd": float(metrics["em_kd"][i] * factors[i]),
             "chamfer_l2": float(metrics["chamfer_l2"][i] * factors[i] ** 2),
             "distance_normalization": "unit_bbox_diagonal"} for i, shape_id in enumerate(collection.shape_ids)]
    result.tables = {"autodecoder_shapes": rows}
    item_store.finish(result.stored_rows(), result.failures)
    return result
