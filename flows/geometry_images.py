"""Flow ``geometry-images``: OT geometry images and their mipmaps for every mesh of a dataset.

One task chain per mesh (``parameterize_mesh -> encode_geometry_images``) is mapped over a Dask task runner.
The flow gathers the small records, writes the Parquet tables (``geometry_images``, ``rate_distortion``,
``failures``), publishes the Prefect artifacts (``geometry-images-progress`` while it runs, ``-summary`` table,
``-report`` markdown, ``-preview`` picture of the geometry images and ``-rate-distortion`` plot;
:mod:`flows.artifacts`), and returns where everything is.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed

from flows.artifacts import (
    Progress,
    geometry_image_rgb,
    image_grid_png,
    publish_pictures,
    rate_distortion_png,
    table_records,
)
from flows.task_runner import task_outcome
from storage.meshes import list_mesh_items
from storage.tables import failure_row, write_table
from storage.zarr_store import ItemStore
from tasks.geometry_images import PIPELINE_VERSION, GeometryImageConfig, encode_geometry_images, parameterize_mesh

__all__ = ["geometry_images", "default_run_id", "summarize", "preview_tiles"]

PREVIEW_MESHES = 12  # meshes shown in the geometry-images-preview artifact (the first ones by item id)


def default_run_id(config: GeometryImageConfig) -> str:
    """Run id fixed by the config, so re-running the same job finds (and skips) its finished items."""
    digest = hashlib.sha256((config.model_dump_json() + PIPELINE_VERSION).encode()).hexdigest()[:10]
    return f"geometry-images-{digest}"


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-mesh summary: harmonic vs OT at the finest level, OT solve figures, compression at each end."""
    if rows.empty:
        return pd.DataFrame()
    finest = rows[rows["level"] == 0].pivot(
        index="item_id", columns="parameterization", values=["area_distortion", "chamfer_l2", "hausdorff"]
    )
    finest.columns = [f"{metric}_{method}" for metric, method in finest.columns]
    ot = rows[(rows["parameterization"] == "ot") & (rows["level"] == 0)].set_index("item_id")
    summary = finest.join(ot[["newton_iterations", "mass_error", "solve_seconds"]], how="left")
    coarsest = rows[rows["level"] == rows["level"].max()].groupby("item_id")["compression_ratio"].max()
    summary["compression_ratio_coarsest"] = coarsest
    summary["compression_ratio_finest"] = rows[rows["level"] == 0].groupby("item_id")["compression_ratio"].max()
    return summary.reset_index()


