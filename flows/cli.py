"""The ``brenier`` command line."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from flows.align_embeddings import align_embeddings
from flows.autodecoder import autodecoder, encode_shapes
from flows.gaussian_reduction import DEFAULT_RATIOS, gaussian_reduction, summary_frame
from flows.geometry_image_sequence import geometry_image_sequence, summarize_sequence
from flows.geometry_images import geometry_images, summarize
from flows.prefect_server import prefect_api
from flows.server_cli import server_app
from flows.task_runner import make_task_runner
from storage.tables import read_table
from tasks.align_embeddings import AlignmentConfig
from tasks.autodecoder import VARIANTS, AutodecoderConfig
from tasks.gaussian_reduction import METHODS, GaussianReductionConfig
from tasks.geometry_image_sequence import SequenceConfig
from tasks.geometry_images import GeometryImageConfig

app = typer.Typer(help="Optimal-transport geometry processing over whole 3D datasets.", no_args_is_help=True)
app.add_typer(server_app, name="server")
console = Console(width=None if Console().is_terminal else 200)


@app.callback()
def main(
    prefect_home: Annotated[Path | None, typer.Option(
        envvar="BRENIER_PREFECT_HOME",
        help="PREFECT_HOME (SQLite DB) of the local Prefect server brenier starts (default ~/.brenier/prefect)",
    )] = None,
) -> None:
    """brenier: Prefect flows of OT geometry processing on Dask.

    Flow commands report to the Prefect server at PREFECT_API_URL, else to a running `brenier server start`,
    else to a local server started for the command and stopped at its end (flows/prefect_server.py).
    """
    if prefect_home is not None:
        os.environ["BRENIER_PREFECT_HOME"] = str(prefect_home)  # read by flows.prefect_server.prefect_home


def _reports_to_prefect(command: Callable) -> Callable:
    """Run ``command`` inside :func:`flows.prefect_server.prefect_api` (the server stops when it returns)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        with prefect_api(announce=console.print):
            return command(*args, **kwargs)

    return wrapper


def _summary_table(summary: pd.DataFrame) -> Table:
    table = Table(title="harmonic vs OT, finest level (distances in unit-bbox-diagonal units)")
    columns = [
        ("item_id", "mesh", "{}"),
        ("area_distortion_harmonic", "distortion harm", "{:.3f}"),
        ("area_distortion_ot", "distortion OT", "{:.3f}"),
        ("newton_iterations", "Newton it", "{:.0f}"),
        ("mass_error", "mass err", "{:.1e}"),
        ("solve_seconds", "solve s", "{:.1f}"),
        ("chamfer_l2_harmonic", "CD harm", "{:.2e}"),
        ("chamfer_l2_ot", "CD OT", "{:.2e}"),
        ("hausdorff_harmonic", "HD harm", "{:.2e}"),
        ("hausdorff_ot", "HD OT", "{:.2e}"),
        ("area_distortion_sphere_initial", "distortion sph init", "{:.3f}"),
        ("area_distortion_sphere_ot", "distortion sph OT", "{:.3f}"),
        ("hausdorff_sphere_ot", "HD sph OT", "{:.2e}"),
        ("compression_ratio_finest", "CR 257", "{:.1f}"),
        ("compression_ratio_coarsest", "CR coarsest", "{:.0f}"),
    ]
    present = [c for c in columns if c[0] in summary.columns]
    for _, title, _ in present:
        table.add_column(title, justify="right")
    for _, row in summary.iterrows():
        table.add_row(*("-" if pd.isna(row[key]) else fmt.format(row[key]) for key, _, fmt in present))
    return table


