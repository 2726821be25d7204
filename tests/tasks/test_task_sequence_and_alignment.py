"""The sequence tasks and the embedding-alignment task without Prefect (``.fn``) on the bundled crane sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect.logging import disable_run_logger

from storage.zarr_store import ItemStore
from tasks.align_embeddings import AlignmentConfig, align_embedding_sets
from tasks.geometry_image_sequence import SequenceConfig, encode_sequence_frames, finish_sequence, solve_sequence_ot

CRANE = Path(__file__).resolve().parents[2] / "data" / "samples" / "consistent" / "crane-16.npz"
SHORT = SequenceConfig(ot_solver="newton", frames=2, resolution=33, levels=2, samples=500, device="cpu")


def test_sequence_solve_encode_finish_and_skip(tmp_path: Path) -> None:
    with disable_run_logger():
        record = solve_sequence_ot.fn(str(CRANE), str(tmp_path), "run", SHORT)
        assert record["failures"] == [] and [r["frame"] for r in record["solve_rows"]] == [0, 1]
        assert record["solve_rows"][1]["warm_start"] and max(r["mass_error"] for r in record["solve_rows"]) <= SHORT.tol
        frames = encode_sequence_frames.fn(record, [0, 1], str(tmp_path), "run", SHORT)
        images = frames.rows("sequence_geometry_images")
        assert sorted((r["frame"], r["level"], r["resolution"]) for r in images) == [
            (0, 0, 33), (0, 1, 17), (1, 0, 33), (1, 1, 17)]
        assert ItemStore(str(tmp_path), "run", record["item_id"]).open_array("frames/uv").shape[0] == 2
        done = finish_sequence(record, frames, str(tmp_path), "run")
        assert done.rows("sequence_frames") == record["solve_rows"]
        again = solve_sequence_ot.fn(str(CRANE), str(tmp_path), "run", SHORT)
    assert again["skipped"] and len(again["rows"]) == len(record["solve_rows"]) + len(images)


def test_a_neural_sequence_solve_trains_the_network_on_every_frame(tmp_path: Path) -> None:
    """Issue 18: ``--ot-solver neural`` must run the network: fit steps on every frame, cold and warm alike, then
    Newton to the tolerance; the default solver is Newton warm-started (no fit steps)."""
    assert SequenceConfig().ot_solver == "newton" and SequenceConfig().warm_start
    neural = SHORT.model_copy(update={"ot_solver": "neural"})
    with disable_run_logger():
        record = solve_sequence_ot.fn(str(CRANE), str(tmp_path), "neural", neural)
    rows = record["solve_rows"]
    assert record["failures"] == [] and [r["frame"] for r in rows] == [0, 1] and rows[1]["warm_start"]
    assert all(r["ot_solver"] == "neural" and r["fit_steps"] >= 10 for r in rows)
    assert all(r["steps"] == r["fit_steps"] + r["newton_iterations"] and r["newton_iterations"] > 0 for r in rows)
    assert max(r["mass_error"] for r in rows) <= neural.tol
    assert rows[1]["newton_iterations"] < rows[0]["newton_iterations"]  # the reused state still starts closer


def test_both_geometry_image_jobs_offer_the_same_ot_solvers() -> None:
    from typing import get_args

    from otcore.mesh.parameterization import OT_SOLVERS
    from tasks.geometry_images import GeometryImageConfig

    choices = [get_args(c.model_fields["ot_solver"].annotation) for c in (SequenceConfig, GeometryImageConfig)]
    assert choices[0] == choices[1] == OT_SOLVERS
    assert SequenceConfig().ot_solver == GeometryImageConfig().ot_solver == "newton"


def test_alignment_moves_one_shape_towards_another(tmp_path: Path) -> None:
    """Unit directions of the crane's and a horse's vertices (real data, d=3): the map reduces their energy distance."""
    import trimesh

    horse = trimesh.load(str(CRANE.parent / "horse-gallop" / "0001.obj"), process=False).vertices
    directions = [v - v.mean(0) for v in (np.load(CRANE, allow_pickle=False)["vertices"][0], np.asarray(horse))]
    for name, d in zip(("first", "last"), directions):
        np.save(tmp_path / f"{name}.npy", d / np.linalg.norm(d, axis=1, keepdims=True))
    config = AlignmentConfig(hidden=32, layers=2, steps=100, batch_size=256, distance_points=1000, device="cpu")
    result = align_embedding_sets.fn(str(tmp_path / "first.npy"), str(tmp_path / "last.npy"), str(tmp_path / "s"),
                                     "run", config)
    [row] = result.rows("embedding_alignment")
    assert result.item_id == "first__last" and row["dim"] == 3
    assert row["energy_distance_after"] < row["energy_distance_before"]
    again = align_embedding_sets.fn(str(tmp_path / "first.npy"), str(tmp_path / "last.npy"), str(tmp_path / "s"),
                                    "run", config)
    assert again.skipped and again.rows("embedding_alignment") == [row]
