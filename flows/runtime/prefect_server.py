"""The Prefect API a ``brenier`` command reports to, and the local Prefect server brenier manages.

Order of choice (:func:`prefect_api`):

1. ``PREFECT_API_URL`` is set (environment or active Prefect profile): that server is used as it is.
2. A persistent local server started by ``brenier server start`` is running for this ``PREFECT_HOME``: it is used
   and left running (the UI at its address keeps every run's history).
3. Otherwise a server is started for this command only: ``prefect server start --host 127.0.0.1 --port <free>``
   with its SQLite database under the brenier ``PREFECT_HOME``; it is stopped with all its children when the
   command ends, also on an exception, Ctrl-C (SIGINT) or SIGTERM, and it receives SIGTERM if the command is
   killed outright (Linux ``PR_SET_PDEATHSIG``).

The database is persistent in both local cases, so the history of every run shows in the UI the next time a
server runs on the same ``PREFECT_HOME`` (``brenier server start``).

``PREFECT_HOME`` of the managed servers: ``--prefect-home`` / ``BRENIER_PREFECT_HOME``, else ``PREFECT_HOME`` if
set, else ``~/.brenier/prefect``. The chosen API URL is exported to ``os.environ`` (inherited by Dask worker processes
and any subprocess) and to Prefect's settings of this process, and both are restored afterwards.

Without a real server every Dask worker *process* would start its own temporary API server (4-5x slower, SQLite
locks, stray processes; docs/architecture.md), which is why this module exists.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

__all__ = [
    "DEFAULT_HOME",
    "DEFAULT_PERSISTENT_PORT",
    "LocalServer",
    "PrefectServerError",
    "configured_api_url",
    "free_port",
    "persistent_server",
    "prefect_api",
    "prefect_home",
    "start_persistent_server",
    "start_server",
    "stop_persistent_server",
    "stop_process_tree",
]

DEFAULT_HOME = Path("~/.brenier/prefect")
DEFAULT_PERSISTENT_PORT = 4200
STATE_FILE = "brenier-server.json"  # under PREFECT_HOME: {"pid", "url", "port", "host"} of `brenier server start`
LOG_FILE = "server.log"
STARTUP_TIMEOUT_S = 180.0  # a fresh database runs all migrations first: 10-35 s measured on a loaded 2-core machine
STARTUP_TIMEOUT_ENV = "BRENIER_SERVER_STARTUP_TIMEOUT"  # seconds; overrides STARTUP_TIMEOUT_S (a busy lab server)


class PrefectServerError(RuntimeError):
    """A local Prefect server did not start, did not answer ``/api/health``, or could not be stopped."""


def prefect_home(home: str | os.PathLike | None = None) -> Path:
    """The ``PREFECT_HOME`` of managed servers: ``home``, else ``$BRENIER_PREFECT_HOME``, else an explicitly set
    ``$PREFECT_HOME``, else ``~/.brenier/prefect``.

    The folder is created. Its ``prefect.db`` is the servers' SQLite database, ``server.log`` their output.
    """
    chosen = home or os.environ.get("BRENIER_PREFECT_HOME") or os.environ.get("PREFECT_HOME") or DEFAULT_HOME
    path = Path(chosen).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def configured_api_url() -> str | None:
    """``PREFECT_API_URL`` from the environment or the active Prefect profile, or None."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True if ``GET <api_url>/health`` answers 200 (``api_url`` ends with ``/api``)."""
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def stop_process_tree(pid: int, timeout: float = 15.0) -> list[int]:
    """SIGTERM ``pid``, its process group and all its descendants; SIGKILL what is left after ``timeout`` s.

    Returns the pids that were signalled. A pid that no longer exists is not an error.
    """
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    procs = [root, *root.children(recursive=True)]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:  # its own group (start_new_session): signal every member at once
            os.killpg(pid, signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in procs]