@app.command("geometry-images")
@_reports_to_prefect
def geometry_images_command(
    path: Annotated[str, typer.Argument(help="folder, glob or fsspec URL of meshes")],
    store: Annotated[str, typer.Option(help="root of the Zarr store and Parquet tables")] = "runs",
    resolution: Annotated[int, typer.Option(help="geometry image side (2^n + 1)")] = 257,
    levels: Annotated[int, typer.Option(help="mipmap levels")] = 5,
    feature_weight: Annotated[float, typer.Option(help="lambda: masses * (1 + lambda |H| / mean |H|)")] = 0.0,
    samples: Annotated[int, typer.Option(help="samples per surface for chamfer_l2/hausdorff")] = 50_000,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    bits: Annotated[int, typer.Option(help="quantisation bits per channel (10..16)")] = 14,
    codec: Annotated[str, typer.Option(help="image codec of the stored levels: jpeg2k | jpegxl | png | zstd")] = "jpeg2k",
    codec_quality: Annotated[float | None, typer.Option(
        help="lossy coding: jpeg2k target PSNR in dB, jpegxl quality 0..100 (default: lossless)")] = None,
    rate_distortion: Annotated[list[str] | None, typer.Option(
        help="further codec setting measured per level, e.g. jpeg2k:60 (repeatable)")] = None,
    ot_solver: Annotated[str, typer.Option(help="semi-discrete OT solver: newton | neural (OT-Net)")] = "newton",
    domain: Annotated[str, typer.Option(help="square (cut + OT to [0,1]^2) | sphere (closed genus 0: spherical "
                                             "OT + seamless octahedral image)")] = "square",
    workers: Annotated[int | None, typer.Option(help="LocalCluster workers (default: one per core)")] = None,
    dask_address: Annotated[str | None, typer.Option(help="tcp://host:port of an existing Dask scheduler")] = None,
    run_id: Annotated[str | None, typer.Option(help="default: derived from the config (re-runs skip done meshes)")] = None,
) -> None:
    """OT-parameterize every mesh, store geometry-image mipmaps in Zarr and their fidelity in Parquet."""
    if "://" not in store:
        store = str(Path(store).resolve())
    config = GeometryImageConfig(
        resolution=resolution, levels=levels, feature_weight=feature_weight, samples=samples, seed=seed,
        bits=bits, codec=codec, codec_quality=codec_quality, rate_distortion=rate_distortion or [],
        ot_solver=ot_solver,
        domain=domain,
    )
    runner = make_task_runner(workers, dask_address)
    result = geometry_images.with_options(task_runner=runner)(path, store, config, run_id)
    rows = read_table(result["tables"]["geometry_images"])
    failures = read_table(result["tables"]["failures"])
    console.print(_summary_table(summarize(rows)))
    _print_failures(failures)
    console.print(f"run [bold]{result['run_id']}[/]: {result['items']} meshes, {result['skipped_items']} skipped as finished")
    console.print(f"Zarr store:  {result['store']}/{result['run_id']}/<mesh>/{{harmonic,ot}}/geometry_image")
    for name, uri in result["tables"].items():
        console.print(f"table {name}: {uri}")


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


def _local(store: str) -> str:
    return store if "://" in store else str(Path(store).resolve())


