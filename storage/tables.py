"""Parquet metric tables: one canonical pyarrow schema per table, defined here and nowhere else.

A run's table ``<root>/<run_id>/tables/<table>.parquet`` is a Parquet *dataset*: a folder of fragments that
``pandas.read_parquet``, ``pyarrow.dataset`` and :func:`read_table` read as one table, while the run goes on and
after it dies.

- While a run goes on, each finished item's rows land at once in their own fragment ``item-<key>.parquet``
  (:func:`write_item_rows`; ``<key>`` is a hash of the item id, so re-running an item replaces its fragment).
- At the end of a run, :func:`write_table` compacts the table into one fragment ``part-<uuid>.parquet`` holding
  every item's rows, and removes the item fragments.
- A re-run first splits the previous compacted fragment back into item fragments (:func:`split_table`), so an
  item computed again replaces its rows instead of adding a second copy.

Every fragment is written with the table's full schema (datasets take the first file's schema and silently drop
columns added later), under a hidden temporary name that is then moved into place: readers see whole fragments
only (files starting with ``.`` are ignored by pyarrow). During the final compaction a reader may, for the
moment between the new fragment's move and the old fragments' removal, see rows twice.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from storage.inputs import printable

__all__ = [
    "AUTODECODER_EPOCHS_SCHEMA",
    "AUTODECODER_MODELS_SCHEMA",
    "AUTODECODER_SHAPES_SCHEMA",
    "EMBEDDING_ALIGNMENT_SCHEMA",
    "FAILURES_SCHEMA",
    "GEOMETRY_IMAGES_SCHEMA",
    "RATE_DISTORTION_SCHEMA",
    "RESTORATION_EPOCHS_SCHEMA",
    "RESTORATION_MODELS_SCHEMA",
    "SEQUENCE_FRAMES_SCHEMA",
    "SEQUENCE_GEOMETRY_IMAGES_SCHEMA",
    "TABLE_SCHEMAS",
    "failure_row",
    "read_table",
    "rows_to_table",
    "split_table",
    "table_uri",
    "write_item_rows",
    "write_table",
]

GEOMETRY_IMAGES_SCHEMA: pa.Schema = pa.schema(
    [
        ("run_id", pa.string()),
        ("item_id", pa.string()),
        ("source_uri", pa.string()),
        ("source_sha256", pa.string()),
        ("parameterization", pa.string()),  # "harmonic" | "ot"
        ("level", pa.int16()),  # 0 = finest
        ("resolution", pa.int32()),  # H = W of that level
        ("mesh_vertices", pa.int64()),  # of the input mesh
        ("mesh_faces", pa.int64()),
        ("merged_vertices", pa.int64()),  # read repair: raw vertices minus mesh_vertices (seams merged, unused)
        ("degenerate_faces_dropped", pa.int64()),  # read repair: faces that repeated a vertex
        ("duplicate_faces_dropped", pa.int64()),  # read repair: faces that repeated another face's vertices
        ("chamfer_l2", pa.float64()),  # unit-bbox-diagonal normalised units (squared distance)
        ("hausdorff", pa.float64()),  # unit-bbox-diagonal normalised units
        ("area_distortion", pa.float64()),  # std of log area ratio of the parameterization
        ("flipped_triangles", pa.int64()),
        ("untangled_vertices", pa.int64()),  # vertices re-placed to remove OT flips (null for harmonic)
        ("centroid_flips", pa.int64()),  # flipped triangles of the raw OT centroid map, before repair (null harmonic)
        ("compression_ratio", pa.float64()),  # raw_bytes / stored_bytes
        ("raw_bytes", pa.int64()),
        ("stored_bytes", pa.int64()),
        ("ot_solver", pa.string()),  # "newton" | "neural" (OT-Net); null for harmonic
        ("fit_steps", pa.int32()),  # OT-Net Adam steps on the dual (0 for newton); null for harmonic
        ("newton_iterations", pa.int32()),  # null for harmonic
        ("mass_error", pa.float64()),  # null for harmonic
        ("solve_seconds", pa.float64()),  # null for harmonic
        ("samples", pa.int64()),
        ("distance_normalization", pa.string()),  # "unit_bbox_diagonal"
        ("feature_weight", pa.float64()),
        ("seconds", pa.float64()),
    ],
    metadata={"distance_normalization": "unit bounding-box diagonal"},
)
"""One row per item x parameterization x pyramid level of the geometry-image flow."""

RATE_DISTORTION_SCHEMA: pa.Schema = pa.schema(
    [
        ("run_id", pa.string()),
        ("item_id", pa.string()),
        ("source_uri", pa.string()),
        ("parameterization", pa.string()),  # "harmonic" | "ot" | "sphere_initial" | "sphere_ot"
        ("level", pa.int16()),  # 0 = finest
        ("resolution", pa.int32()),  # H = W of that level
        ("codec_setting", pa.string()),  # "<codec>:lossless" | "<codec>:<quality>" (storage.image_codecs)
        ("codec", pa.string()),  # "jpeg2k" | "jpegxl" | "png" | "zstd"
        ("codec_quality", pa.float64()),  # null = lossless; jpeg2k: PSNR target in dB; jpegxl: quality 0..100
        ("bits", pa.int16()),  # quantisation bits per channel
        ("stored", pa.bool_()),  # True: the setting of the Zarr pyramid; False: coded in memory to measure it
        ("stored_bytes", pa.int64()),  # coded level + side info: what shipping this level takes
        ("side_info_bytes", pa.int64()),  # quantisation / normalisation figures a decoder needs
        ("image_raw_bytes", pa.int64()),  # the level as uncoded uint16 samples
        ("mesh_vertices", pa.int64()),
        ("mesh_faces", pa.int64()),
        ("compression_ratio", pa.float64()),  # raw_mesh_bytes / stored_bytes
        ("chamfer_l2", pa.float64()),  # restored mesh vs source, point-to-surface, unit bbox diagonal (squared)
        ("hausdorff", pa.float64()),  # unit bbox diagonal
        ("samples", pa.int64()),
        ("distance_normalization", pa.string()),  # "unit_bbox_diagonal"
        ("coding_seconds", pa.float64()),  # encode + decode of the level
        ("restore", pa.string()),  # "bilinear" | "neural" (the restoration network of --restoration)
        ("restore_seconds", pa.float64()),  # restoring the level to the finest resolution
        ("model_bytes", pa.int64()),  # the restoration network's file (null for bilinear); amortise over a dataset
    ],
    metadata={"distance_normalization": "unit bounding-box diagonal"},
)
"""One row per item x parameterization x pyramid level x codec setting x restoration of the geometry-image flow."""

FAILURES_SCHEMA: pa.Schema = pa.schema(
    [
        ("run_id", pa.string()),
        ("item_id", pa.string()),
        ("source_uri", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
    ]
)
"""One row per failed item: the pipeline stage and the error's class name and message."""


