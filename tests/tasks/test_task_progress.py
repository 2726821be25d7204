"""Progress lines of long tasks (issue 21): marked for the quiet console, paced by :class:`ProgressClock`, and
reported by the geometry-image and autodecoder tasks on the bundled real data."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

import tasks.geometry_images as geometry_images
import tasks.shared.progress as progress
from storage.meshes import MeshItem
from tasks.autodecoder import train_autodecoder
from tasks.configs import AutodecoderConfig, GeometryImageConfig
from tasks.shared.progress import ProgressClock

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"


def console_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "console", False)]


def test_progress_clock_paces_lines() -> None:
    clock = ProgressClock(seconds=60)
    assert not clock.due() and clock.due(final=True)
    fast = ProgressClock(seconds=0.01)
    time.sleep(0.02)
    assert fast.due() and not fast.due() and fast.elapsed >= 0.02


def test_a_large_mesh_announces_its_stages_and_reports_every_newton_iteration(caplog, monkeypatch,
                                                                                tmp_path: Path) -> None:
    monkeypatch.setattr(geometry_images, "LARGE_MESH_VERTICES", 1000)  # spot has 2,930 vertices
    monkeypatch.setattr(geometry_images, "PROGRESS_SECONDS", 0.0)
    path = SAMPLES / "meshes" / "spot.obj"
    item = MeshItem("spot", str(path))
    config = GeometryImageConfig(resolution=33, levels=1, samples=500)
    with caplog.at_level(logging.INFO, logger="tasks.geometry_images"):
        record = geometry_images.parameterize_mesh.fn(item, str(tmp_path), "run", config)
    lines = console_lines(caplog)
    assert record.result.failures == []
    assert lines[0] == "spot: 2930 vertices, 5856 faces: cut, harmonic map, OT"
    assert lines[1].startswith("spot: cut and harmonic map done")
    iterations = [line for line in lines if "OT iteration" in line]
    assert len(iterations) == record.parameterizations["ot"]["newton_iterations"] >= 2


def test_autodecoder_training_reports_its_epochs(caplog, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.0)  # every epoch is due
    config = AutodecoderConfig(point_source="surface", samples=512, latent_size=4, patches=4, points_per_shape=128,
                               shapes_per_step=3, chamfer_epochs=1, qaad_epochs=2, leaf_size=64, device="cpu")
    with caplog.at_level(logging.INFO, logger="tasks.autodecoder"):
        trained = train_autodecoder.fn(str(SAMPLES / "consistent" / "horse-gallop"), "neuralqaad", str(tmp_path),
                                       "run", config)
    assert trained.failures == []
    epochs = [line for line in console_lines(caplog) if ": epoch " in line]
    assert [line.split(" epoch ")[1].split()[0] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert all("loss" in line for line in epochs)


@pytest.mark.parametrize("seconds", [None, 5.0])
def test_progress_clock_default_reads_the_module_constant(monkeypatch, seconds) -> None:
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 123.0)
    assert ProgressClock(seconds).seconds == (123.0 if seconds is None else seconds)
