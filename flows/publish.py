"""The one path from task futures to a run's outputs: gather the :class:`~tasks.shared.records.ItemResult` of
every item as it completes (progress and a log line each, its rows landed in the run's tables at once), then
compact the run's tables and publish them.

Every flow uses it (docs/architecture.md): a task that crashes or whose worker dies becomes a failure row at
stage ``task`` and never stops the others. :func:`gather` takes one future per item; :func:`gather_batches`
submits and gathers batches of items (:mod:`tasks.shared.batching`), re-running the items of a batch that died
one by one so that only the item that kills its worker fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture, as_completed, wait

from flows.runtime.artifacts import Progress
from flows.runtime.task_runner import progress_queue, task_outcome
from tasks.dataset import begin_tables, crash_result, write_tables
from tasks.shared.records import ItemResult, Row, write_item_tables

__all__ = ["Gathered", "gather", "gather_batches", "open_tables", "publish_tables", "failures_markdown",
           "PROGRESS_POLL_SECONDS"]

PROGRESS_POLL_SECONDS = 2.0
"""How often :func:`gather_batches` moves the progress artifact while batches run."""


@dataclass
class Gathered:
    """All items' results of a run: rows per table (in the order of ``tables``), failures, skipped items."""

    tables: dict[str, list[Row]]
    failures: list[Row] = field(default_factory=list)
    skipped: int = 0
    results: list[ItemResult] = field(default_factory=list)

    def rows(self, table: str) -> list[Row]:
        return self.tables.get(table, [])

    def add(self, result: ItemResult) -> None:
        for name, rows in result.tables.items():
            self.tables.setdefault(name, []).extend(rows)
        self.failures += result.failures
        self.skipped += bool(result.skipped)
        self.results.append(result)


def open_tables(store: str, run_id: str, tables: Sequence[str]) -> None:
    """Call before submitting a run's tasks: a re-run's earlier table rows become item fragments, which the
    items computed again replace (:func:`tasks.dataset.begin_tables`)."""
    begin_tables(store, run_id, list(tables))


def _status(result: ItemResult) -> str:
    status = "skipped (finished earlier)" if result.skipped else f"{sum(map(len, result.tables.values()))} rows"
    if result.failures:
        status += "; failed: " + ", ".join(f"{f['stage']}: {f['error_type']}" for f in result.failures)
    return status


def gather(
    futures: Sequence[PrefectFuture],
    labels: Sequence[str],
    run_id: str,
    tables: Sequence[str],
    progress: Progress | None = None,
    crash_keys: Sequence[tuple[str, str]] | None = None,
    describe: Callable[[ItemResult], str] = _status,
    progress_offset: int = 0,
    on_crash: Callable[[int, BaseException], ItemResult] | None = None,
    store: str | None = None,
) -> Gathered:
    """Collect the results of ``futures`` in completion order.

    Args:
        futures: one per item, each resolving to an :class:`ItemResult`.
        labels: the item each future works on, for the log (same order as ``futures``).
        run_id: the run (failure rows of crashed tasks).
        tables: the run's table names, in the order they are written.
        progress: bar set to ``progress_offset + done`` after each item.
        crash_keys: ``(item_id, source_uri)`` of each future's failure row if it crashes (default: its label).
        describe: log text of a finished result.
        on_crash: the result of the ``i``-th future when it crashes (default: :func:`tasks.dataset.crash_result`).
        store: with it, each item's rows land in the run's tables as the item finishes (call :func:`open_tables`
            before submitting).
    """
    logger = get_run_logger()
    keys = list(crash_keys) if crash_keys is not None else [(label, label) for label in labels]
    key_of = {future: (i, label, key) for i, (future, label, key) in enumerate(zip(futures, labels, keys, strict=True))}
    gathered = Gathered({name: [] for name in tables})
    for done, future in enumerate(as_completed(list(futures)), start=1):
        i, label, (item_id, uri) = key_of[future]
        outcome: Any = task_outcome(future)
        if isinstance(outcome, BaseException):  # an unexpected crash of a task: record it, keep the others
            result = on_crash(i, outcome) if on_crash else crash_result(run_id, item_id, uri, outcome)
            status = f"crashed: {type(outcome).__name__}: {outcome}"
        else:
            result = outcome
            status = describe(result)
        if store is not None and not result.tables_written:
            write_item_tables(store, run_id, result, list(tables))
        gathered.add(result)
        logger.info("[%d/%d] %s: %s", done, len(futures), label, status)
        if progress is not None:
            progress.update(progress_offset + done, [label])
    return gathered


