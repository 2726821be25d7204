"""The geometry-image tasks without Prefect (``.fn``) on the bundled real meshes: the stored pyramid, its measured
fidelity, the failure that keeps the harmonic result, and resumability."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from storage.meshes import MeshItem
from storage.zarr_store import ItemStore
from tasks.geometry_images import GeometryImageConfig, encode_geometry_images, parameterize_mesh

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples" / "meshes"
FAST = GeometryImageConfig(resolution=129, levels=3, samples=5_000)


def test_woody_pyramid_shapes_and_bounded_error(tmp_path: Path) -> None:
    """woody (a disk-topology mesh): harmonic and OT pyramids 129, 65, 33 in uint16; error grows as levels coarsen."""
    item = MeshItem("woody", str(SAMPLES / "woody.obj"))
    record = parameterize_mesh.fn(item, str(tmp_path), "run", FAST)
    assert set(record.parameterizations) == {"harmonic", "ot"} and record.result.failures == []
    assert record.parameterizations["ot"]["mass_error"] <= FAST.tol
    result = encode_geometry_images.fn(record, str(tmp_path), "run", FAST)
    rows = result.rows("geometry_images")
    assert result.item_id == "woody" and not result.skipped and result.failures == []
    assert sorted((r["parameterization"], r["level"], r["resolution"]) for r in rows) == [
        (method, level, side) for method in ("harmonic", "ot") for level, side in enumerate((129, 65, 33))]
    store = ItemStore(str(tmp_path), "run", "woody")
    for level, side in enumerate((129, 65, 33)):
        image = store.read_array(f"ot/geometry_image/{level}")
        assert image.shape == (3, side, side) and image.dtype == np.uint16
    for method in ("harmonic", "ot"):
        levels = sorted((r for r in rows if r["parameterization"] == method), key=lambda r: r["level"])
        assert levels[0]["hausdorff"] < 0.05  # unit bbox diagonal: a 129^2 image stays within 5% of the mesh
        assert levels[0]["chamfer_l2"] < levels[-1]["chamfer_l2"]
        assert [r["compression_ratio"] for r in levels] == sorted(r["compression_ratio"] for r in levels)


def test_ot_failure_keeps_the_harmonic_result(tmp_path: Path) -> None:
    """On the plain cut cow's harmonic map is too crowded for the OT step: the item still gets its harmonic images."""
    item = MeshItem("cow", str(SAMPLES / "cow.obj"))
    plain_cut = FAST.model_copy(update={"cut_paths": 0})
    record = parameterize_mesh.fn(item, str(tmp_path), "run", plain_cut)
    assert list(record.parameterizations) == ["harmonic"]
    assert [f["stage"] for f in record.result.failures] == ["ot_parameterization"]
    assert record.result.failures[0]["error_type"] == "OTConvergenceError"
    encoded = encode_geometry_images.fn(record, str(tmp_path), "run", plain_cut)
    assert {r["parameterization"] for r in encoded.rows("geometry_images")} == {"harmonic"}
    assert len(encoded.rows("geometry_images")) == 3
    store = ItemStore(str(tmp_path), "run", "cow")
    assert store.is_complete(record.fingerprint)
    assert store.completed_failures()[0]["error_type"] == "OTConvergenceError"


def test_cow_gets_an_ot_geometry_image_by_default(tmp_path: Path) -> None:
    """The default augmented cut (8 paths) opens cow up: both parameterizations are encoded, the OT one is better."""
    item = MeshItem("cow", str(SAMPLES / "cow.obj"))
    record = parameterize_mesh.fn(item, str(tmp_path), "run", FAST)
    assert record.result.failures == [] and list(record.parameterizations) == ["harmonic", "ot"]
    ot = record.parameterizations["ot"]
    assert ot["flipped_triangles"] == 0 and ot["untangled_vertices"] == 0 and ot["centroid_flips"] > 0
    assert ot["area_distortion"] < record.parameterizations["harmonic"]["area_distortion"]
    rows = encode_geometry_images.fn(record, str(tmp_path), "run", FAST).rows("geometry_images")
    finest = {r["parameterization"]: r for r in rows if r["level"] == 0}
    assert finest["ot"]["centroid_flips"] == ot["centroid_flips"] and finest["harmonic"]["centroid_flips"] is None
    assert finest["ot"]["hausdorff"] < finest["harmonic"]["hausdorff"]


