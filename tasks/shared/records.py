"""What a task hands back to its flow, and the identities that make re-runs resumable.

Every task returns one :class:`ItemResult` per item (docs/architecture.md, "data flow of one run"): the rows it
measured per Parquet table, its failure rows, and whether the item was finished earlier. ``run_id`` and
``fingerprint`` are the only implementations of a run's and an item's identity.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from storage.tables import failure_row, write_item_rows

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


def run_id(prefix: str, payload: str) -> str:
    """``<prefix>-<first 10 hex digits of sha256(payload)>``: a run id fixed by what the run computes."""
    return f"{prefix}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


class PipelineConfig(BaseModel):
    """Base of the pipelines' config models: the run id and the item fingerprint derived from the config.

    Subclasses set ``RUN_PREFIX``, ``PIPELINE_VERSION`` (bump it when outputs of unchanged inputs would change:
    it invalidates finished items) and ``IDENTITY_EXCLUDE``, the fields that change how a run is scheduled but not
    what it computes (device, checkpoint interval, batch sizes of the task fan-out).
    """

    RUN_PREFIX: ClassVar[str]
    PIPELINE_VERSION: ClassVar[str]
    IDENTITY_EXCLUDE: ClassVar[frozenset[str]] = frozenset()

    def default_run_id(self) -> str:
        """Run id fixed by the config, so re-running the same job finds (and resumes or skips) its items."""
        return run_id(self.RUN_PREFIX, self.model_dump_json(exclude=set(self.IDENTITY_EXCLUDE)) + self.PIPELINE_VERSION)

    def fingerprint(self, *inputs: Any) -> str:
        """Identity of an item's outputs: its inputs (e.g. the source's sha256), the config and the version.

        Args:
            inputs: JSON-serialisable values identifying the item's inputs, in a fixed order.

        Returns:
            64 hex digits (sha256).
        """
        config = self.model_dump(exclude=set(self.IDENTITY_EXCLUDE))
        payload = json.dumps([*inputs, config, self.PIPELINE_VERSION], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()
