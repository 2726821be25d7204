"""NeuralQAAD's Table 1 on a consistent collection: every ablation column and the AtlasNetV2 baseline.

Trains each variant of :data:`otcore.points.autodecoder_training.VARIANTS` (``chamfer-only`` = "Chamfer",
``mse-random`` = "MSE" with a random bijection, ``greedy`` = "+ GREEDY", ``neuralqaad`` = "+ REASSIGN", and
``atlasnetv2``) on one collection, sequentially in this process, and after each variant appends its row to
``<out>/table1.csv`` (and ``table1.parquet`` when pyarrow is installed), its per-shape rows to
``<out>/table1_shapes.csv``, and rewrites ``<out>/table1.md``. Columns: mean/median EM-kD with the paper's axis
split and with the pca split (unit-bbox-diagonal units of each shape), mean chamfer_l2 (same units, squared),
parameters (decoder), network floats (decoder + input cloud), latent floats, compression ratio (dataset floats /
(network + latent floats)), training and evaluation seconds.

Imports only ``otcore`` (with torch, numpy, scipy, pandas): no Prefect, Zarr, trimesh, storage or tasks, so it runs
on a bare GPU machine. Progress is printed per epoch (flushed).

Examples::

    # CPU smoke test on the bundled 16 crane frames
    python bench/neuralqaad_table1.py --npz data/samples/consistent/crane-16.npz --chamfer-epochs 2 --qaad-epochs 3 \\
        --device cpu --out /tmp/table1
    # all 175 crane frames, vertices (10,002 per frame), 2,048 sampled points per shape and step
    python bench/neuralqaad_table1.py --npz ../shared/data/consistent/crane/crane.npz --device cuda \\
        --chamfer-epochs 20 --qaad-epochs 60 --out runs/table1-2048
    # paper scale: 65,536 area-uniform surface samples per frame, shared (face, barycentric) pairs
    python bench/neuralqaad_table1.py --npz ../shared/data/consistent/crane/crane.npz --device cuda \\
        --surface-points 65536 --points-per-shape 8192 --chamfer-epochs 10 --qaad-epochs 30 --eval-shapes 16 \\
        --out runs/table1-65536
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otcore.points.autodecoder import count_parameters  # noqa: E402
from otcore.points.autodecoder_training import (  # noqa: E402
    BASELINE_PATCHES,
    VARIANTS,
    TrainingConfig,
    new_training_state,
    normalization,
    train,
    variant_config,
)
from otcore.points.chamfer import chamfer_l2  # noqa: E402
from otcore.points.point_sampling import sample_correspondent_surface  # noqa: E402
from otcore.points.qaad import leafwise_assignment  # noqa: E402


class OutOfTime(Exception):
    """Raised from the step callback when a variant's --variant-seconds are spent."""


PAPER_LABEL = {"chamfer-only": "Chamfer", "mse-random": "MSE (random bijection)", "greedy": "+ GREEDY",
               "neuralqaad": "+ REASSIGN (NeuralQAAD)", "atlasnetv2": "AtlasNetV2"}


def load_points(npz: str, surface_points: int, frames: int, seed: int) -> np.ndarray:
    """``[S, N, 3]`` float32: the vertices, or ``surface_points`` correspondent surface samples, of the first
    ``frames`` shapes (all when 0)."""
    data = np.load(npz)
    vertices = data["vertices"]
    if frames:
        vertices = vertices[:frames]
    if surface_points:
        if "faces" not in data:
            raise SystemExit(f"{npz} has no faces: --surface-points needs a mesh collection")
        return sample_correspondent_surface(vertices, data["faces"], surface_points, seed)
    return np.ascontiguousarray(vertices, dtype=np.float32)


@torch.no_grad()
def em_kd_batch(decoded: torch.Tensor, targets: torch.Tensor, leaf_size: int, split: str,
                max_cost_entries: int) -> np.ndarray:
    """EM-kD per shape (input units) with one batched certified auction over the leaves of many shapes.

    The same leaves and solver as :func:`otcore.points.em_kd.em_kd` (``leafwise_assignment`` with the Euclidean
    cost; tests/otcore/points check they agree), batched over shapes.
    """
    sigma = leafwise_assignment(decoded, targets, leaf_size, split, "auction", "euclidean",
                                max_cost_entries=max_cost_entries)
    matched = targets.gather(1, sigma.clamp(min=0)[:, :, None].expand(-1, -1, 3))
    if bool((sigma < 0).any()):
        raise RuntimeError("a point was left unmatched by the per-leaf auction")
    return (decoded.double() - matched.double()).norm(dim=2).mean(dim=1).cpu().numpy()