def failure_row(run_id: str, item_id: str, source_uri: str, stage: str, error: BaseException) -> dict[str, str]:
    """A row of :data:`FAILURES_SCHEMA`: which item failed at which stage, with the error's class name and message.

    Text that cannot be encoded as UTF-8 (the surrogate escapes of a non-UTF-8 file name in ``source_uri`` or
    the message) is written with ``\\xNN`` escapes (:func:`storage.inputs.printable`), so the row always writes.
    """
    return {"run_id": run_id, "item_id": printable(item_id), "source_uri": printable(source_uri), "stage": stage,
            "error_type": type(error).__name__, "message": printable(str(error))}

AUTODECODER_EPOCHS_SCHEMA: pa.Schema = pa.schema(
    [
        ("run_id", pa.string()),
        ("item_id", pa.string()),  # collection x variant
        ("collection_id", pa.string()),
        ("variant", pa.string()),  # e.g. "neuralqaad", "chamfer-only", "atlasnetv2"
        ("epoch", pa.int32()),
        ("phase", pa.string()),  # "chamfer" | "qaad"
        ("loss", pa.float64()),  # augmented Chamfer or assigned MSE, normalised collection units (squared)
        ("swaps", pa.int64()),  # QAAD_REASSIGNMENT swaps made during the epoch
        ("seconds", pa.float64()),
    ]
)
"""One row per item x training epoch of the autodecoder flow."""

AUTODECODER_SHAPES_SCHEMA: pa.Schema = pa.schema(
    [
        ("run_id", pa.string()),
        ("item_id", pa.string()),
        ("collection_id", pa.string()),
        ("variant", pa.string()),
        ("shape_id", pa.string()),
        ("shape_index", pa.int32()),  # row of the latent table
        ("points", pa.int64()),
        ("em_kd", pa.float64()),  # unit-bbox-diagonal normalised units (mean Euclidean transport distance)
        ("chamfer_l2", pa.float64()),  # unit-bbox-diagonal normalised units (squared distance)
        ("distance_normalization", pa.string()),  # "unit_bbox_diagonal"
    ],
    metadata={"distance_normalization": "unit bounding-box diagonal of each shape",
              "em_kd": "otcore.points.em_kd.em_kd, split='pca' (autodecoder pipeline 2; pipeline 1 used split='axis')"},
)
"""One row per item x shape: reconstruction error of the decoded cloud."""

