"""Flow ``gaussian_reduction``: GHAP and pruning baselines on trained 3DGS scenes, measured by rendering.

Maps one task per scene x target ratio over the Dask task runner (:func:`tasks.gaussian_reduction.reduce_scene`),
then writes the Parquet tables ``gaussian_reduction`` (scene, method, ratio, n_in, n_out, psnr, ssim, seconds,
fine_tuned, ...) and ``failures``, and publishes a progress artifact while it runs, a table artifact, a markdown
report and the side-by-side renders of the first view of every method (``gaussian-reduction-renders``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.publish import failures_markdown, gather, open_tables, publish_tables
from flows.runtime.artifacts import Progress, publish_pictures, table_records
from flows.runtime.task_runner import gpu_annotation
from tasks.configs import DEFAULT_RATIOS, REDUCTION_METHODS
from tasks.dataset import list_items, read_files
from tasks.gaussian_reduction import GaussianReductionConfig, reduce_scene
from tasks.shared.records import ItemResult

__all__ = ["gaussian_reduction", "DEFAULT_RATIOS", "summary_frame"]


def _status(result: ItemResult) -> str:
    rows = result.rows("gaussian_reduction")
    best = max(rows, key=lambda r: r["psnr"], default=None)
    return (f"{len(rows)} rows" + (f", best {best['method']} psnr {best['psnr']:.2f}" if best else "")
            + (" (finished earlier)" if result.skipped else ""))


@flow(name="gaussian_reduction", log_prints=True)
def gaussian_reduction(
    path: str,
    store: str,
    ratios: list[float] | None = None,
    config: GaussianReductionConfig | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Reduce every 3DGS scene under ``path`` to each ratio by every configured method; measure by rendering.

    Args:
        path: a ``.ply`` scene or a folder of them (local path or fsspec URL).
        store: root of the Zarr store, reduced PLYs and tables.
        ratios: target fractions of the Gaussians in (0, 1] (default 0.1, 0.2, 0.5).
        config: pipeline parameters (:class:`tasks.gaussian_reduction.GaussianReductionConfig`).
        run_id: defaults to one derived from the config.

    Returns:
        ``{"run_id", "store", "tables": {name: uri}, "items", "failed_items", "skipped_items", "previews"}``.

    Raises:
        ValueError: a ratio outside (0, 1] or an unknown method. storage.errors.DatasetNotFoundError: no scene.
    """
    logger = get_run_logger()
    config = config or GaussianReductionConfig()
    ratios = list(ratios or DEFAULT_RATIOS)
    bad = [r for r in ratios if not 0 < r <= 1]
    if bad:
        raise ValueError(f"ratios must be in (0, 1], got {bad}")
    unknown = sorted(set(config.methods) - set(REDUCTION_METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {list(REDUCTION_METHODS)}")
    run_id = run_id or config.default_run_id()
    scenes = list_items(path, "scenes")
    pairs = [(s, r) for s in scenes for r in ratios]
    logger.info("run %s: %d scenes x %d ratios x %d methods from %s -> %s", run_id, len(scenes), len(ratios),
                len(config.methods), path, store)
    progress = Progress("gaussian-reduction-progress", len(pairs), f"Gaussian reduction, run {run_id}")
    open_tables(store, run_id, ["gaussian_reduction"])
    with gpu_annotation():  # rendering and appearance fine-tuning are GPU-bound
        futures = [reduce_scene.submit(s, r, store, run_id, config) for s, r in pairs]
    gathered = gather(futures, [f"{s} @ {r:g}" for s, r in pairs], run_id, ["gaussian_reduction"], progress,
                      describe=_status, store=store)
    previews = {r.item_id: r.artifacts["preview"] for r in gathered.results if "preview" in r.artifacts}
    uris = publish_tables(store, run_id, gathered)
    rows, failures = gathered.rows("gaussian_reduction"), gathered.failures
    _publish(run_id, rows, failures, uris, previews)
    return {"run_id": run_id, "store": store, "tables": uris, "items": len(pairs),
            "failed_items": sorted({f["item_id"] for f in failures}), "skipped_items": gathered.skipped,
            "previews": previews}


def summary_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """psnr / ssim per scene x ratio x method, before and after fine-tuning, side by side."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["stage"] = frame["fine_tuned"].map({False: "reduced", True: "fine-tuned"})
    wide = frame.pivot_table(index=["scene_id", "ratio", "n_out", "method"], columns="stage",
                             values=["psnr", "ssim"], aggfunc="first")
    wide.columns = [f"{metric} {stage}" for metric, stage in wide.columns]
    seconds = frame[~frame["fine_tuned"]].set_index(["scene_id", "ratio", "n_out", "method"])["seconds"]
    return wide.join(seconds.rename("reduce seconds")).reset_index().sort_values(["scene_id", "ratio", "method"])


def _publish(run_id: str, rows: list[dict], failures: list[dict], uris: dict[str, str],
             previews: dict[str, str]) -> None:
    summary = summary_frame(rows)
    create_table_artifact(
        key="gaussian-reduction-summary",
        table=table_records(summary),
        description=f"Gaussian reduction run {run_id}: psnr (dB) / ssim against the original scene's renders",
    )
    pictures, unreadable = read_files(dict(sorted(previews.items())))
    create_markdown_artifact(
        key="gaussian-reduction-report",
        markdown=(
            f"# Gaussian reduction, run `{run_id}`\n\n"
            + (summary.to_markdown(index=False, floatfmt=".4g") if not summary.empty else "no results")
            + "\n\nRenders: artifact `gaussian-reduction-renders`"
            + (" (not readable: " + ", ".join(f"`{uri}`" for uri in unreadable) + ")" if unreadable else "")
            + "\n\nTables: " + ", ".join(f"`{u}`" for u in uris.values())
            + failures_markdown(failures)
        ),
        description="Gaussian reduction report",
    )
    publish_pictures(
        "gaussian-reduction-renders",
        f"Gaussian reduction, run `{run_id}`: first held-out view, original and every method",
        pictures, description="Before/after renders side by side", locations=previews,
    )
