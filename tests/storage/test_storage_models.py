"""Model files (storage.models): safetensors round trip with metadata and content hash, typed refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from storage.errors import InputError
from storage.models import ModelFileError, content_sha256, decode_model, encode_model, read_model


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"embed.weight": rng.normal(size=(24, 74)).astype(np.float32), "embed.bias": np.arange(24.0)}


def test_round_trip_keeps_tensors_at_half_precision_and_the_metadata(tmp_path: Path) -> None:
    data = encode_model(_tensors(), "brenier-restoration", {"network": {"width": 24}, "trained_on": ["arm"]})
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    tensors, metadata, size = read_model(str(path), "brenier-restoration")
    assert size == len(data) and not data.startswith(b"\x80")  # safetensors, not a pickle
    assert metadata["network"] == {"width": 24} and metadata["trained_on"] == ["arm"]
    assert metadata["content_sha256"] == content_sha256(tensors)
    for name, value in _tensors().items():
        assert tensors[name].dtype == np.float16
        np.testing.assert_allclose(tensors[name], value, rtol=1e-3, atol=1e-3)


def test_refuses_edited_tensors_other_formats_and_missing_files(tmp_path: Path) -> None:
    data = bytearray(encode_model(_tensors(), "brenier-restoration", {}))
    data[-3] ^= 0xFF  # one weight byte
    with pytest.raises(ModelFileError, match="content hash does not match"):
        decode_model(bytes(data), "brenier-restoration", "edited.safetensors")
    other = encode_model(_tensors(), "something-else", {})
    with pytest.raises(ModelFileError, match="'something-else' model"):
        decode_model(other, "brenier-restoration", "other.safetensors")
    with pytest.raises(ModelFileError, match="not a safetensors file"):
        decode_model(b"\x80\x04not a model", "brenier-restoration", "pickle.pt")
    with pytest.raises(ModelFileError, match="cannot read") as raised:
        read_model(str(tmp_path / "missing.safetensors"), "brenier-restoration")
    assert isinstance(raised.value, InputError) and raised.value.item_id.endswith("missing.safetensors")
