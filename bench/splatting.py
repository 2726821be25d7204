"""Benchmark: the torch 3DGS renderer (otcore.splats.rasterizer) on the bundled and shared Gaussian scenes.

Targets on the 2-core dev machine: a 128x128 render of the 45,624-Gaussian donut well under 1 s, a 256x256 render
of the 152,746-Gaussian biker in a few seconds. For each scene and resolution, ``--views`` orbit cameras
(:func:`otcore.splats.cameras.orbit_cameras`) are rendered ``--repeats`` times after one warm-up render; the table gives
the median wall-clock seconds (``time.perf_counter``) of a render without autograd and of a forward + backward pass
with gradients on ``sh_dc`` and opacities (the GHAP fine-tuning step), the mean number of Gaussians in view and the
mean fraction of pixels with alpha > 0.5. Figures are measurements, not asserts. Other processes on the machine slow
torch a lot (with two intra-op threads every small op waits for the descheduled one): the thread count and the load
average are printed with the table; ``--threads 1`` is often faster on a busy machine.

Run: ``.venv/bin/python bench/splatting.py [--shared ../shared/data] [--threads N] [--views 4] [--repeats 3]
[--skip-grad]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from otcore.splats.cameras import orbit_cameras
from otcore.splats.rasterizer import _project
from otcore.splats.scene import render_scene, scene_tensors
from storage.gaussians import read_scene

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = ROOT.parent / "shared" / "data"


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_scene(path: Path, resolution: int, views: int, repeats: int, grad: bool) -> dict[str, float | int | str]:
    scene = read_scene(str(path))
    params = scene_tensors(scene.means, scene.scales, scene.quats, scene.opacities, scene.sh_dc, scene.sh_rest)
    cams = orbit_cameras(scene.means, n_views=views, width=resolution, height=resolution)
    with torch.no_grad():
        render_scene(params, cams[0])  # warm-up
    plain, fwd_bwd, visible, coverage = [], [], [], []
    for cam in cams:
        with torch.no_grad():
            plain.append(median_seconds(lambda cam=cam: render_scene(params, cam), repeats))
            _, alpha = render_scene(params, cam, return_alpha=True)
            coverage.append(float((alpha > 0.5).float().mean()))
            p = params
            visible.append(len(_project(p["means"], p["quats"], p["scales"], p["opacities"], cam, 0.01, 1e10, 0.3).ids))
        if grad:
            trainable = {k: v.clone().requires_grad_(k in ("sh_dc", "opacities")) for k, v in params.items()}

            def step(cam=cam, trainable=trainable) -> None:
                render_scene(trainable, cam).square().mean().backward()

            fwd_bwd.append(median_seconds(step, repeats))
    return {
        "scene": path.name,
        "gaussians": len(scene),
        "image": f"{resolution}x{resolution}",
        "render s": statistics.median(plain),
        "fwd+bwd s": statistics.median(fwd_bwd) if fwd_bwd else float("nan"),
        "in view": round(statistics.mean(visible)),
        "coverage": statistics.mean(coverage),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="folder holding gaussians/*.ply")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-grad", action="store_true", help="time renders without autograd only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cases = [(ROOT / "data" / "samples" / "gaussians" / "donut-8k.ply", 128)]
    shared = args.shared / "gaussians"
    cases += [(shared / "donut.ply", 128), (shared / "donut.ply", 256), (shared / "biker.ply", 256)]
    missing = [str(p) for p, _ in cases if not p.exists()]
    if missing:
        print(f"skipping missing scenes: {', '.join(missing)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, CPU, float32; "
          f"{args.views} orbit views x {args.repeats} repeats (median); load average {os.getloadavg()[0]:.2f}")
    rows = [bench_scene(p, res, args.views, args.repeats, not args.skip_grad) for p, res in cases if p.exists()]
    header = f"| {'scene':12s} | {'Gaussians':>9s} | {'image':7s} | {'render s':>8s} | {'fwd+bwd s':>9s} | " \
             f"{'in view':>7s} | {'coverage':>8s} |"
    print(header)
    print("|" + "|".join("-" * (len(cell) + 0) for cell in header.split("|")[1:-1]) + "|")
    for r in rows:
        print(f"| {r['scene']:12s} | {r['gaussians']:>9,d} | {r['image']:7s} | {r['render s']:>8.3f} | "
              f"{r['fwd+bwd s']:>9.3f} | {r['in view']:>7,d} | {r['coverage']:>8.1%} |")
    print(f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
