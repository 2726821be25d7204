"""Flow ``geometry-images``: OT geometry images and their mipmaps for every mesh of a dataset.

The meshes are cut into batches (:func:`tasks.shared.batching.plan_batches`: one mesh per task for a handful, up
to 64 for thousands, shrinking towards the end) and each batch runs ``parameterize_mesh ->
encode_geometry_images`` per mesh in one task (:func:`tasks.geometry_images.geometry_images_batch`) on a Dask
task runner. Each mesh's rows land in the run's Parquet tables (``geometry_images``, ``rate_distortion``,
``failures``) as it finishes; at the end the flow compacts them, publishes the Prefect artifacts
(``geometry-images-progress`` while it runs, ``-summary`` table, ``-report`` markdown, ``-preview`` picture of the
geometry images and ``-rate-distortion`` plot of the first meshes; :mod:`flows.runtime.artifacts`), and returns
where everything is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.publish import failures_markdown, gather_batches, open_tables, publish_tables
from flows.runtime.artifacts import (
    Progress,
    geometry_image_rgb,
    image_grid_png,
    normal_map_rgb,
    publish_pictures,
    rate_distortion_png,
    table_records,
)
from flows.runtime.task_runner import cluster_workers
from tasks.dataset import list_items, read_arrays
from tasks.geometry_images import PREVIEW_RESTORED, GeometryImageConfig, geometry_images_batch
from tasks.shared.batching import plan_batches

__all__ = ["geometry_images", "summarize", "preview_tiles"]

PREVIEW_MESHES = 12  # meshes shown in the geometry-images-preview artifact (the first ones by item id)
TABLES = ["geometry_images", "rate_distortion"]

PARAMETERIZATIONS = {"square": ("harmonic", "ot"), "sphere": ("sphere_initial", "sphere_ot")}
"""Domain -> (initial map, OT map): the names of the parameterizations a run writes (Zarr groups, table rows)."""

SUMMARY_TITLES = {
    "square": "harmonic vs OT on the square, finest level",
    "sphere": "initial spherical map vs spherical OT (octahedral images), finest level",
}


def summarize(rows: pd.DataFrame, domain: str = "square") -> pd.DataFrame:
    """Per-mesh summary of a ``domain`` run: its initial map vs its OT map at the finest level, the OT solve
    figures the domain records (columns that are empty for every mesh are dropped), compression at each end."""
    if rows.empty:
        return pd.DataFrame()
    finest = rows[rows["level"] == 0].pivot(
        index="item_id", columns="parameterization", values=["area_distortion", "chamfer_l2", "hausdorff"]
    )
    finest.columns = [f"{metric}_{method}" for metric, method in finest.columns]
    ot_name = PARAMETERIZATIONS[domain][1]
    ot = rows[(rows["parameterization"] == ot_name) & (rows["level"] == 0)].set_index("item_id")
    solve = ot[["newton_iterations", "mass_error", "solve_seconds"]].dropna(axis=1, how="all")
    summary = finest.join(solve, how="left")
    coarsest = rows[rows["level"] == rows["level"].max()].groupby("item_id")["compression_ratio"].max()
    summary["compression_ratio_coarsest"] = coarsest
    summary["compression_ratio_finest"] = rows[rows["level"] == 0].groupby("item_id")["compression_ratio"].max()
    return summary.reset_index()


@flow(name="geometry-images", log_prints=True)
def geometry_images(
    path: str, store: str, config: GeometryImageConfig | None = None, run_id: str | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Parameterize, encode and measure every mesh under ``path``.

    Args:
        path: folder, glob or fsspec URL of meshes in any format trimesh reads.
        store: root of the Zarr store and tables (local path or fsspec URL).
        config: pipeline parameters (defaults documented on :class:`GeometryImageConfig`).
        run_id: defaults to one derived from the config, so a re-run skips finished meshes.
        batch_size: meshes per task (default: guided sizes from the mesh count and the cluster's workers).

    Returns:
        ``{"run_id", "store", "tables": {name: uri}, "items", "failed_items", "skipped_items", "domain",
        "pyramids"}``; ``pyramids`` holds the Zarr groups of the first finished mesh's two pyramids (every mesh
        has the same two).

    Raises:
        storage.errors.DatasetNotFoundError: if ``path`` holds no mesh files.
    """
    logger = get_run_logger()
    config = config or GeometryImageConfig()
    run_id = run_id or config.default_run_id()
    items = list_items(path, "meshes")
    logger.info("run %s: %d meshes from %s -> %s", run_id, len(items), path, store)
    progress = Progress("geometry-images-progress", len(items), f"geometry images, run {run_id}")

    open_tables(store, run_id, TABLES)
    plan = plan_batches(len(items), cluster_workers(), batch_size)

    def submit(indices: list[int], queue: str | None):
        return geometry_images_batch.submit([items[i] for i in indices], store, run_id, config, TABLES, queue)

    gathered = gather_batches(submit, [(item.item_id, item.uri) for item in items], plan, run_id, store, TABLES,
                              progress)
    rows, failures, skipped = gathered.rows("geometry_images"), gathered.failures, gathered.skipped
    tables = publish_tables(store, run_id, gathered)
    summary = summarize(pd.DataFrame(rows), config.domain)
    initial, ot_name = PARAMETERIZATIONS[config.domain]
    create_table_artifact(
        key="geometry-images-summary",
        table=table_records(summary.round(8)),
        description=f"Per-mesh {SUMMARY_TITLES[config.domain]}, run {run_id}",
    )
    create_markdown_artifact(
        key="geometry-images-report",
        markdown=(
            f"# Geometry images, run `{run_id}`\n\n{len(items)} meshes, {len(rows)} metric rows, "
            f"{len(failures)} failures, {skipped} skipped as finished.\n\n"
            f"Tables: `{tables['geometry_images']}`, `{tables['failures']}`\n\n"
            + (summary.to_markdown(index=False) if not summary.empty else "")
            + failures_markdown(failures)
        ),
        description="Geometry-image run summary",
    )
    tiles = preview_tiles(store, run_id, sorted({row["item_id"] for row in rows})[:PREVIEW_MESHES],
                          (initial, ot_name))
    caption = (f"finest level, x y z as red green blue: {initial} | {ot_name}"
               + (" (| normal maps of OT restored from 33², bilinear | neural, with --restoration)"
                  if config.domain == "square" else ", octahedral layout"))
    publish_pictures(
        "geometry-images-preview", f"Geometry images ({config.domain} domain), run `{run_id}`",
        {caption: image_grid_png(tiles, columns=4)} if tiles else {},
        description=f"Geometry images of the {initial} and the {ot_name} parameterization of each mesh"
                    + (", and the two restorations of its OT image from a coarse level"
                       if config.domain == "square" else ""),
    )
    shown = set(sorted({row["item_id"] for row in rows})[:PREVIEW_MESHES])  # a plot of thousands is unreadable
    curves = pd.DataFrame([row for row in gathered.rows("rate_distortion") if row["item_id"] in shown])
    publish_pictures(
        "geometry-images-rate-distortion", f"Rate–distortion, run `{run_id}`",
        {"bytes per level against Hausdorff and Chamfer-L2": rate_distortion_png(curves.assign(
            mesh=curves["item_id"],
            method=curves["parameterization"] + " " + curves["codec_setting"] + " " + curves["restore"]))}
        if not curves.empty else {},
        description="Stored bytes of each pyramid level and codec setting against the restored mesh's error",
        locations={"bytes per level against Hausdorff and Chamfer-L2": tables["rate_distortion"]},
    )
    return {
        "run_id": run_id,
        "store": store,
        "tables": tables,
        "items": len(items),
        "failed_items": sorted({f["item_id"] for f in failures}),
        "skipped_items": skipped,
        "domain": config.domain,
        "pyramids": [f"{store}/{run_id}/{item_id}/{name}/geometry_image"
                     for item_id in sorted(_stored(rows, (initial, ot_name)))[:1] for name in (initial, ot_name)],
    }


