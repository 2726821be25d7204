"""Trained model files: safetensors (never pickle) with the model's config and a content hash in the header.

A model file holds named tensors (stored as float16 by default: a restoration network's weights lose nothing
measurable at half precision and the file is what a user stores beside the dataset) and string metadata. The
content hash, ``content_sha256``, covers every tensor's name, dtype, shape and bytes; :func:`decode_model`
recomputes it and refuses a file whose tensors do not match.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from storage.errors import InputError
from storage.zarr_store import read_file

__all__ = ["ModelFileError", "encode_model", "decode_model", "read_model", "content_sha256"]


class ModelFileError(InputError):
    """A model file that is unreadable, not safetensors, of another format, or whose content hash does not match."""


def content_sha256(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes, sorted by name."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def encode_model(tensors: dict[str, np.ndarray], model_format: str, metadata: dict[str, Any],
                 dtype: str = "float16") -> bytes:
    """The safetensors bytes of a model.

    Args:
        tensors: named float arrays; cast to ``dtype``.
        model_format: name of the model kind (e.g. ``"brenier-restoration"``), checked by :func:`decode_model`.
        metadata: JSON-serialisable values (config, training figures); stored as JSON strings.
        dtype: numpy dtype name the tensors are stored in.

    Returns:
        The file's bytes; the header holds ``format``, ``content_sha256`` and every ``metadata`` key.
    """
    cast = {name: np.ascontiguousarray(value, dtype=dtype) for name, value in tensors.items()}
    header = {key: json.dumps(value, sort_keys=True) for key, value in metadata.items()}
    header.update({"format": model_format, "content_sha256": content_sha256(cast)})
    return save(cast, metadata=header)


def decode_model(data: bytes, model_format: str, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tensors (as stored) and metadata (``format`` and ``content_sha256`` as strings, the rest parsed) of a file.

    Raises:
        ModelFileError: not safetensors, another ``format``, or a content hash that does not match the tensors.
    """
    try:
        tensors = load(data)
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")]).get("__metadata__", {})
    except (SafetensorError, ValueError, UnicodeDecodeError) as error:
        raise ModelFileError(name, f"not a safetensors file ({error})") from error
    if header.get("format") != model_format:
        raise ModelFileError(name, f"holds a {header.get('format')!r} model, expected {model_format!r}")
    if header.get("content_sha256") != content_sha256(tensors):
        raise ModelFileError(name, "content hash does not match its tensors (file corrupted or edited)")
    metadata = {k: v if k in ("format", "content_sha256") else json.loads(v) for k, v in header.items()}
    return tensors, metadata


def read_model(uri: str, model_format: str) -> tuple[dict[str, np.ndarray], dict[str, Any], int]:
    """:func:`decode_model` of the file at ``uri`` (local path or fsspec URL), and the file's size in bytes.

    Raises:
        ModelFileError: the file is missing or unreadable, or :func:`decode_model` refuses it.
    """
    try:
        data = read_file(uri)
    except OSError as error:
        raise ModelFileError(uri, f"cannot read the model file ({error.strerror or error})") from error
    tensors, metadata = decode_model(data, model_format, uri)
    return tensors, metadata, len(data)
