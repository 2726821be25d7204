"""Flow ``geometry-image-sequence``: geometry images of every frame of a shape sequence in correspondence.

One cut (augmented through the appendages, :mod:`otcore.mesh.cut_augmentation`) and one harmonic map serve the shared
connectivity; ``solve-sequence-ot`` solves semi-discrete OT frame after frame, each warm-started from the previous
frame (by default damped Newton from the previous weights; ``ot_solver="neural"``: OT-Net's reuse), then
``encode-sequence-frames`` tasks encode batches of frames in parallel. Tables: ``sequence_frames`` (one row per
frame: solver, steps, mass error, seconds, distortion), ``sequence_geometry_images`` (one row per frame x level:
chamfer_l2, hausdorff, compression) and ``failures``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.publish import Gathered, gather, publish_tables
from flows.runtime.artifacts import Progress, figure_png, publish_pictures, table_records
from flows.runtime.task_runner import task_outcome
from tasks.geometry_image_sequence import SequenceConfig, encode_sequence_frames, finish_sequence, solve_sequence_ot
from tasks.shared.records import ItemResult, failure_row

__all__ = ["geometry_image_sequence", "summarize_sequence"]

TABLES = ("sequence_frames", "sequence_geometry_images")


def summarize_sequence(frames: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """One row per (item, solver, warm start): frames, median/max steps, max mass error, seconds, Hausdorff@finest."""
    if frames.empty:
        return pd.DataFrame()
    summary = frames.groupby(["item_id", "ot_solver", "warm_start"]).agg(
        frames=("frame", "count"), median_steps=("steps", "median"), max_steps=("steps", "max"),
        median_fit_steps=("fit_steps", "median"), median_newton_iterations=("newton_iterations", "median"),
        max_mass_error=("mass_error", "max"), median_solve_seconds=("solve_seconds", "median"),
        median_area_distortion=("area_distortion", "median"),
    )
    if not images.empty:
        finest = images[images["level"] == 0].groupby("item_id")["hausdorff"].median().rename("median_hausdorff_0")
        summary = summary.join(finest, on="item_id")
    return summary.reset_index()


def _frames_figure(frames: pd.DataFrame, images: pd.DataFrame):
    """Steps (fit + Newton) and mass error per frame, and the finest level's Hausdorff per frame."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.2))
    steps, error, quality = figure.subplots(1, 3)
    ordered = frames.sort_values("frame")
    steps.bar(ordered["frame"], ordered["newton_iterations"], label="Newton")
    steps.bar(ordered["frame"], ordered["fit_steps"], bottom=ordered["newton_iterations"], label="fit (Adam)")
    steps.set(xlabel="frame", ylabel="steps", title="OT steps per frame")
    steps.legend()
    error.semilogy(ordered["frame"], ordered["mass_error"], ".")
    error.set(xlabel="frame", title="max relative mass error")
    if not images.empty:
        finest = images[images["level"] == 0].sort_values("frame")
        quality.plot(finest["frame"], finest["hausdorff"], ".")
    quality.set(xlabel="frame", title="Hausdorff, finest level")
    figure.tight_layout()
    return figure


@flow(name="geometry-image-sequence", log_prints=True)
def geometry_image_sequence(
    path: str, store: str, config: SequenceConfig | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """Solve and encode every frame of the sequence at ``path``.

    Args:
        path: ``.npz``/``.npy`` array file or folder of meshes in correspondence (:func:`storage.collections.
            read_collection`), with shared faces.
        store: root of the Zarr store and tables (local path or fsspec URL).
        config: :class:`SequenceConfig` (solver, warm start, frames, resolution...).
        run_id: defaults to one derived from the config, so a re-run resumes the OT chain or skips a finished run.

    Returns:
        ``{"run_id", "store", "tables": {name: uri}, "frames", "failed_frames", "skipped"}``.
    """
    logger = get_run_logger()
    config = config or SequenceConfig()
    run_id = run_id or config.default_run_id()
    logger.info("run %s: sequence %s -> %s (%s solver, warm start %s)", run_id, path, store, config.ot_solver,
                config.warm_start)
    progress = Progress("geometry-image-sequence-progress", 1, f"geometry-image sequence, run {run_id}")
    record = task_outcome(solve_sequence_ot.submit(path, store, run_id, config))
    skipped = False
    if isinstance(record, BaseException):
        sequence = ItemResult(path, failures=[
            failure_row(run_id, path.rstrip("/").rsplit("/", 1)[-1], path, "task", record)])
    elif record["skipped"]:
        skipped = True
        sequence = ItemResult(record["item_id"], ItemResult.split_stored(record["rows"]), record["failures"], True)
    else:
        solved = [row["frame"] for row in record["solve_rows"]]
        batches = [solved[i : i + config.frames_per_task] for i in range(0, len(solved), config.frames_per_task)]
        progress = Progress("geometry-image-sequence-progress", len(batches) + 1,
                            f"geometry-image sequence, run {run_id} (OT chain, then encode batches)")
        progress.update(1)
        futures = [encode_sequence_frames.submit(record, batch, store, run_id, config) for batch in batches]

        def crashed(i: int, error: BaseException) -> ItemResult:  # one failure row per frame of the batch
            return ItemResult(record["item_id"], failures=[
                failure_row(run_id, f"{record['item_id']}/{record['frames'][k]}", path, "encode_sequence_frames", error)
                for k in batches[i]])

        encoded = gather(futures, [f"encoded frames {b[0]}-{b[-1]}" for b in batches], run_id, TABLES[1:], progress,
                         progress_offset=1, on_crash=crashed)
        sequence = finish_sequence(record, ItemResult(record["item_id"], encoded.tables, encoded.failures),
                                   store, run_id)
    gathered = Gathered({name: sequence.rows(name) for name in TABLES}, sequence.failures, int(skipped), [sequence])
    frame_rows, image_rows, failures = gathered.rows(TABLES[0]), gathered.rows(TABLES[1]), gathered.failures
    tables = publish_tables(store, run_id, gathered)
    frames = pd.DataFrame(frame_rows)
    summary = summarize_sequence(frames, pd.DataFrame(image_rows))
    if not summary.empty:
        create_table_artifact(key="geometry-image-sequence-summary", table=table_records(summary.round(8)),
                              description=f"Per-sequence OT solve and geometry-image figures, run {run_id}")
        publish_pictures("geometry-image-sequence-plots", f"Geometry-image sequence, run {run_id}",
                         {"OT solve per frame": figure_png(_frames_figure(frames, pd.DataFrame(image_rows)))},
                         "Steps, mass error and Hausdorff per frame")
    else:
        progress.update(progress.total)
    per_frame = (frames[["frame", "shape_id", "ot_solver", "warm_start", "fit_steps", "newton_iterations",
                         "mass_error", "solve_seconds"]].to_markdown(index=False) if not frames.empty else "")
    create_markdown_artifact(
        key="geometry-image-sequence-report",
        markdown=(f"# Geometry-image sequence, run `{run_id}`\n\n{len(frame_rows)} frames solved, "
                  f"{len(failures)} failures.\n\n" + (summary.to_markdown(index=False) if not summary.empty else "")
                  + "\n\n## Frames\n" + per_frame),
        description="Geometry-image sequence summary",
    )
    return {"run_id": run_id, "store": store, "tables": tables, "frames": len(frame_rows),
            "failed_frames": len(failures), "skipped": skipped}
