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

import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
from cyclopts import App, CycloptsError, Parameter
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from flows.align_embeddings import align_embeddings
from flows.autodecoder import autodecoder, encode_shapes
from flows.gaussian_reduction import DEFAULT_RATIOS, gaussian_reduction, summary_frame
from flows.geometry_image_sequence import geometry_image_sequence, summarize_sequence
from flows.geometry_images import PARAMETERIZATIONS, SUMMARY_TITLES, geometry_images, summarize
from flows.restoration import train_restoration
from flows.runtime.console import ItemProgress, quiet_console
from flows.runtime.prefect_server import prefect_api
from flows.runtime.server_cli import server_app
from flows.runtime.task_runner import make_task_runner
from tasks.align_embeddings import AlignmentConfig
from tasks.autodecoder import VARIANTS, AutodecoderConfig
from tasks.dataset import DatasetNotFoundError, list_items
from tasks.dataset import read_run_table as read_table
from tasks.gaussian_reduction import GaussianReductionConfig
from tasks.geometry_image_sequence import SequenceConfig
from tasks.geometry_images import GeometryImageConfig
from tasks.restoration import TrainRestorationConfig

__all__ = ["app", "main", "RunOptions", "exit_code", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_SOME_FAILED",
           "EXIT_GRACE_ENV"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SOME_FAILED = 3

EXIT_GRACE_ENV = "BRENIER_EXIT_GRACE"
"""Environment variable: seconds the process may spend in teardown after its command finished (default 60)."""

app = App(name="brenier", help="Optimal-transport geometry processing over whole 3D datasets.",
          print_error=False, exit_on_error=False)  # main() prints errors as one line, exit code 2
app.command(server_app, name="server")
console = Console(width=None if Console().is_terminal else 200)

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


def _preflight(path: str, kind: str, run: RunOptions) -> None:
    """Check the dataset and the store before a Prefect server or a Dask cluster starts.

    Raises:
        UsageError: the store is an existing file. storage.errors.DatasetNotFoundError: nothing of ``kind`` at
            ``path`` (a missing path, a glob that matches nothing).
    """
    store = run.store
    if "://" not in store and Path(store).exists() and not Path(store).is_dir():
        raise UsageError(f"the store is a file, not a folder ({store}): give --store a folder")
    list_items(path, kind)


def exit_code(items: int, failed: int) -> int:
    """The command's exit code for a run of ``items`` items of which ``failed`` have failure rows.

    0 when none failed (a run of no items included), 3 when some failed, 1 when all of them failed.
    """
    if failed and failed >= items:
        return EXIT_FAILED
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _result_code(result: dict) -> int:
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


def _summary_table(summary: pd.DataFrame, domain: str = "square") -> Table:
    table = Table(title=f"{SUMMARY_TITLES[domain]} (distances in unit-bbox-diagonal units)")
    initial, ot = PARAMETERIZATIONS[domain]
    short = {"harmonic": "harm", "ot": "OT", "sphere_initial": "sph init", "sphere_ot": "sph OT"}
    columns = [("item_id", "mesh", "{}")]
    columns += [(f"area_distortion_{m}", f"distortion {short[m]}", "{:.3f}") for m in (initial, ot)]
    columns += [
        ("newton_iterations", "Newton it", "{:.0f}"),
        ("mass_error", "mass err", "{:.1e}"),
        ("solve_seconds", "solve s", "{:.1f}"),
    ]
    columns += [(f"{metric}_{m}", f"{label} {short[m]}", "{:.2e}")
                for metric, label in (("chamfer_l2", "CD"), ("hausdorff", "HD")) for m in (initial, ot)]
    columns += [
        ("compression_ratio_finest", "CR finest", "{:.1f}"),
        ("compression_ratio_coarsest", "CR coarsest", "{:.0f}"),
    ]
    present = [c for c in columns if c[0] in summary.columns]
    for _, title, _ in present:
        table.add_column(title, justify="right")
    for _, row in summary.iterrows():
        table.add_row(*("-" if pd.isna(row[key]) else fmt.format(row[key]) for key, _, fmt in present))
    return table


@app.command(name="geometry-images")
def geometry_images_command(
    path: Annotated[str, Parameter(help="folder, glob or fsspec URL of meshes")],
    /,
    *,
    config: Annotated[GeometryImageConfig, Flat] = GeometryImageConfig(),
    run: Annotated[RunOptions, Flat] = RunOptions(),
    batch_size: Annotated[int | None, Parameter(help="meshes per Prefect task (default: from the mesh count and "
                                                     "the workers, 1 to 64)")] = None,
) -> int:
    """OT-parameterize every mesh, store geometry-image mipmaps in Zarr and their fidelity in Parquet."""
    _preflight(path, "meshes", run)
    with prefect_api(announce=console.print):
        result = run.flow(geometry_images)(path, run.root(), config, run.run_id, batch_size)
    rows = read_table(result["tables"]["geometry_images"])
    failures = read_table(result["tables"]["failures"])
    console.print(_summary_table(summarize(rows, result["domain"]), result["domain"]))
    _print_restorations(read_table(result["tables"]["rate_distortion"]))
    _print_failures(failures)
    console.print(f"run [bold]{result['run_id']}[/]: {result['items']} meshes, "
                  f"{result['skipped_items']} skipped as finished")
    console.print(f"Zarr store:  {result['store']}/{result['run_id']}")
    for pyramid in result["pyramids"]:  # the first mesh's: every mesh has the same groups
        console.print(f"pyramid:     {pyramid}")
    _print_tables(result)
    return _result_code(result)


def _print_restorations(rate_distortion: pd.DataFrame) -> None:
    """With --restoration: the OT map's 33² and 65² levels restored bilinearly and by the network, per mesh."""
    if rate_distortion.empty or "neural" not in set(rate_distortion["restore"]):
        return
    stored = rate_distortion[rate_distortion["stored"] & (rate_distortion["parameterization"] == "ot")
                             & rate_distortion["resolution"].isin([33, 65])]
    table = stored.pivot_table(index="item_id", columns=["resolution", "restore"],
                               values=["chamfer_l2", "hausdorff"])
    table.columns = [f"{'CD' if metric == 'chamfer_l2' else 'HD'} {side}² {restore}"
                     for metric, side, restore in table.columns]
    _print_frame("OT map restored from 33² and 65² to 257²: bilinear vs neural (unit bbox diagonal)",
                 table.reset_index().rename(columns={"item_id": "mesh"}))


def _print_frame(title: str, frame: pd.DataFrame) -> None:
    """Print ``frame`` as a rich table, floats to 4 significant digits."""
    table = Table(title=title)
    for name in frame.columns:
        table.add_column(str(name), justify="right")
    for _, row in frame.iterrows():
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


def _print_failures(failures: pd.DataFrame) -> None:
    if failures.empty:
        return
    table = Table(title="failures")
    for column in ("item_id", "stage", "error_type", "message"):
        table.add_column(column)
    for _, f in failures.iterrows():
        table.add_row(f["item_id"], f["stage"], f["error_type"], f["message"])
    console.print(table)


def _print_tables(result: dict) -> None:
    for name, uri in result["tables"].items():
        console.print(f"table {name}: {uri}")


@app.command(name="train-restoration")
def train_restoration_command(
    path: Annotated[str, Parameter(help="folder, glob or fsspec URL of the training meshes")],
    /,
    *,
    config: Annotated[TrainRestorationConfig, Flat] = TrainRestorationConfig(),
    run: Annotated[RunOptions, Flat] = RunOptions(),
) -> int:
    """Train the geometry-image restoration network (use it with `geometry-images --restoration MODEL`)."""
    started = time.perf_counter()
    _preflight(path, "meshes", run)
    with prefect_api(announce=console.print):
        result = run.flow(train_restoration)(path, run.root(), config, run.run_id)
    epochs = read_table(result["tables"]["restoration_epochs"])
    if not epochs.empty:
        _print_frame("restoration training, last epochs (L1 in unit-bbox-diagonal units)",
                     epochs[["epoch", "loss", "position_l1", "bilinear_position_l1", "edge_l1", "surface_l1",
                             "seconds"]].tail(5))
    _print_failures(read_table(result["tables"]["failures"]))
    console.print(f"run [bold]{result['run_id']}[/]: {result['items']} meshes (geometry images in run "
                  f"{result['geometry_run_id']}), {result['skipped_items']} skipped as finished")
    models = read_table(result["tables"]["restoration_models"])
    if not models.empty:
        model = models.iloc[0]
        console.print(f"model: {result['model']} ({model['parameters']:,} parameters, {model['model_bytes']:,} "
                      f"bytes, position L1 {model['final_position_ratio']:.2f} of bilinear's; training "
                      f"{model['train_seconds']:.0f} s on {model['device']})")
    console.print(f"wall time: {time.perf_counter() - started:.0f} s (geometry images and training)")
    _print_tables(result)
    return _result_code(result)


@app.command(name="autodecoder")
def autodecoder_command(
    path: Annotated[str, Parameter(help="collection (.npz/.npy or folder of equal-count shapes) or folder of them")],
    /,
    *,
    variant: Annotated[list[str], Parameter(help=f"repeatable; one of {', '.join(VARIANTS)}")] = ["neuralqaad"],
    config: Annotated[AutodecoderConfig, Flat] = AutodecoderConfig(),
    run: Annotated[RunOptions, Flat] = RunOptions(),
) -> int:
    """Train NeuralQAAD autodecoders on shape collections: one network + one code per shape, EM-kD per shape."""
    _preflight(path, "collections", run)
    with prefect_api(announce=console.print):
        result = run.flow(autodecoder)(path, run.root(), config, variant, run.run_id)
    models = read_table(result["tables"]["autodecoder_models"])
    table = Table(title="autodecoder models (distances in unit-bbox-diagonal units)")
    columns = [("item_id", "{}"), ("shapes", "{}"), ("points", "{}"), ("mean_em_kd", "{:.3e}"),
               ("mean_chamfer_l2", "{:.3e}"), ("compression_ratio", "{:.1f}"), ("train_seconds", "{:.0f}"),
               ("device", "{}")]
    for name, _ in columns:
        table.add_column(name, justify="right")
    for _, row in models.iterrows():
        table.add_row(*(fmt.format(row[name]) for name, fmt in columns))
    console.print(table)
    _print_failures(read_table(result["tables"]["failures"]))
    console.print(f"run [bold]{result['run_id']}[/]: {result['items']} items, "
                  f"{result['skipped_items']} finished earlier")
    console.print(f"Zarr store:  {result['store']}/{result['run_id']}/<collection>--<variant>/"
                  "{latents,decoded,model}")
    _print_tables(result)
    return _result_code(result)


@app.command(name="encode")
def encode_command(
    path: Annotated[str, Parameter(help="new shapes: a collection or a folder of collections")],
    /,
    *,
    model: Annotated[str, Parameter(help="trained item as RUN_ID/ITEM_ID (e.g. autodecoder-1a2b/crane--neuralqaad)")],
    model_store: Annotated[str | None, Parameter(help="store holding the model (default: --store)")] = None,
    chamfer_steps: Annotated[int, Parameter(help="Chamfer steps of the code fit")] = 100,
    qaad_steps: Annotated[int, Parameter(help="QAAD steps of the code fit")] = 300,
    config: Annotated[AutodecoderConfig, Flat] = AutodecoderConfig(),
    run: Annotated[RunOptions, Flat] = RunOptions(),
) -> int:
    """Fit latent codes of new shapes with a trained decoder (frozen) and measure their reconstruction.

    The config must match the model's point source and sampling.
    """
    model_run_id, _, model_item_id = model.partition("/")
    if not model_item_id:
        raise ValueError(f"--model: expected RUN_ID/ITEM_ID, got {model!r}")
    model_root = RunOptions(store=model_store).root() if model_store else None
    _preflight(path, "collections", run)
    with prefect_api(announce=console.print):
        result = run.flow(encode_shapes)(path, run.root(), model_run_id, model_item_id, model_root, config,
                                         chamfer_steps, qaad_steps, run.run_id)
    shapes = read_table(result["tables"]["autodecoder_shapes"])
    if not shapes.empty:
        console.print(shapes[["item_id", "shape_id", "em_kd", "chamfer_l2"]].to_string(index=False))
    _print_failures(read_table(result["tables"]["failures"]))
    _print_tables(result)
    return _result_code(result)


@app.command(name="reduce-gaussians")
def reduce_gaussians_command(
    path: Annotated[str, Parameter(help="a 3DGS .ply scene or a folder of them")],
    /,
    *,
    ratio: Annotated[list[float], Parameter(help="repeatable target fraction of the Gaussians")] = list(
        DEFAULT_RATIOS),
    config: Annotated[GaussianReductionConfig, Flat] = GaussianReductionConfig(),
    run: Annotated[RunOptions, Flat] = RunOptions(),
) -> int:
    """Reduce 3DGS scenes with GHAP and pruning baselines; psnr/ssim of renders against the original.

    ``--cost kl|euclidean`` picks GHAP's cost for method ``ghap``; ``--method ghap-kl --method ghap-euclidean`` runs
    both forms in one run.
    """
    _preflight(path, "scenes", run)
    with prefect_api(announce=console.print):
        result = run.flow(gaussian_reduction)(path, run.root(), ratio, config, run.run_id)
    summary = summary_frame(read_table(result["tables"]["gaussian_reduction"]).to_dict(orient="records"))
    _print_frame("Gaussian reduction: psnr (dB) / ssim of renders against the original scene", summary)
    _print_failures(read_table(result["tables"]["failures"]))
    console.print(f"run [bold]{result['run_id']}[/]: {result['items']} items, "
                  f"{result['skipped_items']} finished earlier")
    console.print(f"reduced scenes: {result['store']}/{result['run_id']}/<scene>--r<ratio>/ply/"
                  "<method>[-finetuned].ply")
    for item_id, uri in sorted(result["previews"].items()):
        console.print(f"side by side {item_id}: {uri}")
    _print_tables(result)
    return _result_code(result)


@app.command(name="geometry-image-sequence")
def geometry_image_sequence_command(
    path: Annotated[str, Parameter(help=".npz/.npy sequence or folder of meshes in correspondence")],
    /,
    *,
    config: Annotated[SequenceConfig, Flat] = SequenceConfig(),
    run: Annotated[RunOptions, Flat] = RunOptions(),
) -> int:
    """Geometry images of every frame of a sequence: one cut and map, one warm-started OT solve per frame."""
    _preflight(path, "collections", run)
    with prefect_api(announce=console.print):
        result = run.flow(geometry_image_sequence)(path, run.root(), config, run.run_id)
    frames_table = read_table(result["tables"]["sequence_frames"])
    summary = summarize_sequence(frames_table, read_table(result["tables"]["sequence_geometry_images"]))
    _print_frame("geometry-image sequence: OT solve per frame", summary)
    _print_failures(read_table(result["tables"]["failures"]))
    console.print(f"run [bold]{result['run_id']}[/]: {result['frames']} frames solved"
                  + (" (finished earlier)" if result["skipped"] else ""))
    _print_tables(result)
    return _result_code(result)


@app.command(name="align-embeddings")
def align_embeddings_command(
    source: Annotated[str, Parameter(help=".npy / .parquet / .zarr of [N, d] vectors to move")],
    /,
    *target: Annotated[str, Parameter(help="one or more sets of [M, d] vectors to align to")],
    config: Annotated[AlignmentConfig, Flat] = AlignmentConfig(),
    run: Annotated[RunOptions, Flat] = RunOptions(),
) -> int:
    """HOTS3D spherical OT between embedding distributions: trained map + mapped vectors (Zarr), distances (Parquet)."""
    if not target:
        raise ValueError("align-embeddings needs at least one TARGET")
    result = run.flow(align_embeddings)(source, list(target), run.root(), config, run.run_id)
    rows = read_table(result["tables"]["embedding_alignment"])
    columns = ["item_id", "dim", "n_source", "n_target", "energy_distance_before", "energy_distance_after",
               "reduction", "mean_angle_deg", "train_seconds", "device"]
    _print_frame("embedding alignment: energy distance between the distributions (unit sphere, chordal)",
                 rows[columns])
    _print_failures(read_table(result["tables"]["failures"]))
    console.print(f"run [bold]{result['run_id']}[/]: mapped vectors and the map in "
                  f"{result['store']}/{result['run_id']}/<source>__<target>/{{mapped,potential,dual}}")
    _print_tables(result)
    return _result_code(result)


if __name__ == "__main__":
    main()
