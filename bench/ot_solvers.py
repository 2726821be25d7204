"""Benchmark: semi-discrete OT solvers on the same problems — damped Newton, OT-Net, POT's Sinkhorn.

Problems: the uniform measure on the unit square to N Diracs (N = 1k, 10k, 100k) that discretise a real mesh's area
measure: N area-uniform samples of stanford-bunny (unit bbox diagonal) carried into the square by its harmonic map
(barycentric interpolation), each of mass 1/N.

Per solver and N: wall seconds, max relative cell-mass error, transport cost ``sum_i int_{W_i} |x - y_i|^2 dx``.
Newton and OT-Net: exact power-cell areas; cost by 2^20 scrambled Sobol points assigned to their power cell (a 3-D
nearest-neighbour query on lifted sites). Sinkhorn (POT ``ot.sinkhorn``, log-stabilised, entropic regularisation
``reg``, at most ``--sinkhorn-iterations``): the source is a regular grid of ``grid^2`` cells; mass error from the
plan's target marginal, cost ``<P, C>``; skipped where the dense cost matrix would exceed ``--max-matrix-gib``.

Writes ``--out``/ot_solvers.parquet and ot_solvers.png and prints the table.
Run: ``.venv/bin/python bench/ot_solvers.py [--sizes 1000 10000 100000] [--out runs/bench]`` (needs ``.[bench]``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.spatial import cKDTree

from otcore.errors import OTConvergenceError
from otcore.mesh.disk_cut import cut_to_disk
from otcore.mesh.harmonic import harmonic_map
from otcore.mesh.metrics import normalize_to_unit_diagonal
from otcore.mesh.parameterization import square_sites
from otcore.ot.ot_net import OTNetConfig, solve_ot_net
from otcore.ot.semi_discrete import solve_semi_discrete_ot
from storage.meshes import MeshItem, read_mesh

DEFAULT_MESH = Path(__file__).resolve().parents[2] / "shared" / "data" / "meshes" / "stanford-bunny.obj"


def bunny_targets(mesh_path: Path, n: int, seed: int) -> np.ndarray:
    """``[n, 2]`` sites: area-uniform surface samples pushed through the harmonic map of the cut mesh."""
    mesh = read_mesh(MeshItem(mesh_path.stem, str(mesh_path)))
    vertices, _, _ = normalize_to_unit_diagonal(mesh.vertices)
    disk = cut_to_disk(vertices, mesh.faces)
    uv = harmonic_map(disk.vertices, disk.faces, disk.boundary)
    a, b, c = (disk.vertices[disk.faces[:, k]] for k in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    rng = np.random.default_rng(seed)
    faces = rng.choice(len(area), size=n, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    weights = np.column_stack([1 - r1, r1 * (1 - r2), r1 * r2])
    return square_sites(np.einsum("nk,nkd->nd", weights, uv[disk.faces[faces]]))


def power_cost(sites: np.ndarray, weights: np.ndarray, samples: int = 1 << 20, seed: int = 0) -> float:
    """QMC estimate of ``int |x - y_{cell(x)}|^2 dx`` over the unit square for the power diagram of ``weights``."""
    points = torch.quasirandom.SobolEngine(2, scramble=True, seed=seed).draw(samples, dtype=torch.float64).numpy()
    lift = np.sqrt(weights.max() - weights)  # |x - y|^2 - w + max(w) = |(x, 0) - (y, lift)|^2
    _, owner = cKDTree(np.column_stack([sites, lift])).query(np.column_stack([points, np.zeros(samples)]))
    return float(np.mean(((points - sites[owner]) ** 2).sum(1)))


def run_sinkhorn(sites: np.ndarray, grid: int, reg: float, iterations: int) -> dict:
    import ot

    centres = (np.stack(np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij"), -1).reshape(-1, 2) + 0.5) / grid
    source = np.full(len(centres), 1.0 / len(centres))
    target = np.full(len(sites), 1.0 / len(sites))
    start = time.perf_counter()
    cost = ot.dist(centres, sites)
    plan = ot.sinkhorn(source, target, cost, reg, method="sinkhorn_log", numItermax=iterations, stopThr=1e-9)
    seconds = time.perf_counter() - start
    marginal = plan.sum(0)
    return {"seconds": seconds, "mass_error": float(np.max(np.abs(marginal - target) / target)),
            "transport_cost": float((plan * cost).sum()), "steps": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", type=Path, default=DEFAULT_MESH)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--grid", type=int, default=64, help="Sinkhorn source grid side")
    parser.add_argument("--reg", type=float, default=1e-3, help="Sinkhorn entropic regularisation")
    parser.add_argument("--sinkhorn-iterations", type=int, default=500)
    parser.add_argument("--max-matrix-gib", type=float, default=0.5,
                        help="skip Sinkhorn above this dense-matrix size (10k Diracs x 64^2: 1 GiB, >10 min)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-steps", type=int, default=200, help="OT-Net fit-step cap (empty-cell starts only)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []
    for n in args.sizes:
        sites = bunny_targets(args.mesh, n, args.seed)
        masses = np.full(n, 1.0 / n)
        for solver, solve in (("newton", lambda: solve_semi_discrete_ot(sites, masses)),
                              ("ot-net", lambda: solve_ot_net(sites, masses,
                                                              config=OTNetConfig(fit_max_steps=args.fit_steps)))):
            start = time.perf_counter()
            try:
                result = solve()
            except OTConvergenceError as error:  # a measured outcome, not a crash of the bench
                rows.append({"solver": solver, "targets": n, "seconds": time.perf_counter() - start,
                             "error": f"{type(error).__name__}: {error}"})
            else:
                rows.append({"solver": solver, "targets": n, "seconds": result.seconds,
                             "steps": getattr(result, "steps", None) or result.iterations,
                             "mass_error": result.mass_error, "transport_cost": power_cost(sites, result.weights)})
            print(rows[-1], flush=True)
        gib = 8.0 * 3 * args.grid**2 * n / 2**30  # cost matrix, plan and a log-domain temporary
        if gib <= args.max_matrix_gib:
            rows.append({"solver": f"sinkhorn(reg={args.reg:g}, grid={args.grid})", "targets": n,
                         **run_sinkhorn(sites, args.grid, args.reg, args.sinkhorn_iterations)})
        else:
            print(f"sinkhorn skipped at N={n}: dense {args.grid}^2 x {n} matrices need ~{gib:.0f} GiB")
        print(rows[-1], flush=True)

    table = pd.DataFrame(rows).reindex(columns=["solver", "targets", "seconds", "steps", "mass_error",
                                                "transport_cost", "error"])
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out / "ot_solvers.parquet", index=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ax_time, ax_error) = plt.subplots(1, 2, figsize=(9, 3.5))
    for solver, group in table.dropna(subset=["mass_error"]).groupby("solver"):
        ax_time.loglog(group["targets"], group["seconds"], "o-", label=solver)
        ax_error.loglog(group["targets"], group["mass_error"], "o-", label=solver)
    ax_time.set(xlabel="Diracs", ylabel="seconds", title="solve time")
    ax_error.set(xlabel="Diracs", ylabel="max relative mass error", title="accuracy")
    ax_time.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(args.out / "ot_solvers.png", dpi=100)
    print(table.to_markdown(index=False))
    print(f"wrote {args.out / 'ot_solvers.parquet'} and {args.out / 'ot_solvers.png'}")


if __name__ == "__main__":
    main()
