"""Flows ``autodecoder`` and ``encode-shapes``: NeuralQAAD compression of shape collections.

``autodecoder`` maps one training task per collection x variant over the Dask task runner (variants: the columns
of the paper's Table 1, ``chamfer-only``, ``mse-random``, ``greedy``, ``neuralqaad``, and the ``atlasnetv2``
baseline; see :data:`tasks.autodecoder.VARIANTS`), then writes the
Parquet tables ``autodecoder_models`` (size, compression ratio, mean errors), ``autodecoder_shapes`` (em_kd and
chamfer_l2 per shape), ``autodecoder_epochs`` (training curve) and ``failures``, and publishes a table artifact
and a markdown summary, a progress artifact while it runs and a plot (training curves, rate-distortion).
``encode-shapes`` fits codes for new shapes with a trained decoder (artifacts ``encode-shapes-*``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.publish import Gathered, failures_markdown, gather, open_tables, publish_tables
from flows.runtime.artifacts import Progress, figure_png, publish_pictures, table_records
from flows.runtime.task_runner import gpu_annotation
from tasks.autodecoder import VARIANTS, AutodecoderConfig, encode_collection, train_autodecoder
from tasks.dataset import list_items
from tasks.shared.records import ItemResult
from tasks.shared.records import run_id as derive_run_id

__all__ = ["autodecoder", "encode_shapes", "TABLES"]

TABLES = ("autodecoder_models", "autodecoder_shapes", "autodecoder_epochs")


def _status(result: ItemResult) -> str:
    models = result.rows("autodecoder_models")
    if models:
        return (f"mean em_kd {models[0]['mean_em_kd']:.3e}, compression ratio {models[0]['compression_ratio']:.1f}"
                + (" (finished earlier)" if result.skipped else ""))
    if result.rows("autodecoder_shapes"):
        return f"{len(result.rows('autodecoder_shapes'))} shapes encoded"
    return "failed: " + "; ".join(f"{f['error_type']}: {f['message']}" for f in result.failures)


@flow(name="autodecoder", log_prints=True)
def autodecoder(
    path: str,
    store: str,
    config: AutodecoderConfig | None = None,
    variants: list[str] | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Train one autodecoder per collection and variant under ``path``; measure every reconstruction.

    Args:
        path: a collection (``.npz``/``.npy`` array file or folder of equal-count mesh/point files) or a folder of
            collections; local path or fsspec URL.
        store: root of the Zarr store and tables.
        config: pipeline parameters (:class:`tasks.autodecoder.AutodecoderConfig`).
        variants: subset of :data:`tasks.autodecoder.VARIANTS` (``chamfer-only``, ``mse-random``, ``greedy``,
            ``neuralqaad``, ``atlasnetv2``; default: ``["neuralqaad"]``).
        run_id: defaults to one derived from the config (a re-run resumes or skips).

    Returns:
        ``{"run_id", "store", "tables": {name: uri}, "items", "failed_items", "skipped_items"}``.

    Raises:
        ValueError: unknown variant. storage.errors.DatasetNotFoundError: nothing at ``path``.
    """
    logger = get_run_logger()
    config = config or AutodecoderConfig()
    variants = variants or ["neuralqaad"]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; expected some of {sorted(VARIANTS)}")
    run_id = run_id or config.default_run_id()
    collections = list_items(path, "collections")
    pairs = [(c, v) for c in collections for v in variants]
    logger.info("run %s: %d collections x %d variants from %s -> %s", run_id, len(collections), len(variants),
                path, store)
    progress = Progress("autodecoder-progress", len(pairs), f"autodecoder, run {run_id}")
    open_tables(store, run_id, TABLES)
    with gpu_annotation():  # training is GPU-bound: GPU workers only, when the cluster has any
        futures = [train_autodecoder.submit(c, v, store, run_id, config) for c, v in pairs]
    gathered = gather(futures, [f"{c} [{v}]" for c, v in pairs], run_id, TABLES, progress, describe=_status,
                      store=store)
    uris = publish_tables(store, run_id, gathered)
    _publish(run_id, gathered, uris)
    return {"run_id": run_id, "store": store, "tables": uris, "items": len(pairs),
            "failed_items": sorted({f["item_id"] for f in gathered.failures}), "skipped_items": gathered.skipped}


def _publish(run_id: str, gathered: Gathered, uris: dict[str, str]) -> None:
    failures = gathered.failures
    models = pd.DataFrame(gathered.rows("autodecoder_models"))
    columns = ["item_id", "variant", "shapes", "points", "mean_em_kd", "mean_chamfer_l2", "compression_ratio",
               "network_floats", "latent_floats", "train_seconds", "device"]
    summary = models[columns] if not models.empty else pd.DataFrame(columns=columns)
    create_table_artifact(
        key="autodecoder-summary",
        table=table_records(summary),
        description=f"Autodecoder models of run {run_id} (distances in unit-bbox-diagonal units)",
    )
    create_markdown_artifact(
        key="autodecoder-report",
        markdown=(
            f"# Autodecoder, run `{run_id}`\n\n{len(summary)} trained models, {len(failures)} failures.\n\n"
            + (summary.to_markdown(index=False, floatfmt=".4g") if not summary.empty else "")
            + "\n\nTables: " + ", ".join(f"`{u}`" for u in uris.values())
            + failures_markdown(failures)
        ),
        description="Autodecoder run summary",
    )
    epochs = pd.DataFrame(gathered.rows("autodecoder_epochs"))
    publish_pictures(
        "autodecoder-plots", f"Autodecoder, run `{run_id}`",
        {"training curves and rate-distortion": training_plot_png(epochs, models)} if not models.empty else {},
        description="Training loss per epoch; compression ratio vs mean EM-kD per model",
    )


