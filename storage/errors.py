"""Typed errors for bad dataset input.

A flow catches :class:`InputError` per item, records it as a failed row (``error_type`` is the class name,
``message`` is ``str(error)``) and carries on with the other items. :class:`DatasetNotFoundError` is raised before
any item exists (the dataset location itself is wrong) and therefore fails the whole run.
"""

from __future__ import annotations

__all__ = [
    "CoordinateMagnitudeError",
    "DatasetNotFoundError",
    "DegenerateExtentError",
    "DegenerateFacesError",
    "EmptyMeshError",
    "GaussianMagnitudeError",
    "InputError",
    "InputTooLargeError",
    "UndecodableFileNameError",
    "NonFiniteVerticesError",
    "NotAMeshError",
    "StoreWriteError",
    "SymlinkOutsideDatasetError",
    "UnreadableMeshError",
    # shape collections in correspondence (storage.collections)
    "EmptyCollectionError",
    "InconsistentConnectivityError",
    "NotACollectionError",
    "UnequalPointCountError",
    "UnreadableCollectionError",
    # trained 3D Gaussian Splatting scenes (storage.gaussians)
    "EmptySceneError",
    "NonFiniteGaussiansError",
    "NotAGaussianSceneError",
    "UnreadableSceneError",
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


class InputTooLargeError(InputError):
    """A file is larger than the configured input limit (``BRENIER_MAX_INPUT_BYTES``, see
    :func:`storage.inputs.max_input_bytes`), or an archive member would inflate beyond it; refused unread."""


class UndecodableFileNameError(InputError):
    """A file's name is not valid UTF-8, so it cannot be recorded in the tables or found again from them; the
    reason shows the name with its undecodable bytes as ``\\xNN``."""


class SymlinkOutsideDatasetError(InputError):
    """A file is a symbolic link whose target (every link on the way resolved, folder links included) lies
    outside the folder that holds the link, and following such links was not asked for (``follow_symlinks=False``,
    the default; CLI ``--follow-symlinks``); the reason names the link, its resolved target and the folder. See
    :func:`storage.inputs.read_input`."""


class UnreadableMeshError(InputError):
    """The file is missing, cannot be read, is corrupt or truncated, or its parser failed."""


class NotAMeshError(InputError):
    """The file holds no triangle mesh: a point cloud (vertices without faces), or no geometry at all in a
    non-blank file (e.g. text or binary data carrying a mesh extension)."""


class EmptyMeshError(InputError):
    """The file is blank, or its triangle mesh has zero vertices or zero faces."""


class NonFiniteVerticesError(InputError):
    """Some vertex coordinates are NaN or infinite; the reason says how many vertices."""


class DegenerateFacesError(InputError):
    """Some faces repeat a vertex (after vertices at the same position are merged) or repeat another face's
    vertices (either orientation); the reason says how many and gives the first."""


class CoordinateMagnitudeError(InputError):
    """Some coordinates are larger in magnitude than the reader's bound (finite, but beyond what merging and
    normalisation handle exactly): :data:`storage.meshes.MAX_COORDINATE` for meshes,
    :data:`storage.collections.MAX_COORDINATE` for shape collections; the reason gives how many values and the
    largest magnitude."""


class DegenerateExtentError(InputError):
    """The mesh's bounding box collapses to a point: its diagonal is zero, or so small next to its coordinates'
    magnitude (below :data:`storage.meshes.MIN_RELATIVE_EXTENT` times the largest ``|coordinate|``) that
    normalising it to a unit diagonal would keep only a few significant bits; the reason gives both figures."""


class DatasetNotFoundError(Exception):
    """A dataset location matches no mesh files; the message names the location."""


# --- shape collections in correspondence (storage.collections) -------------------------------------------------
# For these, ``item_id`` is the shape id (a per-shape failure) or the collection id (the whole collection fails).


class UnequalPointCountError(InputError):
    """A shape of a collection has a different point count than the collection's (the most common count among
    its readable files); the reason names the file, its count and the expected count."""


class InconsistentConnectivityError(InputError):
    """A shape's faces differ from the collection's shared connectivity, so it is not in correspondence."""


class NotACollectionError(InputError):
    """The input is readable but does not hold a shape collection: an array file without a ``vertices`` /
    ``points`` array of shape ``[S, V, 3]``, an object (pickled) array, bad ``faces`` or names, or a path that
    is neither an ``.npz`` / ``.npy`` file nor a folder."""


class UnreadableCollectionError(InputError):
    """A collection's array file cannot be read or parsed (corrupt, truncated, not an ``.npz`` / ``.npy``)."""


class EmptyCollectionError(InputError):
    """A collection has no usable shape: its folder holds no shape files, its array holds zero shapes, or every
    shape failed; the reason says which."""


# --- trained 3D Gaussian Splatting scenes (storage.gaussians) ---------------------------------------------------
# For these, ``item_id`` is the scene id (the file stem, see storage.gaussians.scene_id_from_uri).


class UnreadableSceneError(InputError):
    """A scene file is missing or unreadable, or plyfile cannot parse it (corrupt or truncated data, bad header)."""


class NotAGaussianSceneError(InputError):
    """A readable PLY that is not a 3DGS scene: no ``vertex`` element, required Gaussian fields missing (the
    reason names them; e.g. a triangle mesh PLY), list-typed fields, or an ``f_rest_*`` count that is not
    ``3 * ((d + 1)^2 - 1)`` for any SH degree ``d``."""


class NonFiniteGaussiansError(InputError):
    """Some Gaussian parameters are NaN or infinite (the reason names each field and how many values), a log
    scale overflows ``exp``, or a quaternion has zero norm."""


class EmptySceneError(InputError):
    """A scene PLY has zero Gaussians (an empty ``vertex`` element)."""


class GaussianMagnitudeError(InputError):
    """Some Gaussian means or scales are finite but beyond the bounds :data:`storage.gaussians.MAX_ABS_MEAN` /
    :data:`storage.gaussians.MAX_SCALE` (e.g. a mean at 1e30 from a corrupt or mis-scaled export); the reason
    names the field, how many Gaussians and the worst value."""


# --- writing a run's outputs (storage.zarr_store) ---------------------------------------------------------------


class StoreWriteError(OSError):
    """Writing an item's output failed (disk full, file too large, permission denied, ...).

    Raised as ``StoreWriteError(errno, message, path)``: ``errno`` is the original error's, ``filename`` the path
    being written, and ``str(error)`` is the message ``"writing <path>: <original error>"`` (e.g.
    ``writing /store/run/item/ot/uv: [Errno 27] File too large``), so a failure row names what was written.
    Not an :class:`InputError`: the input is fine, the output location is not. Pickles like any ``OSError``.
    """

    def __str__(self) -> str:
        return str(self.strerror)
