"""The ``brenier`` command line, built with cyclopts from the pydantic config models.

Every pipeline option is a field of its config model (``tasks/*.py``): its name, default and help text are declared
there once, and a command takes the model whole (``Parameter(name="*")`` flattens its fields into options). The
options every flow command shares are the fields of :class:`RunOptions`.

Exit codes of the flow commands (:func:`exit_code`): 0 every item succeeded (or was finished earlier); 3 some
items failed (their failure rows say why); 1 every item failed, or the run itself failed; 2 a usage error. A run
that finished prints its summary and exits with its code whatever the teardown of the Dask cluster or the Prefect
server does (:class:`flows.runtime.task_runner.BoundedDaskTaskRunner`, :func:`main`).
"""

from __future__ import annotations

import glob
import os
import sys
import threading
from pathlib import Path
from typing import Annotated

from cyclopts import App, CycloptsError, Parameter
from pydantic import BaseModel, Field

from flows.runtime.console import ItemProgress, console, quiet_console
from flows.runtime.server_cli import server_app
from tasks.errors import DatasetNotFoundError

__all__ = ["app", "main", "RunOptions", "Flat", "UsageError", "preflight", "exit_code", "result_code", "EXIT_OK",
           "EXIT_FAILED", "EXIT_USAGE", "EXIT_SOME_FAILED", "EXIT_GRACE_ENV"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SOME_FAILED = 3

EXIT_GRACE_ENV = "BRENIER_EXIT_GRACE"
"""Environment variable: seconds the process may spend in teardown after its command finished (default 60)."""

app = App(name="brenier", help="Optimal-transport geometry processing over whole 3D datasets.",
          print_error=False, exit_on_error=False)  # main() prints errors as one line, exit code 2
app.command(server_app, name="server")
# The flow commands live in flows/runtime/commands.py and are imported when one runs (or shows its --help), so
# `brenier --help` imports no flow, Prefect, torch or pandas.
COMMANDS = {
    "geometry-images": ("geometry_images_command", "OT-parameterize every mesh, store geometry-image mipmaps in "
                        "Zarr and their fidelity in Parquet."),
    "train-restoration": ("train_restoration_command", "Train the geometry-image restoration network (use it with "
                          "`geometry-images --restoration MODEL`)."),
    "autodecoder": ("autodecoder_command", "Train NeuralQAAD autodecoders on shape collections: one network + one "
                    "code per shape, EM-kD per shape."),
    "encode": ("encode_command", "Fit latent codes of new shapes with a trained decoder (frozen) and measure their "
               "reconstruction."),
    "reduce-gaussians": ("reduce_gaussians_command", "Reduce 3DGS scenes with GHAP and pruning baselines; psnr/ssim "
                         "of renders against the original."),
    "geometry-image-sequence": ("geometry_image_sequence_command", "Geometry images of every frame of a sequence: "
                                "one cut and map, one warm-started OT solve per frame."),
    "align-embeddings": ("align_embeddings_command", "HOTS3D spherical OT between embedding distributions: trained "
                         "map + mapped vectors (Zarr), distances (Parquet)."),
}
for _name, (_function, _help) in COMMANDS.items():
    app.command(f"flows.runtime.commands:{_function}", name=_name, help=_help)

Flat = Parameter(name="*")
"""A config model's fields as top-level options (``--resolution``, not ``--config.resolution``)."""


class RunOptions(BaseModel):
    """Where a flow command writes and runs: options shared by every flow command."""

    store: str = Field("runs", description="root of the Zarr store and Parquet tables (local path or fsspec URL)")
    workers: int | None = Field(None, ge=1, description="LocalCluster workers (default: one per core)")
    dask_address: str | None = Field(None, description="tcp://host:port of an existing Dask scheduler")
    run_id: str | None = Field(None, description="default: derived from the config (re-runs resume or skip "
                               "finished items)")

    def root(self) -> str:
        """The store as an absolute local path (URLs as given), so the Dask workers resolve it alike."""
        return self.store if "://" in self.store else str(Path(self.store).resolve())

    def flow(self, flow):
        """``flow`` on the Dask task runner these options describe, with a progress bar over its items."""
        from flows.runtime.task_runner import make_task_runner

        configured = flow.with_options(task_runner=make_task_runner(self.workers, self.dask_address))

        def run(*args, **kwargs):
            console.print(f"store: {self.root()}", markup=False, highlight=False, soft_wrap=True)
            with ItemProgress(console):
                return configured(*args, **kwargs)

        return run


@app.meta.default
def launcher(
    *tokens: Annotated[str, Parameter(show=False, allow_leading_hyphen=True)],
    prefect_home: Annotated[Path | None, Parameter(env_var="BRENIER_PREFECT_HOME")] = None,
    debug: bool = False,
    verbose: bool = False,
) -> None:
    """brenier: Prefect flows of OT geometry processing on Dask.

    Flow commands report to the Prefect server at PREFECT_API_URL, else to a running `brenier server start`,
    else to a local server started for the command and stopped at its end (flows/runtime/prefect_server.py).

    Parameters
    ----------
    prefect_home
        PREFECT_HOME (SQLite DB) of the local Prefect server brenier starts (default ~/.brenier/prefect).
    debug
        Print the full traceback of an error (by default: one line, and the traceback's file for a failed run).
    verbose
        Print every log line of Prefect, Dask and the tasks (by default: progress, warnings and results only; the
        Prefect UI has every line either way).
    """
    global _debug
    _debug = debug
    if not verbose:
        quiet_console()
    if prefect_home is not None:
        os.environ["BRENIER_PREFECT_HOME"] = str(prefect_home)  # read by flows.runtime.prefect_server.prefect_home
    return app(tokens)


class UsageError(Exception):
    """A command line that cannot run; the message names what is wrong and with which item, and the fix."""


USAGE_ERRORS: tuple[type[BaseException], ...] = (UsageError, DatasetNotFoundError, CycloptsError)
"""Errors printed as one ``error: ...`` line with exit code 2, before any server or cluster starts."""

_debug = False  # --debug: print tracebacks (set by the launcher)


def preflight(path: str, kind: str, run: RunOptions) -> None:
    """Check the dataset and the store before a Prefect server or a Dask cluster starts.

    A local path that does not exist and a glob that matches nothing are refused at once; then the dataset is
    listed as the flow will list it (:func:`tasks.dataset.list_items`), which refuses a location with no item of
    ``kind``.

    Raises:
        UsageError: the store is an existing file, or the location cannot be listed (an unknown fsspec protocol,
            missing credentials). storage.errors.DatasetNotFoundError: nothing of ``kind`` at ``path``.
    """
    store = run.store
    if "://" not in store and Path(store).exists() and not Path(store).is_dir():
        raise UsageError(f"the store is a file, not a folder ({store}): give --store a folder")
    if "://" not in path:
        if glob.has_magic(path) and not glob.glob(path):
            raise DatasetNotFoundError(f"dataset location {path!r} matches no file")
        if not glob.has_magic(path) and not os.path.lexists(path):
            raise DatasetNotFoundError(f"dataset location {path!r} does not exist")
    from tasks.dataset import list_items

    try:
        list_items(path, kind)
    except DatasetNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - an unknown protocol, missing credentials, an unreachable host
        raise UsageError(f"cannot list dataset location {path!r}: {type(error).__name__}: {error}") from error


def exit_code(items: int, failed: int) -> int:
    """The command's exit code for a run of ``items`` items of which ``failed`` have failure rows.

    0 when none failed (a run of no items included), 3 when some failed, 1 when all of them failed.
    """
    if failed and failed >= items:
        return EXIT_FAILED
    return EXIT_SOME_FAILED if failed else EXIT_OK


def result_code(result: dict) -> int:
    """The exit code of a finished run's result dict (:func:`exit_code`; the sequence job counts frames)."""
    if "failed_frames" in result:  # the sequence job: frames solved and frames failed
        return exit_code(result["frames"] + result["failed_frames"], result["failed_frames"])
    return exit_code(result["items"], len(result["failed_items"]))


def main() -> None:
    """The ``brenier`` console script: runs the command, then exits with its code within a bounded teardown.

    Interpreter shutdown runs atexit hooks and joins threads of Dask and Prefect that can hang or raise on a
    loaded machine after the command has printed its result. A daemon timer ends the process with the command's
    own code if shutdown takes longer than ``BRENIER_EXIT_GRACE`` seconds (default 60).
    """
    try:
        app.meta()
        code = EXIT_OK
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (EXIT_OK if exit_.code is None else EXIT_FAILED)
    except KeyboardInterrupt:
        code = 130
    except USAGE_ERRORS as error:
        _print_error(error)
        code = EXIT_USAGE
    except Exception as error:  # noqa: BLE001 - the run itself failed: one line, the traceback in a file
        _print_error(error, _traceback_file(error))
        code = EXIT_FAILED
    sys.stdout.flush()
    sys.stderr.flush()
    grace = float(os.environ.get(EXIT_GRACE_ENV, "60"))
    _exit_timer(grace, code)
    sys.exit(code)


def _print_error(error: BaseException, log: Path | None = None) -> None:
    """One line ``error: <message>`` (two with the traceback's file); the whole traceback only with --debug."""
    if _debug and sys.exc_info()[0] is not None:
        console.print_exception()
    message = _validation_message(error) or " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, USAGE_ERRORS):
        message = f"{type(error).__name__}: {message}"
    console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    if log is not None and not _debug:
        console.print(f"traceback: {log} (or run with --debug)", markup=False, highlight=False, soft_wrap=True)


def _validation_message(error: BaseException) -> str | None:
    """``--option: what is wrong (got value)`` for an option value its config model refused, else None."""
    from pydantic import ValidationError

    cause = error.__cause__ or error.__context__
    if not isinstance(cause, ValidationError):
        return None
    return "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']} (got {e['input']!r})"
                     if e["loc"] else f"{e['msg']}" for e in cause.errors())


def _traceback_file(error: BaseException) -> Path | None:
    """Write the traceback of ``error`` to a temporary log file; its path (None if it cannot be written)."""
    import tempfile
    import traceback

    try:
        with tempfile.NamedTemporaryFile("w", prefix="brenier-error-", suffix=".log", delete=False) as log:
            log.write("".join(traceback.format_exception(error)))
        return Path(log.name)
    except OSError:
        return None


def _exit_timer(grace: float, code: int) -> None:
    timer = threading.Timer(grace, os._exit, (code,))
    timer.daemon = True
    timer.start()


if __name__ == "__main__":
    main()