AUTODECODER_MODELS_SCHEMA: pa.Schema = pa.schema(
    [
        ("run_id", pa.string()),
        ("item_id", pa.string()),
        ("collection_id", pa.string()),
        ("source_uri", pa.string()),
        ("source_sha256", pa.string()),
        ("variant", pa.string()),
        ("architecture", pa.string()),  # "neuralqaad" | "atlasnetv2"
        ("schedule", pa.string()),  # "qaad" | "chamfer"
        ("shapes", pa.int64()),
        ("points", pa.int64()),
        ("point_source", pa.string()),  # "vertices" | "surface"
        ("latent_size", pa.int32()),
        ("patches", pa.int32()),
        ("epochs", pa.int32()),
        ("steps", pa.int64()),
        ("network_floats", pa.int64()),  # decoder parameters + input cloud
        ("latent_floats", pa.int64()),
        ("dataset_floats", pa.int64()),
        ("compression_ratio", pa.float64()),  # dataset_floats / (network_floats + latent_floats)
        ("mean_em_kd", pa.float64()),  # unit-bbox-diagonal units
        ("mean_chamfer_l2", pa.float64()),
        ("device", pa.string()),
        ("resumed_from_step", pa.int64()),  # null unless training continued from a checkpoint
        ("train_seconds", pa.float64()),
        ("seconds", pa.float64()),
    ]
)
"""One row per trained item (collection x variant): size, compression ratio and mean errors."""

GAUSSIAN_REDUCTION_SCHEMA: pa.Schema = pa.schema(
    [
        ("run_id", pa.string()),
        ("item_id", pa.string()),  # scene x ratio
        ("scene_id", pa.string()),
        ("method", pa.string()),  # "ghap" | "random" | "top_opacity" | "lightgaussian"
        ("ratio", pa.float64()),  # target fraction of the Gaussians
        ("n_in", pa.int64()),
        ("n_out", pa.int64()),
        ("psnr", pa.float64()),  # dB, mean over held-out views, against the original scene's renders
        ("ssim", pa.float64()),  # mean over held-out views
        ("seconds", pa.float64()),  # reduction (+ fine-tuning when fine_tuned) wall time
        ("fine_tuned", pa.bool_()),
        ("finetune_steps", pa.int32()),
        ("resolution", pa.int32()),  # render width = height, pixels
        ("views", pa.int32()),
        ("device", pa.string()),
    ]
)
"""One row per scene x ratio x method x fine-tuned (before/after) of the Gaussian-reduction flow."""

SEQUENCE_FRAMES_SCHEMA: pa.Schema = pa.schema(
    [
        ("run_id", pa.string()),
        ("item_id", pa.string()),  # the sequence (collection id)
        ("frame", pa.int32()),
        ("shape_id", pa.string()),
        ("ot_solver", pa.string()),  # "neural" (OT-Net) | "newton"
        ("warm_start", pa.bool_()),  # started from the previous frame's solution
        ("fit_steps", pa.int32()),  # OT-Net Adam steps on the dual (0 for newton)
        ("newton_iterations", pa.int32()),
        ("steps", pa.int32()),  # fit_steps + newton_iterations
        ("mass_error", pa.float64()),  # max over cells of |cell mass - target| / target
        ("solve_seconds", pa.float64()),
        ("area_distortion_harmonic", pa.float64()),  # std of log area ratio of the shared harmonic map
        ("area_distortion", pa.float64()),  # of the frame's OT map
        ("flipped_triangles", pa.int64()),
        ("untangled_vertices", pa.int64()),
        ("sites", pa.int64()),  # Diracs (disk vertices)
        ("device", pa.string()),
        ("seconds", pa.float64()),  # solve + map assembly
    ]
)
"""One row per frame of the geometry-image sequence flow: the frame's OT solve."""

