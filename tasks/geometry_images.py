"""Prefect tasks of the geometry-image pipeline: parameterize one mesh, then encode and measure its images.

Arrays travel through the item's Zarr group (``<store>/<run_id>/<item_id>``); tasks return small records.
Expected failures (bad input, unsupported topology, OT not converging) become failure rows, never exceptions, so
one bad mesh never stops a dataset run; what was computed before the failure is kept (e.g. a mesh whose OT solve
fails still gets its harmonic geometry images).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from prefect import task

from otcore.device import resolve_device
from otcore.errors import GeometryError
from otcore.mesh.geometry_image import dequantize, resample_geometry_image
from otcore.mesh.metrics import compression_ratio, normalize_to_unit_diagonal, raw_mesh_bytes
from otcore.mesh.octahedral import resample_spherical_geometry_image
from otcore.mesh.parameterization import Parameterization, parameterize_to_square
from otcore.mesh.spherical_parameterization import (
    SPHERE_OT_CONFIG,
    SphericalParameterization,
    spherical_parameterizations,
)
from otcore.ot.ot_net import OTNetConfig, OTNetResult
from storage.errors import InputError
from storage.meshes import MeshItem, read_mesh
from storage.zarr_store import ItemStore
from tasks.configs import GeometryImageConfig
from tasks.shared.batching import ItemReporter, check_deadline, run_batch
from tasks.shared.progress import PROGRESS_SECONDS, report_progress, task_logger
from tasks.shared.pyramid import encode_pyramid
from tasks.shared.rate_distortion import rate_distortion_rows, setting_columns
from tasks.shared.records import ItemResult, failure_row
from tasks.shared.restoration import BILINEAR, Restoration

__all__ = ["GeometryImageConfig", "ParameterizedMesh", "parameterize_mesh", "encode_geometry_images",
           "geometry_images_batch", "PIPELINE_VERSION", "PREVIEW_RESTORED"]

PIPELINE_VERSION = GeometryImageConfig.PIPELINE_VERSION

LARGE_MESH_VERTICES = 20_000  # a mesh this large announces its parameterization: the cut and harmonic map of
# armadillo (43k vertices) took 29-50 s before the OT solve's first report

PREVIEW_RESTORED = "restored_33"  # <method>/restored_33/{bilinear,neural}: the 33^2 level restored both ways
PREVIEW_RESOLUTION = 33


@dataclass
class ParameterizedMesh:
    """What ``parameterize-mesh`` hands to ``encode-geometry-images`` for one mesh.

    Attributes:
        item: the mesh. fingerprint: its identity (None when it could not be read: no group to finish).
        parameterizations: figures per stored parameterization (``harmonic``, ``ot``, ``sphere_*``).
        result: failures so far; when the item was finished earlier, its stored rows (``skipped``).
    """

    item: MeshItem
    result: ItemResult
    fingerprint: str | None = None
    parameterizations: dict[str, dict[str, Any]] = field(default_factory=dict)


def _failure(run_id: str, item: MeshItem, stage: str, error: BaseException) -> dict[str, Any]:
    return failure_row(run_id, item.item_id, item.uri, stage, error)


def _param_stats(p: Parameterization) -> dict[str, Any]:
    ot = p.ot
    neural = isinstance(ot, OTNetResult)
    return {
        "area_distortion": p.area_distortion,
        "flipped_triangles": p.flipped_triangles,
        "untangled_vertices": p.untangled_vertices if ot is not None else None,
        "centroid_flips": p.centroid_flips if ot is not None else None,
        "ot_solver": p.solver,
        "fit_steps": (ot.fit_steps if neural else 0) if ot is not None else None,
        "newton_iterations": (ot.newton_steps if neural else ot.iterations) if ot is not None else None,
        "mass_error": ot.mass_error if ot is not None else None,
        "solve_seconds": ot.seconds if ot is not None else None,
    }


def _sphere_stats(p: SphericalParameterization) -> dict[str, Any]:
    return {
        "area_distortion": p.area_distortion,
        "flipped_triangles": p.flipped_triangles,
        "untangled_vertices": None,
        "centroid_flips": None,
        "ot_solver": None,
        "fit_steps": None,
        "newton_iterations": None,
        "mass_error": None,
        "solve_seconds": p.seconds,
    }


def _solve_progress(item_id: str):
    """OT progress callback, made before the cut: checks the item's deadline every iteration and, once the
    parameterization runs long, reports how long the cut and harmonic map took, then every Newton iteration
    ``(iteration, max cell mass error)``, to the console and the task log."""
    start = time.perf_counter()
    first = True

    def report(iteration: int, mass_error: float) -> None:
        nonlocal first
        seconds = time.perf_counter() - start
        if seconds < PROGRESS_SECONDS:
            first = False
            check_deadline()
            return
        logger = task_logger(__name__)
        if first:
            report_progress(logger, "%s: cut and harmonic map done, %.0f s", item_id, seconds)
            first = False
        report_progress(logger, "%s: OT iteration %d, max cell mass error %.2e, %.0f s", item_id, iteration,
                        mass_error, seconds)

    return report


def _parameterize_sphere(record: ParameterizedMesh, item: MeshItem, vertices: np.ndarray, faces: np.ndarray,
                         item_store: ItemStore, run_id: str, config: GeometryImageConfig) -> dict[str, Any]:
    """``domain="sphere"``: initial spherical map and spherical OT (:mod:`otcore.mesh.spherical_parameterization`)."""
    try:
        parameterizations = spherical_parameterizations(
            vertices, faces, replace(SPHERE_OT_CONFIG, steps=config.sphere_ot_steps, seed=config.seed),
            config.sphere_polish_iterations, device=resolve_device("auto"),
            feature_weight=config.feature_weight)
    except GeometryError as error:
        record.result.failures.append(_failure(run_id, item, "spherical_parameterization", error))
        return record
    for p in parameterizations:
        item_store.write_array(f"{p.method}/sphere", p.sphere, attrs={
            **_sphere_stats(p), "neural_distortion": p.neural_distortion, "neural_step": p.neural_step,
            "polish_iterations": p.polish_steps})
        record.parameterizations[p.method] = _sphere_stats(p)
    return record


@task(name="parameterize-mesh", retries=1, retry_delay_seconds=2)
def parameterize_mesh(item: MeshItem, store: str, run_id: str, config: GeometryImageConfig) -> ParameterizedMesh:
    """Read one mesh, cut it to a disk, map it harmonically and by OT; write both uv maps to its Zarr group.

    With ``config.domain == "sphere"`` the mesh is not cut: it is mapped onto the unit sphere (initial map and
    spherical OT, ``<method>/sphere`` [V, 3] arrays) and encoded through the octahedral map.

    Returns the item's :class:`ParameterizedMesh`; its ``result`` holds the finished metric rows when the item
    was already complete (skipped).
    """
    record = ParameterizedMesh(item, ItemResult(item.item_id))
    try:
        mesh = read_mesh(item, strict=config.strict, follow_symlinks=config.follow_symlinks)
    except InputError as error:
        record.result.failures.append(_failure(run_id, item, "read", error))
        return record
    fingerprint = config.fingerprint(mesh.sha256)
    record.fingerprint = fingerprint
    item_store = ItemStore(store, run_id, item.item_id)
    if item_store.is_complete(fingerprint):
        record.result = ItemResult(item.item_id, ItemResult.split_stored(item_store.completed_rows()),
                                   item_store.completed_failures(), skipped=True)
        return record

    vertices, offset, scale = normalize_to_unit_diagonal(mesh.vertices)
    item_store.begin(
        fingerprint,
        {
            "source_uri": item.uri,
            "source_sha256": mesh.sha256,
            "mesh_vertices": len(mesh.vertices),
            "mesh_faces": len(mesh.faces),
            "mesh_repair": {"merged_vertices": mesh.merged_vertices,
                            "degenerate_faces_dropped": mesh.degenerate_faces_dropped,
                            "duplicate_faces_dropped": mesh.duplicate_faces_dropped},
            "normalization": {"offset": offset.tolist(), "scale": scale, "units": "unit_bbox_diagonal"},
            "config": config.model_dump(),
            "pipeline_version": PIPELINE_VERSION,
        },
    )
    item_store.write_array("source/vertices", vertices.astype(np.float32))
    item_store.write_array("source/faces", mesh.faces.astype(np.int32))
    if len(vertices) >= LARGE_MESH_VERTICES:
        report_progress(task_logger(__name__), "%s: %d vertices, %d faces: %s", item.item_id, len(vertices),
                        len(mesh.faces), "initial spherical map, spherical OT" if config.domain == "sphere"
                        else "cut, harmonic map, OT")
    if config.domain == "sphere":
        return _parameterize_sphere(record, item, vertices, mesh.faces, item_store, run_id, config)
    try:
        square = parameterize_to_square(
            vertices, mesh.faces, config.feature_weight, config.tol, config.max_newton_iterations,
            solver=config.ot_solver, ot_net_config=OTNetConfig(seed=config.seed, device=str(resolve_device("auto"))),
            cut_paths=config.cut_paths, progress=_solve_progress(item.item_id),
        )
    except GeometryError as error:
        record.result.failures.append(_failure(run_id, item, "cut_and_harmonic_map", error))
        return record
    item_store.write_array("disk/vertices", square.disk.vertices.astype(np.float64))
    item_store.write_array("disk/faces", square.disk.faces.astype(np.int32))
    if square.ot_error is not None:
        record.result.failures.append(_failure(run_id, item, "ot_parameterization", square.ot_error))
    for p in (square.harmonic, square.ot) if square.ot is not None else (square.harmonic,):
        item_store.write_array(f"{p.method}/uv", p.uv, attrs=_param_stats(p))
        record.parameterizations[p.method] = _param_stats(p)
    return record


def _write_restored_preview(item_store: ItemStore, method: str, restorations: list[Restoration]) -> None:
    """``<method>/restored_33/<restore>``: the stored 33^2 level restored to the finest resolution each way."""
    codes, attrs = item_store.read_pyramid(f"{method}/geometry_image")
    quantization = attrs["quantization"]
    level = next((c for c in codes if c.shape[-1] == PREVIEW_RESOLUTION), codes[-1])
    image = dequantize(level, np.asarray(quantization["offset"]), np.asarray(quantization["scale"]))
    for restoration in restorations:
        item_store.write_array(f"{method}/{PREVIEW_RESTORED}/{restoration.name}",
                               restoration.restore(image, codes[0].shape[-1]),
                               attrs={"from_resolution": int(level.shape[-1]), "units": "unit_bbox_diagonal"})


@task(name="encode-geometry-images", retries=1, retry_delay_seconds=2)
def encode_geometry_images(record: ParameterizedMesh, store: str, run_id: str,
                           config: GeometryImageConfig) -> ItemResult:
    """Resample, quantise and mipmap each parameterization; code, restore and measure every level.

    Writes the pyramids (OME-Zarr ``multiscales``, levels coded with ``config.codec_setting``, the quantisation
    and normalisation figures as side info) and marks the item complete with its metric rows. Each level is also
    coded in memory with the further ``config.rate_distortion`` settings and measured.
    Returns the item's :class:`ItemResult`: table ``geometry_images`` (one row per parameterization x level) and
    ``rate_distortion`` (one row per parameterization x level x codec setting).
    """
    item = record.item
    if record.result.skipped or record.fingerprint is None:  # finished earlier, or unreadable (no group to finish)
        return record.result
    item_store = ItemStore(store, run_id, item.item_id)
    attrs = item_store.read_attrs()
    source_vertices = item_store.read_array("source/vertices").astype(np.float64)
    source_faces = item_store.read_array("source/faces").astype(np.int64)
    if config.domain == "square" and record.parameterizations:
        disk_vertices = item_store.read_array("disk/vertices")
        disk_faces = item_store.read_array("disk/faces").astype(np.int64)
    n_vertices, n_faces = attrs["mesh_vertices"], attrs["mesh_faces"]
    normalization = {"normalization_offset": np.asarray(attrs["normalization"]["offset"], dtype=np.float64),
                     "normalization_scale": np.asarray([attrs["normalization"]["scale"]], dtype=np.float64)}
    side_info_bytes = 2 * 3 * 8 + sum(v.nbytes for v in normalization.values())  # + quantisation offset, scale
    item_columns = {"run_id": run_id, "item_id": item.item_id, "source_uri": item.uri, "mesh_vertices": n_vertices,
                    "mesh_faces": n_faces, "distance_normalization": "unit_bbox_diagonal"}
    rows: list[dict[str, Any]] = []
    rate_distortion: list[dict[str, Any]] = []
    failures = list(record.result.failures)
    try:
        configured = config.restorations
    except InputError as error:  # a bad model file: bilinear rows only, and say why
        configured = [BILINEAR]
        failures.append(_failure(run_id, item, "restoration", error))
    # The network restores the square OT images it was trained on; the other maps are restored bilinearly.
    restorations = {method: configured if method == "ot" else [BILINEAR] for method in record.parameterizations}
    for method, stats in record.parameterizations.items():  # empty when the cut failed: finish with failures
        start = time.perf_counter()
        try:
            if config.domain == "sphere":
                sphere = item_store.read_array(f"{method}/sphere")
                image = resample_spherical_geometry_image(source_vertices, source_faces, sphere, config.resolution)
            else:
                uv = item_store.read_array(f"{method}/uv")
                image = resample_geometry_image(disk_vertices, disk_faces, uv, config.resolution)
            levels = encode_pyramid(
                item_store, f"{method}/geometry_image", image, source_vertices, source_faces, config,
                {"domain": "octahedral (equal-area), seamless" if config.domain == "sphere" else "square"},
                codec=config.codec_setting, side_info=normalization, restorations=restorations[method],
            )
            measured = rate_distortion_rows(image, config.rate_distortion_settings[1:], config.levels,
                                            side_info_bytes, source_vertices, source_faces, config.samples,
                                            config.seed, restorations[method])
            if len(restorations[method]) > 1:
                _write_restored_preview(item_store, method, restorations[method])
        except ValueError as error:
            failures.append(_failure(run_id, item, f"geometry_image[{method}]", error))
            continue
        stored_setting = {**setting_columns(config.codec_setting), "stored": True, "side_info_bytes": side_info_bytes,
                          "coding_seconds": None}
        stored_rows = [{**level, **stored_setting, "image_raw_bytes": 6 * level["resolution"] ** 2} for level in levels]
        for row in stored_rows + measured:
            rate_distortion.append({**item_columns, "parameterization": method, **row,
                                    "compression_ratio": compression_ratio(n_vertices, n_faces, row["stored_bytes"])})
        for level in levels:
            if level["restore"] != BILINEAR.name:
                continue
            level = {k: v for k, v in level.items() if k not in ("restore", "restore_seconds", "model_bytes")}
            stored_bytes = level["stored_bytes"]
            rows.append({
                "run_id": run_id, "item_id": item.item_id, "source_uri": item.uri,
                "source_sha256": attrs["source_sha256"], "parameterization": method, **level,
                "mesh_vertices": n_vertices, "mesh_faces": n_faces, **attrs.get("mesh_repair", {}),
                "compression_ratio": compression_ratio(n_vertices, n_faces, stored_bytes),
                "raw_bytes": raw_mesh_bytes(n_vertices, n_faces), "distance_normalization": "unit_bbox_diagonal",
                "feature_weight": config.feature_weight, "seconds": time.perf_counter() - start,
                **stats,
            })
    result = ItemResult(item.item_id, {"geometry_images": rows, "rate_distortion": rate_distortion}, failures)
    item_store.finish(result.stored_rows(), failures)
    return result


@task(name="geometry-images-batch", retries=1, retry_delay_seconds=2)
def geometry_images_batch(items: list[MeshItem], store: str, run_id: str, config: GeometryImageConfig,
                          tables: list[str], progress_queue: str | None = None) -> list[ItemResult]:
    """Parameterize and encode a batch of meshes in one task (:func:`tasks.shared.batching.run_batch`).

    Each mesh runs ``parameterize_mesh`` then ``encode_geometry_images`` (their plain functions); its rows land
    in the run's tables as it finishes; an unexpected exception becomes its failure row with the original type
    and message. A retry of the task (its worker died) skips the meshes it already finished.

    Returns:
        One :class:`ItemResult` per mesh, in order.
    """
    def work(item: MeshItem) -> ItemResult:
        return encode_geometry_images.fn(parameterize_mesh.fn(item, store, run_id, config), store, run_id, config)

    return run_batch(items, work, lambda item: (item.item_id, item.uri), store, run_id, tables,
                     ItemReporter(progress_queue), task_logger(__name__), config.item_timeout)