def gather_batches(
    submit: Callable[[list[int], str | None], PrefectFuture],
    keys: Sequence[tuple[str, str]],
    plan: Sequence[list[int]],
    run_id: str,
    store: str,
    tables: Sequence[str],
    progress: Progress | None = None,
) -> Gathered:
    """Submit the items in batches and collect every item's :class:`ItemResult`.

    Args:
        submit: ``submit(indices, queue_name)`` submits one task for the items at ``indices`` that returns their
            results in order (:func:`tasks.shared.batching.run_batch`), reporting each finished item to the
            ``distributed.Queue`` named ``queue_name`` (None: no queue).
        keys: ``(item_id, source_uri)`` of every item, in item order.
        plan: the item indices of each batch, in submission order (:func:`tasks.shared.batching.plan_batches`).
        run_id, store, tables: the run, its store and its table names (call :func:`open_tables` first).
        progress: moved item by item as the batches report, every :data:`PROGRESS_POLL_SECONDS`.

    A batch whose task crashed (its worker died ``allowed-failures`` times, e.g. one item runs it out of memory)
    is submitted again one item per task; an item that crashes alone gets a failure row at stage ``task``. Items
    finished before the crash are skipped by the re-run (their fingerprint is complete in the store).
    """
    logger = get_run_logger()
    queue = progress_queue(f"brenier-progress-{run_id}")
    queue_name = queue.name if queue is not None else None
    pending: dict[PrefectFuture, list[int]] = {}
    for indices in plan:
        pending[submit(indices, queue_name)] = indices
    logger.info("%d items in %d tasks of %d to %d", len(keys), len(pending), min(map(len, plan), default=0),
                max(map(len, plan), default=0))
    gathered = Gathered({name: [] for name in tables})
    reported: set[str] = set()
    announced: set[str] = set()  # item ids passed to the progress so far
    finished = 0
    while pending:
        done = wait(list(pending), timeout=PROGRESS_POLL_SECONDS).done
        reported |= _drain(queue)
        for future in done:
            indices = pending.pop(future)
            outcome: Any = task_outcome(future)
            if isinstance(outcome, BaseException) and len(indices) > 1:
                logger.warning("a task of %d items crashed (%s: %s); its items run again one per task",
                               len(indices), type(outcome).__name__, outcome)
                for i in indices:
                    pending[submit([i], queue_name)] = [i]
                continue
            if isinstance(outcome, BaseException):
                item_id, uri = keys[indices[0]]
                outcome = [crash_result(run_id, item_id, uri, outcome)]
                write_item_tables(store, run_id, outcome[0], list(tables))
                logger.info("%s: crashed: %s", item_id, outcome[0].failures[0]["message"])
            for result in outcome:
                gathered.add(result)
            finished += len(indices)
            reported |= {keys[i][0] for i in indices}
        if progress is not None:
            newly = sorted(reported - announced)
            announced |= reported
            progress.update(min(len(keys), max(finished, len(reported))), newly)
    return gathered


def _drain(queue: Any) -> set[str]:
    """Item ids waiting in the progress queue (none when there is no queue or it cannot be read)."""
    found: set[str] = set()
    if queue is None:
        return found
    try:
        while queue.qsize():
            found.update(queue.get(batch=True))
    except Exception as error:  # noqa: BLE001 - progress is best effort
        get_run_logger().debug("progress queue unreadable: %s", error)
    return found


def publish_tables(store: str, run_id: str, gathered: Gathered) -> dict[str, str]:
    """Compact the gathered tables and the ``failures`` table (one fragment each); returns ``{name: uri}``
    (``failures`` last)."""
    return write_tables(store, run_id, gathered.tables, gathered.failures)


def failures_markdown(failures: list[Row]) -> str:
    """A markdown section listing the failure rows (empty string when there are none)."""
    if not failures:
        return ""
    lines = "\n".join(f"| {f['item_id']} | {f['stage']} | {f['error_type']} | {f['message']} |" for f in failures)
    return "\n\n## Failures\n| item | stage | error | message |\n|---|---|---|---|\n" + lines

