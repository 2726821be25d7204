"""``brenier server start|stop|status``: a persistent local Prefect server whose UI keeps every run's history."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter

from flows.runtime.prefect_server import (
    DEFAULT_PERSISTENT_PORT,
    PrefectServerError,
    is_healthy,
    persistent_server,
    prefect_home,
    start_persistent_server,
    stop_persistent_server,
)

__all__ = ["server_app"]

server_app = App(
    name="server",
    help="A persistent local Prefect server (UI + API, SQLite under PREFECT_HOME) that brenier commands report to.",
)

HomeOption = Annotated[
    Path | None,
    Parameter(name="--prefect-home", env_var="BRENIER_PREFECT_HOME",
              help="PREFECT_HOME of the server (default ~/.brenier/prefect)"),
]


@server_app.command
def start(
    *,
    home: HomeOption = None,
    host: Annotated[str, Parameter(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, Parameter(help="TCP port of the UI and API")] = DEFAULT_PERSISTENT_PORT,
) -> None:
    """Start the server in the background; later brenier commands (without PREFECT_API_URL) report to it."""
    try:
        state = start_persistent_server(home, host, port)
    except PrefectServerError as error:
        print(str(error), file=sys.stderr)
        sys.exit(1)
    print(f"Prefect UI: {state['url']}  (pid {state['pid']}, PREFECT_HOME {prefect_home(home)})")
    print(f"other programs: export PREFECT_API_URL={state['api_url']}")


@server_app.command
def stop(*, home: HomeOption = None) -> None:
    """Stop the background server and all its processes."""
    state = stop_persistent_server(home)
    print(f"stopped the server at {state['url']} (pid {state['pid']})" if state else "no brenier server running")


@server_app.command
def status(*, home: HomeOption = None) -> None:
    """Print the background server's address and health; exit code 1 if none runs."""
    state = persistent_server(home)
    if state is None:
        print(f"no brenier server running for PREFECT_HOME {prefect_home(home)}")
        sys.exit(1)
    health = "healthy" if is_healthy(state["api_url"]) else "NOT answering /api/health"
    print(f"Prefect UI: {state['url']}  pid {state['pid']}  {health}")