def _die_with_parent() -> None:  # preexec_fn: SIGTERM the server when the process that started it dies
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class LocalServer:
    """A ``prefect server start`` process on ``host:port`` (its own process group)."""

    process: subprocess.Popen
    host: str
    port: int
    home: Path

    @property
    def url(self) -> str:
        """The UI's address, e.g. ``http://127.0.0.1:4200``."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The value for ``PREFECT_API_URL``, e.g. ``http://127.0.0.1:4200/api``."""
        return f"{self.url}/api"

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server and all its children (SIGTERM, then SIGKILL after ``timeout`` s)."""
        stop_process_tree(self.process.pid, timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


def _server_env(home: Path, host: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="true",
        # the UI's browser code calls this API (its default is port 4200, whatever port the server listens on)
        PREFECT_SERVER_API_HOST=host, PREFECT_SERVER_API_PORT=str(port), PREFECT_UI_API_URL=f"http://{host}:{port}/api",
    )
    return env


def start_server(
    home: str | os.PathLike | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    persistent: bool = False,
    timeout: float | None = None,
) -> LocalServer:
    """Start ``prefect server start --host HOST --port PORT`` under ``PREFECT_HOME`` and wait for its health check.

    Args:
        home: ``PREFECT_HOME`` of the server (see :func:`prefect_home`); its SQLite DB is ``<home>/prefect.db``.
        host: interface to listen on; keep ``127.0.0.1`` unless the UI must be reachable from other machines.
        port: TCP port (default: a free one).
        persistent: if False the server gets SIGTERM when this process dies (Linux); if True it outlives it.
        timeout: seconds to wait for ``/api/health`` (a fresh DB is migrated first); default
            ``BRENIER_SERVER_STARTUP_TIMEOUT`` or 180.

    Raises:
        PrefectServerError: the server exited or was not healthy within ``timeout``; the message holds the tail
            of ``<home>/server.log``. The process is stopped before raising.
    """
    home = prefect_home(home)
    port = port or free_port(host)
    log = home / LOG_FILE
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect) if prefect.exists() else "prefect", "server", "start", "--host", host, "--port", str(port)]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, env=_server_env(home, host, port), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=None if persistent else _die_with_parent,
        )
    server = LocalServer(process, host, port, home)
    timeout = timeout or float(os.environ.get(STARTUP_TIMEOUT_ENV, STARTUP_TIMEOUT_S))
    deadline = time.monotonic() + timeout
    try:
        while not is_healthy(server.api_url):
            if process.poll() is not None:
                raise PrefectServerError(
                    f"prefect server on {host}:{port} exited with code {process.returncode}; "
                    f"end of {log}:\n{_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise PrefectServerError(
                    f"prefect server on {host}:{port} not healthy after {timeout:.0f} s; end of {log}:\n{_tail(log)}"
                )
            time.sleep(0.25)
    except BaseException:
        server.stop()
        raise
    return server


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def persistent_server(home: str | os.PathLike | None = None) -> dict | None:
    """The state ``{"pid", "url", "api_url", "port", "host"}`` of a running ``brenier server start``, or None.

    A state file whose process is gone or no longer a Prefect server is removed.
    """
    state_file = prefect_home(home) / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
        proc = psutil.Process(state["pid"])
        alive = proc.is_running() and "server" in proc.cmdline() and proc.status() != psutil.STATUS_ZOMBIE
    except (OSError, ValueError, KeyError, psutil.Error):
        alive, state = False, None
    if not alive:
        state_file.unlink(missing_ok=True)
        return None
    return state


def start_persistent_server(
    home: str | os.PathLike | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PERSISTENT_PORT
) -> dict:
    """Start a server that outlives this process (``brenier server start``); record it in
    ``<home>/brenier-server.json``.

    Returns its state (see :func:`persistent_server`); an already running one is returned as it is.

    Raises:
        PrefectServerError: it did not start, or ``port`` is taken by another program.
    """
    running = persistent_server(home)
    if running:
        return running
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if s.connect_ex((host, port)) == 0:
            raise PrefectServerError(f"port {port} on {host} is in use; choose another with --port")
    server = start_server(home, host, port, persistent=True)
    state = {"pid": server.process.pid, "url": server.url, "api_url": server.api_url, "host": host, "port": port}
    (server.home / STATE_FILE).write_text(json.dumps(state))
    return state


def stop_persistent_server(home: str | os.PathLike | None = None) -> dict | None:
    """Stop the server of ``brenier server start`` and all its children; returns its state, or None if none ran."""
    state = persistent_server(home)
    if state is None:
        return None
    stop_process_tree(state["pid"])
    (prefect_home(home) / STATE_FILE).unlink(missing_ok=True)
    return state


@contextlib.contextmanager
def _exported(api_url: str) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` so ``finally`` blocks (stopping the server) run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def prefect_api(home: str | os.PathLike | None = None, announce=None) -> Iterator[str]:
    """Context in which Prefect reports to a real API server; yields its ``PREFECT_API_URL``.

    Args:
        home: ``PREFECT_HOME`` of a managed server (see :func:`prefect_home`); unused with ``PREFECT_API_URL``.
        announce: optional ``callable(str)`` told which server is used (e.g. a console's print).

    Raises:
        PrefectServerError: a server had to be started and did not become healthy.
    """
    say = announce or (lambda message: None)
    url = configured_api_url()
    if url:
        say(f"Prefect API: {url} (PREFECT_API_URL)")
        with _exported(url):
            yield url
        return
    state = persistent_server(home)
    if state:
        say(f"Prefect UI: {state['url']} (brenier server, pid {state['pid']})")
        with _exported(state["api_url"]):
            yield state["api_url"]
        return
    with _sigterm_raises():
        server = start_server(home)
        try:
            say(f"Prefect UI: {server.url} (started for this command, stopped at its end; "
                f"`brenier server start` keeps one running; history in {server.home})")
            with _exported(server.api_url):
                yield server.api_url
        finally:
            _drain_prefect_workers()
            server.stop()


def _drain_prefect_workers(timeout: float = 10.0) -> None:
    """Send the logs and events still queued in this process before the server they go to stops."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=timeout)
