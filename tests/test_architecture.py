"""The layer rule of docs/architecture.md is enforced: the import-linter contracts in pyproject.toml pass on the
tree, and each contract breaks when one forbidden import is added to a copy of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("otcore", "storage", "tasks", "flows")

LAYERS = "layers: flows -> tasks -> (otcore | storage)"
FLOWS = "flows fan out, route and publish: they import tasks, never storage or otcore"
OTCORE = "otcore imports no storage, tasks, flows or prefect"
STORAGE = "storage imports no otcore, tasks or flows"
TASKS = "no task module imports another (tasks.shared holds what they share)"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """Run import-linter on the packages under ``root`` with ``root/pyproject.toml``, no cache."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})


def test_contracts_pass_on_the_tree() -> None:
    run = lint_imports(REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    for name in (LAYERS, FLOWS, OTCORE, STORAGE, TASKS):
        assert f"{name} KEPT" in run.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("otcore/errors.py", "import storage", {OTCORE, LAYERS}),
    ("otcore/device.py", "import prefect", {OTCORE}),
    ("storage/errors.py", "import otcore.errors", {STORAGE, LAYERS}),
    ("flows/geometry_images.py", "import storage.tables", {FLOWS}),
    ("tasks/geometry_images.py", "import tasks.autodecoder", {TASKS}),
    ("tasks/dataset.py", "import flows.publish", {LAYERS}),
])
def test_one_forbidden_import_breaks_its_contract(tmp_path: Path, module: str, line: str, broken: set[str]) -> None:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    source = tmp_path / module
    source.write_text(source.read_text() + f"\n{line}  # injected by the test\n")
    run = lint_imports(tmp_path)
    assert run.returncode != 0
    for name in (LAYERS, FLOWS, OTCORE, STORAGE, TASKS):
        assert f"{name} {'BROKEN' if name in broken else 'KEPT'}" in run.stdout, run.stdout
