"""Prefect task of the train-restoration pipeline: train the geometry-image restoration network on the OT geometry
images of a dataset (:mod:`otcore.mesh.restoration_training`) and store it as a safetensors model file.

The training pairs are read from the Zarr groups of a geometry-images run (``<store>/<geometry_run_id>/<mesh>``:
the decoded ``ot/geometry_image`` pyramid and the normalised source mesh). The model's item group
(``<store>/<run_id>/model``) holds the checkpoints while training (two alternating slots), then
``restoration.safetensors``. A re-run after an interruption resumes from the last checkpoint; a re-run of a
finished model returns its stored rows without work.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import torch
from prefect import task

from otcore.device import resolve_device
from otcore.mesh.geometry_image import dequantize
from otcore.mesh.metrics import sample_surface_with_normals
from otcore.mesh.restoration_training import (
    RestorationTrainingState,
    TrainingPair,
    new_restoration_state,
    train_restoration,
)
from storage.models import decode_model, encode_model
from storage.zarr_store import ItemStore
from tasks.configs import TrainRestorationConfig
from tasks.shared.progress import report_progress, task_logger
from tasks.shared.records import ItemResult, failure_row
from tasks.shared.restoration import MODEL_FORMAT, network_tensors

__all__ = ["TrainRestorationConfig", "train_restoration_model", "MODEL_ITEM", "MODEL_FILE", "PIPELINE_VERSION"]

PIPELINE_VERSION = TrainRestorationConfig.PIPELINE_VERSION
MODEL_ITEM = "model"
MODEL_FILE = "restoration.safetensors"


def _pairs(store: str, geometry_run_id: str, item_ids: list[str], samples: int,
           seed: int) -> tuple[list[TrainingPair], list[str]]:
    """The training pairs of the meshes that have an OT geometry image, and the ids of those that have none."""
    pairs, missing = [], []
    for item_id in item_ids:
        item_store = ItemStore(store, geometry_run_id, item_id)
        try:
            codes, attrs = item_store.read_pyramid("ot/geometry_image")
        except (KeyError, FileNotFoundError):
            missing.append(item_id)
            continue
        quantization = attrs["quantization"]
        offset, scale = np.asarray(quantization["offset"]), np.asarray(quantization["scale"])
        vertices = item_store.read_array("source/vertices").astype(np.float64)
        faces = item_store.read_array("source/faces").astype(np.int64)
        points, normals = sample_surface_with_normals(vertices, faces, samples, seed)
        pairs.append(TrainingPair(item_id, [dequantize(c, offset, scale) for c in codes], points, normals))
    return pairs, missing


@task(name="train-restoration", retries=1, retry_delay_seconds=2)
def train_restoration_model(item_ids: list[str], geometry_run_id: str, store: str, run_id: str,
                            config: TrainRestorationConfig) -> ItemResult:
    """Train (or resume, or return the finished) restoration network on the meshes ``item_ids`` of a run.

    Returns:
        :class:`ItemResult` of item ``model``: tables ``restoration_epochs`` and ``restoration_models``, a failure
        row per mesh without an OT geometry image, and ``artifacts["model"]``, the model file's uri.
    """
    logger = task_logger(__name__)
    started = time.perf_counter()
    item_store = ItemStore(store, run_id, MODEL_ITEM)
    pairs, missing = _pairs(store, geometry_run_id, sorted(item_ids), config.surface_samples, config.seed)
    failures = [failure_row(run_id, item_id, f"{store}/{geometry_run_id}/{item_id}", "training_pairs",
                            LookupError(f"{item_id}: no OT geometry image to train on")) for item_id in missing]
    trained_on = [pair.item_id for pair in pairs]
    model_uri = f"{item_store.uri}/{MODEL_FILE}"
    fingerprint = config.fingerprint(geometry_run_id, trained_on)
    if item_store.is_complete(fingerprint):
        return ItemResult(MODEL_ITEM, ItemResult.split_stored(item_store.completed_rows()), failures, skipped=True,
                          artifacts={"model": model_uri})
    if not pairs:
        failures.append(failure_row(run_id, MODEL_ITEM, f"{store}/{geometry_run_id}", "training_pairs",
                                    LookupError("no mesh of the dataset has an OT geometry image")))
        return ItemResult(MODEL_ITEM, failures=failures)

    device = resolve_device(config.device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    training = config.training()
    resumed_from_step = item_store.checkpoint_step(fingerprint)
    if resumed_from_step is not None:
        arrays, meta = item_store.read_checkpoint()
        state = RestorationTrainingState.from_arrays(arrays, meta, device)
        logger.info("restoration: resuming from checkpoint at step %d of %d", state.step, state.total_steps)
    else:
        state = new_restoration_state(training, device)
        item_store.begin(fingerprint, {"geometry_run_id": geometry_run_id, "trained_on": trained_on,
                                       "config": config.model_dump(), "pipeline_version": PIPELINE_VERSION})
    logger.info("restoration: %d training meshes, %d parameters, %d steps on %s", len(pairs),
                state.model.parameter_count(), state.total_steps, device)

    def on_step(s: RestorationTrainingState) -> None:
        if s.step % config.checkpoint_every == 0 or s.finished:
            arrays, meta = s.to_arrays()
            item_store.write_checkpoint(arrays, meta, s.step)

    def on_epoch(s: RestorationTrainingState, record) -> None:
        report_progress(logger, "restoration: epoch %d/%d loss %.3e, position L1 %.3e (bilinear %.3e), %.1f s",
                        record.epoch + 1, training.epochs, record.loss, record.position_l1,
                        record.bilinear_position_l1, record.seconds)

    train_restoration(state, pairs, on_step=on_step, on_epoch=on_epoch)
    data = encode_model(network_tensors(state.model), MODEL_FORMAT, {
        "network": asdict(training.network), "training": asdict(training), "trained_on": trained_on,
        "geometry_run_id": geometry_run_id, "parameters": state.model.parameter_count()})
    item_store.write_file(MODEL_FILE, data)
    _, metadata = decode_model(data, MODEL_FORMAT, model_uri)  # the content hash as the file states it
    last = state.records[-1]
    common = {"run_id": run_id, "item_id": MODEL_ITEM}
    result = ItemResult(MODEL_ITEM, {
        "restoration_epochs": [{**common, **asdict(r)} for r in state.records],
        "restoration_models": [{
            **common, "model_uri": model_uri, "model_sha256": metadata["content_sha256"], "model_bytes": len(data),
            "parameters": state.model.parameter_count(), "geometry_run_id": geometry_run_id,
            "training_meshes": len(pairs), "trained_on": ",".join(trained_on), "epochs": training.epochs,
            "steps": state.step, "final_position_ratio": last.position_l1 / last.bilinear_position_l1,
            "device": str(device), "resumed_from_step": resumed_from_step,
            "train_seconds": sum(r.seconds for r in state.records)}],
    }, failures, artifacts={"model": model_uri})
    item_store.finish(result.stored_rows(), failures)
    logger.info("restoration: model %s (%d bytes), position L1 %.2f of bilinear's, %.0f s", model_uri, len(data),
                last.position_l1 / last.bilinear_position_l1, time.perf_counter() - started)
    return result
