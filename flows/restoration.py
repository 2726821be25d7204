"""Flow ``train-restoration``: train the geometry-image restoration network on a dataset of meshes.

It builds (or reuses: same store, same default config, same run id) the OT geometry-image pyramids of every mesh
through the geometry-image batch tasks (``parameterize_mesh -> encode_geometry_images`` per mesh, run
:meth:`tasks.geometry_images.GeometryImageConfig.default_run_id`), then trains one network on them
(:func:`tasks.restoration.train_restoration_model`, routed to a GPU worker when the cluster has one). It writes the
Parquet tables ``restoration_epochs`` (losses per epoch) and ``restoration_models``, and publishes the artifacts
``train-restoration-progress``, ``-curve`` (training curve), ``-summary`` (the model's row) and ``-report``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.publish import failures_markdown, gather, gather_batches, open_tables, publish_tables
from flows.runtime.artifacts import Progress, figure_png, publish_pictures, table_records
from flows.runtime.task_runner import cluster_workers, gpu_annotation
from tasks.dataset import list_items
from tasks.geometry_images import GeometryImageConfig, geometry_images_batch
from tasks.restoration import MODEL_ITEM, TrainRestorationConfig, train_restoration_model
from tasks.shared.batching import plan_batches

__all__ = ["train_restoration", "training_curve_png", "TABLES"]

TABLES = ("restoration_epochs", "restoration_models")


@flow(name="train-restoration", log_prints=True)
def train_restoration(path: str, store: str, config: TrainRestorationConfig | None = None,
                      run_id: str | None = None) -> dict[str, Any]:
    """Build or reuse the OT geometry images of the meshes under ``path``, then train the restoration network.

    Args:
        path: folder, glob or fsspec URL of meshes.
        store: root of the Zarr store and tables; the geometry images go to the geometry-images flow's default
            run there, the model to ``<store>/<run_id>/model/restoration.safetensors``.
        config: training parameters (:class:`tasks.restoration.TrainRestorationConfig`).
        run_id: defaults to one derived from the config (a re-run resumes the checkpoint or skips).

    Returns:
        ``{"run_id", "store", "tables", "geometry_run_id", "model", "items", "failed_items", "skipped_items"}``.

    Raises:
        storage.errors.DatasetNotFoundError: if ``path`` holds no mesh files.
    """
    logger = get_run_logger()
    config = config or TrainRestorationConfig()
    run_id = run_id or config.default_run_id()
    geometry = GeometryImageConfig()
    geometry_run_id = geometry.default_run_id()
    items = list_items(path, "meshes")
    logger.info("run %s: %d training meshes from %s; geometry images in run %s", run_id, len(items), path,
                geometry_run_id)
    progress = Progress("train-restoration-progress", len(items) + 1, f"train-restoration, run {run_id}")
    image_tables = ["geometry_images", "rate_distortion"]
    open_tables(store, geometry_run_id, image_tables)

    def submit(indices: list[int], queue: str | None):
        return geometry_images_batch.submit([items[i] for i in indices], store, geometry_run_id, geometry,
                                            image_tables, queue)

    images = gather_batches(submit, [(item.item_id, item.uri) for item in items],
                            plan_batches(len(items), cluster_workers()), geometry_run_id, store, image_tables, progress)
    publish_tables(store, geometry_run_id, images)
    with gpu_annotation():  # training is GPU-bound: GPU workers only, when the cluster has any
        future = train_restoration_model.submit([item.item_id for item in items], geometry_run_id, store, run_id,
                                                config)
    open_tables(store, run_id, TABLES)
    trained = gather([future], [MODEL_ITEM], run_id, TABLES, progress, progress_offset=len(items), store=store)
    uris = publish_tables(store, run_id, trained)
    epochs = pd.DataFrame(trained.rows("restoration_epochs"))
    models = pd.DataFrame(trained.rows("restoration_models"))
    model_uri = models["model_uri"].iloc[0] if not models.empty else None
    publish_pictures("train-restoration-curve", f"Restoration training, run `{run_id}`",
                     {"losses per epoch": training_curve_png(epochs)} if not epochs.empty else {},
                     description="Position, edge and point-to-surface L1 per epoch, and bilinear's position L1")
    failures = images.failures + trained.failures
    create_table_artifact(key="train-restoration-summary", table=table_records(models.drop(columns=["run_id"])),
                          description=f"Restoration network of run {run_id}")
    create_markdown_artifact(
        key="train-restoration-report",
        markdown=(f"# Restoration network, run `{run_id}`\n\n"
                  + (models.drop(columns=["run_id", "item_id"]).T.to_markdown(headers=["", "value"]) if not models.empty
                     else "no model trained")
                  + "\n\nTables: " + ", ".join(f"`{u}`" for u in uris.values()) + failures_markdown(failures)),
        description="Restoration network training summary")
    return {"run_id": run_id, "store": store, "tables": uris, "geometry_run_id": geometry_run_id,
            "model": model_uri, "items": len(items), "failed_items": sorted({f["item_id"] for f in failures}),
            "skipped_items": images.skipped + trained.skipped}


def training_curve_png(epochs: pd.DataFrame) -> bytes:
    """PNG: the loss terms per epoch (log scale) with bilinear's position L1, and the fraction of it left.

    Args:
        epochs: ``restoration_epochs`` rows (``epoch``, ``position_l1``, ``edge_l1``, ``surface_l1``,
            ``bilinear_position_l1``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = epochs.sort_values("epoch")
    figure, (losses, ratio) = plt.subplots(1, 2, figsize=(10, 3.6))
    for column in ("position_l1", "edge_l1", "surface_l1", "bilinear_position_l1"):
        losses.plot(epochs["epoch"], epochs[column], label=column, linestyle="--" if "bilinear" in column else "-")
    losses.set(xlabel="epoch", ylabel="L1 (unit bbox diagonal)", yscale="log", title="training losses")
    losses.legend(fontsize=7)
    ratio.plot(epochs["epoch"], epochs["position_l1"] / epochs["bilinear_position_l1"])
    ratio.axhline(1.0, color="grey", linewidth=0.8)
    ratio.set(xlabel="epoch", ylabel="position L1 / bilinear's", title="error left of bilinear restoration")
    return figure_png(figure)