SEQUENCE_GEOMETRY_IMAGES_SCHEMA: pa.Schema = pa.schema(
    [
        ("run_id", pa.string()),
        ("item_id", pa.string()),
        ("frame", pa.int32()),
        ("shape_id", pa.string()),
        ("level", pa.int16()),  # 0 = finest
        ("resolution", pa.int32()),
        ("chamfer_l2", pa.float64()),  # unit-bbox-diagonal units of the frame (squared distance)
        ("hausdorff", pa.float64()),  # unit-bbox-diagonal units of the frame
        ("compression_ratio", pa.float64()),  # raw mesh bytes / stored level bytes
        ("stored_bytes", pa.int64()),
        ("seconds", pa.float64()),
    ],
    metadata={"distance_normalization": "unit bounding-box diagonal of each frame"},
)
"""One row per frame x pyramid level of the geometry-image sequence flow."""

EMBEDDING_ALIGNMENT_SCHEMA: pa.Schema = pa.schema(
    [
        ("run_id", pa.string()),
        ("item_id", pa.string()),  # "<source_id>__<target_id>"
        ("source_id", pa.string()),
        ("target_id", pa.string()),
        ("source_uri", pa.string()),
        ("target_uri", pa.string()),
        ("source_sha256", pa.string()),
        ("target_sha256", pa.string()),
        ("n_source", pa.int64()),
        ("n_target", pa.int64()),
        ("dim", pa.int32()),
        ("energy_distance_before", pa.float64()),  # source vs target, chordal distance on the unit sphere
        ("energy_distance_after", pa.float64()),  # mapped source vs target
        ("reduction", pa.float64()),  # before / after
        ("mean_cost", pa.float64()),  # mean c(x, T x) = -log((1 + <x, T x>) / 2)
        ("mean_angle_deg", pa.float64()),  # mean angle each vector moved, degrees
        ("steps", pa.int32()),
        ("hidden", pa.int32()),
        ("layers", pa.int32()),
        ("train_seconds", pa.float64()),
        ("device", pa.string()),
    ]
)
"""One row per aligned pair of embedding sets (HOTS3D spherical OT): distances before/after."""

RESTORATION_EPOCHS_SCHEMA: pa.Schema = pa.schema(
    [
        ("run_id", pa.string()),
        ("item_id", pa.string()),  # "model"
        ("epoch", pa.int32()),
        ("step", pa.int64()),  # steps done at the end of the epoch
        ("loss", pa.float64()),  # weighted sum of tangential, normal, edge and surface terms
        ("position_l1", pa.float64()),  # vs the 257^2 geometry image, unit bbox diagonal
        ("normal_l1", pa.float64()),  # its component along the reference's normal
        ("edge_l1", pa.float64()),  # differences of neighbouring outputs vs the reference's, unit bbox diagonal
        ("surface_l1", pa.float64()),  # point-to-plane distance to the original mesh's samples, unit bbox diagonal
        ("bilinear_position_l1", pa.float64()),  # bilinear upsampling's position_l1 on the same queries
        ("learning_rate", pa.float64()),
        ("seconds", pa.float64()),
    ]
)
"""One row per training epoch of the train-restoration flow."""

RESTORATION_MODELS_SCHEMA: pa.Schema = pa.schema(
    [
        ("run_id", pa.string()),
        ("item_id", pa.string()),
        ("model_uri", pa.string()),  # the safetensors file (storage.models)
        ("model_sha256", pa.string()),  # content hash of its tensors
        ("model_bytes", pa.int64()),  # file size
        ("parameters", pa.int64()),
        ("geometry_run_id", pa.string()),  # run whose OT geometry images were the training pairs
        ("training_meshes", pa.int32()),
        ("trained_on", pa.string()),  # comma-separated item ids
        ("epochs", pa.int32()),
        ("steps", pa.int64()),
        ("final_position_ratio", pa.float64()),  # last epoch's position_l1 / bilinear_position_l1
        ("device", pa.string()),
        ("resumed_from_step", pa.int64()),  # null: trained from scratch
        ("train_seconds", pa.float64()),
    ]
)
"""One row per trained restoration network."""

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "restoration_epochs": RESTORATION_EPOCHS_SCHEMA,
    "restoration_models": RESTORATION_MODELS_SCHEMA,
    "embedding_alignment": EMBEDDING_ALIGNMENT_SCHEMA,
    "geometry_images": GEOMETRY_IMAGES_SCHEMA,
    "rate_distortion": RATE_DISTORTION_SCHEMA,
    "autodecoder_epochs": AUTODECODER_EPOCHS_SCHEMA,
    "autodecoder_shapes": AUTODECODER_SHAPES_SCHEMA,
    "autodecoder_models": AUTODECODER_MODELS_SCHEMA,
    "gaussian_reduction": GAUSSIAN_REDUCTION_SCHEMA,
    "sequence_frames": SEQUENCE_FRAMES_SCHEMA,
    "sequence_geometry_images": SEQUENCE_GEOMETRY_IMAGES_SCHEMA,
    "failures": FAILURES_SCHEMA,
}
"""Table name -> canonical schema; :func:`write_table` accepts only these names."""

