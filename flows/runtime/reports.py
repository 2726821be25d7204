"""What the flow commands print after a run: summary tables, failures, where the outputs are.

Imported by the commands when a run has finished (pandas and rich tables), never at the command line's start.
"""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from flows.geometry_images import PARAMETERIZATIONS, SUMMARY_TITLES
from flows.runtime.console import console

__all__ = ["summary_table", "print_restorations", "print_frame", "print_failures", "print_tables"]


def summary_table(summary: pd.DataFrame, domain: str = "square") -> Table:
    """The geometry-image run's per-mesh summary (:func:`flows.geometry_images.summarize`) as a rich table titled
    and labelled for its ``domain``."""
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


def print_restorations(rate_distortion: pd.DataFrame) -> None:
    """With --restoration: the OT map's 33² and 65² levels restored bilinearly and by the network, per mesh."""
    if rate_distortion.empty or "neural" not in set(rate_distortion["restore"]):
        return
    stored = rate_distortion[rate_distortion["stored"] & (rate_distortion["parameterization"] == "ot")
                             & rate_distortion["resolution"].isin([33, 65])]
    table = stored.pivot_table(index="item_id", columns=["resolution", "restore"],
                               values=["chamfer_l2", "hausdorff"])
    table.columns = [f"{'CD' if metric == 'chamfer_l2' else 'HD'} {side}² {restore}"
                     for metric, side, restore in table.columns]
    print_frame("OT map restored from 33² and 65² to 257²: bilinear vs neural (unit bbox diagonal)",
                 table.reset_index().rename(columns={"item_id": "mesh"}))


def print_frame(title: str, frame: pd.DataFrame) -> None:
    """Print ``frame`` as a rich table, floats to 4 significant digits."""
    table = Table(title=title)
    for name in frame.columns:
        table.add_column(str(name), justify="right")
    for _, row in frame.iterrows():
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


def print_failures(failures: pd.DataFrame) -> None:
    """The failure rows of a run, one per line of a table (nothing when there are none)."""
    if failures.empty:
        return
    table = Table(title="failures")
    for column in ("item_id", "stage", "error_type", "message"):
        table.add_column(column)
    for _, f in failures.iterrows():
        table.add_row(f["item_id"], f["stage"], f["error_type"], f["message"])
    console.print(table)


def print_tables(result: dict) -> None:
    """Where each of a run's Parquet tables is."""
    for name, uri in result["tables"].items():
        console.print(f"table {name}: {uri}")