def markdown(rows: list[dict]) -> str:
    header = ("| variant | paper column | mean EM-kD (axis) | median (axis) | mean EM-kD (pca) | median (pca) | "
              "mean chamfer_l2 | parameters | compression ratio | train s | eval s |")
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| `{r['variant']}` | {PAPER_LABEL.get(r['variant'], '')} | {r['mean_em_kd_axis']:.4f} | "
            f"{r['median_em_kd_axis']:.4f} | {r['mean_em_kd_pca']:.4f} | {r['median_em_kd_pca']:.4f} | "
            f"{r['mean_chamfer_l2']:.3e} | {r['parameters']:,} | {r['compression_ratio']:.1f} | "
            f"{r['train_seconds']:.0f} | {r['eval_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def write(out: Path, rows: list[dict], shape_rows: list[dict], meta: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "table1.csv", index=False)
    pd.DataFrame(shape_rows).to_csv(out / "table1_shapes.csv", index=False)
    try:
        table.to_parquet(out / "table1.parquet", index=False)
    except (ImportError, ValueError):
        pass  # no pyarrow/fastparquet on this machine: the CSV has the same rows
    (out / "table1.md").write_text(meta + "\n\n" + markdown(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npz", default="data/samples/consistent/crane-16.npz",
                        help="collection: vertices [S,V,3] (+ faces for --surface-points)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--chamfer-epochs", type=int, default=20, help="Chamfer warm-up epochs (all variants)")
    parser.add_argument("--qaad-epochs", type=int, default=60, help="epochs after the warm-up")
    parser.add_argument("--points-per-shape", type=int, default=2048, help="points sampled per shape per step")
    parser.add_argument("--surface-points", type=int, default=0,
                        help="0: train on the vertices; N: N area-uniform surface samples per shape (paper: 65536)")
    parser.add_argument("--frames", type=int, default=0, help="use the first N shapes (0: all)")
    parser.add_argument("--shapes-per-step", type=int, default=8)
    parser.add_argument("--latent-size", type=int, default=64)
    parser.add_argument("--patches", type=int, default=64, help="NeuralQAAD's K")
    parser.add_argument("--baseline-patches", type=int, default=BASELINE_PATCHES, help="AtlasNetV2's patches")
    parser.add_argument("--leaf-size", type=int, default=1024, help="k-d leaf size of QAAD_GREEDY and EM-kD")
    parser.add_argument("--greedy-tolerance", type=float, default=1e-3,
                        help="certified relative gap of QAAD_GREEDY's per-leaf auction (EM-kD always uses 1e-3)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--no-encoder-init", action="store_true", help="ablate the PointNet code initialisation")
    parser.add_argument("--no-refeed", action="store_true", help="ablate the q_i re-feed of the per-patch layer")
    parser.add_argument("--chamfer-form", default="eq11", choices=["eq11", "squared-mean"])
    parser.add_argument("--eval-shapes", type=int, default=0,
                        help="score EM-kD/Chamfer on N evenly spaced shapes (0: all; at 65536 points 16 is plenty)")
    parser.add_argument("--max-cost-entries", type=int, default=0,
                        help="auction cost entries per chunk (0: 2**30 on cuda, 2**26 on cpu)")
    parser.add_argument("--variant-seconds", type=float, default=0.0,
                        help="training budget per variant (0: none). The warm-up gets its share of the epochs; when "
                             "it is spent, training jumps to the first epoch after the warm-up; when all is spent, "
                             "training stops and the variant is evaluated (epochs_run records what ran)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/neuralqaad-table1")
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    max_cost_entries = args.max_cost_entries or (1 << 30 if device.type == "cuda" else 1 << 26)
    started = time.perf_counter()
    points = load_points(args.npz, args.surface_points, args.frames, args.seed)
    centre, scale = normalization(points)
    targets = torch.from_numpy((points - centre) / scale).float().to(device)
    n_shapes, n_points = points.shape[:2]
    diagonals = np.linalg.norm(points.max(axis=1) - points.min(axis=1), axis=1)
    factors = scale / diagonals  # normalised collection units -> each shape's unit-bbox-diagonal units
    eval_index = (np.unique(np.linspace(0, n_shapes - 1, args.eval_shapes).round().astype(int))
                  if args.eval_shapes else np.arange(n_shapes))
    source = f"{args.surface_points} surface samples" if args.surface_points else "vertices"
    meta = (f"`{' '.join(sys.argv)}`\n\n{n_shapes} shapes x {n_points} points ({source}) from `{args.npz}`, "
            f"{args.points_per_shape} points per shape and step, {args.chamfer_epochs} + {args.qaad_epochs} epochs, "
            f"device {device}{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, "
            f"EM-kD on {len(eval_index)} shapes, load average {os.getloadavg()[0]:.2f} at start")
    print(meta, flush=True)
    base = TrainingConfig(
        latent_size=args.latent_size, n_patches=args.patches, points_per_shape=args.points_per_shape,
        shapes_per_step=args.shapes_per_step, chamfer_epochs=args.chamfer_epochs, qaad_epochs=args.qaad_epochs,
        learning_rate=args.lr, latent_learning_rate=args.lr, leaf_size=args.leaf_size, seed=args.seed,
        assignment_tolerance=args.greedy_tolerance,
        encoder_init=not args.no_encoder_init, refeed_points=not args.no_refeed, chamfer_form=args.chamfer_form,
    )
    out = Path(args.out)
    rows: list[dict] = []
    shape_rows: list[dict] = []
    for variant in args.variants:
        config = variant_config(variant, base, args.baseline_patches)
        state = new_training_state(config, targets)
        variant_start = time.perf_counter()

        def on_epoch(s, record, variant=variant, variant_start=variant_start, config=config):
            elapsed = time.perf_counter() - variant_start
            eta = elapsed / (record.epoch + 1) * (config.epochs - record.epoch - 1)
            print(f"[{variant}] epoch {record.epoch + 1}/{config.epochs} {record.phase} loss {record.loss:.4g} "
                  f"swaps {record.swaps} {record.seconds:.2f}s (elapsed {elapsed:.0f}s, eta {eta:.0f}s, "
                  f"load {os.getloadavg()[0]:.2f})", flush=True)

        def on_step(s, variant_start=variant_start, config=config):
            if not args.variant_seconds:
                return
            elapsed = time.perf_counter() - variant_start
            warmup = config.chamfer_epochs
            if s.epoch < warmup and elapsed > args.variant_seconds * warmup / config.epochs:
                print(f"[{variant}] warm-up budget spent after {elapsed:.0f}s: jumping to epoch {warmup + 1}",
                      flush=True)
                s.epoch, s.step = warmup, 0
                s.epoch_loss, s.epoch_swaps, s.epoch_seconds = 0.0, 0, 0.0
            elif (s.epoch > warmup or s.step > 0) and elapsed > args.variant_seconds:
                raise OutOfTime

        try:
            train(state, targets, on_step=on_step, on_epoch=on_epoch)
        except OutOfTime:
            print(f"[{variant}] budget of {args.variant_seconds:.0f}s spent after {len(state.history)} full "
                  f"epochs: evaluating", flush=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - variant_start
        eval_start = time.perf_counter()
        model = state.model.eval()
        with torch.no_grad():
            index = torch.from_numpy(eval_index).to(device)
            decoded = model.decode(model.latents[index])
            chosen = targets[index]
            em = {split: em_kd_batch(decoded, chosen, args.leaf_size, split, max_cost_entries) * factors[eval_index]
                  for split in ("axis", "pca")}
            cd = np.array([float(chamfer_l2(decoded[i], chosen[i])) for i in range(len(eval_index))])
            cd = cd * factors[eval_index] ** 2
        eval_seconds = time.perf_counter() - eval_start
        network_floats, latent_floats = model.stored_floats()
        row = {
            "variant": variant, "paper_column": PAPER_LABEL[variant], "architecture": config.architecture,
            "shapes": n_shapes, "points": n_points, "point_source": source, "eval_shapes": len(eval_index),
            "patches": model.n_patches, "epochs": config.epochs,
            "epochs_run": len(state.history), "last_epoch": state.history[-1].epoch if state.history else -1,
            "mean_em_kd_axis": float(em["axis"].mean()), "median_em_kd_axis": float(np.median(em["axis"])),
            "mean_em_kd_pca": float(em["pca"].mean()), "median_em_kd_pca": float(np.median(em["pca"])),
            "mean_chamfer_l2": float(cd.mean()), "parameters": count_parameters(model.decoder),
            "network_floats": network_floats, "latent_floats": latent_floats,
            "compression_ratio": points.size / (network_floats + latent_floats),
            "train_seconds": train_seconds, "eval_seconds": eval_seconds, "device": str(device),
            "encoder_init": config.encoder_init, "refeed_points": config.refeed_points,
            "chamfer_form": config.chamfer_form, "load_average": os.getloadavg()[0],
        }
        rows.append(row)
        shape_rows += [{"variant": variant, "shape_index": int(i), "em_kd_axis": float(em["axis"][k]),
                        "em_kd_pca": float(em["pca"][k]), "chamfer_l2": float(cd[k])}
                       for k, i in enumerate(eval_index)]
        write(out, rows, shape_rows, meta)
        print(f"[{variant}] done: EM-kD axis {row['mean_em_kd_axis']:.4f} pca {row['mean_em_kd_pca']:.4f} "
              f"chamfer_l2 {row['mean_chamfer_l2']:.3e}, train {train_seconds:.0f}s eval {eval_seconds:.0f}s "
              f"-> {out / 'table1.md'}", flush=True)
        del state, model, decoded
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(markdown(rows), flush=True)
    print(f"total {time.perf_counter() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main()
