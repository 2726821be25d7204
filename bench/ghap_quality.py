"""Benchmark: render quality of GHAP's two cost forms and the pruning baselines at one ratio (default 10%).

Each scene goes through the reduction task itself (:func:`tasks.gaussian_reduction.reduce_scene`, without Prefect):
every method reduces it to exactly ``round(ratio * N)`` Gaussians, is rendered from ``--views`` held-out orbit
cameras against the original's renders (psnr dB / ssim, mean over views), then its colours and opacities are
fine-tuned against ``--train-views`` other cameras (``--finetune-steps``) and measured again. Methods:
``ghap-kl`` and ``ghap-euclidean`` (``otcore/splats/ghap.py``: KL + moment matching; the released code's
``||dmu||^2 + ||dSigma||_F^2`` + plain averages), ``random``, ``top_opacity`` and ``lightgaussian`` (LightGaussian's
global significance from the training views' hit counts, ``otcore/splats/gaussian_pruning.py``).

Scenes: ``donut.ply`` and ``biker.ply`` of ``--shared``/gaussians (``biker.compressed.ply`` and ``biker.spz`` are the
same biker in other formats, so there is no third distinct scene offline), plus ``biker-crop``: the biker's
Gaussians whose mean lies on the +x side of the opacity-weighted median x (about half of them), a spatial crop,
labelled as such, whose cameras are framed on the crop alone.

Run: ``nice .venv/bin/python bench/ghap_quality.py [--shared ../shared/data] [--ratio 0.1] [--resolution 128]
[--views 8] [--train-views 16] [--finetune-steps 100] [--scene donut --scene biker --scene biker-crop]``.
The load average is printed beside the timings (2-core machine shared with other jobs).

:func:`measure` is the same measurement without Prefect, storage or the task (``otcore`` only, scenes as arrays),
for a machine that has torch but not the project's other dependencies (the GPU check of issue 18 used it on
``.npz`` exports of the scenes).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from prefect.logging import disable_run_logger

from storage.gaussians import GaussianScene, read_scene, write_scene
from tasks.gaussian_reduction import GaussianReductionConfig, reduce_scene

DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
METHODS = ["ghap-kl", "ghap-euclidean", "random", "top_opacity", "lightgaussian"]


def crop_positive_x(scene: GaussianScene) -> GaussianScene:
    """The Gaussians on the +x side of the opacity-weighted median of the means' x (a spatial crop)."""
    x = scene.means[:, 0].astype(np.float64)
    order = np.argsort(x)
    cum = np.cumsum(scene.opacities[order].astype(np.float64))
    median = x[order][np.searchsorted(cum, 0.5 * cum[-1])]
    keep = np.flatnonzero(x > median)
    return GaussianScene(f"{scene.scene_id}-crop", "", scene.means[keep], scene.scales[keep], scene.quats[keep],
                         scene.opacities[keep], scene.sh_dc[keep], scene.sh_rest[keep], None)


