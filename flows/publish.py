"""The one path from task futures to a run's outputs: gather the :class:`~tasks.shared.records.ItemResult` of
every item as it completes (progress and a log line each), then write the run's tables and publish them.

Every flow uses it (docs/architecture.md): a task that crashes or whose worker dies becomes a failure row at
stage ``task`` and never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture, as_completed

from flows.runtime.artifacts import Progress
from flows.runtime.task_runner import task_outcome
from tasks.dataset import crash_result, write_tables
from tasks.shared.records import ItemResult, Row

__all__ = ["Gathered", "gather", "publish_tables", "failures_markdown"]


@dataclass
class Gathered:
    """All items' results of a run: rows per table (in the order of ``tables``), failures, skipped items."""

    tables: dict[str, list[Row]]
    failures: list[Row] = field(default_factory=list)
    skipped: int = 0
    results: list[ItemResult] = field(default_factory=list)

    def rows(self, table: str) -> list[Row]:
        return self.tables.get(table, [])


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
        for name, rows in result.tables.items():
            gathered.tables.setdefault(name, []).extend(rows)
        gathered.failures += result.failures
        gathered.skipped += bool(result.skipped)
        gathered.results.append(result)
        logger.info("[%d/%d] %s: %s", done, len(futures), label, status)
        if progress is not None:
            progress.update(progress_offset + done)
    return gathered


def publish_tables(store: str, run_id: str, gathered: Gathered) -> dict[str, str]:
    """Write the gathered tables and the ``failures`` table; returns ``{name: uri}`` (``failures`` last)."""
    return write_tables(store, run_id, gathered.tables, gathered.failures)


def failures_markdown(failures: list[Row]) -> str:
    """A markdown section listing the failure rows (empty string when there are none)."""
    if not failures:
        return ""
    lines = "\n".join(f"| {f['item_id']} | {f['stage']} | {f['error_type']} | {f['message']} |" for f in failures)
    return "\n\n## Failures\n| item | stage | error | message |\n|---|---|---|---|\n" + lines

