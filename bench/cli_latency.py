"""Benchmark: how long the command line takes to answer, beside ``prefect --help`` in the same venv.

Times (wall clock, median of ``--repeats`` runs, the commands interleaved so that load changes hit all alike):
``brenier --help``, ``brenier geometry-images --help``, the five usage errors of issue 21 (a missing path, a glob
that matches nothing, an unknown ``--domain``, a negative ``--resolution``, a store that is a file: exit 2, no
server) and ``prefect --help``. Target of issue 21: each of ours under 1 s and at or below Prefect's.
The load average is printed: on a shared machine every figure moves with it.

Run: ``.venv/bin/python bench/cli_latency.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
MESHES = str(Path(__file__).resolve().parents[1] / "data" / "samples" / "meshes")
SCRATCH = Path(tempfile.mkdtemp(prefix="brenier-cli-latency-"))
STORE_FILE = SCRATCH / "store-is-a-file"
STORE_FILE.write_text("")
GEOMETRY_IMAGES = [str(BIN / "brenier"), "geometry-images"]
STORE = ["--store", str(SCRATCH / "store")]
COMMANDS = {
    "brenier --help": [str(BIN / "brenier"), "--help"],
    "brenier geometry-images --help": [*GEOMETRY_IMAGES, "--help"],
    "usage error: /nonexistent/path": [*GEOMETRY_IMAGES, "/nonexistent/path", *STORE],
    "usage error: glob matching nothing": [*GEOMETRY_IMAGES, f"{MESHES}/*.nothing", *STORE],
    "usage error: --domain torus": [*GEOMETRY_IMAGES, MESHES, "--domain", "torus", *STORE],
    "usage error: --resolution -3": [*GEOMETRY_IMAGES, MESHES, "--resolution", "-3", *STORE],
    "usage error: --store is a file": [*GEOMETRY_IMAGES, MESHES, "--store", str(STORE_FILE)],
    "prefect --help": [str(BIN / "prefect"), "--help"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    codes: dict[str, int] = {}
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; median of {args.repeats} runs\n")
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            times[name].append(time.perf_counter() - start)
            codes[name] = done.returncode
    prefect = statistics.median(times["prefect --help"])
    print(f"| {'command':<42} | {'seconds':>7} | {'vs prefect --help':>17} | exit |")
    print(f"|{'-' * 44}|{'-' * 9}|{'-' * 19}|------|")
    for name, runs in times.items():
        seconds = statistics.median(runs)
        print(f"| {name:<42} | {seconds:>7.2f} | {seconds / prefect:>17.2f} | {codes[name]:>4} |")
    print(f"\nload average now {os.getloadavg()[0]:.2f}")
    shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
