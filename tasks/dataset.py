"""Dataset and run-level I/O a flow routes through: list a dataset's items, write and read a run's tables, read
stored arrays and files back for publishing, and the record of a task that crashed.

These run in the flow's process (cheap listing and small tables); the per-item work stays in the task modules.
Flows import this module instead of :mod:`storage` (the layer rule of docs/architecture.md).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from storage.collections import list_collections
from storage.errors import DatasetNotFoundError
from storage.gaussians import list_scenes
from storage.meshes import MeshItem, list_mesh_items
from storage.tables import read_table, split_table, write_table
from storage.zarr_store import ItemStore, read_file
from tasks.shared.records import ItemResult, Row, failure_row

__all__ = ["DatasetNotFoundError", "list_items", "begin_tables", "write_tables", "read_run_table", "read_arrays",
           "read_files", "crash_result"]

ItemKind = Literal["meshes", "collections", "scenes"]


def list_items(path: str, kind: ItemKind) -> list[MeshItem] | list[str]:
    """The items of the dataset at ``path``, sorted.

    Args:
        path: folder, glob or fsspec URL (a single file is a one-item dataset).
        kind: ``meshes`` (:class:`storage.meshes.MeshItem` per mesh file), ``collections`` (uris of shape
            collections: ``.npz``/``.npy`` or folders of equal-count shapes) or ``scenes`` (uris of 3DGS ``.ply``).

    Raises:
        storage.errors.DatasetNotFoundError: nothing of that kind at ``path``. ValueError: unknown ``kind``.
    """
    listers = {"meshes": list_mesh_items, "collections": list_collections, "scenes": list_scenes}
    if kind not in listers:
        raise ValueError(f"unknown item kind {kind!r}; expected one of {sorted(listers)}")
    return listers[kind](path)


def begin_tables(store: str, run_id: str, tables: list[str]) -> None:
    """Prepare a run's tables (and ``failures``) for item-by-item writing: a re-run's earlier compacted rows are
    split into item fragments (:func:`storage.tables.split_table`), so items computed again replace their rows."""
    for name in dict.fromkeys([*tables, "failures"]):
        split_table(store, run_id, name)


def write_tables(store: str, run_id: str, tables: dict[str, list[Row]], failures: list[Row]) -> dict[str, str]:
    """Write a run's Parquet tables (``<store>/<run_id>/tables/<name>.parquet``) and its ``failures`` table.

    Returns:
        ``{name: uri}`` in the order of ``tables``, then ``failures``.

    Raises:
        ValueError, TypeError: an unknown table name or rows that do not fit its schema (:mod:`storage.tables`).
    """
    uris = {name: write_table(rows, store, run_id, name) for name, rows in tables.items()}
    uris["failures"] = write_table(failures, store, run_id, "failures")
    return uris


def read_run_table(uri: str) -> pd.DataFrame:
    """A table written by :func:`write_tables` (nullable integer columns; see :func:`storage.tables.read_table`).

    Raises:
        FileNotFoundError: no table at ``uri``.
    """
    return read_table(uri)


def read_arrays(store: str, run_id: str, item_id: str, paths: list[str]) -> dict[str, np.ndarray | None]:
    """Stored arrays of one item, ``None`` for each one that is missing (e.g. a stage that failed)."""
    item_store = ItemStore(store, run_id, item_id)
    found: dict[str, np.ndarray | None] = {}
    for path in paths:
        try:
            found[path] = item_store.read_array(path)
        except (KeyError, FileNotFoundError):
            found[path] = None
    return found


def read_files(uris: dict[str, str]) -> tuple[dict[str, bytes], list[str]]:
    """The bytes of each file in ``uris`` (``{key: uri}``), and the uris that could not be read."""
    found: dict[str, bytes] = {}
    unreadable: list[str] = []
    for key, uri in uris.items():
        try:
            found[key] = read_file(uri)
        except OSError:
            unreadable.append(uri)
    return found, unreadable


def crash_result(run_id: str, item_id: str, source_uri: str, error: BaseException) -> ItemResult:
    """The record of a task that raised or whose worker died: one failure row at stage ``task``."""
    return ItemResult(item_id, failures=[failure_row(run_id, item_id, source_uri, "task", error)])
