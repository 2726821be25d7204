"""Shared test fixtures: the sample mesh folder and normalised sample meshes (loaded once per session)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from otcore.metrics import normalize_to_unit_diagonal
from storage.meshes import MeshItem, read_mesh

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples" / "meshes"


class SampleMesh(NamedTuple):
    """A sample mesh normalised to a unit bounding-box diagonal: ``[V, 3]`` float64, ``[F, 3]`` int64."""

    vertices: np.ndarray
    faces: np.ndarray


@cache
def _load(name: str) -> SampleMesh:
    mesh = read_mesh(MeshItem(name, str(SAMPLES_DIR / f"{name}.obj")))
    vertices, _, _ = normalize_to_unit_diagonal(mesh.vertices)
    vertices.setflags(write=False)
    faces = mesh.faces
    faces.setflags(write=False)
    return SampleMesh(vertices, faces)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def sample_mesh() -> Callable[[str], SampleMesh]:
    """Loader of ``data/samples/meshes/<name>.obj``, normalised and cached (arrays are read-only)."""
    return _load


@pytest.fixture(scope="session")
def spot() -> SampleMesh:
    return _load("spot")


CONSISTENT_DIR = SAMPLES_DIR.parent / "consistent"


@pytest.fixture(scope="session")
def consistent_dir() -> Path:
    """``data/samples/consistent``: ``crane-16.npz`` and ``horse-gallop/`` (shape collections in correspondence)."""
    return CONSISTENT_DIR