def training_plot_png(epochs: pd.DataFrame, models: pd.DataFrame) -> bytes:
    """PNG: loss per epoch of each model (left, log scale) and its compression ratio vs mean EM-kD (right).

    Args:
        epochs: rows of ``autodecoder_epochs`` (``item_id``, ``epoch``, ``phase``, ``loss``); may be empty.
        models: rows of ``autodecoder_models`` (``item_id``, ``variant``, ``compression_ratio``, ``mean_em_kd``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (curve, rate) = plt.subplots(1, 2, figsize=(10, 3.6))
    for item_id, group in (epochs.groupby("item_id") if not epochs.empty else []):
        group = group.sort_values("epoch")
        curve.plot(group["epoch"], group["loss"], label=item_id)
    curve.set(xlabel="epoch", ylabel="loss (Chamfer, then assigned MSE)", yscale="log", title="training")
    if not epochs.empty:
        curve.legend(fontsize=7)
    for _, model in models.iterrows():
        rate.scatter(model["compression_ratio"], model["mean_em_kd"])
        rate.annotate(str(model["variant"]), (model["compression_ratio"], model["mean_em_kd"]), fontsize=7)
    rate.set(xlabel="compression ratio (dataset floats / model floats)", ylabel="mean EM-kD (unit bbox diagonal)",
             title="rate-distortion")
    return figure_png(figure)


def em_kd_plot_png(shapes: pd.DataFrame) -> bytes:
    """PNG bar chart of EM-kD per encoded shape (``autodecoder_shapes`` rows: ``shape_id``, ``em_kd``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(4.0, 0.25 * len(shapes)), 3.2))
    axes.bar(range(len(shapes)), shapes["em_kd"])
    axes.set_xticks(range(len(shapes)), shapes["shape_id"], rotation=90, fontsize=6)
    axes.set(ylabel="EM-kD (unit bbox diagonal)", title="reconstruction of the encoded shapes")
    return figure_png(figure)


@flow(name="encode-shapes", log_prints=True)
def encode_shapes(
    path: str,
    store: str,
    model_run_id: str,
    model_item_id: str,
    model_store: str | None = None,
    config: AutodecoderConfig | None = None,
    chamfer_steps: int = 100,
    qaad_steps: int = 300,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Encode every collection under ``path`` with the trained model ``<model_store>/<model_run_id>/<model_item_id>``.

    Writes ``autodecoder_shapes`` (variant ``"encoded"``) and ``failures`` under ``<store>/<run_id>/tables``.

    Args:
        path: new shapes: a collection or a folder of collections (local path or fsspec URL).
        store: root of the store the codes and tables are written to.
        model_run_id: run id of the trained model, e.g. ``autodecoder-1a2b3c4d5e``.
        model_item_id: item of the trained model, ``<collection>--<variant>``, e.g. ``crane-16--neuralqaad``.
        model_store: store holding the model (default: ``store``).
        config: must match the model's point source and sampling (:class:`tasks.autodecoder.AutodecoderConfig`).
        chamfer_steps: Chamfer steps of the code fit (decoder frozen).
        qaad_steps: QAAD steps of the code fit after the Chamfer steps.
        run_id: defaults to one derived from the model.

    Returns:
        ``{"run_id", "store", "tables": {name: uri}, "items", "failed_items", "skipped_items"}``.
    """
    config = config or AutodecoderConfig()
    model_store = model_store or store
    run_id = run_id or derive_run_id("encode", f"{model_run_id}/{model_item_id}")
    collections = list_items(path, "collections")
    progress = Progress("encode-shapes-progress", len(collections), f"encode shapes, run {run_id}")
    open_tables(store, run_id, ["autodecoder_shapes"])
    with gpu_annotation():  # code fitting is GPU-bound
        futures = encode_collection.map(collections, unmapped(model_store), unmapped(model_run_id),
                                        unmapped(model_item_id), unmapped(store), unmapped(run_id), unmapped(config),
                                        unmapped(chamfer_steps), unmapped(qaad_steps))
    gathered = gather(list(futures), collections, run_id, ["autodecoder_shapes"], progress, describe=_status,
                      store=store)
    uris = publish_tables(store, run_id, gathered)
    shapes = pd.DataFrame(gathered.rows("autodecoder_shapes"))
    columns = ["item_id", "shape_id", "em_kd", "chamfer_l2"]
    create_table_artifact(
        key="encode-shapes-summary",
        table=table_records(shapes[columns] if not shapes.empty else pd.DataFrame(columns=columns)),
        description=f"Shapes encoded with {model_run_id}/{model_item_id} (unit-bbox-diagonal units)",
    )
    publish_pictures(
        "encode-shapes-plots", f"Encoded with `{model_item_id}`, run `{run_id}`",
        {"EM-kD per shape": em_kd_plot_png(shapes)} if not shapes.empty else {},
        description="EM-kD of every encoded shape",
    )
    create_markdown_artifact(
        key="encode-shapes-report",
        markdown=(f"# Encoded with `{model_item_id}`, run `{run_id}`\n\n"
                  + (shapes[["item_id", "shape_id", "em_kd", "chamfer_l2"]].to_markdown(index=False, floatfmt=".4g")
                     if not shapes.empty else "no shapes encoded")),
        description="Autodecoder inference summary",
    )
    return {"run_id": run_id, "store": store, "tables": uris, "items": len(collections),
            "failed_items": sorted({f["item_id"] for f in gathered.failures}), "skipped_items": gathered.skipped}