def measure(arrays: dict[str, np.ndarray], ratio: float, methods: list[str], resolution: int, views: int,
            train_views: int, finetune_steps: int, device: str) -> list[dict]:
    """The reduction task's measurement of one scene (``arrays``: means, scales, quats, opacities, sh_dc, sh_rest)
    with ``otcore`` alone: rows ``{method, n_in, n_out, psnr, ssim, psnr_ft, ssim_ft, seconds, ft_seconds}``."""
    from otcore.splats.appearance_finetune import FineTuneConfig, finetune_appearance, render_views
    from otcore.splats.cameras import orbit_cameras
    from otcore.splats.image_metrics import psnr, ssim
    from otcore.splats.rasterizer import hit_counts
    from otcore.splats.reduction import reduce
    from otcore.splats.scene import scene_tensors

    keys = ("means", "scales", "quats", "opacities", "sh_dc", "sh_rest")
    means, scales, quats, opacities, sh_dc, sh_rest = (arrays[k] for k in keys)
    n = len(means)
    count = max(1, int(round(ratio * n)))
    cams = {seed: [c.to(device) for c in orbit_cameras(means, n_views=k, width=resolution, height=resolution,
                                                       seed=seed, weights=opacities)]
            for seed, k in ((0, views), (1, train_views))}
    original = scene_tensors(means, scales, quats, opacities, sh_dc, sh_rest, device)
    reference, targets = render_views(original, cams[0]), render_views(original, cams[1])
    hits = hit_counts(original["means"], original["quats"], original["scales"], original["opacities"],
                      cams[1]).cpu().numpy()

    def quality(images: torch.Tensor) -> tuple[float, float]:
        a, b = images.clamp(0, 1), reference.clamp(0, 1)
        return (float(np.mean([float(psnr(x, y)) for x, y in zip(a, b, strict=True)])),
                float(np.mean([float(ssim(x, y)) for x, y in zip(a, b, strict=True)])))

    rows = []
    for method in methods:
        started = time.perf_counter()
        r = reduce(method, means, scales, quats, opacities, sh_dc, sh_rest, count, hits=hits)
        seconds = time.perf_counter() - started
        params = scene_tensors(r.means, r.scales, r.quats, r.opacities, r.sh_dc, r.sh_rest, device)
        row = {"method": method, "n_in": n, "n_out": count, "seconds": seconds}
        row["psnr"], row["ssim"] = quality(render_views(params, cams[0]))
        if finetune_steps:
            tuned = finetune_appearance(params, cams[1], targets, FineTuneConfig(steps=finetune_steps))
            params = {**params, "sh_dc": tuned.sh_dc, "sh_rest": tuned.sh_rest, "opacities": tuned.opacities}
            row["psnr_ft"], row["ssim_ft"] = quality(render_views(params, cams[0]))
            row["ft_seconds"] = tuned.seconds
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="folder holding gaussians/*.ply")
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--train-views", type=int, default=16)
    parser.add_argument("--finetune-steps", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scene", action="append", choices=["donut", "biker", "biker-crop"],
                        help="repeatable; default all three")
    args = parser.parse_args()
    scenes = args.scene or ["donut", "biker", "biker-crop"]
    config = GaussianReductionConfig(methods=METHODS, resolution=args.resolution, views=args.views,
                                     train_views=args.train_views, finetune_steps=args.finetune_steps,
                                     device=args.device)
    print(f"ratio {args.ratio:g}, {args.resolution}x{args.resolution} px, {args.views} held-out / "
          f"{args.train_views} training views, {args.finetune_steps} fine-tuning steps; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, device {args.device}, load average "
          f"{os.getloadavg()[0]:.2f}\n", flush=True)
    header = ("| scene | N | M | method | psnr | ssim | psnr fine-tuned | ssim fine-tuned | reduce s | fine-tune s |"
              " load |")
    print(header)
    print("|" + "|".join("---" for _ in header.split("|")[1:-1]) + "|", flush=True)
    with tempfile.TemporaryDirectory() as tmp, disable_run_logger():
        for name in scenes:
            if name == "biker-crop":
                uri = f"{tmp}/biker-crop.ply"
                write_scene(crop_positive_x(read_scene(str(args.shared / "gaussians" / "biker.ply"))), uri)
            else:
                uri = str(args.shared / "gaussians" / f"{name}.ply")
            started = time.perf_counter()
            result = reduce_scene.fn(uri, args.ratio, f"{tmp}/store", "bench", config)
            for failure in result.failures:
                print(f"| {name} | failed: {failure['stage']} {failure['error_type']}: {failure['message']} |")
            rows = result.rows("gaussian_reduction")
            by = {(r["method"], r["fine_tuned"]): r for r in rows}
            for method in METHODS:
                if (method, False) not in by:
                    continue
                before, after = by[(method, False)], by.get((method, True))
                tuned = (f"{after['psnr']:.2f} | {after['ssim']:.4f} | {before['seconds']:.1f} | "
                         f"{after['seconds'] - before['seconds']:.1f}" if after else "- | - | "
                         f"{before['seconds']:.1f} | -")
                print(f"| {name} | {before['n_in']} | {before['n_out']} | {method} | {before['psnr']:.2f} | "
                      f"{before['ssim']:.4f} | {tuned} | {os.getloadavg()[0]:.2f} |", flush=True)
            print(f"<!-- {name}: {time.perf_counter() - started:.0f} s in all -->", flush=True)


if __name__ == "__main__":
    main()
