"""Many items per Prefect task: how a dataset is cut into batches, and how a batch runs its items.

A Prefect task costs about a second of orchestration (state reports, serialisation, scheduling), and a few
thousand mapped tasks overload the Prefect API (docs/architecture.md). So a flow over a large dataset submits one
task per *batch* of items, sized from the item count and the cluster's worker count (:func:`plan_batches`). Inside
the batch, :func:`run_batch` runs the items one by one and, for each finished item:

- lands its rows in the run's tables at once (:func:`tasks.shared.records.write_item_tables`), so a killed run keeps
  them;
- turns any exception into the item's failure row with the original error type and message (one item never ends
  its batch);
- reports it to the flow (:class:`ItemReporter`), which moves the progress artifact item by item.

**Item timeouts.** Prefect's ``timeout_seconds`` cannot stop a task that runs in a worker thread (it warns and lets
it run), and a native solve cannot be interrupted from outside. So :func:`run_batch` enforces ``item_timeout``
itself: the item runs in its own daemon thread; past the deadline the batch records the item's
:class:`ItemTimeoutError` failure row ("timed out after N s") and goes on with the next item. The abandoned thread
is asked to stop: the long loops' progress callbacks call :func:`check_deadline`, which raises in that thread at
its next report (a Newton iteration, a training step), so it does not keep a core busy.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tasks.shared.records import ItemResult, failure_row, write_item_tables

__all__ = ["MAX_BATCH_SIZE", "BATCHES_PER_WORKER", "plan_batches", "batches", "run_batch", "ItemReporter",
           "ItemTimeoutError", "check_deadline"]

Item = TypeVar("Item")

MAX_BATCH_SIZE = 64
"""Most items one task runs: a batch that dies with its worker is re-run item by item, so it stays bounded."""

BATCHES_PER_WORKER = 4
"""Guided scheduling: each batch takes ``1 / (BATCHES_PER_WORKER * workers)`` of the items still unplanned."""


class ItemTimeoutError(TimeoutError):
    """An item ran past the run's ``item_timeout``; its failure row says after how many seconds."""


_item = threading.local()  # .deadline (monotonic seconds) and .timeout of the item this thread runs


def check_deadline() -> None:
    """Raise :class:`ItemTimeoutError` if the item running in this thread is past its deadline; else nothing.

    Cheap (one attribute read and a clock read): call it from progress callbacks of long loops. Outside an item
    with a timeout it never raises.
    """
    deadline = getattr(_item, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise ItemTimeoutError(f"timed out after {_item.timeout:g} s")


def _run_with_deadline(work: Callable[[Item], ItemResult], item: Item, timeout: float) -> ItemResult:
    """``work(item)`` in a daemon thread; :class:`ItemTimeoutError` if it has not returned after ``timeout`` s."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        _item.deadline, _item.timeout = time.monotonic() + timeout, timeout
        try:
            outcome["result"] = work(item)
        except BaseException as error:  # noqa: BLE001 - re-raised in the batch's thread
            outcome["error"] = error

    # the item's thread runs in a copy of this context, so the Prefect task run's logger (the UI's task log) and
    # settings reach it
    thread = threading.Thread(target=contextvars.copy_context().run, args=(target,), name="brenier-item",
                              daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ItemTimeoutError(f"timed out after {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def plan_batches(items: int, workers: int, requested: int | None = None) -> list[list[int]]:
    """The item indices of each task, in submission order.

    Guided self-scheduling (Polychronopoulos & Kuck, 1987): batch ``k`` takes ``ceil(remaining / (4 * workers))``
    items, capped to ``[1, MAX_BATCH_SIZE]``, so batches shrink towards the end of the dataset and no worker sits
    idle while another finishes one long batch (a fixed size of 64 left one of two workers idle for 83 s at the
    end of 2,000 meshes). 8 meshes on 2 workers: one per task; 2,000: 64 at first, 1 at the end, 50 tasks.
    ``requested`` fixes the size instead (``--batch-size``).
    """
    if requested is not None:
        return batches(list(range(items)), max(1, requested))
    plan: list[list[int]] = []
    start = 0
    while start < items:
        size = max(1, min(MAX_BATCH_SIZE, math.ceil((items - start) / (BATCHES_PER_WORKER * max(1, workers)))))
        plan.append(list(range(start, min(items, start + size))))
        start += size
    return plan


def batches(items: Sequence[Item], size: int) -> list[list[Item]]:
    """``items`` cut into consecutive lists of ``size`` (the last one shorter)."""
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


class ItemReporter:
    """Tells the flow that an item finished, through a named ``distributed.Queue`` of the flow's Dask cluster.

    Outside a Dask worker (a task called with ``.fn``, a test) or without a queue name it does nothing. A lost
    message only makes the progress bar lag: the flow counts the batch's items when the batch returns.
    """

    def __init__(self, queue_name: str | None) -> None:
        self.queue_name = queue_name
        self._queue: Any = None

    def __call__(self, item_id: str) -> None:
        if not self.queue_name:
            return
        try:
            if self._queue is None:
                from distributed import Queue, get_worker

                get_worker()  # raises ValueError outside a Dask worker
                self._queue = Queue(self.queue_name)
            self._queue.put(item_id, timeout=10)
        except Exception as error:  # noqa: BLE001 - progress is best effort; the item's result is already stored
            logging.getLogger(__name__).debug("progress of %s not reported: %s", item_id, error)
            self.queue_name = None


def run_batch(
    items: Sequence[Item],
    work: Callable[[Item], ItemResult],
    key: Callable[[Item], tuple[str, str]],
    store: str,
    run_id: str,
    tables: list[str],
    reporter: ItemReporter | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
    item_timeout: float | None = None,
) -> list[ItemResult]:
    """Run ``work`` on each item of a batch, landing each item's rows in the run's tables as it finishes.

    Args:
        items: the batch.
        work: the whole per-item job (e.g. parameterize then encode one mesh); returns the item's result.
        key: ``(item_id, source_uri)`` of an item, for the failure row of an item whose ``work`` raised.
        store, run_id: where the run's tables are.
        tables: the run's table names (``failures`` is always written).
        reporter: called with the item id after each item.
        logger: gets one line per item (``[k/n] item: rows or failure, seconds``).
        item_timeout: seconds one item may run (None: no limit); past it the item gets an
            :class:`ItemTimeoutError` failure row and the batch goes on (see the module docstring).

    Returns:
        One :class:`ItemResult` per item, in order; an exception raised by ``work`` becomes a failure row at stage
        ``task`` with the exception's own type and message (never retried: the same input fails the same way).
    """
    results: list[ItemResult] = []
    for k, item in enumerate(items, start=1):
        start = time.perf_counter()
        item_id, uri = key(item)
        try:
            result = work(item) if item_timeout is None else _run_with_deadline(work, item, item_timeout)
        except Exception as error:  # noqa: BLE001 - one item's failure must not end its batch
            result = ItemResult(item_id, failures=[failure_row(run_id, item_id, uri, "task", error)])
        write_item_tables(store, run_id, result, tables)
        result.tables_written = True
        results.append(result)
        if reporter is not None:
            reporter(item_id)
        if logger is not None:
            failed = "; failed: " + ", ".join(f"{f['stage']}: {f['error_type']}" for f in result.failures)
            logger.info("[%d/%d] %s: %s%s (%.1f s)", k, len(items), item_id,
                        "skipped (finished earlier)" if result.skipped else
                        f"{sum(map(len, result.tables.values()))} rows",
                        failed if result.failures else "", time.perf_counter() - start)
    return results
