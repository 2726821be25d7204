"""Progress lines of long tasks: shown on the command line's console and in the Prefect UI's task log.

A task that can run for more than about 10 s (a Newton solve, a training run, a GHAP reduction) reports its
progress through :func:`report_progress`. The record is marked ``console=True``, which the command line's quiet
console lets through (``flows/runtime/console.py``), and the call checks the item's deadline
(:func:`tasks.shared.batching.check_deadline`), so a loop that reports progress also stops at its timeout.
"""

from __future__ import annotations

import logging
import time

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from tasks.shared.batching import check_deadline

__all__ = ["CONSOLE", "PROGRESS_SECONDS", "task_logger", "report_progress", "ProgressClock"]

CONSOLE = {"console": True}
"""``extra=`` of a log record that the quiet console shows."""

PROGRESS_SECONDS = 10.0
"""Seconds between the progress lines of one loop; a loop that ends sooner prints at most its last line."""


def task_logger(name: str = __name__) -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a task or flow run, else the standard logger ``name``."""
    try:
        return get_run_logger()
    except MissingContextError:  # called as a plain function
        return logging.getLogger(name)


def report_progress(logger: logging.Logger | logging.LoggerAdapter, message: str, *args: object) -> None:
    """Log ``message % args`` at INFO for the console and the UI, after checking the item's deadline.

    Raises:
        tasks.shared.batching.ItemTimeoutError: the item running in this thread is past its timeout.
    """
    check_deadline()
    logger.info(message, *args, extra=CONSOLE)


class ProgressClock:
    """When a loop's next progress line is due: every ``seconds`` of wall time, and at the loop's end.

    ``clock.due()`` is True once ``seconds`` (default :data:`PROGRESS_SECONDS`) have passed since the last line (or
    since the clock was made), then restarts; ``clock.due(final=True)`` is always True. ``clock.elapsed`` is the
    time since the clock was made.
    """

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = PROGRESS_SECONDS if seconds is None else seconds
        self.start = self._last = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since the clock was made."""
        return time.perf_counter() - self.start

    def due(self, final: bool = False) -> bool:
        now = time.perf_counter()
        if final or now - self._last >= self.seconds:
            self._last = now
            return True
        return False
