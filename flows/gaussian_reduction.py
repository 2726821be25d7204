"""Flow ``gaussian_reduction``: GHAP and pruning baselines on trained 3DGS scenes, measured by rendering.

Maps one task per scene x target ratio over the Dask task runner (:func:`tasks.gaussian_reduction.reduce_scene`),
then writes the Parquet tables ``gaussian_reduction`` (scene, method, ratio, n_in, n_out, psnr, ssim, seconds,
fine_tuned, ...) and ``failures``, and publishes a progress artifact while it runs, a table artifact, a markdown
report and the side-by-side renders of the first view of every method (``gaussian-reduction-renders``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import fsspec
import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed

from flows.runtime.artifacts import Progress, publish_pictures, table_records
from flows.runtime.task_runner import gpu_annotation, task_outcome
from storage.gaussians import list_scenes
from storage.tables import failure_row, write_table
from tasks.gaussian_reduction import METHODS, PIPELINE_VERSION, GaussianReductionConfig, reduce_scene

__all__ = ["gaussian_reduction", "default_run_id", "DEFAULT_RATIOS"]

DEFAULT_RATIOS = (0.1, 0.2, 0.5)


def default_run_id(config: GaussianReductionConfig) -> str:
    """Run id fixed by the config, so re-running the same job skips its finished items."""
    payload = config.model_dump_json(exclude={"device"}) + PIPELINE_VERSION
    return f"reduce-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


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
    unknown = sorted(set(config.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {list(METHODS)}")
    run_id = run_id or default_run_id(config)
    scenes = list_scenes(path)
    pairs = [(s, r) for s in scenes for r in ratios]
    logger.info("run %s: %d scenes x %d ratios x %d methods from %s -> %s", run_id, len(scenes), len(ratios),
                len(config.methods), path, store)
    progress = Progress("gaussian-reduction-progress", len(pairs), f"Gaussian reduction, run {run_id}")
    with gpu_annotation():  # rendering and appearance fine-tuning are GPU-bound
        futures = [reduce_scene.submit(s, r, store, run_id, config) for s, r in pairs]
    label_of = {f: f"{s} @ {r:g}" for f, (s, r) in zip(futures, pairs, strict=True)}
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    previews: dict[str, str] = {}
    skipped = 0
    for done, future in enumerate(as_completed(futures), start=1):
        result = task_outcome(future)
        if isinstance(result, BaseException):
            failures.append(failure_row(run_id, label_of[future], label_of[future], "task", result))
            logger.info("[%d/%d] %s: crashed: %s", done, len(futures), label_of[future], result)
            progress.update(done)
            continue
        rows += result["rows"]
        failures += result["failures"]
        skipped += bool(result["skipped"])
        if result["preview"]:
            previews[result["item_id"]] = result["preview"]
        best = max((r for r in result["rows"]), key=lambda r: r["psnr"], default=None)
        logger.info("[%d/%d] %s: %d rows%s%s", done, len(futures), label_of[future], len(result["rows"]),
                    f", best {best['method']} psnr {best['psnr']:.2f}" if best else "",
                    " (finished earlier)" if result["skipped"] else "")
        progress.update(done)
    uris = {"gaussian_reduction": write_table(rows, store, run_id, "gaussian_reduction"),
            "failures": write_table(failures, store, run_id, "failures")}
    _publish(run_id, rows, failures, uris, previews)
    return {"run_id": run_id, "store": store, "tables": uris, "items": len(pairs),
            "failed_items": sorted({f["item_id"] for f in failures}), "skipped_items": skipped, "previews": previews}


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


def _publish(run_id: str, rows: list[dict], failures: list[dict], uris: dict[str, str], previews: dict[str, str]) -> None:
    summary = summary_frame(rows)
    create_table_artifact(
        key="gaussian-reduction-summary",
        table=table_records(summary),
        description=f"Gaussian reduction run {run_id}: psnr (dB) / ssim against the original scene's renders",
    )
    pictures: dict[str, bytes] = {}
    unreadable: list[str] = []
    for item_id, uri in sorted(previews.items()):
        try:
            with fsspec.open(uri, "rb") as f:
                pictures[item_id] = f.read()
        except OSError:
            unreadable.append(f"`{uri}`")
    failure_lines = "\n".join(f"| {f['item_id']} | {f['stage']} | {f['error_type']} | {f['message']} |" for f in failures)
    create_markdown_artifact(
        key="gaussian-reduction-report",
        markdown=(
            f"# Gaussian reduction, run `{run_id}`\n\n"
            + (summary.to_markdown(index=False, floatfmt=".4g") if not summary.empty else "no results")
            + "\n\nRenders: artifact `gaussian-reduction-renders`"
            + (" (not readable: " + ", ".join(unreadable) + ")" if unreadable else "")
            + "\n\nTables: " + ", ".join(f"`{u}`" for u in uris.values())
            + ("\n\n## Failures\n| item | stage | error | message |\n|---|---|---|---|\n" + failure_lines if failures else "")
        ),
        description="Gaussian reduction report",
    )
    publish_pictures(
        "gaussian-reduction-renders", f"Gaussian reduction, run `{run_id}`: first held-out view, original and every method",
        pictures, description="Before/after renders side by side", locations=previews,
    )
