"""Benchmark: continuous level of detail of the restoration network (issue 16).

One model restores the stored 33² level of every evaluation mesh (``meshes/``, never seen in training) at output
resolutions between 65 and 257, powers of two plus one or not; bilinear upsampling of the same level to the same
resolution is the baseline. The same pipeline as the flow: OT parameterization (``parameterize_to_square``),
257² geometry image, 14-bit quantisation, vertex-preserving mipmaps; the restored grid mesh is measured against
the source mesh (:func:`otcore.mesh.metrics.surface_distances`, 50k samples each way, unit bbox diagonal).

Prints the median Hausdorff and Chamfer-L2 per output resolution and writes ``<out>.parquet`` and ``<out>.png``
(Hausdorff and Chamfer-L2 against output resolution).
Run: ``.venv/bin/python bench/restoration_lod.py [--shared ../shared/data] [--model MODEL.safetensors]``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd

from flows.runtime.artifacts import figure_png
from otcore.mesh.geometry_image import (
    dequantize,
    geometry_image_to_mesh,
    quantized_pyramid,
    resample_geometry_image,
    restore_level,
)
from otcore.mesh.metrics import normalize_to_unit_diagonal, surface_distances
from otcore.mesh.parameterization import parameterize_to_square
from storage.meshes import MeshItem, read_mesh
from tasks.shared.restoration import load_restoration

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared" / "data"
RESOLUTIONS = (65, 80, 97, 100, 129, 160, 200, 229, 257)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="folder holding meshes/*.obj")
    parser.add_argument("--model", default=str(REPO / "data" / "models" / "restoration.safetensors"))
    parser.add_argument("--input", type=int, default=33, help="stored level restored (side)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=list(RESOLUTIONS))
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "restoration_lod")
    args = parser.parse_args()

    neural = load_restoration(args.model)
    rows = []
    for path in sorted((args.shared / "meshes").glob("*.obj")):
        start = time.perf_counter()
        mesh = read_mesh(MeshItem(path.stem, str(path)))
        vertices, _, _ = normalize_to_unit_diagonal(mesh.vertices)
        square = parameterize_to_square(vertices, mesh.faces)
        if square.ot is None:
            print(f"{path.stem}: no OT map ({square.ot_error}), skipped")
            continue
        image = resample_geometry_image(square.disk.vertices, square.disk.faces, square.ot.uv, 257)
        quantized, levels = quantized_pyramid(image, 14, 5)
        level = next(codes for codes in levels if codes.shape[-1] == args.input)
        coarse = dequantize(level, quantized.offset, quantized.scale)
        for resolution in args.resolutions:
            for name, restore in (("bilinear", restore_level), ("neural", neural.restore)):
                restored = restore(coarse, resolution)
                distances = surface_distances(*geometry_image_to_mesh(restored), vertices, mesh.faces,
                                              args.samples, 0)
                rows.append({"mesh": path.stem, "input": args.input, "resolution": resolution, "restore": name,
                             "chamfer_l2": distances.chamfer_l2, "hausdorff": distances.hausdorff})
        print(f"{path.stem}: {time.perf_counter() - start:.0f} s", flush=True)

    frame = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(args.out.with_suffix(".parquet"), index=False)
    medians = frame.groupby(["resolution", "restore"])[["hausdorff", "chamfer_l2"]].median().unstack("restore")
    print(f"\nload average {os.getloadavg()[0]:.1f}; {frame['mesh'].nunique()} meshes; restored from "
          f"{args.input}²; medians (unit bbox diagonal):")
    print(medians.to_markdown(floatfmt=".3g"))
    args.out.with_suffix(".png").write_bytes(lod_png(medians, args.input))
    print(f"{args.out}.parquet, {args.out}.png")


def lod_png(medians: pd.DataFrame, source: int) -> bytes:
    """Median Hausdorff and Chamfer-L2 against output resolution, one line per restoration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for axis, metric in zip(axes, ("hausdorff", "chamfer_l2"), strict=True):
        for restore in medians[metric].columns:
            axis.plot(medians.index, medians[metric][restore], marker="o", label=restore)
        axis.set(xlabel=f"output resolution (restored from {source}²)", ylabel=f"median {metric}",
                 yscale="log", title=metric)
        axis.grid(True, alpha=0.3)
        axis.legend()
    return figure_png(figure)


if __name__ == "__main__":
    main()
