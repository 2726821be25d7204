"""Flow geometry-image-sequence on the bundled crane frames: cut augmentation, warm-started OT chain, encoding,
tables, resume/skip; and the cut augmentation itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flows.geometry_image_sequence import geometry_image_sequence
from flows.runtime.task_runner import make_task_runner
from otcore.mesh.cut_augmentation import augment_cut, map_area_ratios
from otcore.mesh.disk_cut import cut_to_disk
from otcore.mesh.harmonic import flipped_triangles, harmonic_map
from otcore.mesh.metrics import normalize_to_unit_diagonal
from storage.tables import SEQUENCE_FRAMES_SCHEMA, read_table
from tasks.geometry_image_sequence import SequenceConfig

CRANE = Path(__file__).resolve().parents[2] / "data" / "samples" / "consistent" / "crane-16.npz"


@pytest.fixture(scope="module")
def crane_frame() -> tuple[np.ndarray, np.ndarray]:
    data = np.load(CRANE, allow_pickle=False)
    vertices, _, _ = normalize_to_unit_diagonal(data["vertices"][0].astype(np.float64))
    return vertices, data["faces"].astype(np.int64)


def test_cut_augmentation_uncrowds_the_crane(crane_frame) -> None:
    vertices, faces = crane_frame
    plain = cut_to_disk(vertices, faces)
    plain_ratio = map_area_ratios(plain, harmonic_map(plain.vertices, plain.faces, plain.boundary)).min()
    cut = augment_cut(vertices, faces)
    assert plain_ratio < 1e-9  # legs and neck packed far below float64 power-diagram resolution
    assert cut.min_area_ratios[0] == pytest.approx(plain_ratio)
    assert cut.min_area_ratios[-1] > 1e-3 and len(cut.extra_edges) > 0
    assert flipped_triangles(cut.uv, cut.disk.faces) == 0
    # Still a disk: one boundary loop, Euler characteristic 1, every source vertex kept.
    used = np.unique(cut.disk.faces)
    edges = {tuple(sorted(e)) for f in cut.disk.faces.tolist() for e in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
    assert len(used) - len(edges) + len(cut.disk.faces) == 1
    assert set(np.unique(cut.disk.source)) == set(range(len(vertices)))


@pytest.fixture(scope="module", autouse=True)
def prefect_api(prefect_test_api):
    yield


@pytest.mark.slow
def test_sequence_flow_warm_starts_encodes_and_skips(tmp_path: Path) -> None:
    config = SequenceConfig(frames=3, resolution=33, levels=2, samples=1000)
    runner = make_task_runner(workers=1)
    result = geometry_image_sequence.with_options(task_runner=runner)(str(CRANE), str(tmp_path), config)
    frames = read_table(result["tables"]["sequence_frames"]).sort_values("frame")
    assert list(frames.columns) == SEQUENCE_FRAMES_SCHEMA.names
    assert list(frames["frame"]) == [0, 1, 2] and list(frames["warm_start"]) == [False, True, True]
    assert (frames["ot_solver"] == "newton").all() and (frames["mass_error"] < config.tol).all()
    assert (frames["fit_steps"] == 0).all()  # the default: Newton warm-started from the previous frame's weights
    cold_steps = frames["steps"].iloc[0]
    assert (frames["steps"].iloc[1:] < cold_steps).all()
    assert (frames["flipped_triangles"] == 0).all()
    assert (frames["area_distortion"] < frames["area_distortion_harmonic"]).all()
    images = read_table(result["tables"]["sequence_geometry_images"])
    assert len(images) == 6 and set(images["resolution"]) == {33, 17}
    assert (images["hausdorff"] < 0.2).all() and np.isfinite(images["chamfer_l2"]).all()
    assert read_table(result["tables"]["failures"]).empty

    again = geometry_image_sequence.with_options(task_runner=make_task_runner(workers=1))(
        str(CRANE), str(tmp_path), config)
    assert again["skipped"] and again["run_id"] == result["run_id"]
    rerun = read_table(again["tables"]["sequence_frames"]).sort_values("frame")
    assert list(rerun["steps"]) == list(frames["steps"])