@flow(name="geometry-images", log_prints=True)
def geometry_images(
    path: str, store: str, config: GeometryImageConfig | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """Parameterize, encode and measure every mesh under ``path``.

    Args:
        path: folder, glob or fsspec URL of meshes in any format trimesh reads.
        store: root of the Zarr store and tables (local path or fsspec URL).
        config: pipeline parameters (defaults documented on :class:`GeometryImageConfig`).
        run_id: defaults to one derived from the config, so a re-run skips finished meshes.

    Returns:
        ``{"run_id", "store", "tables": {name: uri}, "items", "failed_items", "skipped_items"}``.

    Raises:
        storage.errors.DatasetNotFoundError: if ``path`` holds no mesh files.
    """
    logger = get_run_logger()
    config = config or GeometryImageConfig()
    run_id = run_id or default_run_id(config)
    items = list_mesh_items(path)
    logger.info("run %s: %d meshes from %s -> %s", run_id, len(items), path, store)
    progress = Progress("geometry-images-progress", len(items), f"geometry images, run {run_id}")

    parameterized = parameterize_mesh.map(items, unmapped(store), unmapped(run_id), unmapped(config))
    encoded = encode_geometry_images.map(parameterized, unmapped(store), unmapped(run_id), unmapped(config))

    rows: list[dict[str, Any]] = []
    rate_distortion: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    skipped = 0
    by_future = {future: item for future, item in zip(encoded, items)}
    for done, future in enumerate(as_completed(list(encoded)), start=1):
        item = by_future[future]
        result = task_outcome(future)
        if not isinstance(result, BaseException):
            rows += result["rows"]
            rate_distortion += result["rate_distortion"]
            failures += result["failures"]
            skipped += result["skipped"]
            status = "skipped (finished earlier)" if result["skipped"] else f"{len(result['rows'])} rows"
            if result["failures"]:
                status += "; failed: " + ", ".join(f"{f['stage']}: {f['error_type']}" for f in result["failures"])
        else:  # an unexpected crash of a task: record it, keep the others
            error = result
            failures.append(failure_row(run_id, item.item_id, item.uri, "task", error))
            status = f"crashed: {type(error).__name__}: {error}"
        logger.info("[%d/%d] %s: %s", done, len(items), item.item_id, status)
        progress.update(done)

    tables = {
        "geometry_images": write_table(rows, store, run_id, "geometry_images"),
        "rate_distortion": write_table(rate_distortion, store, run_id, "rate_distortion"),
        "failures": write_table(failures, store, run_id, "failures"),
    }
    summary = summarize(pd.DataFrame(rows))
    create_table_artifact(
        key="geometry-images-summary",
        table=table_records(summary.round(8)),
        description=f"Per-mesh harmonic vs OT at the finest level, run {run_id}",
    )
    failure_lines = "\n".join(f"| {f['item_id']} | {f['stage']} | {f['error_type']} | {f['message']} |" for f in failures)
    create_markdown_artifact(
        key="geometry-images-report",
        markdown=(
            f"# Geometry images, run `{run_id}`\n\n{len(items)} meshes, {len(rows)} metric rows, "
            f"{len(failures)} failures, {skipped} skipped as finished.\n\n"
            f"Tables: `{tables['geometry_images']}`, `{tables['failures']}`\n\n"
            + (summary.to_markdown(index=False) if not summary.empty else "")
            + ("\n\n## Failures\n| item | stage | error | message |\n|---|---|---|---|\n" + failure_lines if failures else "")
        ),
        description="Geometry-image run summary",
    )
    tiles = preview_tiles(store, run_id, sorted({row["item_id"] for row in rows})[:PREVIEW_MESHES])
    publish_pictures(
        "geometry-images-preview", f"Geometry images, run `{run_id}`",
        {"finest level, x y z as red green blue: harmonic | OT": image_grid_png(tiles, columns=4)} if tiles else {},
        description="Geometry images of the harmonic and the OT parameterization of each mesh",
    )
    curves = pd.DataFrame(rate_distortion)
    publish_pictures(
        "geometry-images-rate-distortion", f"Rate–distortion, run `{run_id}`",
        {"bytes per level against Hausdorff and Chamfer-L2": rate_distortion_png(curves.assign(
            mesh=curves["item_id"], method=curves["parameterization"] + " " + curves["codec_setting"]))}
        if rate_distortion else {},
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
    }


def preview_tiles(store: str, run_id: str, item_ids: list[str]) -> dict[str, np.ndarray]:
    """Finest-level geometry images of ``item_ids``: ``"<item> harmonic"`` and ``"<item> ot"`` ``[H, W, 3]`` uint8.

    A parameterization without a stored pyramid (it failed) gets a grey tile labelled ``"<item> ot: none"``, so
    the two pictures of a mesh stay side by side in a grid of even width. Items with neither are left out.
    """
    tiles: dict[str, np.ndarray] = {}
    for item_id in item_ids:
        item_store = ItemStore(store, run_id, item_id)
        found: dict[str, np.ndarray | None] = {}
        for method in ("harmonic", "ot"):
            try:
                found[method] = geometry_image_rgb(item_store.read_array(f"{method}/geometry_image/0"))
            except (KeyError, FileNotFoundError):
                found[method] = None
        shape = next((t.shape for t in found.values() if t is not None), None)
        if shape is None:
            continue
        for method, tile in found.items():
            if tile is None:
                tiles[f"{item_id} {method}: none"] = np.full(shape, 200, dtype=np.uint8)
            else:
                tiles[f"{item_id} {method}"] = tile
    return tiles
