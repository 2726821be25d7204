"""HOTS3D spherical OT on von Mises–Fisher mixtures at d = 3, 64, 768: energy distance before/after, component
accuracy, seconds. The unit tests train briefly (100 steps); this trains as long as the job's defaults.

    .venv/bin/python bench/spherical_ot.py [--steps 300] [--count 1000] [--device auto]

Source: 3 vMF components with random means; target: the same components with each mean rotated by 0.5 rad
(28.6 deg) in a random tangent direction. The OT map should move every source component onto its own target
component (accuracy = fraction of mapped points whose nearest target mean is their own component's).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the vMF fixtures of the tests

from von_mises_fisher import shifted_vmf_mixtures  # noqa: E402

from otcore.device import resolve_device  # noqa: E402
from otcore.ot.spherical_ot import SphericalOTConfig, energy_distance, train_spherical_ot  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (small networks: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"load average {os.getloadavg()[0]:.1f}, device {device}, torch threads {torch.get_num_threads()}")
    print(f"{'d':>4} {'ED before':>10} {'ED after':>10} {'reduction':>9} {'accuracy':>8} {'seconds':>8}")
    for d in (3, 64, 768):
        source, labels, target, target_means = shifted_vmf_mixtures(d, args.count)
        config = SphericalOTConfig(hidden=128, layers=3, steps=args.steps, inner_steps=5, batch_size=512, lr=3e-3)
        start = time.perf_counter()
        result = train_spherical_ot(source, target, config, device=device)
        mapped = result.map.transport(source)
        seconds = time.perf_counter() - start
        before, after = energy_distance(source, target), energy_distance(mapped, target)
        accuracy = (np.argmax(mapped @ target_means.T, axis=1) == labels).mean()
        print(f"{d:>4} {before:>10.4f} {after:>10.4f} {before / after:>9.1f} {accuracy:>8.3f} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
