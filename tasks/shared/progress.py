"""Progress lines of long tasks: shown on the command line's console and in the Prefect UI's task log.

A task that can run for more than about 10 s (a Newton solve, a training run, a GHAP reduction) reports its
progress through :func:`report_progress`. The record is marked ``console=True``, which the command line's quiet
console lets through (``flows/runtime/console.py``), and the call checks the item's deadline
(:func:`tasks.shared.batching.check_deadline`), so a loop that reports progress also stops at its timeout.
"""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from tasks.shared.batching import check_deadline

__all__ = ["CONSOLE", "task_logger", "report_progress"]

CONSOLE = {"console": True}
"""``extra=`` of a log record that the quiet console shows."""


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
