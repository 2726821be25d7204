"""``brenier server start|stop|status``: a persistent local Prefect server whose UI keeps every run's history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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

server_app = typer.Typer(
    help="A persistent local Prefect server (UI + API, SQLite under PREFECT_HOME) that brenier commands report to.",
    no_args_is_help=True,
)

HomeOption = Annotated[
    Path | None,
    typer.Option("--prefect-home", envvar="BRENIER_PREFECT_HOME",
                 help="PREFECT_HOME of the server (default ~/.brenier/prefect)"),
]


@server_app.command("start")
def start(
    prefect_home_: HomeOption = None,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port of the UI and API")] = DEFAULT_PERSISTENT_PORT,
) -> None:
    """Start the server in the background; later brenier commands (without PREFECT_API_URL) report to it."""
    try:
        state = start_persistent_server(prefect_home_, host, port)
    except PrefectServerError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from error
    typer.echo(f"Prefect UI: {state['url']}  (pid {state['pid']}, PREFECT_HOME {prefect_home(prefect_home_)})")
    typer.echo(f"other programs: export PREFECT_API_URL={state['api_url']}")


@server_app.command("stop")
def stop(prefect_home_: HomeOption = None) -> None:
    """Stop the background server and all its processes."""
    state = stop_persistent_server(prefect_home_)
    typer.echo(f"stopped the server at {state['url']} (pid {state['pid']})" if state else "no brenier server running")


@server_app.command("status")
def status(prefect_home_: HomeOption = None) -> None:
    """Print the background server's address and health; exit code 1 if none runs."""
    state = persistent_server(prefect_home_)
    if state is None:
        typer.echo(f"no brenier server running for PREFECT_HOME {prefect_home(prefect_home_)}")
        raise typer.Exit(1)
    health = "healthy" if is_healthy(state["api_url"]) else "NOT answering /api/health"
    typer.echo(f"Prefect UI: {state['url']}  pid {state['pid']}  {health}")