@app.command("autodecoder")
@_reports_to_prefect
def autodecoder_command(
    path: Annotated[str, typer.Argument(help="collection (.npz/.npy or folder of equal-count shapes) or folder of them")],
    store: Annotated[str, typer.Option(help="root of the Zarr store and Parquet tables")] = "runs",
    variant: Annotated[list[str], typer.Option(help=f"repeatable; one of {', '.join(VARIANTS)}")] = ["neuralqaad"],
    point_source: Annotated[str, typer.Option(help="'vertices' or 'surface' (area-uniform samples)")] = "vertices",
    samples: Annotated[int, typer.Option(help="surface samples per shape")] = 65_536,
    latent_size: Annotated[int, typer.Option(help="latent code length")] = 64,
    patches: Annotated[int, typer.Option(help="patches K (power of two)")] = 64,
    points_per_shape: Annotated[int, typer.Option(help="points per shape per step")] = 2048,
    shapes_per_step: Annotated[int, typer.Option(help="shapes per step")] = 8,
    chamfer_epochs: Annotated[int, typer.Option(help="augmented-Chamfer warm-up epochs")] = 20,
    qaad_epochs: Annotated[int, typer.Option(help="QAAD epochs after the warm-up")] = 80,
    learning_rate: Annotated[float, typer.Option(help="Adam step of the network")] = 1e-3,
    leaf_size: Annotated[int, typer.Option(help="k-d leaf size of QAAD_GREEDY and EM-kD")] = 1024,
    seed: Annotated[int, typer.Option(help="seed of initialisation and sampling")] = 0,
    device: Annotated[str, typer.Option(help="'auto' uses CUDA where the worker has it")] = "auto",
    checkpoint_every: Annotated[int, typer.Option(help="steps between checkpoints")] = 50,
    workers: Annotated[int | None, typer.Option(help="LocalCluster workers (default: one per core)")] = None,
    dask_address: Annotated[str | None, typer.Option(help="tcp://host:port of an existing Dask scheduler")] = None,
    run_id: Annotated[str | None, typer.Option(help="default: derived from the config (re-runs resume or skip)")] = None,
) -> None:
    """Train NeuralQAAD autodecoders on shape collections: one network + one code per shape, EM-kD per shape."""
    config = AutodecoderConfig(
        point_source=point_source, samples=samples, latent_size=latent_size, patches=patches,
        points_per_shape=points_per_shape, shapes_per_step=shapes_per_step, chamfer_epochs=chamfer_epochs,
        qaad_epochs=qaad_epochs, learning_rate=learning_rate, leaf_size=leaf_size, seed=seed, device=device,
        checkpoint_every=checkpoint_every,
    )
    store = _local(store)
    runner = make_task_runner(workers, dask_address)
    result = autodecoder.with_options(task_runner=runner)(path, store, config, variant, run_id)
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
    console.print(f"run [bold]{result['run_id']}[/]: {result['items']} items, {result['skipped_items']} finished earlier")
    console.print(f"Zarr store:  {result['store']}/{result['run_id']}/<collection>--<variant>/{{latents,decoded,model}}")
    for name, uri in result["tables"].items():
        console.print(f"table {name}: {uri}")


@app.command("encode")
@_reports_to_prefect
def encode_command(
    path: Annotated[str, typer.Argument(help="new shapes: a collection or a folder of collections")],
    model: Annotated[str, typer.Option(help="trained item as RUN_ID/ITEM_ID (e.g. autodecoder-1a2b/crane--neuralqaad)")],
    store: Annotated[str, typer.Option(help="root of the store to write to")] = "runs",
    model_store: Annotated[str | None, typer.Option(help="store holding the model (default: --store)")] = None,
    point_source: Annotated[str, typer.Option(help="as the model was trained: 'vertices' or 'surface'")] = "vertices",
    samples: Annotated[int, typer.Option(help="surface samples per shape")] = 65_536,
    chamfer_steps: Annotated[int, typer.Option(help="Chamfer steps of the code fit")] = 100,
    qaad_steps: Annotated[int, typer.Option(help="QAAD steps of the code fit")] = 300,
    device: Annotated[str, typer.Option(help="'auto' uses CUDA where the worker has it")] = "auto",
    workers: Annotated[int | None, typer.Option(help="LocalCluster workers")] = None,
    dask_address: Annotated[str | None, typer.Option(help="tcp://host:port of an existing Dask scheduler")] = None,
) -> None:
    """Fit latent codes of new shapes with a trained decoder (frozen) and measure their reconstruction."""
    model_run_id, _, model_item_id = model.partition("/")
    if not model_item_id:
        raise typer.BadParameter("expected RUN_ID/ITEM_ID", param_hint="--model")
    config = AutodecoderConfig(point_source=point_source, samples=samples, device=device)
    store = _local(store)
    runner = make_task_runner(workers, dask_address)
    result = encode_shapes.with_options(task_runner=runner)(
        path, store, model_run_id, model_item_id, _local(model_store) if model_store else None, config,
        chamfer_steps, qaad_steps,
    )
    shapes = read_table(result["tables"]["autodecoder_shapes"])
    if not shapes.empty:
        console.print(shapes[["item_id", "shape_id", "em_kd", "chamfer_l2"]].to_string(index=False))
    _print_failures(read_table(result["tables"]["failures"]))
    for name, uri in result["tables"].items():
        console.print(f"table {name}: {uri}")


