"""The ``brenier`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from flows.geometry_images import geometry_images, summarize
from flows.task_runner import make_task_runner
from storage.tables import read_table
from tasks.geometry_images import GeometryImageConfig

app = typer.Typer(help="Optimal-transport geometry processing over whole 3D datasets.", no_args_is_help=True)
console = Console(width=None if Console().is_terminal else 200)


@app.callback()
def main() -> None:
    """brenier: Prefect flows of OT geometry processing on Dask."""


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
def geometry_images_command(
    path: Annotated[str, typer.Argument(help="folder, glob or fsspec URL of meshes")],
    store: Annotated[str, typer.Option(help="root of the Zarr store and Parquet tables")] = "runs",
    resolution: Annotated[int, typer.Option(help="geometry image side (2^n + 1)")] = 257,
    levels: Annotated[int, typer.Option(help="mipmap levels")] = 5,
    feature_weight: Annotated[float, typer.Option(help="lambda: masses * (1 + lambda |H| / mean |H|)")] = 0.0,
    samples: Annotated[int, typer.Option(help="samples per surface for chamfer_l2/hausdorff")] = 50_000,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    workers: Annotated[int | None, typer.Option(help="LocalCluster workers (default: one per core)")] = None,
    dask_address: Annotated[str | None, typer.Option(help="tcp://host:port of an existing Dask scheduler")] = None,
    run_id: Annotated[str | None, typer.Option(help="default: derived from the config (re-runs skip done meshes)")] = None,
) -> None:
    """OT-parameterize every mesh, store geometry-image mipmaps in Zarr and their fidelity in Parquet."""
    if "://" not in store:
        store = str(Path(store).resolve())
    config = GeometryImageConfig(
        resolution=resolution, levels=levels, feature_weight=feature_weight, samples=samples, seed=seed
    )
    runner = make_task_runner(workers, dask_address)
    result = geometry_images.with_options(task_runner=runner)(path, store, config, run_id)
    rows = read_table(result["tables"]["geometry_images"])
    failures = read_table(result["tables"]["failures"])
    console.print(_summary_table(summarize(rows)))
    if not failures.empty:
        table = Table(title="failures")
        for column in ("item_id", "stage", "error_type", "message"):
            table.add_column(column)
        for _, f in failures.iterrows():
            table.add_row(f["item_id"], f["stage"], f["error_type"], f["message"])
        console.print(table)
    console.print(f"run [bold]{result['run_id']}[/]: {result['items']} meshes, {result['skipped_items']} skipped as finished")
    console.print(f"Zarr store:  {result['store']}/{result['run_id']}/<mesh>/{{harmonic,ot}}/geometry_image")
    for name, uri in result["tables"].items():
        console.print(f"table {name}: {uri}")


if __name__ == "__main__":
    app()