_PANDAS_INTEGERS: dict[pa.DataType, pd.api.extensions.ExtensionDtype] = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
}


def table_uri(root: str, run_id: str, table: str) -> str:
    """Location of a run's table.

    Parameters
    ----------
    root : str
        Store root: local directory or fsspec URL.
    run_id : str
        Run id.
    table : str
        Table name, e.g. ``"geometry_images"``.

    Returns
    -------
    str
        ``f"{root}/{run_id}/tables/{table}.parquet"`` (trailing ``/`` of ``root`` dropped).
    """
    return f"{root.rstrip('/')}/{run_id}/tables/{table}.parquet"


def _column(rows: list[dict[str, Any]], field: pa.Field) -> pa.Array:
    values = [row.get(field.name) for row in rows]
    if pa.types.is_integer(field.type):
        # pyarrow truncates Python floats into integer columns without complaint
        fractional = [v for v in values if isinstance(v, float | np.floating) and not float(v).is_integer()]
        if fractional:
            raise TypeError(f"column {field.name!r} ({field.type}): non-integer values {fractional[:3]}")
    try:
        return pa.array(values, type=field.type)
    except (pa.ArrowException, OverflowError) as e:
        raise TypeError(f"column {field.name!r} ({field.type}): {e}") from e


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly ``schema`` from row dicts.

    Parameters
    ----------
    rows : list of dict
        Column name -> Python or numpy scalar. A missing key or ``None`` becomes null; NaN stays NaN in float
        columns.
    schema : pa.Schema
        Target schema (e.g. :data:`GEOMETRY_IMAGES_SCHEMA`); its metadata is kept.

    Returns
    -------
    pa.Table
        ``len(rows)`` rows with ``schema``; an empty table with ``schema`` when ``rows`` is empty.

    Raises
    ------
    ValueError
        If a row has keys that are not columns of ``schema`` (the message names them).
    TypeError
        If a value cannot be converted to its column's type without loss (the message names the column).
    """
    unknown = sorted({key for row in rows for key in row} - set(schema.names))
    if unknown:
        raise ValueError(f"columns not in schema: {unknown}")
    return pa.Table.from_arrays([_column(rows, field) for field in schema], schema=schema)


def _schema(table: str) -> pa.Schema:
    if table not in TABLE_SCHEMAS:
        raise ValueError(f"unknown table {table!r}; known: {sorted(TABLE_SCHEMAS)}")
    return TABLE_SCHEMAS[table]


def _item_key(item_id: str) -> str:
    return hashlib.sha256(item_id.encode("utf-8", "surrogateescape")).hexdigest()[:20]


def _write_fragment(fs: fsspec.AbstractFileSystem, folder: str, name: str, data: pa.Table) -> None:
    """Write ``folder/name`` under a hidden temporary name, then move it into place."""
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    fs.makedirs(folder, exist_ok=True)
    try:
        with fs.open(tmp, "wb") as f:
            pq.write_table(data, f)
        fs.mv(tmp, f"{folder}/{name}")
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def _fragments(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    """The visible ``.parquet`` files of a table folder (hidden temporaries left out)."""
    if not fs.isdir(folder):
        return []
    names = [entry.rstrip("/") for entry in fs.ls(folder, detail=False)]
    return sorted(p for p in names if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith((".", "_")))


def _table_location(root: str, run_id: str, table: str) -> tuple[fsspec.AbstractFileSystem, str, str]:
    uri = table_uri(root, run_id, table)
    fs, path = fsspec.core.url_to_fs(uri)
    if fs.isfile(path):  # a single-file table of an earlier version: becomes the folder's first fragment
        data = pq.read_table(path, filesystem=fs)
        fs.rm(path)
        _write_fragment(fs, path, f"part-{uuid.uuid4().hex}.parquet", data)
    return fs, path, uri


def write_item_rows(rows: list[dict[str, Any]], root: str, run_id: str, table: str, item_id: str) -> str:
    """Write (or replace) one item's rows of a run's table as the item's own fragment, atomically.

    Parameters
    ----------
    rows : list of dict
        The item's rows, as accepted by :func:`rows_to_table`. Empty: the item's fragment is removed (an item
        computed again that no longer fails loses its old ``failures`` rows).
    root, run_id : str
        Store root (local directory or fsspec URL) and run id.
    table : str
        A key of :data:`TABLE_SCHEMAS`.
    item_id : str
        The item the rows belong to; its fragment is ``item-<hash of item_id>.parquet``.

    Returns
    -------
    str
        The table's uri (the dataset folder).

    Raises
    ------
    ValueError, TypeError
        As :func:`write_table`.
    """
    data = rows_to_table(rows, _schema(table))
    fs, path, uri = _table_location(root, run_id, table)
    name = f"item-{_item_key(item_id)}.parquet"
    if rows:
        _write_fragment(fs, path, name, data)
    elif fs.exists(f"{path}/{name}"):
        fs.rm(f"{path}/{name}")
    return uri


def split_table(root: str, run_id: str, table: str) -> int:
    """Split a run's compacted fragments into one fragment per item (before a re-run writes item fragments).

    Rows are grouped by their ``item_id`` column. Each item fragment is written before the compacted fragment
    is removed, so no row is ever missing; a reader may see rows twice meanwhile.

    Returns
    -------
    int
        Number of item fragments written (0 when the table holds no compacted fragment).

    Raises
    ------
    ValueError
        If ``table`` is not a known table.
    """
    schema = _schema(table)
    fs, path, _ = _table_location(root, run_id, table)
    compacted = [p for p in _fragments(fs, path) if p.rsplit("/", 1)[-1].startswith("part-")]
    written = 0
    for fragment in compacted:
        data = pq.read_table(fragment, filesystem=fs).cast(schema)
        item_ids = data.column("item_id").to_pylist()
        for item_id in dict.fromkeys(item_ids):
            mask = pa.array([i == item_id for i in item_ids])
            _write_fragment(fs, path, f"item-{_item_key(item_id or '')}.parquet", data.filter(mask))
            written += 1
        fs.rm(fragment)
    return written


def write_table(rows: list[dict[str, Any]], root: str, run_id: str, table: str) -> str:
    """Write a run's whole table as one compacted fragment and remove every other fragment of it.

    The fragment is written under a hidden temporary name in the table's folder and then moved into place (a
    rename on local disks; on object stores the single upload is the commit); the item fragments that
    :func:`write_item_rows` wrote during the run are removed after it.

    Parameters
    ----------
    rows : list of dict
        All rows of the table, as accepted by :func:`rows_to_table`.
    root : str
        Store root: local directory or fsspec URL.
    run_id : str
        Run id.
    table : str
        A key of :data:`TABLE_SCHEMAS`; selects the schema.

    Returns
    -------
    str
        The table's uri (the dataset folder).

    Raises
    ------
    ValueError
        If ``table`` is not a known table, or as :func:`rows_to_table`.
    TypeError
        As :func:`rows_to_table`.
    """
    data = rows_to_table(rows, _schema(table))
    fs, path, uri = _table_location(root, run_id, table)
    old = _fragments(fs, path)
    name = f"part-{uuid.uuid4().hex}.parquet"
    _write_fragment(fs, path, name, data)
    for fragment in old:
        fs.rm(fragment)
    return uri


def read_table(uri: str) -> pd.DataFrame:
    """Read a table written by :func:`write_table` / :func:`write_item_rows`, also while its run goes on.

    Parameters
    ----------
    uri : str
        Local path or fsspec URL of a table: its dataset folder (``.../tables/<table>.parquet``) or a single
        Parquet file.

    Returns
    -------
    pandas.DataFrame
        One column per schema field. Integer columns use pandas nullable integer dtypes (``Int16``, ``Int64``,
        ...) so nulls keep the integer type; floats are float64 (null -> NaN); strings are pandas strings. A
        folder with no fragment yet gives an empty frame with the table's columns (when the name is a known
        table).

    Raises
    ------
    FileNotFoundError
        If nothing exists at ``uri``.
    """
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise FileNotFoundError(uri)
    if fs.isfile(path):
        data = pq.read_table(path, filesystem=fs)
    else:
        schema = TABLE_SCHEMAS.get(path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".parquet"))
        fragments = _fragments(fs, path)
        if fragments:
            data = pa.concat_tables([pq.read_table(f, filesystem=fs) for f in fragments], promote_options="default")
            if schema is not None:
                data = data.select(schema.names).cast(schema)
        else:
            data = (schema or pa.schema([])).empty_table()
    return data.to_pandas(types_mapper=_PANDAS_INTEGERS.get)
