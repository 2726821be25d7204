"""The run's Zarr store: one group per item, written so that a crash never leaves a group that reads as done.

Layout (Zarr format 3)::

    <root>/<run_id>/<item_id>/            group; attrs: provenance, "fingerprint", "complete", "rows"
    <root>/<run_id>/<item_id>/<a>/<b>     arrays (unsharded, zstd), written whole in one call
    <root>/<run_id>/<item_id>/<pyramid>/  group with OME-Zarr style "multiscales" attrs; levels at "0", "1", ...

An item's group is owned by one task: :meth:`ItemStore.begin` deletes whatever an earlier attempt left and
marks the group incomplete; :meth:`ItemStore.finish` sets ``complete`` in the same metadata write that stores
the result rows, after every array is written. Different items never touch each other's groups (parent groups
are only created if missing). Arrays are unsharded and written whole, because concurrent writers of different
chunks inside one zarr 3 shard lose data.

An ``OSError`` while writing (disk full, file too large, permission denied) is raised as
:class:`storage.errors.StoreWriteError`, whose message names what was being written
(``writing <root>/<run_id>/<item_id>/<path>: [Errno 27] File too large``) and which keeps the ``errno``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import fsspec
import numpy as np
import zarr
import zarr.storage
from zarr.abc.store import Store

from storage.errors import StoreWriteError
from storage.image_codecs import CodecSetting, ImageCodec

__all__ = ["ItemStore", "open_root", "read_file"]

_RESERVED_ATTRS = frozenset({"complete", "fingerprint", "rows", "rows_nonfinite", "failures", "checkpoint"})
_CHUNK_KEY_ENCODING: dict[str, Any] = {"name": "default", "separator": "/"}  # chunk objects live under "<array>/c/"
_PYRAMID_CHUNK = 128


def open_root(root: str) -> Store:
    """Open a store root for reading and writing.

    Parameters
    ----------
    root : str
        Local directory (created when first written) or fsspec URL with a protocol (``"s3://bucket/store"``,
        ``"memory://store"``).

    Returns
    -------
    zarr.abc.store.Store
        ``zarr.storage.LocalStore`` for plain paths, ``zarr.storage.FsspecStore`` for URLs.
    """
    if "://" in root:
        return zarr.storage.FsspecStore.from_url(root, read_only=False)
    return zarr.storage.LocalStore(root)


def _check_component(kind: str, value: str) -> None:
    if not value or "/" in value or value in {".", ".."} or value.startswith("__"):
        raise ValueError(f"{kind} {value!r} is not a valid path component")


@contextmanager
def _writing(where: str) -> Iterator[None]:
    """Re-raise an ``OSError`` of the block as :class:`StoreWriteError` naming ``where`` (errno kept)."""
    try:
        yield
    except StoreWriteError:
        raise
    except OSError as e:
        raise StoreWriteError(e.errno, f"writing {where}: {e}", os.fsdecode(e.filename) if e.filename else where) from e


def _encode_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """Replace non-finite floats by None; return the rows and ``[row, key, "nan"|"inf"|"-inf"]`` records."""
    encoded: list[dict[str, Any]] = []
    nonfinite: list[list[Any]] = []
    for index, row in enumerate(rows):
        out: dict[str, Any] = {}
        for key, value in row.items():
            if isinstance(value, float | np.floating) and not math.isfinite(value):
                nonfinite.append([index, key, str(float(value))])
                out[key] = None
            else:
                out[key] = value.item() if isinstance(value, np.generic) else value
        encoded.append(out)
    return encoded, nonfinite


class ItemStore:
    """One item's Zarr group under ``<root>/<run_id>/<item_id>``, with a completion marker set last.

    Parameters
    ----------
    root : str
        Store root: local directory or fsspec URL (see :func:`open_root`).
    run_id : str
        Run id; one path component.
    item_id : str
        Item id (see :class:`storage.meshes.MeshItem`); one path component.

    Raises
    ------
    ValueError
        If ``run_id`` or ``item_id`` is empty, contains ``/``, is ``.``/``..`` or starts with ``__`` (reserved
        by Zarr).
    """

    def __init__(self, root: str, run_id: str, item_id: str) -> None:
        _check_component("run_id", run_id)
        _check_component("item_id", item_id)
        self._root = root.rstrip("/") if "://" in root else os.path.abspath(root)
        self._path = f"{run_id}/{item_id}"
        self._store = open_root(self._root)

    @property
    def uri(self) -> str:
        """``<root>/<run_id>/<item_id>``: where the item's group lives (absolute local path, or URL)."""
        return f"{self._root}/{self._path}"

    def _group(self, mode: Literal["r", "r+"] = "r") -> zarr.Group:
        return zarr.open_group(self._store, path=self._path, mode=mode, zarr_format=3)

    def is_complete(self, fingerprint: str) -> bool:
        """Whether a finished group for this item exists with this fingerprint.

        Parameters
        ----------
        fingerprint : str
            Identity of the inputs and config that produced the group.

        Returns
        -------
        bool
            True iff the group exists, ``attrs["complete"] is True`` and ``attrs["fingerprint"] == fingerprint``.
            A missing group or unreadable group metadata reads as False.
        """
        try:
            attrs = self._group().attrs.asdict()
        except (FileNotFoundError, ValueError):  # no group, or metadata cut short by a crash
            return False
        return attrs.get("complete") is True and attrs.get("fingerprint") == fingerprint

    def begin(self, fingerprint: str, attrs: dict[str, Any]) -> None:
        """Start the item afresh: delete any existing group for it and create an incomplete one.

        Parameters
        ----------
        fingerprint : str
            Identity of the inputs and config; :meth:`is_complete` compares against it.
        attrs : dict
            JSON-serialisable provenance stored in the group's attributes.

        Raises
        ------
        ValueError
            If ``attrs`` uses a reserved key (``complete``, ``fingerprint``, ``rows``, ``rows_nonfinite``).
        TypeError
            If ``attrs`` is not JSON-serialisable (checked before anything is deleted).
        StoreWriteError
            If writing fails (an ``OSError``); the message names the item's group.
        """
        reserved = _RESERVED_ATTRS.intersection(attrs)
        if reserved:
            raise ValueError(f"attrs use reserved keys: {sorted(reserved)}")
        json.dumps(attrs)  # fail before the old group is deleted
        with _writing(self.uri):
            zarr.open_group(
                self._store,
                path=self._path,
                mode="w",
                zarr_format=3,
                attributes={**attrs, "fingerprint": fingerprint, "complete": False},
            )

    def write_array(
        self,
        path: str,
        array: np.ndarray,
        chunks: tuple[int, ...] | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> int:
        """Write one whole array into the item's group (replacing any array at ``path``).

        Parameters
        ----------
        path : str
            Path inside the item's group, e.g. ``"harmonic/uv"``; intermediate groups are created.
        array : np.ndarray
            Any shape and numeric dtype; stored unsharded with zarr's default codecs (zstd).
        chunks : tuple of int, optional
            Chunk shape (one entry per dimension); zarr picks one when None.
        attrs : dict, optional
            JSON-serialisable attributes of the array.

        Returns
        -------
        int
            Stored bytes of the array's chunk objects (compressed; metadata not counted).

        Raises
        ------
        FileNotFoundError
            If :meth:`begin` has not created the item's group.
        StoreWriteError
            If writing fails (an ``OSError``: disk full, file too large, ...); the message names the array.
        """
        group = self._group("r+")
        with _writing(f"{self.uri}/{path}"):
            stored = group.create_array(
                path,
                data=np.asarray(array),
                chunks=chunks if chunks is not None else "auto",
                chunk_key_encoding=_CHUNK_KEY_ENCODING,
                attributes=attrs,
                overwrite=True,
            )
        return self._chunk_bytes(stored.path)

    def _chunk_bytes(self, array_path: str) -> int:
        fs, path = fsspec.core.url_to_fs(f"{self._root}/{array_path}/c")
        return int(fs.du(path, total=True)) if fs.exists(path) else 0

    def read_array(self, path: str) -> np.ndarray:
        """Read one whole array.

        Parameters
        ----------
        path : str
            Path inside the item's group, as given to :meth:`write_array`.

        Returns
        -------
        np.ndarray
            The array with its stored shape and dtype.

        Raises
        ------
        FileNotFoundError
            If the item's group does not exist.
        KeyError
            If no array exists at ``path``.
        """
        node = self._group()[path]
        if not isinstance(node, zarr.Array):
            raise KeyError(f"{self.uri}/{path} is a group, not an array")
        return np.asarray(node[...])

    def open_array(self, path: str, mode: Literal["r", "r+"] = "r") -> zarr.Array:
        """A lazy handle on one array of the item's group: index it to read (or, with ``mode="r+"``, write) chunks.

        Raises:
            FileNotFoundError: no array at ``path``.
        """
        return zarr.open_array(self._store, path=f"{self._path}/{path}", mode=mode, zarr_format=3)

    def write_file(self, name: str, data: bytes) -> str:
        """Write a plain file (e.g. a PNG preview) next to the item's arrays; returns its uri.

        Raises:
            StoreWriteError: writing fails (an ``OSError``); the message names the file.
        """
        uri = f"{self.uri}/{name}"
        with _writing(uri), fsspec.open(uri, "wb", auto_mkdir=True) as f:
            f.write(data)
        return uri

    def read_attrs(self, path: str = "") -> dict[str, Any]:
        """Read the attributes of the item's group (``path=""``) or of a node inside it.

        Parameters
        ----------
        path : str
            Path inside the item's group; empty for the group itself.

        Returns
        -------
        dict
            A copy of the node's attributes.

        Raises
        ------
        FileNotFoundError
            If the item's group does not exist.
        KeyError
            If no node exists at ``path``.
        """
        group = self._group()
        return (group[path] if path else group).attrs.asdict()

    def write_pyramid(
        self,
        path: str,
        levels: list[np.ndarray],
        attrs: dict[str, Any],
        codec: CodecSetting | None = None,
        side_info: dict[str, np.ndarray] | None = None,
    ) -> list[int]:
        """Write an image pyramid as an OME-Zarr style multiscale group, optionally image-coded.

        Level ``k`` is stored at ``f"{path}/{k}"``: with a ``codec``, as one chunk coded by
        :class:`storage.image_codecs.ImageCodec` (one image codestream per level); without, with zstd and chunks
        ``(C, min(H_k, 128), min(W_k, 128))``. ``side_info`` arrays (what a decoder needs besides the
        codestreams, e.g. quantisation offsets and scales) are stored uncompressed at ``f"{path}/side_info/<name>"``
        and read back by :meth:`read_side_info`. The group's
        attrs hold the caller's ``attrs`` plus ``"multiscales"`` (NGFF 0.5 field names, axes ``c, y, x``) whose
        dataset ``k`` has the scale transform ``[1, (H_0-1)/(H_k-1), (W_0-1)/(W_k-1)]``: the grid-spacing ratio of
        corner-aligned sample grids such as ``2^n + 1`` geometry images.

        Parameters
        ----------
        path : str
            Group path inside the item's group, e.g. ``"ot/geometry_image"``.
        levels : list of np.ndarray
            ``levels[k]`` is ``[C, H_k, W_k]`` of any numeric dtype (e.g. uint16); level 0 is the finest.
            All levels share ``C``; every ``H_k, W_k >= 2``.
        attrs : dict
            JSON-serialisable attributes of the pyramid group (e.g. quantisation bits).
        codec : storage.image_codecs.CodecSetting, optional
            Image codec of every level; levels must then be uint16 below ``2**codec.bits``. The setting's label
            is stored in the group's ``"codec"`` attribute.
        side_info : dict of str to np.ndarray, optional
            Named numeric arrays needed to decode the levels (any shape; stored as given, uncompressed).

        Returns
        -------
        list of int
            Stored bytes of each level, in level order: the level's chunk objects plus every side-info array's
            (what shipping that level alone takes; Zarr's JSON metadata is not counted, the codestreams carry
            shape and bit depth).

        Raises
        ------
        ValueError
            If ``levels`` is empty, a level is not 3-D, the channel counts differ, a side is < 2, ``attrs`` has a
            ``"multiscales"`` or ``"codec"`` key, a side-info name is not a path component, or (with a
            ``codec``) a level is not uint16 below ``2**codec.bits``.
        FileNotFoundError
            If :meth:`begin` has not created the item's group.
        StoreWriteError
            If writing fails (an ``OSError``); the message names the pyramid.
        """
        if not levels:
            raise ValueError("a pyramid needs at least one level")
        if "multiscales" in attrs or "codec" in attrs:
            raise ValueError("attrs must not define 'multiscales' or 'codec'; write_pyramid writes them")
        for name in side_info or {}:
            _check_component("side_info name", name)
        shapes = [np.shape(level) for level in levels]
        if any(len(shape) != 3 or shape[0] != shapes[0][0] or min(shape[1:]) < 2 for shape in shapes):
            raise ValueError(f"levels must be [C, H, W] with one C and H, W >= 2; got shapes {shapes}")
        _, height0, width0 = shapes[0]
        datasets = [
            {
                "path": str(k),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, (height0 - 1) / (h - 1), (width0 - 1) / (w - 1)]}
                ],
            }
            for k, (_, h, w) in enumerate(shapes)
        ]
        multiscales = [
            {
                "version": "0.5",
                "name": path,
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space"},
                    {"name": "x", "type": "space"},
                ],
                "datasets": datasets,
                "type": "subsampling",
            }
        ]
        if codec is not None and any(
                np.asarray(level).dtype != np.uint16 or int(np.max(level)) >= 2**codec.bits for level in levels):
            raise ValueError(f"levels coded with {codec.label} must be uint16 below 2**{codec.bits}")
        codec_attrs = {"codec": {"setting": codec.label, "bits": codec.bits}} if codec is not None else {}
        parent = self._group("r+")
        with _writing(f"{self.uri}/{path}"):
            group = parent.create_group(
                path, overwrite=True, attributes={**attrs, "multiscales": multiscales, **codec_attrs})
            side_bytes = 0
            for name, values in (side_info or {}).items():
                stored = group.create_array(f"side_info/{name}", data=np.asarray(values), compressors=None,
                                            chunk_key_encoding=_CHUNK_KEY_ENCODING)
                side_bytes += self._chunk_bytes(stored.path)
            if codec is None:
                return [
                    side_bytes + self.write_array(
                        f"{path}/{k}", level, chunks=(c, min(h, _PYRAMID_CHUNK), min(w, _PYRAMID_CHUNK)))
                    for k, (level, (c, h, w)) in enumerate(zip(levels, shapes, strict=True))
                ]
            coded = []
            for k, level in enumerate(levels):
                stored = group.create_array(
                    str(k), data=np.asarray(level), chunks=np.shape(level), serializer=ImageCodec(codec),
                    compressors=None, chunk_key_encoding=_CHUNK_KEY_ENCODING)
                coded.append(side_bytes + self._chunk_bytes(stored.path))
            return coded

    def read_side_info(self, path: str) -> dict[str, np.ndarray]:
        """The side-info arrays of the pyramid at ``path`` (empty if it has none), as given to :meth:`write_pyramid`.

        Raises
        ------
        FileNotFoundError
            If the item's group does not exist.
        KeyError
            If no pyramid group exists at ``path``.
        """
        group = self._group()[path]
        if not isinstance(group, zarr.Group):
            raise KeyError(f"{self.uri}/{path} is an array, not a pyramid group")
        if "side_info" not in group:
            return {}
        return {name: np.asarray(array[...]) for name, array in group["side_info"].arrays()}

    def read_pyramid(self, path: str) -> tuple[list[np.ndarray], dict[str, Any]]:
        """Read a pyramid written by :meth:`write_pyramid`.

        Parameters
        ----------
        path : str
            Group path inside the item's group.

        Returns
        -------
        levels : list of np.ndarray
            ``[C, H_k, W_k]`` arrays in the order of the ``multiscales`` datasets (finest first).
        attrs : dict
            The pyramid group's attributes, ``"multiscales"`` included.

        Raises
        ------
        FileNotFoundError
            If the item's group does not exist.
        KeyError
            If no pyramid group exists at ``path``.
        """
        attrs = self.read_attrs(path)
        if "multiscales" not in attrs:
            raise KeyError(f"{self.uri}/{path} has no 'multiscales' attribute")
        levels = [self.read_array(f"{path}/{d['path']}") for d in attrs["multiscales"][0]["datasets"]]
        return levels, attrs

    def finish(self, rows: list[dict[str, Any]], failures: list[dict[str, Any]] | None = None) -> None:
        """Store the item's result rows (and failure rows) and mark the group complete, in one metadata write.

        Call it after every array is written. Non-finite floats (NaN, ±Inf) are stored as JSON ``null`` with
        their positions in ``attrs["rows_nonfinite"]``, so :meth:`completed_rows` restores them exactly while
        genuine ``None`` values stay ``None``.

        Parameters
        ----------
        rows : list of dict
            Flat rows of JSON-serialisable scalars (numpy scalars are converted), e.g. table rows.
        failures : list of dict, optional
            Failure rows of stages that failed for this item (strings only), returned by :meth:`completed_failures`.

        Raises
        ------
        FileNotFoundError
            If :meth:`begin` has not created the item's group.
        TypeError
            If a row value is not JSON-serialisable.
        StoreWriteError
            If writing fails (an ``OSError``); the message names the item's group.
        """
        encoded, nonfinite = _encode_rows(rows)
        group = self._group("r+")
        with _writing(self.uri):
            group.attrs.update(
                {"rows": encoded, "rows_nonfinite": nonfinite, "failures": list(failures or []), "complete": True}
            )

    def checkpoint_step(self, fingerprint: str) -> int | None:
        """Progress counter of the last complete checkpoint of an unfinished group with this fingerprint, else None."""
        try:
            attrs = self._group().attrs.asdict()
        except (FileNotFoundError, ValueError):
            return None
        if attrs.get("fingerprint") != fingerprint or attrs.get("complete") is True or "checkpoint" not in attrs:
            return None
        return int(attrs["checkpoint"]["step"])

    def write_checkpoint(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], step: int) -> None:
        """Save a resumable state (e.g. model + optimiser + assignment) without ever exposing a half-written one.

        Two slots, ``checkpoint/a`` and ``checkpoint/b``, alternate: the new state is written whole into the slot
        not referenced by the group's ``checkpoint`` attribute, then that attribute is switched to it in one
        metadata write. A crash mid-write leaves the previous checkpoint intact and referenced.

        Parameters
        ----------
        arrays : dict of str to np.ndarray
            Named arrays; names may contain ``/`` (stored as nested paths).
        meta : dict
            JSON-serialisable metadata restored by :meth:`read_checkpoint`.
        step : int
            Progress counter (e.g. global training step) reported by :meth:`checkpoint_step`.

        Raises
        ------
        FileNotFoundError
            If :meth:`begin` has not created the item's group.
        TypeError
            If ``meta`` is not JSON-serialisable (checked before anything is written).
        StoreWriteError
            If writing fails (an ``OSError``); the message names the checkpoint slot.
        """
        json.dumps(meta)
        group = self._group("r+")
        current = group.attrs.asdict().get("checkpoint", {}).get("slot")
        slot = "b" if current == "a" else "a"
        with _writing(f"{self.uri}/checkpoint/{slot}"):
            if f"checkpoint/{slot}" in group:
                del group[f"checkpoint/{slot}"]
            for name, value in arrays.items():
                group.create_array(
                    f"checkpoint/{slot}/{name}",
                    data=np.asarray(value),
                    chunk_key_encoding=_CHUNK_KEY_ENCODING,
                    overwrite=True,
                )
            group.attrs.update(
                {"checkpoint": {"slot": slot, "step": int(step), "names": sorted(arrays), "meta": meta}})

    def read_checkpoint(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The arrays and metadata of the last complete checkpoint, or None if there is none."""
        try:
            attrs = self._group().attrs.asdict()
        except (FileNotFoundError, ValueError):
            return None
        if "checkpoint" not in attrs:
            return None
        record = attrs["checkpoint"]
        arrays = {name: self.read_array(f"checkpoint/{record['slot']}/{name}") for name in record["names"]}
        return arrays, record["meta"]

    def completed_failures(self) -> list[dict[str, Any]]:
        """Failure rows stored by :meth:`finish` (empty if none)."""
        return list(self.read_attrs().get("failures", []))

    def completed_rows(self) -> list[dict[str, Any]]:
        """Rows stored by :meth:`finish`, non-finite floats restored.

        Returns
        -------
        list of dict
            The rows as given to :meth:`finish` (numpy scalars as Python scalars).

        Raises
        ------
        FileNotFoundError
            If the item's group does not exist.
        RuntimeError
            If the group exists but is not complete.
        """
        attrs = self.read_attrs()
        if attrs.get("complete") is not True:
            raise RuntimeError(f"{self.uri} is not complete")
        rows: list[dict[str, Any]] = attrs["rows"]
        for index, key, value in attrs["rows_nonfinite"]:
            rows[index][key] = float(value)
        return rows


def read_file(uri: str) -> bytes:
    """The bytes of a file written by :meth:`ItemStore.write_file` (local path or fsspec URL).

    Raises:
        OSError: unreadable or missing (FileNotFoundError).
    """
    with fsspec.open(uri, "rb") as f:
        return f.read()
