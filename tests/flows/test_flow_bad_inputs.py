"""The three flows on datasets that mix good real samples with the broken-input corpus (tests/bad_inputs.py).

For each flow: every bad item gets exactly one failure row with the right stage and error type and a message
giving the reason, every good item completes, and nothing is written outside the store (the input folder, the
test's temporary folder, the working directory and the repository's top level are unchanged).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from bad_inputs import (
    DONUT,
    HORSE_FRAMES,
    MARKER_ENV,
    WOODY,
    build,
    collection_cases,
    mesh_cases,
    scene_cases,
    woody_ply,
)

from flows.autodecoder import autodecoder
from flows.gaussian_reduction import gaussian_reduction
from flows.geometry_images import geometry_images
from flows.runtime.task_runner import make_task_runner
from storage.tables import read_table
from tasks.autodecoder import AutodecoderConfig
from tasks.gaussian_reduction import GaussianReductionConfig
from tasks.geometry_images import GeometryImageConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def prefect_api(prefect_test_api):
    yield


def _tree(root: Path, skip: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``root`` except ``skip``: relative path -> (mode, size, mtime_ns), links not followed."""
    entries = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = [d for d in dirs if Path(folder, d) != skip]
        for name in dirs + files:
            st = os.lstat(Path(folder, name))
            entries[os.path.relpath(Path(folder, name), root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return entries


class Sandbox:
    """``data`` and ``store`` folders under the test's ``tmp_path``; :meth:`freeze` records everything outside
    the store, which must be unchanged when the test ends."""

    def __init__(self, root: Path) -> None:
        self.root, self.data, self.store = root, root / "data", root / "store"
        self.frozen: tuple[dict, list[str]] | None = None

    def freeze(self) -> None:
        self.frozen = (_tree(self.root, self.store), sorted(os.listdir(REPO)))

    def check(self) -> None:
        assert self.frozen is not None, "freeze() was not called"
        tree, repo = self.frozen
        after = _tree(self.root, self.store)
        changed = sorted(set(tree.items()) ^ set(after.items()))
        assert not changed, f"outside the store: {changed[:10]}"
        assert sorted(os.listdir(REPO)) == repo


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A sandbox whose working directory is an empty folder inside it; no input may be unpickled."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    marker = tmp_path / "UNPICKLED"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    box = Sandbox(tmp_path)
    yield box
    box.check()
    assert not marker.exists(), "an input file was unpickled"


def _check_failures(failures: pd.DataFrame, key: pd.Series, expected: dict[str, tuple[str, str, str]]) -> None:
    """``expected``: failure key -> (stage, error type, reason regex); each key has exactly one row, no other row."""
    failures = failures.assign(key=key.to_numpy())
    assert sorted(failures["key"]) == sorted(expected), "failure rows differ from the bad items"
    rows = failures.set_index("key")
    for name, (stage, error_type, reason) in expected.items():
        row = rows.loc[name]
        assert (row["stage"], row["error_type"]) == (stage, error_type), (name, row.to_dict())
        assert re.search(reason, row["message"]), (name, row["message"], reason)


@pytest.mark.slow
def test_geometry_images_flow_on_broken_meshes(sandbox: Sandbox) -> None:
    cases = mesh_cases()
    build(cases, sandbox.data)
    shutil.copy(WOODY, sandbox.data / "woody.obj")
    (sandbox.data / "woody-binary.ply").write_bytes(woody_ply("binary"))
    sandbox.freeze()
    config = GeometryImageConfig(resolution=65, levels=2, samples=2_000)
    runner = make_task_runner(workers=2)
    result = geometry_images.with_options(task_runner=runner)(str(sandbox.data), str(sandbox.store), config)

    assert result["items"] == len(cases) + 2
    failures = read_table(result["tables"]["failures"])
    expected = {c.item_id: ("read", c.error.__name__, c.reason) for c in cases}
    _check_failures(failures, failures["item_id"], expected)
    assert failures.loc[failures["item_id"] == "caf_", "source_uri"].str.endswith("caf\\xe9.obj").all()
    rows = read_table(result["tables"]["geometry_images"])
    assert rows.groupby("item_id").size().to_dict() == {"woody": 4, "woody-binary": 4}  # 2 maps x 2 levels
    assert sorted(result["failed_items"]) == sorted(expected)


@pytest.mark.slow
def test_autodecoder_flow_on_broken_collections(sandbox: Sandbox) -> None:
    cases = [c for c in collection_cases() if not isinstance(c.name, str) or not c.name.startswith("npy/")]
    build(cases, sandbox.data)
    sandbox.freeze()
    config = AutodecoderConfig(latent_size=8, patches=4, points_per_shape=128, shapes_per_step=3, chamfer_epochs=1,
                               qaad_epochs=1, leaf_size=128, device="cpu", checkpoint_every=100)
    runner = make_task_runner(workers=2)
    result = autodecoder.with_options(task_runner=runner)(str(sandbox.data), str(sandbox.store), config)

    failures = read_table(result["tables"]["failures"])
    # a whole collection fails as <collection>--<variant>; a bad shape as <collection uri>#<shape id>
    key = failures["source_uri"].where(failures["item_id"] == "horse--neuralqaad",
                                       failures["item_id"]).str.replace(r"^.*#", "#", regex=True)
    expected = {}
    for c in cases:
        if c.shape_failure:
            expected[f"#{c.item_id}"] = ("read", c.error.__name__, c.reason)
        elif c.item_id != "empty-folder":  # an empty folder is no collection: not listed, not failed
            expected[f"{c.item_id}--neuralqaad"] = ("read", c.error.__name__, c.reason)
    _check_failures(failures, key, expected)
    models = read_table(result["tables"]["autodecoder_models"])
    assert list(models["item_id"]) == ["horse--neuralqaad"] and models["shapes"].iloc[0] == len(HORSE_FRAMES)
    shapes = read_table(result["tables"]["autodecoder_shapes"])
    assert sorted(shapes["shape_id"]) == [Path(f).stem for f in HORSE_FRAMES]
    assert shapes["em_kd"].between(0, 1).all()


@pytest.mark.slow
def test_gaussian_reduction_flow_on_broken_scenes(sandbox: Sandbox) -> None:
    cases = scene_cases()
    build(cases, sandbox.data)
    shutil.copy(DONUT, sandbox.data / "donut-8k.ply")
    sandbox.freeze()
    config = GaussianReductionConfig(methods=["random"], resolution=32, views=2, train_views=2, finetune_steps=2,
                                     device="cpu")
    runner = make_task_runner(workers=2)
    result = gaussian_reduction.with_options(task_runner=runner)(str(sandbox.data), str(sandbox.store), [0.1], config)

    failures = read_table(result["tables"]["failures"])
    expected = {f"{c.item_id}--r0.1": ("read", c.error.__name__, c.reason) for c in cases}
    _check_failures(failures, failures["item_id"], expected)
    table = read_table(result["tables"]["gaussian_reduction"])
    assert set(table["scene_id"]) == {"donut-8k"} and len(table) == 2  # random, before and after fine-tuning
    assert (table["n_out"] == 819).all()
