"""The flow commands of ``brenier``: each validates its input, runs its flow and prints the results.

Registered lazily by :mod:`flows.runtime.cli` (``brenier --help`` imports none of this). The flows, pandas and the
report printers are imported inside each command, so a command's ``--help`` and its argument errors only need the
config models.
"""

from __future__ import annotations

import time
from typing import Annotated

from cyclopts import Parameter

from flows.runtime.cli import Flat, RunOptions, UsageError, preflight, result_code
from flows.runtime.console import console
from flows.runtime.prefect_server import prefect_api
from tasks.configs import (
    DEFAULT_RATIOS,
    VARIANTS,
    AlignmentConfig,
    AutodecoderConfig,
    GaussianReductionConfig,
    GeometryImageConfig,
    SequenceConfig,
    TrainRestorationConfig,
)

__all__ = ["geometry_images_command", "train_restoration_command", "autodecoder_command", "encode_command",
           "reduce_gaussians_command", "geometry_image_sequence_command", "align_embeddings_command"]


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
    preflight(path, "meshes", run)

    from flows.geometry_images import geometry_images, summarize
    from flows.runtime.reports import print_failures, print_restorations, print_tables, summary_table
    from tasks.dataset import read_run_table as read_table

    with prefect_api(announce=console.print):
        result = run.flow(geometry_images)(path, run.root(), config, run.run_id, batch_size)
    rows = read_table(result["tables"]["geometry_images"])
    failures = read_table(result["tables"]["failures"])
    console.print(summary_table(summarize(rows, result["domain"]), result["domain"]))
    print_restorations(read_table(result["tables"]["rate_distortion"]))
    print_failures(failures)
    console.print(f"run [bold]{result['run_id']}[/]: {result['items']} meshes, "
                  f"{result['skipped_items']} skipped as finished")
    console.print(f"Zarr store:  {result['store']}/{result['run_id']}")
    for pyramid in result["pyramids"]:  # the first mesh's: every mesh has the same groups
        console.print(f"pyramid:     {pyramid}")
    print_tables(result)
    return result_code(result)


def train_restoration_command(
    path: Annotated[str, Parameter(help="folder, glob or fsspec URL of the training meshes")],
    /,
    *,
    config: Annotated[TrainRestorationConfig, Flat] = TrainRestorationConfig(),
    run: Annotated[RunOptions, Flat] = RunOptions(),
) -> int:
    """Train the geometry-image restoration network (use it with `geometry-images --restoration MODEL`)."""
    started = time.perf_counter()
    preflight(path, "meshes", run)

    from flows.restoration import train_restoration
    from flows.runtime.reports import print_failures, print_frame, print_tables
    from tasks.dataset import read_run_table as read_table

    with prefect_api(announce=console.print):
        result = run.flow(train_restoration)(path, run.root(), config, run.run_id)
    epochs = read_table(result["tables"]["restoration_epochs"])
    if not epochs.empty:
        print_frame("restoration training, last epochs (L1 in unit-bbox-diagonal units)",
                     epochs[["epoch", "loss", "position_l1", "bilinear_position_l1", "edge_l1", "surface_l1",
                             "seconds"]].tail(5))
    print_failures(read_table(result["tables"]["failures"]))
    console.print(f"run [bold]{result['run_id']}[/]: {result['items']} meshes (geometry images in run "
                  f"{result['geometry_run_id']}), {result['skipped_items']} skipped as finished")
    models = read_table(result["tables"]["restoration_models"])
    if not models.empty:
        model = models.iloc[0]
        console.print(f"model: {result['model']} ({model['parameters']:,} parameters, {model['model_bytes']:,} "
                      f"bytes, position L1 {model['final_position_ratio']:.2f} of bilinear's; training "
                      f"{model['train_seconds']:.0f} s on {model['device']})")
    console.print(f"wall time: {time.perf_counter() - started:.0f} s (geometry images and training)")
    print_tables(result)
    return result_code(result)


