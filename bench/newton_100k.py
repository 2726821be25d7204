"""Benchmark: the square OT parameterization of a mesh with over 100k vertices (armadillo subdivided once).

armadillo (``../shared/data/meshes-more``, 43k vertices) is normalised to a unit bounding-box diagonal and
subdivided once at edge midpoints (``trimesh.remesh.subdivide``: about 173k vertices), then cut (augmented by
``--cut-paths`` paths), mapped harmonically, and solved by damped Newton to ``--tol`` with the convex-combination
repair. Prints every Newton iteration (iteration, max relative cell-mass error, seconds) and one summary line:
vertices, cut + harmonic seconds, Newton iterations and seconds, centroid flips, untangled and fallback vertices,
flipped triangles, area distortion harmonic -> OT, and the load average (the dev machine is shared; figures
under load are slower). The figures are measurements, not asserts.
Run: ``nice python bench/newton_100k.py [--mesh PATH] [--subdivisions 1] [--cut-paths 8]``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import trimesh

from otcore.errors import OTConvergenceError
from otcore.mesh.metrics import normalize_to_unit_diagonal
from otcore.mesh.parameterization import cut_and_map, feature_masses, ot_parameterization
from storage.meshes import MeshItem, read_mesh

DEFAULT_MESH = Path(__file__).resolve().parents[2] / "shared" / "data" / "meshes-more" / "armadillo.obj"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", type=Path, default=DEFAULT_MESH)
    parser.add_argument("--subdivisions", type=int, default=1)
    parser.add_argument("--cut-paths", type=int, default=8)
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args()

    mesh = read_mesh(MeshItem(args.mesh.stem, str(args.mesh)))
    vertices, faces = normalize_to_unit_diagonal(mesh.vertices)[0], mesh.faces
    for _ in range(args.subdivisions):
        vertices, faces = trimesh.remesh.subdivide(vertices, faces)
    start = time.perf_counter()
    disk, harmonic = cut_and_map(vertices, faces, args.cut_paths)
    masses = feature_masses(vertices, faces, disk, 0.0)
    print(f"{args.mesh.stem} x{args.subdivisions}: {len(vertices)} vertices, disk {len(disk.vertices)} vertices, "
          f"cut ({args.cut_paths} paths at most) + harmonic map {time.perf_counter() - start:.0f} s", flush=True)
    solve_start = time.perf_counter()

    def progress(iteration: int, error: float) -> None:
        print(f"  iteration {iteration}: max cell mass error {error:.2e}, {time.perf_counter() - solve_start:.0f} s",
              flush=True)

    try:
        ot = ot_parameterization(disk, harmonic.uv, masses, tol=args.tol, progress=progress)
    except OTConvergenceError as error:
        print(f"OT failed after {time.perf_counter() - solve_start:.0f} s: {error}")
        return
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"vertices={len(disk.vertices)} newton_iterations={ot.ot.iterations} solve_seconds={ot.ot.seconds:.0f} "
          f"mass_error={ot.ot.mass_error:.1e} centroid_flips={ot.centroid_flips} untangled={ot.untangled_vertices} "
          f"fallback={ot.fallback_vertices} flipped={ot.flipped_triangles} area_distortion "
          f"{harmonic.area_distortion:.2f} -> {ot.area_distortion:.2f} (load average {load})")


if __name__ == "__main__":
    main()