def _stored(rows: list[dict[str, Any]], methods: tuple[str, str]) -> set[str]:
    """Meshes with a level-0 row of both ``methods``: both their pyramids were written."""
    found = {(row["item_id"], row["parameterization"]) for row in rows if row["level"] == 0}
    return {item for item, method in found if all((item, m) in found for m in methods)}


def preview_tiles(store: str, run_id: str, item_ids: list[str],
                  methods: tuple[str, str] = PARAMETERIZATIONS["square"]) -> dict[str, np.ndarray]:
    """Finest-level geometry images of ``item_ids``: ``"<item> <method>"`` ``[H, W, 3]`` uint8 for both ``methods``
    (the initial and the OT parameterization of the run's domain, :data:`PARAMETERIZATIONS`).

    A parameterization without a stored pyramid (it failed) gets a grey tile labelled ``"<item> ot: none"``, so
    the two pictures of a mesh stay side by side in a grid of even width. Items with neither are left out. When
    the run restored with a network (``--restoration``), each mesh also gets the normal maps of its OT image
    restored from the preview level by bilinear upsampling and by the network, side by side.
    """
    tiles: dict[str, np.ndarray] = {}
    for item_id in item_ids:
        restored = read_arrays(store, run_id, item_id, [f"ot/{PREVIEW_RESTORED}/{name}"
                                                        for name in ("bilinear", "neural")])
        stored = read_arrays(store, run_id, item_id, [f"{method}/geometry_image/0" for method in methods])
        found = {path.split("/")[0]: None if image is None else geometry_image_rgb(image)
                 for path, image in stored.items()}
        shape = next((t.shape for t in found.values() if t is not None), None)
        if shape is None:
            continue
        for method, tile in found.items():
            if tile is None:
                tiles[f"{item_id} {method}: none"] = np.full(shape, 200, dtype=np.uint8)
            else:
                tiles[f"{item_id} {method}"] = tile
        if all(image is not None for image in restored.values()):
            for path, image in restored.items():
                tiles[f"{item_id} normals, {path.split('/')[-1]}"] = normal_map_rgb(image)
    return tiles
