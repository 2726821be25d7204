"""Flow ``align-embeddings``: HOTS3D spherical OT from one set of embedding vectors to another.

One task per (source, target) pair (:func:`tasks.align_embeddings.align_embedding_sets`) on the Dask task runner;
the flow writes the Parquet tables ``embedding_alignment`` (energy distance before/after, mean transport cost,
mean angle moved, training figures) and ``failures``, and publishes a Prefect table artifact.
"""

from __future__ import annotations

import hashlib
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_table_artifact

from storage.tables import failure_row, write_table
from tasks.align_embeddings import ALIGNMENT_VERSION, AlignmentConfig, align_embedding_sets

__all__ = ["align_embeddings", "default_run_id"]


def default_run_id(config: AlignmentConfig) -> str:
    """Run id fixed by the config, so re-running the same job skips its finished pairs."""
    payload = config.model_dump_json(exclude={"device"}) + ALIGNMENT_VERSION
    return f"align-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


@flow(name="align-embeddings", log_prints=True)
def align_embeddings(
    source: str, targets: list[str] | str, store: str, config: AlignmentConfig | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Align the unit vectors of ``source`` to those of each target (HOTS3D map), store the maps and distances.

    Args:
        source: ``.npy``/``.parquet``/``.zarr`` of ``[N, d]`` vectors (:mod:`storage.embeddings`).
        targets: one such file or several (one pair each).
        store: root of the Zarr store and tables (local path or fsspec URL).
        config: :class:`tasks.align_embeddings.AlignmentConfig`. run_id: defaults to one derived from the config.

    Returns:
        ``{"run_id", "store", "tables": {name: uri}, "items", "failed_items", "skipped_items"}``.
    """
    logger = get_run_logger()
    config = config or AlignmentConfig()
    run_id = run_id or default_run_id(config)
    targets = [targets] if isinstance(targets, str) else list(targets)
    futures = align_embedding_sets.map(unmapped(source), targets, unmapped(store), unmapped(run_id), unmapped(config))
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    skipped = 0
    for target, future in zip(targets, futures):
        result = future.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            failures.append(failure_row(run_id, "pair", target, "task", result))
            logger.info("%s -> %s: crashed: %s", source, target, result)
            continue
        rows += result["rows"]
        failures += result["failures"]
        skipped += result["skipped"]
        for row in result["rows"]:
            logger.info("%s: energy distance %.4g -> %.4g (x%.1f), mean angle moved %.1f deg", row["item_id"],
                        row["energy_distance_before"], row["energy_distance_after"], row["reduction"],
                        row["mean_angle_deg"])
    tables = {
        "embedding_alignment": write_table(rows, store, run_id, "embedding_alignment"),
        "failures": write_table(failures, store, run_id, "failures"),
    }
    create_table_artifact(
        key="align-embeddings-summary",
        table=[{k: row[k] for k in ("item_id", "dim", "n_source", "n_target", "energy_distance_before",
                                   "energy_distance_after", "reduction", "mean_angle_deg")} for row in rows],
        description=f"Embedding alignment (HOTS3D spherical OT), run {run_id}",
    )
    return {
        "run_id": run_id, "store": store, "tables": tables, "items": len(targets),
        "failed_items": sorted({f["item_id"] for f in failures}), "skipped_items": skipped,
    }
