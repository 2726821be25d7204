"""Reading embedding sets (storage.embeddings): NPY, Parquet (list or numeric columns), Zarr; typed errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from storage.embeddings import (
    NonFiniteEmbeddingsError,
    NotEmbeddingsError,
    UnreadableEmbeddingsError,
    read_embeddings,
)

RAW = np.random.default_rng(0).standard_normal((50, 8)) * 3.0
UNIT = RAW / np.linalg.norm(RAW, axis=1, keepdims=True)


def test_npy_parquet_and_zarr_layouts_read_the_same_unit_vectors(tmp_path):
    np.save(tmp_path / "a.npy", RAW)
    pq.write_table(pa.table({"id": np.arange(50), "embedding": list(RAW)}), tmp_path / "b.parquet")
    pq.write_table(pa.table({f"c{i}": RAW[:, i] for i in range(8)}), tmp_path / "c.parquet")
    zarr.save_array(str(tmp_path / "d.zarr"), RAW)
    group = zarr.open_group(str(tmp_path / "e.zarr"), mode="w")
    group.create_array("vectors", data=RAW)
    for name in ("a.npy", "b.parquet", "d.zarr", "e.zarr"):
        s = read_embeddings(str(tmp_path / name))
        assert s.vectors.dtype == np.float32 and s.vectors.shape == (50, 8)
        assert np.allclose(s.vectors, UNIT, atol=1e-6), name
    # numeric columns: every numeric column is a coordinate (here the 8 float columns)
    assert np.allclose(read_embeddings(str(tmp_path / "c.parquet")).vectors, UNIT, atol=1e-6)
    assert read_embeddings(str(tmp_path / "a.npy")).set_id == "a"


def test_bad_inputs_raise_typed_errors_naming_the_set(tmp_path):
    np.save(tmp_path / "flat.npy", np.ones(5))
    bad = RAW.copy()
    bad[3, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    zero = RAW.copy()
    zero[0] = 0.0
    np.save(tmp_path / "zero.npy", zero)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(NotEmbeddingsError, match="flat: expected an"):
        read_embeddings(str(tmp_path / "flat.npy"))
    with pytest.raises(NonFiniteEmbeddingsError, match="nan: 1 of 50"):
        read_embeddings(str(tmp_path / "nan.npy"))
    with pytest.raises(NotEmbeddingsError, match="zero vectors"):
        read_embeddings(str(tmp_path / "zero.npy"))
    with pytest.raises(UnreadableEmbeddingsError, match="junk"):
        read_embeddings(str(tmp_path / "junk.npy"))
    with pytest.raises(UnreadableEmbeddingsError, match="unknown format"):
        read_embeddings(str(tmp_path / "x.csv"))
    with pytest.raises(UnreadableEmbeddingsError, match="missing"):
        read_embeddings(str(tmp_path / "missing.npy"))