def test_interrupted_item_is_not_complete_and_is_redone(tmp_path: Path) -> None:
    """A crash between the two tasks leaves a group that never reads as complete; the re-run redoes it, and a
    finished item is returned from the store (same rows) without work."""
    item = MeshItem("woody", str(SAMPLES / "woody.obj"))
    record = parameterize_mesh.fn(item, str(tmp_path), "run", FAST)
    store = ItemStore(str(tmp_path), "run", "woody")
    assert not store.is_complete(record.fingerprint)  # crashed before encode
    redo = parameterize_mesh.fn(item, str(tmp_path), "run", FAST)
    assert not redo.result.skipped
    done = encode_geometry_images.fn(redo, str(tmp_path), "run", FAST)
    assert store.is_complete(redo.fingerprint)
    again = parameterize_mesh.fn(item, str(tmp_path), "run", FAST)
    assert again.result.skipped and again.parameterizations == {}
    reused = encode_geometry_images.fn(again, str(tmp_path), "run", FAST)
    assert reused.skipped and reused.rows("geometry_images") == done.rows("geometry_images")
    # A different config is a different fingerprint: not taken as finished.
    sha256 = hashlib.sha256((SAMPLES / "woody.obj").read_bytes()).hexdigest()
    assert store.is_complete(FAST.fingerprint(sha256))
    assert not store.is_complete(FAST.model_copy(update={"feature_weight": 1.0}).fingerprint(sha256))


def test_unreadable_mesh_is_a_read_failure(tmp_path: Path) -> None:
    """A file that is no mesh: a ``read`` failure row, no Zarr group, and encode passes the record through."""
    bad = tmp_path / "broken.obj"
    bad.write_bytes(b"\x00\x01 not a mesh")
    record = parameterize_mesh.fn(MeshItem("broken", str(bad)), str(tmp_path / "store"), "run", FAST)
    assert record.fingerprint is None and [f["stage"] for f in record.result.failures] == ["read"]
    result = encode_geometry_images.fn(record, str(tmp_path / "store"), "run", FAST)
    assert result is record.result and not (tmp_path / "store" / "run" / "broken").exists()


def test_bad_faces_are_repaired_and_counted_on_every_row(tmp_path: Path) -> None:
    """woody plus a duplicated and a degenerate face: repaired by default, the counts on every geometry_images
    row; ``strict`` makes it a read failure. Neither option changes the run id or the fingerprint."""
    lines = (SAMPLES / "woody.obj").read_text().splitlines()
    first = [token.split("/")[0] for token in next(line for line in lines if line.startswith("f ")).split()[1:]]
    bad = tmp_path / "woody-bad.obj"
    bad.write_text("\n".join(lines + ["f " + " ".join(reversed(first)), f"f {first[0]} {first[0]} {first[1]}"]))
    item = MeshItem("woody-bad", str(bad))
    small = GeometryImageConfig(resolution=33, levels=1, samples=1_000)
    record = parameterize_mesh.fn(item, str(tmp_path / "store"), "run", small)
    assert record.result.failures == []
    rows = encode_geometry_images.fn(record, str(tmp_path / "store"), "run", small).rows("geometry_images")
    assert len(rows) == 2 and all(r["mesh_faces"] == 1267 for r in rows)
    assert {(r["merged_vertices"], r["degenerate_faces_dropped"], r["duplicate_faces_dropped"]) for r in rows} == {
        (0, 1, 1)}

    strict = small.model_copy(update={"strict": True})
    refused = parameterize_mesh.fn(item, str(tmp_path / "store"), "run-strict", strict)
    assert [(f["stage"], f["error_type"]) for f in refused.result.failures] == [("read", "DegenerateFacesError")]
    assert refused.fingerprint is None
    both = GeometryImageConfig(strict=True, follow_symlinks=True)
    assert both.default_run_id() == GeometryImageConfig().default_run_id()
    assert both.fingerprint("0" * 64) == GeometryImageConfig().fingerprint("0" * 64)


def test_symbolic_link_out_of_the_dataset_is_a_read_failure(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    link = tmp_path / "data" / "woody.obj"
    link.symlink_to(SAMPLES / "woody.obj")
    record = parameterize_mesh.fn(MeshItem("woody", str(link)), str(tmp_path / "store"), "run", FAST)
    assert [(f["stage"], f["error_type"]) for f in record.result.failures] == [("read", "SymlinkOutsideDatasetError")]
    assert "--follow-symlinks" in record.result.failures[0]["message"]
