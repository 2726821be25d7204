"""Re-score a finished autodecoder run's reconstructions with both EM-kD k-d splits (``pca`` and ``axis``).

EM-kD's value depends on how the k-d tree splits the two clouds (:func:`otcore.points.em_kd.em_kd`): this reads the
decoded clouds a run stored (``<store>/<run_id>/<item>/decoded``) and its collection's vertices, and prints, per
variant, the mean/median/max EM-kD (unit bounding-box diagonal of each target shape, leaf 1024, certified auction)
with each split, so runs scored before the default changed to ``pca`` can be compared. Only ``point_source="vertices"``
runs can be re-scored (sampled targets are not stored).

Run: ``.venv/bin/python bench/rescore_autodecoder.py STORE/RUN_ID COLLECTION [--out table.parquet]``, e.g.
``bench/rescore_autodecoder.py /tmp/crane2/store/autodecoder-de0c10135d ../shared/data/consistent/crane/crane.npz``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from otcore.points.em_kd import EM_KD_SPLITS, em_kd
from storage.collections import read_collection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run's folder in the store (holds one group per item)")
    parser.add_argument("collection", help="the collection the run trained on")
    parser.add_argument("--leaf-size", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=None, help="per-shape Parquet table")
    args = parser.parse_args()

    collection, _ = read_collection(args.collection)
    targets = collection.vertices.astype(np.float64)
    diagonals = np.linalg.norm(targets.max(axis=1) - targets.min(axis=1), axis=1)
    rows = []
    for item in sorted(p for p in args.run.iterdir() if (p / "decoded").exists()):
        decoded = zarr.open_array(str(item / "decoded"), mode="r")[:].astype(np.float64)
        if decoded.shape != targets.shape:
            raise SystemExit(f"{item.name}: decoded {decoded.shape} does not match the collection {targets.shape}")
        variant = item.name.rsplit("--", 1)[-1]
        for split in EM_KD_SPLITS:
            start = time.perf_counter()
            for i, shape_id in enumerate(collection.shape_ids):
                value = em_kd(decoded[i], targets[i], leaf_size=args.leaf_size, split=split).em_kd / diagonals[i]
                rows.append({"variant": variant, "split": split, "shape_id": shape_id, "em_kd": value})
            print(f"{variant} split={split}: {time.perf_counter() - start:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    summary = table.groupby(["variant", "split"])["em_kd"].agg(["mean", "median", "max"]).unstack("split")
    print(summary.to_markdown(floatfmt=".4f"))
    if args.out is not None:
        table.to_parquet(args.out)


if __name__ == "__main__":
    main()
