"""Sets of embedding vectors (unit vectors on ``S^{d-1}``) from NPY, Parquet or Zarr files.

Accepted layouts (local paths or fsspec URLs):

- ``.npy``: a float array ``[N, d]``.
- ``.parquet``: one list/fixed-size-list column of floats (``embedding``, ``vector`` or ``embeddings``, or the only
  list column), or else all numeric columns taken as the ``d`` coordinates.
- ``.zarr`` (a folder): the array at its root, or the array named ``embeddings``/``vectors``/``embedding`` in the
  group.

Vectors are normalised to unit length on reading (the methods work on the sphere); zero vectors are an error.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from storage.errors import InputError

__all__ = [
    "EmbeddingSet",
    "UnreadableEmbeddingsError",
    "NotEmbeddingsError",
    "NonFiniteEmbeddingsError",
    "embedding_set_id",
    "read_embeddings",
]

_LIST_COLUMNS = ("embedding", "vector", "embeddings", "vectors")


class UnreadableEmbeddingsError(InputError):
    """The file is missing, of an unknown format, or its parser failed."""


class NotEmbeddingsError(InputError):
    """The file holds no ``[N, d]`` float array (wrong rank, fewer than 2 dimensions, no rows, zero vectors)."""


class NonFiniteEmbeddingsError(InputError):
    """Some vectors have NaN or infinite coordinates; the reason says how many."""


@dataclass(frozen=True)
class EmbeddingSet:
    """Unit vectors read from one file.

    Attributes:
        set_id: stable id (file name without extension). uri: where it came from.
        vectors: ``[N, d]`` float32, unit rows. sha256: hash of the raw vectors (float32 bytes).
    """

    set_id: str
    uri: str
    vectors: np.ndarray
    sha256: str


def embedding_set_id(uri: str) -> str:
    """``"path/to/style-a.parquet"`` -> ``"style-a"``."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    for ext in (".npy", ".parquet", ".zarr"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _from_parquet(set_id: str, data: bytes) -> np.ndarray:
    table = pq.read_table(io.BytesIO(data))
    list_cols = [f.name for f in table.schema
                 if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type) or pa.types.is_large_list(f.type)]
    named = [c for c in _LIST_COLUMNS if c in list_cols]
    if named or len(list_cols) == 1:
        column = table.column(named[0] if named else list_cols[0]).to_pylist()
        lengths = {len(v) for v in column if v is not None}
        if len(lengths) != 1 or any(v is None for v in column):
            raise NotEmbeddingsError(set_id, f"list column has rows of lengths {sorted(lengths)[:5]} or nulls")
        return np.asarray(column, dtype=np.float64)
    numeric = [f.name for f in table.schema if pa.types.is_floating(f.type) or pa.types.is_integer(f.type)]
    if not numeric:
        raise NotEmbeddingsError(set_id, "no list column and no numeric columns")
    return np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in numeric]).astype(np.float64)


def _from_zarr(set_id: str, uri: str) -> np.ndarray:
    node = zarr.open(uri, mode="r")
    if isinstance(node, zarr.Array):
        return np.asarray(node[:], dtype=np.float64)
    for name in ("embeddings", "vectors", "embedding"):
        if name in node:
            return np.asarray(node[name][:], dtype=np.float64)
    raise NotEmbeddingsError(set_id, "Zarr group has no array named embeddings, vectors or embedding")


def read_embeddings(uri: str) -> EmbeddingSet:
    """Read one set of embedding vectors and normalise them to unit length.

    Args:
        uri: local path or fsspec URL of a ``.npy``, ``.parquet`` or ``.zarr`` (module docstring for layouts).

    Returns:
        :class:`EmbeddingSet` with ``vectors`` ``[N, d]`` float32 unit rows.

    Raises:
        UnreadableEmbeddingsError: missing file, unknown extension, or parser failure.
        NotEmbeddingsError: not an ``[N >= 1, d >= 2]`` array, or zero vectors.
        NonFiniteEmbeddingsError: NaN/Inf coordinates.
    """
    set_id = embedding_set_id(uri)
    lower = uri.lower().rstrip("/")
    try:
        if lower.endswith(".zarr"):
            raw = _from_zarr(set_id, uri)
        elif lower.endswith(".npy") or lower.endswith(".parquet"):
            with fsspec.open(uri, "rb") as f:
                data = f.read()
            raw = (np.load(io.BytesIO(data), allow_pickle=False) if lower.endswith(".npy")
                   else _from_parquet(set_id, data))
        else:
            raise UnreadableEmbeddingsError(set_id, f"unknown format {os.path.splitext(lower)[1] or '(none)'}: "
                                                    "use .npy, .parquet or .zarr")
    except InputError:
        raise
    except Exception as e:  # parsers raise anything on corrupt data
        raise UnreadableEmbeddingsError(set_id, f"cannot read {uri}: {type(e).__name__}: {e}") from e
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[0] < 1 or raw.shape[1] < 2 or not np.issubdtype(raw.dtype, np.number):
        raise NotEmbeddingsError(set_id, f"expected an [N, d] numeric array with d >= 2, got shape {raw.shape}")
    bad = int((~np.isfinite(raw).all(1)).sum())
    if bad:
        raise NonFiniteEmbeddingsError(set_id, f"{bad} of {len(raw)} vectors have NaN or Inf coordinates")
    norms = np.linalg.norm(raw, axis=1)
    if (norms == 0).any():
        raise NotEmbeddingsError(set_id, f"{int((norms == 0).sum())} zero vectors have no direction")
    vectors = (raw / norms[:, None]).astype(np.float32)
    return EmbeddingSet(set_id, uri, vectors, hashlib.sha256(vectors.tobytes()).hexdigest())