@app.command("reduce-gaussians")
@_reports_to_prefect
def reduce_gaussians_command(
    path: Annotated[str, typer.Argument(help="a 3DGS .ply scene or a folder of them")],
    store: Annotated[str, typer.Option(help="root of the Zarr store, reduced PLYs and Parquet tables")] = "runs",
    ratio: Annotated[list[float], typer.Option(help="repeatable target fraction of the Gaussians")] = list(DEFAULT_RATIOS),
    method: Annotated[list[str], typer.Option(help=f"repeatable; some of {', '.join(METHODS)}")] = list(METHODS),
    pen_size: Annotated[int, typer.Option(help="GHAP: Gaussians per k-d pen (at most)")] = 1024,
    iterations: Annotated[int, typer.Option(help="GHAP: assignment/update rounds")] = 10,
    appearance: Annotated[str, typer.Option(help="GHAP colours: 'weighted' average of members or 'nearest'")] = "weighted",
    resolution: Annotated[int, typer.Option(help="render width = height (pixels)")] = 128,
    views: Annotated[int, typer.Option(help="held-out orbit views for psnr/ssim")] = 8,
    train_views: Annotated[int, typer.Option(help="orbit views of the fine-tuning targets")] = 16,
    finetune_steps: Annotated[int, typer.Option(help="appearance fine-tuning steps (0: none)")] = 200,
    seed: Annotated[int, typer.Option(help="seed of the random baseline and fine-tuning")] = 0,
    device: Annotated[str, typer.Option(help="'auto' uses CUDA where the worker has it")] = "auto",
    workers: Annotated[int | None, typer.Option(help="LocalCluster workers (default: one per core)")] = None,
    dask_address: Annotated[str | None, typer.Option(help="tcp://host:port of an existing Dask scheduler")] = None,
    run_id: Annotated[str | None, typer.Option(help="default: derived from the config (re-runs skip)")] = None,
) -> None:
    """Reduce 3DGS scenes with GHAP and pruning baselines; psnr/ssim of renders against the original."""
    config = GaussianReductionConfig(
        methods=method, pen_size=pen_size, max_iterations=iterations, appearance=appearance, resolution=resolution,
        views=views, train_views=train_views, finetune_steps=finetune_steps, seed=seed, device=device,
    )
    store = _local(store)
    runner = make_task_runner(workers, dask_address)
    result = gaussian_reduction.with_options(task_runner=runner)(path, store, ratio, config, run_id)
    summary = summary_frame(read_table(result["tables"]["gaussian_reduction"]).to_dict(orient="records"))
    _print_frame("Gaussian reduction: psnr (dB) / ssim of renders against the original scene", summary)
    _print_failures(read_table(result["tables"]["failures"]))
    console.print(f"run [bold]{result['run_id']}[/]: {result['items']} items, {result['skipped_items']} finished earlier")
    console.print(f"reduced scenes: {result['store']}/{result['run_id']}/<scene>--r<ratio>/ply/<method>[-finetuned].ply")
    for item_id, uri in sorted(result["previews"].items()):
        console.print(f"side by side {item_id}: {uri}")
    for name, uri in result["tables"].items():
        console.print(f"table {name}: {uri}")


