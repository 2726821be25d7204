"""What a flow command prints: progress and results, not library chatter.

By default (:func:`quiet_console`) the console shows, besides what the command prints itself:

- records at WARNING or above, from any logger;
- progress lines of long tasks (a Newton solve, a training run), which the tasks log with
  ``extra={"console": True}`` (:data:`tasks.shared.progress.CONSOLE`);
- Prefect's ``View at <flow run URL>`` line, where the run can be watched in the UI.

Everything else (Prefect's engine INFO lines, the per-item task log, Dask's scheduler/nanny/worker INFO lines)
still reaches the Prefect UI's logs, but not the console. ``--verbose`` keeps Prefect's default console.

The rule is a :class:`ConsoleFilter` on Prefect's console handler, set through a logging configuration file
(``PREFECT_LOGGING_SETTINGS_PATH``): Prefect's own ``logging.yml`` with the filter added, written once per
Prefect version under ``~/.brenier``. The environment variable reaches the Dask worker processes, which configure
their logging from it when they import Prefect, so their task logs obey the same rule.

:class:`ItemProgress` draws a progress bar over a run's items from the flow's progress artifact updates
(:class:`flows.runtime.artifacts.Progress`), or prints one line per update where the output is not a terminal.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = ["console", "ConsoleFilter", "quiet_console", "ItemProgress"]

console = Console(width=None if Console().is_terminal else 200)
"""The console every command prints to (200 columns where the output is not a terminal, so tables do not wrap)."""

SETTINGS_ENV = "PREFECT_LOGGING_SETTINGS_PATH"


class ConsoleFilter(logging.Filter):
    """Pass WARNING and above, records marked ``console=True``, and Prefect's ``View at`` flow-run line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or getattr(record, "console", False):
            return True
        return record.name.startswith("prefect.flow_runs") and str(record.msg).startswith("View at ")


def _settings_file() -> Path:
    """Prefect's default logging configuration with :class:`ConsoleFilter` on its console handler."""
    from importlib import metadata, util  # locate Prefect's files without importing it (half a second)

    spec = util.find_spec("prefect")
    if spec is None or spec.origin is None:
        raise OSError("prefect is not installed")
    source = Path(spec.origin).parent / "logging" / "logging.yml"
    home = Path(os.environ.get("BRENIER_HOME", Path.home() / ".brenier"))
    target = home / f"logging-prefect-{metadata.version('prefect')}.yml"
    if not target.exists():
        import yaml

        config = yaml.safe_load(source.read_text())
        config.setdefault("filters", {})["brenier_console"] = {"()": f"{__name__}.ConsoleFilter"}
        config["handlers"]["console"]["filters"] = ["brenier_console"]
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(yaml.safe_dump(config, sort_keys=False))
        temporary.replace(target)
    return target


def quiet_console() -> None:
    """Console output of this process and of the Dask workers it starts: progress and warnings only.

    Respects a ``PREFECT_LOGGING_SETTINGS_PATH`` the user set. Dask's ``distributed`` loggers go to WARNING
    (``DASK_LOGGING__DISTRIBUTED``, read by worker processes at start).
    """
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if SETTINGS_ENV in os.environ:
        return
    try:
        os.environ[SETTINGS_ENV] = str(_settings_file())  # read by worker processes when they import Prefect
    except (OSError, KeyError, TypeError) as error:  # an unwritable home, another logging.yml layout
        logging.getLogger(__name__).debug("console stays verbose: %s", error)
        return
    if "prefect" not in sys.modules:  # Prefect reads the settings file when this process imports it
        return
    # this process configured its logging when it imported Prefect: filter its console handlers in place
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(isinstance(f, ConsoleFilter)
                                                                   for f in handler.filters):
            handler.addFilter(ConsoleFilter())


class ItemProgress:
    """A progress bar over a run's items, driven by :class:`flows.runtime.artifacts.Progress` updates.

    Use as a context manager around the flow call; on a terminal it draws a rich bar (items done / total,
    elapsed, remaining) and prints each finished item above it; elsewhere it prints ``[k/total] description:
    item`` per finished item (``[done/total] description`` when the item ids are not known).
    """

    def __init__(self, console: Any) -> None:
        self.console = console
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._counts: dict[str, int] = {}

    def __enter__(self) -> ItemProgress:
        from flows.runtime.artifacts import Progress

        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=self.console, transient=False)
            self._bar.start()
        Progress.listeners.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        from flows.runtime.artifacts import Progress

        if self in Progress.listeners:
            Progress.listeners.remove(self)
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, description: str, done: int, total: int, items: list[str]) -> None:
        """One update of a flow's progress: ``done`` of ``total`` items of the run ``description``, ``items``
        finished since the last update."""
        out = self._bar.console if self._bar is not None else self.console
        count = self._counts.get(description, 0)
        for item in items:
            count += 1
            out.print(f"[{min(count, total)}/{total}] {description}: {item}", markup=False, highlight=False)
        if not items and done != count and done:
            out.print(f"[{done}/{total}] {description}", markup=False, highlight=False)
        self._counts[description] = max(count, done)
        if self._bar is not None:
            if description not in self._tasks:
                self._tasks[description] = self._bar.add_task(description, total=total)
            self._bar.update(self._tasks[description], completed=done, total=total)
