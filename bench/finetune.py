"""Benchmark: appearance fine-tuning on CPU, the previous path against the present one, on the same inputs.

Three schedules, run interleaved (``--repeats`` rounds of old, frozen-only, new) so load noise hits them alike:

* ``old``: the path up to pipeline version 2, ``FineTuneConfig(steps=200, sh_learning_rate=0.01,
  opacity_learning_rate=0.05, renderer="render")``: the full renderer with autograd through checkpointed tile
  batches at every step;
* ``frozen``: the same 200 steps and rates with ``renderer="frozen"`` (per-camera cached projection, tiles, sort and
  SH basis; analytic backward of the compositing) -- the renderer's share of the speed-up alone;
* ``new``: the present default, ``FineTuneConfig()`` (frozen renderer, 100 steps at twice the rates).

Inputs: a scene reduced to ``--ratio`` by GHAP (KL), ``--train-views`` orbit cameras (seed 1) with the original's
renders as targets, and ``--views`` held-out orbit cameras on which the final PSNR (dB, mean over views, renders
clamped to [0, 1]) is measured, as the reduction task does. Scenes: ``donut-8k`` (bundled) and ``biker`` (the
whole shared scene; ``--biker-fraction`` takes a seeded random subset of it first). Prints seconds (median of the
repeats), final PSNR and the speed-up ``old / new`` with the load average.

Run: ``nice .venv/bin/python bench/finetune.py [--shared ../shared/data] [--resolution 128] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import numpy as np
import torch
from ghap import subset  # bench/ghap.py: a seeded random fraction of a scene

from otcore.splats.appearance_finetune import FineTuneConfig, finetune_appearance, render_views
from otcore.splats.cameras import orbit_cameras
from otcore.splats.image_metrics import psnr
from otcore.splats.reduction import reduce
from otcore.splats.scene import scene_tensors
from storage.gaussians import read_scene

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = ROOT.parent / "shared" / "data"
SCHEDULES = {
    "old": FineTuneConfig(steps=200, sh_learning_rate=0.01, opacity_learning_rate=0.05, renderer="render"),
    "frozen": FineTuneConfig(steps=200, sh_learning_rate=0.01, opacity_learning_rate=0.05, renderer="frozen"),
    "new": FineTuneConfig(),
}


def mean_psnr(params: dict[str, torch.Tensor], cameras: list, reference: torch.Tensor) -> float:
    images = render_views(params, cameras)
    return float(np.mean([float(psnr(a.clamp(0, 1), b.clamp(0, 1))) for a, b in zip(images, reference, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="folder holding gaussians/biker.ply")
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--train-views", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--biker-fraction", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the renders are many small ops)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"GHAP to {args.ratio:g}, {args.resolution} px, {args.train_views} training / {args.views} held-out views, "
          f"{args.repeats} interleaved repeats; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n", flush=True)
    scenes = {"donut-8k": read_scene(str(ROOT / "data" / "samples" / "gaussians" / "donut-8k.ply")),
              "biker": subset(read_scene(str(args.shared / "gaussians" / "biker.ply")), args.biker_fraction)}
    header = "| scene | M | schedule | steps | seconds | psnr before | psnr after | speed-up vs old | load |"
    print(header)
    print("|" + "|".join("---" for _ in header.split("|")[1:-1]) + "|", flush=True)
    for name, scene in scenes.items():
        count = int(round(args.ratio * len(scene)))
        r = reduce("ghap", scene.means, scene.scales, scene.quats, scene.opacities, scene.sh_dc, scene.sh_rest, count)
        original = scene_tensors(scene.means, scene.scales, scene.quats, scene.opacities, scene.sh_dc, scene.sh_rest)
        reduced = scene_tensors(r.means, r.scales, r.quats, r.opacities, r.sh_dc, r.sh_rest)
        size = args.resolution
        train = orbit_cameras(scene.means, n_views=args.train_views, width=size, height=size, seed=1,
                              weights=scene.opacities)
        held_out = orbit_cameras(scene.means, n_views=args.views, width=size, height=size, weights=scene.opacities)
        targets, reference = render_views(original, train), render_views(original, held_out)
        before = mean_psnr(reduced, held_out, reference)
        seconds: dict[str, list[float]] = {k: [] for k in SCHEDULES}
        after: dict[str, float] = {}
        loads: list[float] = []
        for _ in range(args.repeats):
            for key, config in SCHEDULES.items():
                result = finetune_appearance(reduced, train, targets, config)
                seconds[key].append(result.seconds)
                loads.append(os.getloadavg()[0])
                tuned = {**reduced, "sh_dc": result.sh_dc, "sh_rest": result.sh_rest, "opacities": result.opacities}
                after[key] = mean_psnr(tuned, held_out, reference)
        old = statistics.median(seconds["old"])
        for key, config in SCHEDULES.items():
            median = statistics.median(seconds[key])
            print(f"| {name} | {count} | {key} | {config.steps} | {median:.1f} | {before:.2f} | {after[key]:.2f} | "
                  f"{old / median:.2f}x | {np.mean(loads):.2f} |", flush=True)
    print(f"\nload average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
