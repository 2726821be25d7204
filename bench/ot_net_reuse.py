"""Benchmark: does a trained Brenier height network (OT-Net) start Newton closer than weight reuse on a real sequence?

Li, Lei et al., "OT-Net: A Reusable Neural Optimal Transport Solver", arXiv 2306.08233: the network is trained on
the semi-discrete dual and reused on new targets. Here the targets are the frames of the crane sequence (175
captured frames in correspondence), prepared as ``brenier geometry-image-sequence`` does: one augmented cut and
harmonic map of frame 0 gives the Diracs ``[V, 2]`` (V = 10,330), each frame's vertex areas the masses ``[V]``.
Frame 0 is solved cold; every later frame ``k`` is solved to ``--tol`` by damped Newton
(:func:`otcore.ot.semi_discrete.solve_semi_discrete_ot`) from the start each method proposes:

* ``newton-cold``: zero weights (the Voronoi diagram), every ``--cold-every``-th frame.
* ``newton-warm``: weight reuse, the previous frame's solved weights ``w_{k-1}`` (what the sequence job does).
* ``secant``: ``2 w_{k-1} - w_{k-2}``, linear extrapolation in time.
* ``ot-net-fit-K``: :func:`otcore.ot.ot_net.solve_ot_net` from the previous frame's network state with
  ``fit_min_steps=K`` Adam steps on the dual (exact cell masses) before Newton: the paper's reuse. Newton starts from
  the best fit iterate.
* ``seq-net``: candidate (a) of issue 18, a network trained *across the sequence*: an MLP (float32, 3 x 64, SiLU)
  maps per-site features of the new target to the weight change ``w_k - w_{k-1}`` (scaled by V). Features: Fourier
  features of the Dirac, ``log(V nu_{k-1})``, and truncated Neumann sums ``sum_{m<M} (D^-1 A)^m D^-1 (nu_k -
  nu_{k-1})`` for ``M = 1, 2, 4, ..., 512`` on the previous frame's power-diagram Hessian ``D - A`` (a polynomial
  approximation of Newton's first step that the network may reweight and correct). It is trained online on the
  linearised dual residual of the last ``--window`` solved pairs (``--train-steps`` Adam steps per frame, one frame
  per step; :class:`SequencePredictor`) and predicts frame ``k`` from frames ``< k`` only.
* ``neumann``: the 512-term Neumann sum alone (no network), as the learned predictor's reference.

Per method: median and max of the start error (max relative cell-mass error at Newton's start), the frames whose
start had an empty cell (``failed``: Newton cannot start there; steps and seconds are over the others), median Newton
steps, median seconds (Newton plus the method's own work: fit steps, features, training, inference). Statistics are
over the frames ``>= --warmup`` on which every method ran (``newton-cold``: its own frames). Timings are wall seconds
on whatever machine runs it; the load average is printed beside them.

Writes ``--out``/ot_net_reuse.parquet (one row per method and frame) and prints the table.
Run: ``nice .venv/bin/python bench/ot_net_reuse.py [--frames 61] [--fit-steps 10] [--tol 1e-6]``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sequence_warm_start import DEFAULT_SEQUENCE, frame_masses
from torch import nn

from otcore.errors import OTConvergenceError
from otcore.ot.ot_net import OTNetConfig, solve_ot_net
from otcore.ot.power_diagram import PowerCells, power_cells
from otcore.ot.semi_discrete import _hessian, solve_semi_discrete_ot

NEUMANN_TERMS = tuple(2**j for j in range(10))  # 1, 2, 4, ..., 512


def neumann_features(cells: PowerCells, change: np.ndarray) -> np.ndarray:
    """``[V, 10]`` truncated Neumann sums ``sum_{m<M} (D^-1 A)^m D^-1 change`` of the Hessian ``D - A`` of
    ``cells`` (the previous frame's power diagram), ``M`` in :data:`NEUMANN_TERMS`, in weight units."""
    n = len(cells.areas)
    coupling = cells.edge_length / (2.0 * cells.edge_distance)
    adjacency = sp.csr_matrix((coupling, (cells.edge_i, cells.edge_j)), shape=(n, n))
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    walk = sp.diags(1.0 / degree) @ adjacency
    term, total, out = change / degree, np.zeros(n), []
    for m in range(NEUMANN_TERMS[-1]):
        total = total + term
        term = walk @ term
        if m + 1 in NEUMANN_TERMS:
            out.append(total.copy())
    return np.stack(out, axis=1)


class SequencePredictor:
    """Online-trained MLP from per-site features of a new frame to ``V * (w_k - w_{k-1})`` (candidate (a)).

    Trained on the linearised dual residual of the solved pairs, the max-error-relevant norm:
    ``mean_i ((H_{j-1} dw_j - (nu_j - nu_{j-1}))_i / nu_{j-1,i})^2`` with ``H_{j-1}`` the previous frame's exact
    Hessian (cell-area Jacobian). (Regressing ``dw`` in L2 was tried first: it fits the smooth part of ``dw`` and
    leaves neighbouring cells' differences wrong, start errors 30-400.)
    """

    def __init__(self, sites: np.ndarray, window: int, train_steps: int, seed: int) -> None:
        torch.manual_seed(seed)
        self.n = len(sites)
        scales = 2.0 ** np.arange(4) * np.pi
        angles = (sites[:, :, None] * scales).reshape(self.n, -1)
        self.position = np.concatenate([sites, np.sin(angles), np.cos(angles)], axis=1)
        width = self.position.shape[1] + 1 + len(NEUMANN_TERMS)
        self.mlp = nn.Sequential(nn.Linear(width, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(),
                                 nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))
        self.optimizer = torch.optim.Adam(self.mlp.parameters(), lr=1e-3)
        self.window, self.train_steps = window, train_steps
        self.pairs: list[tuple[torch.Tensor, ...]] = []
        self.generator = torch.Generator().manual_seed(seed)

    def features(self, cells: PowerCells, previous_nu: np.ndarray, nu: np.ndarray) -> torch.Tensor:
        """``[V, F]`` float32 features of the target ``nu`` given the previous frame's cells and masses."""
        neumann = neumann_features(cells, nu - previous_nu) * self.n
        x = np.concatenate([self.position, np.log(previous_nu * self.n)[:, None], neumann], axis=1)
        return torch.from_numpy(x).float()

    def add(self, features: torch.Tensor, cells: PowerCells, previous_nu: np.ndarray, nu: np.ndarray) -> None:
        """Add a solved pair: features of ``nu``, the previous frame's ``cells`` (Hessian) and masses."""
        hessian = _hessian(cells, self.n).tocoo()
        matrix = torch.sparse_coo_tensor(np.vstack([hessian.row, hessian.col]), hessian.data, hessian.shape,
                                         check_invariants=False).coalesce().float()
        pair = (features, matrix, torch.from_numpy(nu - previous_nu).float(), torch.from_numpy(previous_nu).float())
        self.pairs = [*self.pairs, pair][-self.window:]

    def train(self) -> None:
        x = torch.cat([pair[0] for pair in self.pairs])
        self.mean, self.std = x.mean(0), x.std(0) + 1e-12
        for _ in range(self.train_steps):
            features, hessian, change, previous = self.pairs[int(torch.randint(len(self.pairs), (1,),
                                                                               generator=self.generator))]
            dw = self.mlp((features - self.mean) / self.std) / self.n
            loss = (((torch.sparse.mm(hessian, dw)[:, 0] - change) / previous) ** 2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()

    def predict(self, features: torch.Tensor) -> np.ndarray:
        """``[V]`` float64 predicted weight change ``w_k - w_{k-1}``."""
        with torch.no_grad():
            out = self.mlp((features - self.mean) / self.std)[:, 0]
        return out.double().numpy() / self.n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", default=str(DEFAULT_SEQUENCE))
    parser.add_argument("--frames", type=int, default=61, help="consecutive frames from frame 0")
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--cold-every", type=int, default=10)
    parser.add_argument("--fit-steps", type=int, nargs="*", default=[10], help="K of the ot-net-fit-K rows")
    parser.add_argument("--warmup", type=int, default=4, help="frames before the statistics start")
    parser.add_argument("--window", type=int, default=16, help="seq-net: solved pairs kept for training")
    parser.add_argument("--train-steps", type=int, default=50, help="seq-net: Adam steps per frame")
    parser.add_argument("--cut-paths", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    sites, masses = frame_masses(args.sequence, args.frames, args.cut_paths)
    nus = [m / m.sum() for m in masses]
    print(f"{args.sequence}: {len(nus)} frames, {len(sites)} Diracs, load {os.getloadavg()[0]:.2f}", flush=True)
    rows: list[dict] = []

    def newton(method: str, k: int, start: np.ndarray | None, overhead: float = 0.0):
        try:
            solve = solve_semi_discrete_ot(sites, nus[k], tol=args.tol, initial_weights=start)
        except OTConvergenceError:  # an empty cell at the proposed start: Newton cannot start
            areas = power_cells(sites, start).areas
            rows.append({"method": method, "frame": k, "start_error": float(np.max(np.abs(areas - nus[k]) / nus[k])),
                         "newton_steps": np.nan, "fit_steps": 0, "seconds": np.nan, "overhead_seconds": overhead,
                         "mass_error": np.nan, "failed": True, "load": os.getloadavg()[0]})
            return None
        rows.append({"method": method, "frame": k, "start_error": solve.history[0], "newton_steps": solve.iterations,
                     "fit_steps": 0, "seconds": solve.seconds + overhead, "overhead_seconds": overhead,
                     "mass_error": solve.mass_error, "failed": False, "load": os.getloadavg()[0]})
        return solve

    reference = [newton("newton-cold", 0, None)]
    nets = {steps: solve_ot_net(sites, nus[0], config=OTNetConfig(tol=args.tol)).state for steps in args.fit_steps}
    predictor = SequencePredictor(sites, args.window, args.train_steps, seed=0)
    for k in range(1, len(nus)):
        previous = reference[-1]
        reference.append(newton("newton-warm", k, previous.weights))
        if k % args.cold_every == 0:
            newton("newton-cold", k, None)
        if k >= 2:
            newton("secant", k, 2.0 * previous.weights - reference[-3].weights)
        for steps in args.fit_steps:
            net = solve_ot_net(sites, nus[k], state=nets[steps], config=OTNetConfig(tol=args.tol, fit_min_steps=steps))
            nets[steps] = net.state
            rows.append({"method": f"ot-net-fit-{steps}", "frame": k, "start_error": net.refine_start_error,
                         "newton_steps": net.newton_steps, "fit_steps": net.fit_steps, "seconds": net.seconds,
                         "overhead_seconds": np.nan, "mass_error": net.mass_error, "failed": False,
                         "load": os.getloadavg()[0]})
        began = time.perf_counter()
        features = predictor.features(previous.cells, nus[k - 1], nus[k])
        feature_seconds = time.perf_counter() - began
        newton("neumann", k, previous.weights + features[:, -1].double().numpy() / len(sites), feature_seconds)
        if len(predictor.pairs) >= 2:
            began = time.perf_counter()
            predictor.train()
            change = predictor.predict(features)
            newton("seq-net", k, previous.weights + change, feature_seconds + time.perf_counter() - began)
        predictor.add(features, previous.cells, nus[k - 1], nus[k])
        if k % 10 == 0:
            print(f"frame {k}: done, load {os.getloadavg()[0]:.2f}", flush=True)

    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out / "ot_net_reuse.parquet")
    sequence_methods = set(table["method"]) - {"newton-cold"}
    common = table[table["method"].isin(sequence_methods) & (table["frame"] >= args.warmup)]
    counts = common.groupby("frame")["method"].nunique()
    common = common[common["frame"].isin(counts[counts == len(sequence_methods)].index)]
    stats = pd.concat([table[table["method"] == "newton-cold"], common]).groupby("method", sort=False).agg(
        frames=("frame", "count"), failed=("failed", "sum"), start_error_median=("start_error", "median"),
        start_error_max=("start_error", "max"),
        newton_steps_median=("newton_steps", "median"), newton_steps_max=("newton_steps", "max"),
        fit_steps_median=("fit_steps", "median"), seconds_median=("seconds", "median"),
        max_mass_error=("mass_error", "max"), load_median=("load", "median"),
    )
    print(stats.to_markdown(floatfmt=".3g"))
    print(f"tol {args.tol:g}; load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"table: {args.out / 'ot_net_reuse.parquet'}")


if __name__ == "__main__":
    main()
