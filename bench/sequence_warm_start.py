"""Benchmark: warm against cold OT solves along a real sequence (OT-Net reuse, the geometry-image sequence job).

Problem: the crane sequence (175 frames in correspondence), prepared as ``brenier geometry-image-sequence`` does: one
augmented cut and harmonic map of frame 0 gives the Diracs, each frame's barycentric vertex areas give the masses.
Per tolerance (max relative cell-mass error), the chain solves every frame with OT-Net warm-started from the
previous frame's state (frame 0 cold), and every ``--cold-every``-th frame again from a cold start. Steps are fit
plus Newton steps (:attr:`otcore.ot.ot_net.OTNetResult.steps`); with ``fit_min_steps=0`` the fit runs only where
Newton cannot start, so these are the Newton warm and cold starts (``bench/ot_net_reuse.py`` measures the network's
own fit steps against them).

Also reported: the max relative mass error each solve starts from, and how far each warm frame's map (cell
centroids, the images of the area-preserving map) lies from the tightest tolerance's map, in texels of a 257^2
geometry image — what a looser tolerance costs the geometry images.
For the tightest tolerance, ``secant_start_error`` is the error a warm start would begin from if the weights were
extrapolated linearly in time from the two previous frames (``2 w_{k-1} - w_{k-2}``) instead of reused.

Writes ``--out``/sequence_warm_start.parquet (one row per tolerance, frame and start) and prints the table.
Run: ``.venv/bin/python bench/sequence_warm_start.py [--tol 1e-6 1e-3] [--frames 175] [--cold-every 10]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from otcore.mesh.cut_augmentation import augment_cut
from otcore.mesh.metrics import normalize_to_unit_diagonal
from otcore.mesh.parameterization import square_sites, vertex_areas
from otcore.ot.ot_net import OTNetConfig, solve_ot_net
from otcore.ot.power_diagram import power_cells
from storage.collections import read_collection

DEFAULT_SEQUENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "consistent" / "crane" / "crane.npz"
TEXELS = 256  # a 257^2 geometry image spans 256 texels per side


def frame_masses(path: str, frames: int, cut_paths: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Diracs ``[V, 2]`` of the shared map and the masses ``[V]`` of each of the first ``frames`` frames."""
    collection, failures = read_collection(path)
    if failures:
        raise SystemExit(f"{path}: unreadable frames {[f.shape_id for f in failures]}")
    faces = collection.faces.astype(np.int64)
    first = normalize_to_unit_diagonal(collection.vertices[0].astype(np.float64))[0]
    cut = augment_cut(first, faces, max_paths=cut_paths)
    disk = cut.disk
    masses = []
    for vertices in collection.vertices[:frames]:
        v = normalize_to_unit_diagonal(vertices.astype(np.float64))[0]
        masses.append(vertex_areas(0.5 * (v[disk.source[:, 0]] + v[disk.source[:, 1]]), disk.faces))
    return square_sites(cut.uv), masses


def secant_start_error(sites: np.ndarray, masses: np.ndarray, previous: np.ndarray, before: np.ndarray) -> float:
    """Max relative cell-mass error at the weights extrapolated in time, ``2 previous - before``."""
    nu = masses / masses.sum()
    return float(np.max(np.abs(power_cells(sites, 2.0 * previous - before).areas - nu) / nu))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", default=str(DEFAULT_SEQUENCE))
    parser.add_argument("--tol", type=float, nargs="+", default=[1e-6, 1e-3])
    parser.add_argument("--frames", type=int, default=175)
    parser.add_argument("--cold-every", type=int, default=10, help="cold reference solve every N-th frame")
    parser.add_argument("--cut-paths", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()

    sites, masses = frame_masses(args.sequence, args.frames, args.cut_paths)
    print(f"{args.sequence}: {len(masses)} frames, {len(sites)} Diracs", flush=True)
    tightest = min(args.tol)
    rows, maps = [], {}
    for tol in sorted(args.tol):
        config = OTNetConfig(tol=tol, fit_min_steps=0)  # Newton from the reused state (fit only if it cannot start)
        state, weights = None, []
        for k, nu in enumerate(masses):
            secant = secant_start_error(sites, nu, weights[-1], weights[-2]) if tol == tightest and k >= 2 else np.nan
            warm = solve_ot_net(sites, nu, state=state, config=config)
            state = warm.state
            maps[tol, k] = warm.cells.centroids
            weights.append(warm.weights)
            rows.append({"tol": tol, "frame": k, "start": "warm" if k else "cold", "steps": warm.steps,
                         "start_error": warm.history[0], "secant_start_error": secant,
                         "mass_error": warm.mass_error, "seconds": warm.seconds})
            if k and k % args.cold_every == 0:
                cold = solve_ot_net(sites, nu, config=config)
                rows.append({"tol": tol, "frame": k, "start": "cold", "steps": cold.steps,
                             "start_error": cold.history[0], "mass_error": cold.mass_error, "seconds": cold.seconds})
        print(f"tol {tol:g}: done", flush=True)
    table = pd.DataFrame(rows)
    table["map_shift_texels"] = [
        float(np.abs(maps[r.tol, r.frame] - maps[tightest, r.frame]).max() * TEXELS) if r.start == "warm" else np.nan
        for r in table.itertuples()
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out / "sequence_warm_start.parquet")

    summary = table.groupby(["tol", "start"]).agg(
        frames=("frame", "count"), median_steps=("steps", "median"), max_steps=("steps", "max"),
        start_error_min=("start_error", "min"), start_error_median=("start_error", "median"),
        start_error_max=("start_error", "max"), secant_start_error_median=("secant_start_error", "median"),
        max_mass_error=("mass_error", "max"), median_seconds=("seconds", "median"),
        max_map_shift_texels=("map_shift_texels", "max"),
    )
    medians = summary[["median_steps", "median_seconds"]].unstack("start")
    ratio = pd.DataFrame({
        "warm / cold steps": medians["median_steps"]["warm"] / medians["median_steps"]["cold"],
        "warm / cold seconds": medians["median_seconds"]["warm"] / medians["median_seconds"]["cold"],
    })
    print(summary.to_markdown(floatfmt=".3g"))
    print()
    ratio.index = [f"{tol:g}" for tol in ratio.index]
    print(ratio.round(3).to_markdown(disable_numparse=True))  # keeps "1e-06" from printing as 0.000
    print(f"table: {args.out / 'sequence_warm_start.parquet'}")


if __name__ == "__main__":
    main()
