"""What a task hands back to its flow, and the identities that make re-runs resumable.

Every task returns one :class:`ItemResult` per item (docs/architecture.md, "data flow of one run"): the rows it
measured per Parquet table, its failure rows, and whether the item was finished earlier. ``run_id`` and
``fingerprint`` are the only implementations of a run's and an item's identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage.tables import failure_row, write_item_rows
from tasks.configs import PipelineConfig, run_id

__all__ = ["ItemResult", "PipelineConfig", "run_id", "failure_row", "write_item_tables"]

Row = dict[str, Any]


@dataclass
class ItemResult:
    """The small record one task returns for one item; arrays stay in the item's Zarr group.

    Attributes:
        item_id: the item (``<run_id>/<item_id>`` in the store), or the input's name when it could not be read.
        tables: rows per Parquet table name (e.g. ``{"geometry_images": [...]}``); a table may be absent.
        failures: rows of the ``failures`` table (:func:`storage.tables.failure_row`).
        skipped: the item was finished earlier with the same fingerprint; its stored rows are returned.
        artifacts: uris of files a flow publishes (e.g. ``{"preview": ".../preview.png"}``).
        tables_written: the rows already landed in the run's tables (a batch task writes each item as it
            finishes; :func:`tasks.shared.batching.run_batch`), so the flow does not write them again.
    """

    item_id: str
    tables: dict[str, list[Row]] = field(default_factory=dict)
    failures: list[Row] = field(default_factory=list)
    skipped: bool = False
    artifacts: dict[str, str] = field(default_factory=dict)
    tables_written: bool = False

    def rows(self, table: str) -> list[Row]:
        """Rows of ``table`` (empty if the task produced none)."""
        return self.tables.get(table, [])

    def stored_rows(self) -> list[Row]:
        """All rows tagged with their table, as :meth:`storage.zarr_store.ItemStore.finish` stores them."""
        return [{"table": name, **row} for name, rows in self.tables.items() for row in rows]

    @staticmethod
    def split_stored(rows: list[Row]) -> dict[str, list[Row]]:
        """Inverse of :meth:`stored_rows`: rows per table name."""
        tables: dict[str, list[Row]] = {}
        for row in rows:
            row = dict(row)
            tables.setdefault(row.pop("table"), []).append(row)
        return tables


def write_item_tables(store: str, run_id: str, result: ItemResult, tables: list[str]) -> None:
    """Land one finished item's rows in the run's tables at once (``failures`` included), one fragment per table
    and item id, so pandas reads them while the run goes on and after it dies (:mod:`storage.tables`).

    The rows are grouped by their ``item_id`` column; a table where the item has no rows loses its old fragment.
    """
    per_table = {name: result.rows(name) for name in tables} | {"failures": result.failures}
    item_ids = {result.item_id} | {row["item_id"] for rows in per_table.values() for row in rows}
    for name, rows in per_table.items():
        for item_id in item_ids:
            write_item_rows([row for row in rows if row["item_id"] == item_id], store, run_id, name, item_id)


