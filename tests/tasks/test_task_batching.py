"""Batches of items per task (tasks/shared/batching.py): their size, and a batch that lands each item's rows at
once and turns an item's unexpected error into its failure row with the original type and message."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from storage.meshes import MeshItem
from tasks.geometry_images import GeometryImageConfig, geometry_images_batch
from tasks.shared.batching import MAX_BATCH_SIZE, batches, plan_batches, run_batch
from tasks.shared.records import ItemResult

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples" / "meshes"


@pytest.mark.parametrize(("items", "workers", "first"), [(8, 2, 1), (17, 2, 3), (200, 2, 25), (2000, 2, 64),
                                                         (2000, 64, 8), (1, 1, 1), (0, 2, None)])
def test_guided_batches_cover_every_item_once_and_shrink(items: int, workers: int, first: int | None) -> None:
    plan = plan_batches(items, workers)
    assert sum(plan, []) == list(range(items))
    sizes = [len(batch) for batch in plan]
    assert (sizes[0] if sizes else None) == first
    assert sizes == sorted(sizes, reverse=True) and all(1 <= n <= MAX_BATCH_SIZE for n in sizes)
    if items >= 4 * workers:
        assert sizes[-1] == 1  # the last tasks are single items: no long tail on one worker
    assert [len(b) for b in plan_batches(items, workers, requested=5)] == [len(b) for b in batches(range(items), 5)]


def test_batches_cover_every_item_once_in_order() -> None:
    assert batches(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert sum(batches(list(range(130)), 64), []) == list(range(130))


def test_an_items_unexpected_error_is_its_failure_row_and_the_batch_goes_on(tmp_path: Path) -> None:
    def work(name: str) -> ItemResult:
        if name == "bad":
            raise ValueError("power diagram: coordinates overflow")
        return ItemResult(name, {"failures": []}, [])

    seen: list[str] = []
    results = run_batch(["a", "bad", "c"], work, lambda name: (name, f"/data/{name}.obj"), str(tmp_path), "run",
                        [], reporter=seen.append)
    assert [r.item_id for r in results] == ["a", "bad", "c"] and seen == ["a", "bad", "c"]
    (failure,) = results[1].failures
    assert (failure["stage"], failure["error_type"], failure["message"]) == (
        "task", "ValueError", "power diagram: coordinates overflow")
    failures = pd.read_parquet(tmp_path / "run" / "tables" / "failures.parquet")
    assert failures["item_id"].tolist() == ["bad"]  # landed at once, before any compaction


def test_geometry_images_batch_lands_each_mesh_in_the_tables(tmp_path: Path) -> None:
    """Two real meshes and a broken file in one batch: the tables hold both meshes' rows and the broken file's
    failure as separate fragments right after the batch, each once."""
    broken = tmp_path / "broken.obj"
    broken.write_text("v 0 0 0\nf 1 2 3\n")
    items = [MeshItem("woody", str(SAMPLES / "woody.obj")), MeshItem("broken", str(broken)),
             MeshItem("spot", str(SAMPLES / "spot.obj"))]
    config = GeometryImageConfig(resolution=33, levels=2, samples=1000)
    tables = ["geometry_images", "rate_distortion"]
    results = geometry_images_batch.fn(items, str(tmp_path), "run", config, tables)
    assert [r.item_id for r in results] == ["woody", "broken", "spot"]
    assert all(r.tables_written for r in results)
    root = tmp_path / "run" / "tables"
    rows = pd.read_parquet(root / "geometry_images.parquet")
    assert rows.groupby("item_id").size().to_dict() == {"spot": 4, "woody": 4}
    assert len(list((root / "geometry_images.parquet").glob("item-*.parquet"))) == 2
    failures = pd.read_parquet(root / "failures.parquet")
    assert failures[["item_id", "stage"]].values.tolist() == [["broken", "read"]]


def test_an_item_past_its_timeout_gets_a_timeout_row_and_the_batch_goes_on(tmp_path: Path) -> None:
    """A slow item (a sleep in a loop that reports progress, like a Newton solve) beside a normal one under a 2 s
    item timeout: the batch returns in about 2 s, the slow item has its timeout row, the normal item its result,
    and the abandoned thread stops at its next progress report."""
    import threading
    import time

    from tasks.shared.batching import ItemTimeoutError, check_deadline

    stopped = threading.Event()

    def work(name: str) -> ItemResult:
        if name == "slow":
            try:
                for _ in range(600):  # 60 s unless stopped
                    time.sleep(0.1)
                    check_deadline()
            except ItemTimeoutError:
                stopped.set()
                raise
        return ItemResult(name, {"failures": []}, [])

    start = time.monotonic()
    results = run_batch(["slow", "normal"], work, lambda name: (name, f"/data/{name}.obj"), str(tmp_path), "run",
                        [], item_timeout=2.0)
    assert time.monotonic() - start < 15
    (failure,) = results[0].failures
    assert (failure["item_id"], failure["error_type"], failure["message"]) == (
        "slow", "ItemTimeoutError", "timed out after 2 s")
    assert results[1].item_id == "normal" and not results[1].failures
    assert stopped.wait(5)  # the abandoned item noticed its deadline
    check_deadline()  # the batch's own thread has no deadline
    failures = pd.read_parquet(tmp_path / "run" / "tables" / "failures.parquet")
    assert failures["item_id"].tolist() == ["slow"]


def test_geometry_images_batch_enforces_item_timeout(tmp_path: Path, monkeypatch) -> None:
    """``--item-timeout``: a mesh whose parameterization hangs (a sleep that reports progress through the OT
    callback's deadline check) gets a timeout failure row; the next mesh of the batch is computed as usual."""
    import time

    import tasks.geometry_images as geometry_images_tasks
    from tasks.shared.batching import check_deadline

    real = geometry_images_tasks.parameterize_mesh

    class Hangs:
        @staticmethod
        def fn(item, *args):
            if item.item_id == "hangs":
                for _ in range(600):
                    time.sleep(0.1)
                    check_deadline()
            return real.fn(item, *args)

    monkeypatch.setattr(geometry_images_tasks, "parameterize_mesh", Hangs)
    items = [MeshItem("hangs", str(SAMPLES / "spot.obj")), MeshItem("woody", str(SAMPLES / "woody.obj"))]
    config = GeometryImageConfig(resolution=33, levels=2, samples=1000, item_timeout=2)
    results = geometry_images_batch.fn(items, str(tmp_path), "run", config, ["geometry_images", "rate_distortion"])
    assert [(f["error_type"], f["message"]) for f in results[0].failures] == [("ItemTimeoutError",
                                                                                "timed out after 2 s")]
    assert not results[1].failures and len(results[1].rows("geometry_images")) == 4


def test_an_item_under_a_timeout_runs_in_the_callers_context(tmp_path: Path) -> None:
    """The item's thread sees the caller's context variables: Prefect's task run context, and with it the task
    run logger whose lines reach the UI's task log, lives in one."""
    import contextvars

    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")
    marker.set("task run")
    seen: list[str] = []

    def work(name: str) -> ItemResult:
        seen.append(marker.get())
        return ItemResult(name, {"failures": []}, [])

    run_batch(["a"], work, lambda name: (name, f"/data/{name}.obj"), str(tmp_path), "run", [], item_timeout=30.0)
    assert seen == ["task run"]


def test_no_task_declares_a_prefect_timeout() -> None:
    """Prefect's ``timeout_seconds`` cannot stop a task in a worker thread and only prints a false warning on every
    run (issue 21); item timeouts are enforced by ``run_batch`` instead."""
    import importlib

    from prefect import Task

    modules = ["tasks.geometry_images", "tasks.geometry_image_sequence", "tasks.autodecoder", "tasks.restoration",
               "tasks.gaussian_reduction", "tasks.align_embeddings"]
    found = [value for name in modules for value in vars(importlib.import_module(name)).values()
             if isinstance(value, Task)]
    assert len(found) >= 9
    assert [t.name for t in found if t.timeout_seconds is not None] == []
