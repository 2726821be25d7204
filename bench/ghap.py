"""Benchmark: GHAP reduction time (no fine-tuning) and how it grows with the number of Gaussians.

Target on the 2-core dev machine: biker (152,746 Gaussians) reduced to 10% in under 15 s, with near-linear growth
over 0.25x, 0.5x and 1x of biker (seeded random subsets of the scene's Gaussians). Times are wall-clock seconds of
``ghap_reduce`` plus the conversion back to 3DGS parameters (scales, quaternions, merged appearance), median of
``--repeats`` runs; reading the PLY is not timed. The load average is printed: other processes slow torch a lot.

Run: ``.venv/bin/python bench/ghap.py [--shared ../shared/data] [--ratio 0.1] [--pen-size 1024] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from storage.gaussians import GaussianScene, read_scene
from tasks.gaussian_reduction import GaussianReductionConfig, reduce_with

DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def subset(scene: GaussianScene, fraction: float, seed: int = 0) -> GaussianScene:
    """A seeded random ``fraction`` of the scene's Gaussians."""
    if fraction >= 1.0:
        return scene
    keep = np.sort(np.random.default_rng(seed).choice(len(scene), int(round(fraction * len(scene))), replace=False))
    return GaussianScene(scene.scene_id, "", scene.means[keep], scene.scales[keep], scene.quats[keep],
                         scene.opacities[keep], scene.sh_dc[keep], scene.sh_rest[keep], None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="folder holding gaussians/*.ply")
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--pen-size", type=int, default=1024)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = GaussianReductionConfig(pen_size=args.pen_size, max_iterations=args.iterations)
    print(f"GHAP to {args.ratio:g} of the Gaussians, pen size {args.pen_size}, {args.iterations} rounds; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}\n")
    header = f"| {'scene':<8} | {'fraction':>8} | {'n_in':>7} | {'n_out':>6} | {'seconds':>8} | {'us / Gaussian':>13} |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for name in ("donut", "biker"):
        scene = read_scene(str(args.shared / "gaussians" / f"{name}.ply"))
        for fraction in (0.25, 0.5, 1.0):
            part = subset(scene, fraction)
            count = int(round(args.ratio * len(part)))
            reduce_with("ghap", part, 64, config)  # warm-up
            runs = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                reduced = reduce_with("ghap", part, count, config)
                runs.append(time.perf_counter() - start)
                assert len(reduced) == count
            seconds = statistics.median(runs)
            print(f"| {name:<8} | {fraction:>8.2f} | {len(part):>7} | {count:>6} | {seconds:>8.2f} | "
                  f"{1e6 * seconds / len(part):>13.1f} |", flush=True)
    print(f"\nload average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
