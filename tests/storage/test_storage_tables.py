"""Tests of storage.tables: canonical schemas through Parquet and pandas, row validation, atomic writes, tables
that grow item by item while a run goes on and compact at its end."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from storage.tables import (
    AUTODECODER_EPOCHS_SCHEMA,
    AUTODECODER_MODELS_SCHEMA,
    AUTODECODER_SHAPES_SCHEMA,
    EMBEDDING_ALIGNMENT_SCHEMA,
    FAILURES_SCHEMA,
    GAUSSIAN_REDUCTION_SCHEMA,
    GEOMETRY_IMAGES_SCHEMA,
    RATE_DISTORTION_SCHEMA,
    RESTORATION_EPOCHS_SCHEMA,
    RESTORATION_MODELS_SCHEMA,
    SEQUENCE_FRAMES_SCHEMA,
    SEQUENCE_GEOMETRY_IMAGES_SCHEMA,
    TABLE_SCHEMAS,
    read_table,
    rows_to_table,
    split_table,
    table_uri,
    write_item_rows,
    write_table,
)

RUN = "run-1"


def _ot_row(level: int) -> dict[str, object]:
    return {
        "run_id": RUN,
        "item_id": "spot",
        "source_uri": "/data/spot.obj",
        "source_sha256": "0" * 64,
        "parameterization": "ot",
        "level": np.int16(level),
        "resolution": 257 >> level | 1,
        "mesh_vertices": 2930,
        "mesh_faces": 5856,
        "merged_vertices": 0,
        "degenerate_faces_dropped": 0,
        "duplicate_faces_dropped": 0,
        "chamfer_l2": 1.5e-7,
        "hausdorff": np.float64(2.0e-3),
        "area_distortion": 0.05,
        "flipped_triangles": 0,
        "untangled_vertices": 12,
        "centroid_flips": 40,
        "compression_ratio": 12.5,
        "raw_bytes": 3 * 257 * 257 * 2,
        "stored_bytes": 31700,
        "ot_solver": "newton",
        "fit_steps": 0,
        "newton_iterations": 14,
        "mass_error": 1e-9,
        "solve_seconds": 0.8,
        "samples": 100_000,
        "distance_normalization": "unit_bbox_diagonal",
        "feature_weight": 0.0,
        "seconds": 2.5,
    }


def test_schemas_cover_every_table() -> None:
    assert TABLE_SCHEMAS == {
        "geometry_images": GEOMETRY_IMAGES_SCHEMA,
        "rate_distortion": RATE_DISTORTION_SCHEMA,
        "restoration_epochs": RESTORATION_EPOCHS_SCHEMA,
        "restoration_models": RESTORATION_MODELS_SCHEMA,
        "autodecoder_epochs": AUTODECODER_EPOCHS_SCHEMA,
        "autodecoder_shapes": AUTODECODER_SHAPES_SCHEMA,
        "autodecoder_models": AUTODECODER_MODELS_SCHEMA,
        "gaussian_reduction": GAUSSIAN_REDUCTION_SCHEMA,
        "sequence_frames": SEQUENCE_FRAMES_SCHEMA,
        "sequence_geometry_images": SEQUENCE_GEOMETRY_IMAGES_SCHEMA,
        "embedding_alignment": EMBEDDING_ALIGNMENT_SCHEMA,
        "failures": FAILURES_SCHEMA,
    }
    assert GEOMETRY_IMAGES_SCHEMA.metadata[b"distance_normalization"] == b"unit bounding-box diagonal"
    assert set(_ot_row(0)) == set(GEOMETRY_IMAGES_SCHEMA.names)


def test_table_uri() -> None:
    assert table_uri("s3://bucket/store/", "r", "failures") == "s3://bucket/store/r/tables/failures.parquet"


def test_geometry_images_round_trip(tmp_path: Path) -> None:
    harmonic = _ot_row(0) | {"parameterization": "harmonic", "newton_iterations": None, "mass_error": None}
    harmonic["solve_seconds"] = math.nan
    rows = [_ot_row(0), _ot_row(1), harmonic]
    uri = write_table(rows, str(tmp_path), RUN, "geometry_images")
    assert uri == table_uri(str(tmp_path), RUN, "geometry_images")
    assert ds.dataset(uri, format="parquet").schema.equals(GEOMETRY_IMAGES_SCHEMA, check_metadata=True)
    frame = read_table(uri)
    assert list(frame.columns) == GEOMETRY_IMAGES_SCHEMA.names
    assert frame["level"].dtype == pd.Int16Dtype()
    assert frame["resolution"].dtype == pd.Int32Dtype()
    assert frame["newton_iterations"].dtype == pd.Int32Dtype()
    assert frame["mesh_faces"].dtype == pd.Int64Dtype()
    assert frame["chamfer_l2"].dtype == np.float64
    assert pd.api.types.is_string_dtype(frame["item_id"])
    assert frame["level"].tolist() == [0, 1, 0]
    assert frame["resolution"].tolist() == [257, 129, 257]
    assert frame["hausdorff"].tolist() == [2.0e-3] * 3
    assert pd.isna(frame.loc[2, "newton_iterations"]) and pd.isna(frame.loc[2, "mass_error"])
    assert math.isnan(frame.loc[2, "solve_seconds"])
    assert frame["parameterization"].tolist() == ["ot", "ot", "harmonic"]
    # a plain pandas reader sees the same data
    assert pd.read_parquet(uri)["mesh_vertices"].tolist() == [2930] * 3


def test_unknown_column_raises_value_error() -> None:
    with pytest.raises(ValueError, match="psnr"):
        rows_to_table([_ot_row(0) | {"psnr": 40.0}], GEOMETRY_IMAGES_SCHEMA)


def test_missing_column_becomes_null() -> None:
    row = _ot_row(0)
    del row["hausdorff"], row["newton_iterations"]
    table = rows_to_table([row], GEOMETRY_IMAGES_SCHEMA)
    assert table.schema.equals(GEOMETRY_IMAGES_SCHEMA, check_metadata=True)
    assert table["hausdorff"].null_count == 1 and table["newton_iterations"].null_count == 1
    assert table["chamfer_l2"].null_count == 0


@pytest.mark.parametrize(
    ("column", "value"),
    [("chamfer_l2", "small"), ("level", 1.5), ("level", 70_000), ("item_id", 7), ("newton_iterations", math.nan)],
)
def test_wrong_type_raises_type_error_naming_column(column: str, value: object) -> None:
    with pytest.raises(TypeError, match=column):
        rows_to_table([_ot_row(0) | {column: value}], GEOMETRY_IMAGES_SCHEMA)


def test_integral_float_into_integer_column_is_accepted() -> None:
    table = rows_to_table([_ot_row(0) | {"samples": 100_000.0}], GEOMETRY_IMAGES_SCHEMA)
    assert table["samples"].to_pylist() == [100_000]


@pytest.mark.parametrize("table", sorted(TABLE_SCHEMAS))
def test_empty_rows_write_empty_table_with_full_schema(tmp_path: Path, table: str) -> None:
    uri = write_table([], str(tmp_path), RUN, table)
    assert ds.dataset(uri, format="parquet").schema.equals(TABLE_SCHEMAS[table], check_metadata=True)
    frame = read_table(uri)
    assert len(frame) == 0 and list(frame.columns) == TABLE_SCHEMAS[table].names


def test_rewrite_replaces_atomically_without_leftovers(tmp_path: Path) -> None:
    failure = {
        "run_id": RUN,
        "item_id": "bad",
        "source_uri": "/x.obj",
        "stage": "read",
        "error_type": "E",
        "message": "m",
    }
    write_table([failure], str(tmp_path), RUN, "failures")
    uri = write_table([failure, failure | {"item_id": "worse"}], str(tmp_path), RUN, "failures")
    assert read_table(uri)["item_id"].tolist() == ["bad", "worse"]
    assert [p.name for p in (tmp_path / RUN / "tables").iterdir()] == ["failures.parquet"]


def test_failed_write_keeps_previous_table_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = write_table([], str(tmp_path), RUN, "failures")

    def crash(table: pa.Table, where: object) -> None:
        where.write(b"PAR1 half a file")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        write_table([], str(tmp_path), RUN, "failures")
    monkeypatch.undo()
    assert ds.dataset(uri, format="parquet").schema.equals(FAILURES_SCHEMA)
    assert [p.name for p in (tmp_path / RUN / "tables").iterdir()] == ["failures.parquet"]
    assert len(list((tmp_path / RUN / "tables" / "failures.parquet").iterdir())) == 1  # no temporary left


def _failure(item_id: str) -> dict[str, str]:
    return {"run_id": RUN, "item_id": item_id, "source_uri": f"/d/{item_id}.obj", "stage": "read",
            "error_type": "NotAMeshError", "message": "holds PointCloud"}


def test_item_rows_are_readable_at_once_and_compact_at_the_end(tmp_path: Path) -> None:
    """Each item's rows land as their own fragment (pandas reads them at once); re-writing an item replaces its
    rows; the final write leaves one fragment with exactly the given rows."""
    root = str(tmp_path)
    uri = write_item_rows([_ot_row(0) | {"item_id": "spot"}], root, RUN, "geometry_images", "spot")
    assert pd.read_parquet(uri)["item_id"].tolist() == ["spot"]
    write_item_rows([_ot_row(0) | {"item_id": "cow"}, _ot_row(1) | {"item_id": "cow"}], root, RUN,
                    "geometry_images", "cow")
    write_item_rows([_ot_row(1) | {"item_id": "spot"}], root, RUN, "geometry_images", "spot")  # computed again
    frame = read_table(uri)
    assert sorted(zip(frame["item_id"], frame["level"], strict=True)) == [("cow", 0), ("cow", 1), ("spot", 1)]
    assert list(frame.columns) == GEOMETRY_IMAGES_SCHEMA.names and frame["level"].dtype == pd.Int16Dtype()
    write_table(frame.to_dict(orient="records"), root, RUN, "geometry_images")
    assert len(list(Path(uri).iterdir())) == 1
    assert sorted(read_table(uri)["item_id"]) == ["cow", "cow", "spot"]


def test_rerun_splits_compacted_rows_so_items_replace_theirs(tmp_path: Path) -> None:
    root = str(tmp_path)
    uri = write_table([_failure("cow"), _failure("spot")], root, RUN, "failures")
    assert split_table(root, RUN, "failures") == 2
    assert sorted(read_table(uri)["item_id"]) == ["cow", "spot"]  # nothing lost by the split
    write_item_rows([], root, RUN, "failures", "cow")  # cow no longer fails in the re-run
    assert read_table(uri)["item_id"].tolist() == ["spot"]


def test_a_single_file_table_of_an_earlier_version_becomes_a_fragment(tmp_path: Path) -> None:
    folder = tmp_path / RUN / "tables"
    folder.mkdir(parents=True)
    pq.write_table(rows_to_table([_failure("cow")], FAILURES_SCHEMA), folder / "failures.parquet")
    write_item_rows([_failure("spot")], str(tmp_path), RUN, "failures", "spot")
    assert sorted(read_table(str(folder / "failures.parquet"))["item_id"]) == ["cow", "spot"]


def test_empty_table_folder_reads_with_its_columns(tmp_path: Path) -> None:
    uri = write_item_rows([], str(tmp_path), RUN, "failures", "cow")
    Path(uri).mkdir(parents=True, exist_ok=True)
    frame = read_table(uri)
    assert frame.empty and list(frame.columns) == FAILURES_SCHEMA.names


def test_unknown_table_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown table"):
        write_table([], str(tmp_path), RUN, "psnr")


def test_fsspec_url_round_trip() -> None:
    root = f"memory://tables-{uuid.uuid4().hex}"
    try:
        uri = write_table([_ot_row(0)], root, RUN, "geometry_images")
        assert uri.startswith("memory://")
        frame = read_table(uri)
        assert frame["item_id"].tolist() == ["spot"]
        assert pa.Table.from_pandas(frame).num_rows == 1
    finally:
        fsspec.filesystem("memory").rm(root, recursive=True)
