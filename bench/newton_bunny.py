"""Benchmark: damped-Newton semi-discrete OT on stanford-bunny (~35k vertices), the issue-2 performance target.

Targets: tolerance 1e-6 reached in at most 30 Newton iterations and under 20 s on the 2-core dev machine.
Run: ``make bench`` or ``.venv/bin/python bench/newton_bunny.py [--mesh PATH] [--repeats N]``.
Prints one line per repeat and a summary; the figures are measurements, not asserts.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from otcore.mesh.disk_cut import cut_to_disk
from otcore.mesh.harmonic import harmonic_map
from otcore.mesh.metrics import normalize_to_unit_diagonal
from otcore.mesh.parameterization import feature_masses, ot_parameterization
from storage.meshes import MeshItem, read_mesh

DEFAULT_MESH = Path(__file__).resolve().parents[2] / "shared" / "data" / "meshes" / "stanford-bunny.obj"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", type=Path, default=DEFAULT_MESH)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args()

    mesh = read_mesh(MeshItem(args.mesh.stem, str(args.mesh)))
    vertices, _, _ = normalize_to_unit_diagonal(mesh.vertices)
    start = time.perf_counter()
    disk = cut_to_disk(vertices, mesh.faces)
    uv = harmonic_map(disk.vertices, disk.faces, disk.boundary)
    masses = feature_masses(vertices, mesh.faces, disk, 0.0)
    print(f"{args.mesh.name}: {len(mesh.vertices)} vertices, disk {len(disk.vertices)} vertices "
          f"(cut + harmonic map {time.perf_counter() - start:.1f} s)")
    seconds = []
    for repeat in range(args.repeats):
        result = ot_parameterization(disk, uv, masses, tol=args.tol)
        solve = result.ot
        seconds.append(solve.seconds)
        print(f"repeat {repeat}: newton_iterations={solve.iterations} mass_error={solve.mass_error:.2e} "
              f"solve_seconds={solve.seconds:.1f} flipped={result.flipped_triangles} "
              f"untangled={result.untangled_vertices} area_distortion={result.area_distortion:.3f}")
    print(f"median solve {statistics.median(seconds):.1f} s over {args.repeats} (target < 20 s, <= 30 iterations)")


if __name__ == "__main__":
    main()
