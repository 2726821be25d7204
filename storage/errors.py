"""Typed errors for bad dataset input.

A flow catches :class:`InputError` per item, records it as a failed row (``error_type`` is the class name,
``message`` is ``str(error)``) and carries on with the other items. :class:`DatasetNotFoundError` is raised before
any item exists (the dataset location itself is wrong) and therefore fails the whole run.
"""

from __future__ import annotations

__all__ = [
    "DatasetNotFoundError",
    "EmptyMeshError",
    "InputError",
    "NonFiniteVerticesError",
    "NotAMeshError",
    "UnreadableMeshError",
]


class InputError(Exception):
    """A bad input item.

    Parameters
    ----------
    item_id : str
        Stable id of the offending item (see :class:`storage.meshes.MeshItem`).
    reason : str
        Human-readable reason, one sentence, no item id.

    Notes
    -----
    ``str(error) == f"{item_id}: {reason}"``. The error pickles (Dask ships it between processes).
    """

    def __init__(self, item_id: str, reason: str) -> None:
        super().__init__(item_id, reason)
        self.item_id = item_id
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.item_id}: {self.reason}"


class UnreadableMeshError(InputError):
    """The file is missing, cannot be read, is corrupt or truncated, or its parser failed."""


class NotAMeshError(InputError):
    """The file holds no triangle mesh: a point cloud (vertices without faces), or no geometry at all in a
    non-blank file (e.g. text or binary data carrying a mesh extension)."""


class EmptyMeshError(InputError):
    """The file is blank, or its triangle mesh has zero vertices or zero faces."""


class NonFiniteVerticesError(InputError):
    """Some vertex coordinates are NaN or infinite; the reason says how many vertices."""


class DatasetNotFoundError(Exception):
    """A dataset location matches no mesh files; the message names the location."""
