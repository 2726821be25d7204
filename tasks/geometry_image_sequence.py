"""Prefect tasks of the geometry-image *sequence* job: one cut and map for a shape sequence's shared connectivity,
one OT solve per frame warm-started from the previous frame, then geometry images of every frame.

The sequence (e.g. ``crane.npz``: 175 captured frames in correspondence) is one Zarr group
``<store>/<run_id>/<collection_id>``. ``solve-sequence-ot`` owns the frame chain (each solve starts from the
previous one, so it is sequential) and checkpoints after every frame, so an interrupted run resumes at the next
frame; ``encode-sequence-frames`` tasks then encode disjoint batches of frames in parallel.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from prefect import task

from otcore.device import resolve_device
from otcore.errors import GeometryError, OTConvergenceError
from otcore.mesh.cut_augmentation import augment_cut
from otcore.mesh.disk_cut import DiskMesh
from otcore.mesh.geometry_image import resample_geometry_image
from otcore.mesh.metrics import compression_ratio, normalize_to_unit_diagonal
from otcore.mesh.parameterization import area_distortion, parameterize_frame
from otcore.ot.ot_net import OTNetConfig, OTNetResult, OTNetState
from storage.collections import read_collection
from storage.errors import InputError
from storage.zarr_store import ItemStore
from tasks.configs import SequenceConfig
from tasks.shared.progress import ProgressClock, report_progress, task_logger
from tasks.shared.pyramid import encode_pyramid
from tasks.shared.records import ItemResult, failure_row

__all__ = ["SequenceConfig", "solve_sequence_ot", "encode_sequence_frames", "finish_sequence",
           "SEQUENCE_PIPELINE_VERSION"]

SEQUENCE_PIPELINE_VERSION = SequenceConfig.PIPELINE_VERSION


def _state_arrays(state: OTNetState | None, weights: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {"weights": weights}
    if state is not None:
        arrays["correction"] = state.correction
        arrays.update({f"network/{name}": value.numpy() for name, value in state.network.items()})
    return arrays


def _state_from_arrays(arrays: dict[str, np.ndarray]) -> OTNetState | None:
    if "correction" not in arrays:
        return None
    network = {name.removeprefix("network/"): torch.from_numpy(np.asarray(value))
               for name, value in arrays.items() if name.startswith("network/")}
    return OTNetState(network, np.asarray(arrays["correction"]), dim=2)


@task(name="solve-sequence-ot", retries=1, retry_delay_seconds=2)
def solve_sequence_ot(path: str, store: str, run_id: str, config: SequenceConfig) -> dict[str, Any]:
    """Read the sequence, cut and map its shared connectivity once, then solve OT frame after frame.

    Writes ``source/faces``, ``disk/{faces,source,boundary}``, ``harmonic/uv``, ``frames/vertices``
    ``[S, Vd, 3]`` (each frame's disk vertices, unit bbox diagonal) and ``frames/uv`` ``[S, Vd, 2]`` (the OT map
    of every solved frame). Returns ``{"item_id", "source_uri", "fingerprint", "frames": [...], "solve_rows",
    "failures", "skipped", ...}``; a frame whose solve fails gets a failure row and the next one starts cold.
    """
    logger = task_logger(__name__)
    record: dict[str, Any] = {"item_id": None, "source_uri": path, "solve_rows": [], "failures": [],
                              "skipped": False, "frames": []}
    try:
        collection, shape_failures = read_collection(path, follow_symlinks=config.follow_symlinks)
    except InputError as error:
        record["item_id"] = getattr(error, "item_id", None) or path.rstrip("/").rsplit("/", 1)[-1]
        record["failures"].append(failure_row(run_id, record["item_id"], path, "read", error))
        return record
    item_id = collection.collection_id
    record["item_id"] = item_id
    record["failures"] += [failure_row(run_id, f.shape_id, path, "read", f.error) for f in shape_failures]
    if collection.faces is None:
        error = ValueError("the sequence is a point-cloud collection: geometry images need shared faces")
        record["failures"].append(failure_row(run_id, item_id, path, "read", error))
        return record
    fingerprint = config.fingerprint(collection.sha256)
    record["fingerprint"] = fingerprint
    n_frames = collection.n_shapes if config.frames is None else min(config.frames, collection.n_shapes)
    shape_ids = list(collection.shape_ids[:n_frames])
    record["frames"] = shape_ids
    item_store = ItemStore(store, run_id, item_id)
    if item_store.is_complete(fingerprint):
        record.update(skipped=True, rows=item_store.completed_rows(), failures=item_store.completed_failures())
        return record

    faces = collection.faces.astype(np.int64)
    resumed = item_store.checkpoint_step(fingerprint)
    if resumed is None:
        item_store.begin(fingerprint, {
            "source_uri": path, "source_sha256": collection.sha256, "frames": shape_ids,
            "mesh_vertices": collection.n_points, "mesh_faces": len(faces), "config": config.model_dump(),
            "pipeline_version": SEQUENCE_PIPELINE_VERSION,
        })
        first, _, _ = normalize_to_unit_diagonal(collection.vertices[0].astype(np.float64))
        try:
            cut = augment_cut(first, faces, max_paths=config.cut_paths)
        except GeometryError as error:
            record["failures"].append(failure_row(run_id, item_id, path, "cut_and_harmonic_map", error))
            item_store.finish([], record["failures"])
            return record
        disk = cut.disk
        frames = np.stack([
            0.5 * (v[disk.source[:, 0]] + v[disk.source[:, 1]])
            for v in (normalize_to_unit_diagonal(f.astype(np.float64))[0] for f in collection.vertices[:n_frames])
        ])
        item_store.write_array("source/faces", faces.astype(np.int32))
        item_store.write_array("disk/faces", disk.faces.astype(np.int32))
        item_store.write_array("disk/source", disk.source)
        item_store.write_array("disk/boundary", disk.boundary)
        item_store.write_array("harmonic/uv", cut.uv, attrs={
            "cut_paths": len(cut.min_area_ratios) - 1, "min_area_ratios": cut.min_area_ratios})
        item_store.write_array("frames/vertices", frames.astype(np.float32), chunks=(1, *frames.shape[1:]))
        item_store.write_array("frames/uv", np.full((n_frames, len(disk.vertices), 2), np.nan),
                               chunks=(1, len(disk.vertices), 2))
        done, state, weights, rows, failures = 0, None, None, [], []
    else:
        arrays, meta = item_store.read_checkpoint()
        done, rows, failures = resumed, meta["rows"], meta["failures"]
        weights = arrays.get("weights")
        state = _state_from_arrays(arrays)
        logger.info("%s: resuming the OT chain at frame %d/%d", item_id, done, n_frames)

    disk_faces = item_store.read_array("disk/faces").astype(np.int64)
    disk_boundary = item_store.read_array("disk/boundary").astype(np.int64)
    disk_source = item_store.read_array("disk/source").astype(np.int64)
    harmonic_uv = item_store.read_array("harmonic/uv")
    frame_vertices = item_store.open_array("frames/vertices")
    uv_array = item_store.open_array("frames/uv", mode="r+")  # written frame by frame: one chunk, one writer
    device = str(resolve_device(config.device))
    clock = ProgressClock()
    for k in range(done, n_frames):
        vertices_k = frame_vertices[k].astype(np.float64)
        disk = DiskMesh(vertices_k, disk_faces, disk_boundary, disk_source, genus=0, boundary_loops=0)
        warm = config.warm_start and (state is not None or weights is not None)
        start = time.perf_counter()
        try:
            param = parameterize_frame(
                disk, harmonic_uv, config.tol, config.max_newton_iterations,
                solver=config.ot_solver,
                initial_weights=weights if (warm and config.ot_solver == "newton") else None,
                ot_net_state=state if (warm and config.ot_solver == "neural") else None,
                ot_net_config=OTNetConfig(seed=config.seed, device=device),
            )
        except (GeometryError, OTConvergenceError) as error:
            failures.append(failure_row(run_id, f"{item_id}/{shape_ids[k]}", path, "ot_parameterization", error))
            state, weights = None, None  # the next frame starts cold
        else:
            ot = param.ot
            neural = isinstance(ot, OTNetResult)
            state = ot.state if neural else None
            weights = ot.weights
            uv_array[k] = param.uv
            rows.append({
                "run_id": run_id, "item_id": item_id, "frame": k, "shape_id": shape_ids[k],
                "ot_solver": config.ot_solver, "warm_start": bool(warm),
                "fit_steps": ot.fit_steps if neural else 0,
                "newton_iterations": ot.newton_steps if neural else ot.iterations,
                "steps": ot.steps if neural else ot.iterations,
                "mass_error": ot.mass_error, "solve_seconds": ot.seconds,
                "area_distortion_harmonic": area_distortion(vertices_k, disk_faces, harmonic_uv),
                "area_distortion": param.area_distortion, "flipped_triangles": param.flipped_triangles,
                "untangled_vertices": param.untangled_vertices, "sites": len(vertices_k), "device": device,
                "seconds": time.perf_counter() - start,
            })
            if clock.due(final=k + 1 == n_frames):
                report_progress(logger, "%s frame %d/%d: %s %d steps, mass error %.1e, %.1f s (%.0f s)", item_id,
                                k + 1, n_frames, config.ot_solver, rows[-1]["steps"], ot.mass_error,
                                rows[-1]["seconds"], clock.elapsed)
        item_store.write_checkpoint(_state_arrays(state, weights if weights is not None else np.zeros(0)),
                                    {"rows": rows, "failures": failures}, step=k + 1)
    record.update(solve_rows=rows, failures=record["failures"] + failures)
    return record


@task(name="encode-sequence-frames", retries=1, retry_delay_seconds=2)
def encode_sequence_frames(
    record: dict[str, Any], frames: list[int], store: str, run_id: str, config: SequenceConfig
) -> ItemResult:
    """Geometry images of a batch of solved frames: resample, quantise, mipmap, restore and measure each level.

    Writes ``frames/<k>/geometry_image`` pyramids; returns one row per frame x level (distances against that
    frame's input mesh, unit bbox diagonal) as the ``sequence_geometry_images`` table of an :class:`ItemResult`.
    """
    item_store = ItemStore(store, run_id, record["item_id"])
    faces = item_store.read_array("source/faces").astype(np.int64)
    disk_faces = item_store.read_array("disk/faces").astype(np.int64)
    disk_source = item_store.read_array("disk/source").astype(np.int64)
    attrs = item_store.read_attrs()
    frame_vertices, frame_uv = item_store.open_array("frames/vertices"), item_store.open_array("frames/uv")
    copies = disk_source[:, 0] == disk_source[:, 1]  # the cut copies every source vertex; chords add midpoints
    rows: list[dict[str, Any]] = []
    for k in frames:
        uv = frame_uv[k]
        if not np.isfinite(uv).all():  # the frame's solve failed: its failure row is already recorded
            continue
        start = time.perf_counter()
        disk_vertices = frame_vertices[k].astype(np.float64)
        source_vertices = np.zeros((attrs["mesh_vertices"], 3))
        source_vertices[disk_source[copies, 0]] = disk_vertices[copies]
        image = resample_geometry_image(disk_vertices, disk_faces, uv, config.resolution)
        for level in encode_pyramid(item_store, f"frames/{k}/geometry_image", image, source_vertices, faces, config):
            rows.append({
                "run_id": run_id, "item_id": record["item_id"], "frame": k, "shape_id": record["frames"][k],
                **{key: level[key] for key in ("level", "resolution", "chamfer_l2", "hausdorff", "stored_bytes")},
                "compression_ratio": compression_ratio(attrs["mesh_vertices"], attrs["mesh_faces"],
                                                       level["stored_bytes"]),
                "seconds": time.perf_counter() - start,
            })
    return ItemResult(record["item_id"], {"sequence_geometry_images": rows})


def finish_sequence(record: dict[str, Any], frames: ItemResult, store: str, run_id: str) -> ItemResult:
    """Mark a solved sequence complete with its frame and image rows (the flow calls it after every batch).

    Returns the sequence's :class:`ItemResult` (tables ``sequence_frames`` and ``sequence_geometry_images``); a
    sequence without a fingerprint (unreadable) is returned as is, with nothing written.
    """
    result = ItemResult(record["item_id"], {"sequence_frames": record["solve_rows"],
                                            "sequence_geometry_images": frames.rows("sequence_geometry_images")},
                        list(record["failures"]) + frames.failures)
    if "fingerprint" in record:
        ItemStore(store, run_id, record["item_id"]).finish(result.stored_rows(), result.failures)
    return result