def autodecoder_command(
    path: Annotated[str, Parameter(help="collection (.npz/.npy or folder of equal-count shapes) or folder of them")],
    /,
    *,
    variant: Annotated[list[str], Parameter(help=f"repeatable; one of {', '.join(VARIANTS)}")] = ["neuralqaad"],
    config: Annotated[AutodecoderConfig, Flat] = AutodecoderConfig(),
    run: Annotated[RunOptions, Flat] = RunOptions(),
) -> int:
    """Train NeuralQAAD autodecoders on shape collections: one network + one code per shape, EM-kD per shape.

    Variants are the paper's Table 1 columns: chamfer-only ("Chamfer"), mse-random ("MSE", random bijection),
    greedy ("+ GREEDY"), neuralqaad ("+ REASSIGN", the full method); and the atlasnetv2 baseline.
    """
    preflight(path, "collections", run)

    from rich.table import Table

    from flows.autodecoder import autodecoder
    from flows.runtime.reports import print_failures, print_tables
    from tasks.dataset import read_run_table as read_table

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
    print_failures(read_table(result["tables"]["failures"]))
    console.print(f"run [bold]{result['run_id']}[/]: {result['items']} items, "
                  f"{result['skipped_items']} finished earlier")
    console.print(f"Zarr store:  {result['store']}/{result['run_id']}/<collection>--<variant>/"
                  "{latents,decoded,model}")
    print_tables(result)
    return result_code(result)


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
        raise UsageError(f"--model: expected RUN_ID/ITEM_ID, got {model!r}")
    model_root = RunOptions(store=model_store).root() if model_store else None
    preflight(path, "collections", run)

    from flows.autodecoder import encode_shapes
    from flows.runtime.reports import print_failures, print_tables
    from tasks.dataset import read_run_table as read_table

    with prefect_api(announce=console.print):
        result = run.flow(encode_shapes)(path, run.root(), model_run_id, model_item_id, model_root, config,
                                         chamfer_steps, qaad_steps, run.run_id)
    shapes = read_table(result["tables"]["autodecoder_shapes"])
    if not shapes.empty:
        console.print(shapes[["item_id", "shape_id", "em_kd", "chamfer_l2"]].to_string(index=False))
    print_failures(read_table(result["tables"]["failures"]))
    print_tables(result)
    return result_code(result)


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
    preflight(path, "scenes", run)

    from flows.gaussian_reduction import gaussian_reduction, summary_frame
    from flows.runtime.reports import print_failures, print_frame, print_tables
    from tasks.dataset import read_run_table as read_table

    with prefect_api(announce=console.print):
        result = run.flow(gaussian_reduction)(path, run.root(), ratio, config, run.run_id)
    summary = summary_frame(read_table(result["tables"]["gaussian_reduction"]).to_dict(orient="records"))
    print_frame("Gaussian reduction: psnr (dB) / ssim of renders against the original scene", summary)
    print_failures(read_table(result["tables"]["failures"]))
    console.print(f"run [bold]{result['run_id']}[/]: {result['items']} items, "
                  f"{result['skipped_items']} finished earlier")
    console.print(f"reduced scenes: {result['store']}/{result['run_id']}/<scene>--r<ratio>/ply/"
                  "<method>[-finetuned].ply")
    for item_id, uri in sorted(result["previews"].items()):
        console.print(f"side by side {item_id}: {uri}")
    print_tables(result)
    return result_code(result)


def geometry_image_sequence_command(
    path: Annotated[str, Parameter(help=".npz/.npy sequence or folder of meshes in correspondence")],
    /,
    *,
    config: Annotated[SequenceConfig, Flat] = SequenceConfig(),
    run: Annotated[RunOptions, Flat] = RunOptions(),
) -> int:
    """Geometry images of every frame of a sequence: one cut and map, one warm-started OT solve per frame."""
    preflight(path, "collections", run)

    from flows.geometry_image_sequence import geometry_image_sequence, summarize_sequence
    from flows.runtime.reports import print_failures, print_frame, print_tables
    from tasks.dataset import read_run_table as read_table

    with prefect_api(announce=console.print):
        result = run.flow(geometry_image_sequence)(path, run.root(), config, run.run_id)
    frames_table = read_table(result["tables"]["sequence_frames"])
    summary = summarize_sequence(frames_table, read_table(result["tables"]["sequence_geometry_images"]))
    print_frame("geometry-image sequence: OT solve per frame", summary)
    print_failures(read_table(result["tables"]["failures"]))
    console.print(f"run [bold]{result['run_id']}[/]: {result['frames']} frames solved"
                  + (" (finished earlier)" if result["skipped"] else ""))
    print_tables(result)
    return result_code(result)


def align_embeddings_command(
    source: Annotated[str, Parameter(help=".npy / .parquet / .zarr of [N, d] vectors to move")],
    /,
    *target: Annotated[str, Parameter(help="one or more sets of [M, d] vectors to align to")],
    config: Annotated[AlignmentConfig, Flat] = AlignmentConfig(),
    run: Annotated[RunOptions, Flat] = RunOptions(),
) -> int:
    """HOTS3D spherical OT between embedding distributions: trained map + mapped vectors (Zarr), distances (Parquet)."""
    if not target:
        raise UsageError("align-embeddings needs at least one TARGET (a file of [M, d] vectors)")

    from flows.align_embeddings import align_embeddings
    from flows.runtime.reports import print_failures, print_frame, print_tables
    from tasks.dataset import read_run_table as read_table

    result = run.flow(align_embeddings)(source, list(target), run.root(), config, run.run_id)
    rows = read_table(result["tables"]["embedding_alignment"])
    columns = ["item_id", "dim", "n_source", "n_target", "energy_distance_before", "energy_distance_after",
               "reduction", "mean_angle_deg", "train_seconds", "device"]
    print_frame("embedding alignment: energy distance between the distributions (unit sphere, chordal)",
                 rows[columns])
    print_failures(read_table(result["tables"]["failures"]))
    console.print(f"run [bold]{result['run_id']}[/]: mapped vectors and the map in "
                  f"{result['store']}/{result['run_id']}/<source>__<target>/{{mapped,potential,dual}}")
    print_tables(result)
    return result_code(result)
