"""Flow ``align-embeddings``: HOTS3D spherical OT from one set of embedding vectors to another.

One task per (source, target) pair (:func:`tasks.align_embeddings.align_embedding_sets`) on the Dask task runner;
the flow writes the Parquet tables ``embedding_alignment`` (energy distance before/after, mean transport cost,
mean angle moved, training figures) and ``failures``, and publishes a Prefect table artifact.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_table_artifact

from flows.publish import gather, open_tables, publish_tables
from tasks.align_embeddings import AlignmentConfig, align_embedding_sets
from tasks.shared.records import ItemResult

__all__ = ["align_embeddings"]


def _status(result: ItemResult) -> str:
    return "; ".join(f"energy distance {row['energy_distance_before']:.4g} -> {row['energy_distance_after']:.4g} "
                     f"(x{row['reduction']:.1f}), mean angle moved {row['mean_angle_deg']:.1f} deg"
                     for row in result.rows("embedding_alignment")) or f"{len(result.failures)} failures"


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
    run_id = run_id or config.default_run_id()
    targets = [targets] if isinstance(targets, str) else list(targets)
    logger.info("run %s: %s -> %d targets -> %s", run_id, source, len(targets), store)
    open_tables(store, run_id, ["embedding_alignment"])
    futures = align_embedding_sets.map(unmapped(source), targets, unmapped(store), unmapped(run_id), unmapped(config))
    gathered = gather(list(futures), [f"{source} -> {target}" for target in targets], run_id, ["embedding_alignment"],
                      crash_keys=[("pair", target) for target in targets], describe=_status, store=store)
    rows, failures = gathered.rows("embedding_alignment"), gathered.failures
    tables = publish_tables(store, run_id, gathered)
    create_table_artifact(
        key="align-embeddings-summary",
        table=[{k: row[k] for k in ("item_id", "dim", "n_source", "n_target", "energy_distance_before",
                                   "energy_distance_after", "reduction", "mean_angle_deg")} for row in rows],
        description=f"Embedding alignment (HOTS3D spherical OT), run {run_id}",
    )
    return {
        "run_id": run_id, "store": store, "tables": tables, "items": len(targets),
        "failed_items": sorted({f["item_id"] for f in failures}), "skipped_items": gathered.skipped,
    }