@app.command("geometry-image-sequence")
@_reports_to_prefect
def geometry_image_sequence_command(
    path: Annotated[str, typer.Argument(help=".npz/.npy sequence or folder of meshes in correspondence")],
    store: Annotated[str, typer.Option(help="root of the Zarr store and Parquet tables")] = "runs",
    ot_solver: Annotated[str, typer.Option(help="neural (OT-Net, reused frame to frame) | newton")] = "neural",
    warm_start: Annotated[bool, typer.Option(help="start each frame from the previous frame's solution")] = True,
    frames: Annotated[int | None, typer.Option(help="only the first N frames")] = None,
    cut_paths: Annotated[int, typer.Option(help="most cut-augmentation paths through appendages")] = 8,
    tol: Annotated[float, typer.Option(help="max relative cell-mass error of every frame's solve")] = 1e-6,
    resolution: Annotated[int, typer.Option(help="geometry image side (2^n + 1)")] = 257,
    levels: Annotated[int, typer.Option(help="mipmap levels")] = 5,
    samples: Annotated[int, typer.Option(help="samples per surface for chamfer_l2/hausdorff")] = 20_000,
    frames_per_task: Annotated[int, typer.Option(help="frames encoded per Prefect task")] = 16,
    seed: Annotated[int, typer.Option(help="sampling and network seed")] = 0,
    device: Annotated[str, typer.Option(help="'auto' uses CUDA where the worker has it")] = "auto",
    workers: Annotated[int | None, typer.Option(help="LocalCluster workers (default: one per core)")] = None,
    dask_address: Annotated[str | None, typer.Option(help="tcp://host:port of an existing Dask scheduler")] = None,
    run_id: Annotated[str | None, typer.Option(help="default: derived from the config (re-runs resume)")] = None,
) -> None:
    """Geometry images of every frame of a sequence: one cut and map, one warm-started OT solve per frame."""
    config = SequenceConfig(
        ot_solver=ot_solver, warm_start=warm_start, frames=frames, cut_paths=cut_paths, tol=tol, resolution=resolution,
        levels=levels, samples=samples, frames_per_task=frames_per_task, seed=seed, device=device,
    )
    store = _local(store)
    runner = make_task_runner(workers, dask_address)
    result = geometry_image_sequence.with_options(task_runner=runner)(path, store, config, run_id)
    frames_table = read_table(result["tables"]["sequence_frames"])
    summary = summarize_sequence(frames_table, read_table(result["tables"]["sequence_geometry_images"]))
    _print_frame("geometry-image sequence: OT solve per frame", summary)
    _print_failures(read_table(result["tables"]["failures"]))
    console.print(f"run [bold]{result['run_id']}[/]: {result['frames']} frames solved"
                  + (" (finished earlier)" if result["skipped"] else ""))
    for name, uri in result["tables"].items():
        console.print(f"table {name}: {uri}")



@app.command("align-embeddings")
def align_embeddings_command(
    source: Annotated[str, typer.Argument(help=".npy / .parquet / .zarr of [N, d] vectors to move")],
    target: Annotated[list[str], typer.Argument(help="one or more sets of [M, d] vectors to align to")],
    store: Annotated[str, typer.Option(help="root of the Zarr store and Parquet tables")] = "runs",
    hidden: Annotated[int, typer.Option(help="ICNN width")] = 128,
    layers: Annotated[int, typer.Option(help="ICNN hidden layers")] = 3,
    steps: Annotated[int, typer.Option(help="min-max outer steps")] = 300,
    batch_size: Annotated[int, typer.Option(help="samples per measure per step")] = 512,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 3e-3,
    seed: Annotated[int, typer.Option(help="seed of weights and batches")] = 0,
    device: Annotated[str, typer.Option(help="'auto' uses CUDA where the worker has it")] = "auto",
    workers: Annotated[int | None, typer.Option(help="LocalCluster workers (default: one per core)")] = None,
    dask_address: Annotated[str | None, typer.Option(help="tcp://host:port of an existing Dask scheduler")] = None,
    run_id: Annotated[str | None, typer.Option(help="default: derived from the config (re-runs skip)")] = None,
) -> None:
    """HOTS3D spherical OT between embedding distributions: trained map + mapped vectors (Zarr), distances (Parquet)."""
    config = AlignmentConfig(hidden=hidden, layers=layers, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                             device=device)
    store = _local(store)
    runner = make_task_runner(workers, dask_address)
    result = align_embeddings.with_options(task_runner=runner)(source, target, store, config, run_id)
    rows = read_table(result["tables"]["embedding_alignment"])
    columns = ["item_id", "dim", "n_source", "n_target", "energy_distance_before", "energy_distance_after",
               "reduction", "mean_angle_deg", "train_seconds", "device"]
    _print_frame("embedding alignment: energy distance between the distributions (unit sphere, chordal)",
                 rows[columns])
    _print_failures(read_table(result["tables"]["failures"]))
    console.print(f"run [bold]{result['run_id']}[/]: mapped vectors and the map in "
                  f"{result['store']}/{result['run_id']}/<source>__<target>/{{mapped,potential,dual}}")
    for name, uri in result["tables"].items():
        console.print(f"table {name}: {uri}")


if __name__ == "__main__":
    app()
