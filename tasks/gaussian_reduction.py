"""Prefect task of the Gaussian-reduction pipeline: reduce one 3DGS scene to one target ratio by every method.

An item is one scene x one ratio (``<scene>--r0.10``). For each method (GHAP and the pruning baselines) the task
reduces the scene to exactly ``round(ratio * N)`` Gaussians, renders the result from held-out orbit cameras
against the original's renders (``psnr``, ``ssim``), fine-tunes colours and opacities against the original's
renders from a separate set of training cameras, and measures again. Its Zarr group holds the original's and every
method's renders (uint8 ``[V, H, W, 3]``) before and after fine-tuning; the reduced scenes are written as standard
3DGS PLY files next to it (``<store>/<run_id>/<item_id>/ply/<method>[-finetuned].ply``), and a side-by-side PNG of
the first view. A failure of one method becomes a failure row; the other methods' results are kept.
"""

from __future__ import annotations

import io
import time

import numpy as np
import torch
from PIL import Image, ImageDraw
from prefect import task

from otcore.device import resolve_device
from otcore.splats.appearance_finetune import FineTuneConfig, finetune_appearance, render_views
from otcore.splats.cameras import orbit_cameras
from otcore.splats.image_metrics import psnr, ssim
from otcore.splats.rasterizer import hit_counts
from otcore.splats.reduction import reduce
from otcore.splats.scene import scene_tensors
from storage.errors import InputError
from storage.gaussians import GaussianScene, read_scene, write_scene
from storage.zarr_store import ItemStore
from tasks.configs import GaussianReductionConfig
from tasks.shared.progress import report_progress, task_logger
from tasks.shared.records import ItemResult, failure_row

__all__ = ["GaussianReductionConfig", "reduce_scene", "PIPELINE_VERSION", "reduce_with"]

PIPELINE_VERSION = GaussianReductionConfig.PIPELINE_VERSION


def item_id_of(scene_id: str, ratio: float) -> str:
    """Item id of a scene x ratio, e.g. ``donut--r0.1``."""
    return f"{scene_id}--r{ratio:.4g}"


def reduce_with(method: str, scene: GaussianScene, count: int, config: GaussianReductionConfig,
                hits: np.ndarray | None = None) -> GaussianScene:
    """``scene`` reduced to exactly ``count`` Gaussians by ``method`` (one of :data:`tasks.configs.REDUCTION_METHODS`,
    :func:`otcore.splats.reduction.reduce`); ``hits`` ``[N]``: the originals' pixel hit counts in the training
    views, needed by ``lightgaussian``.

    Raises:
        ValueError: unknown method or a count out of range, ``lightgaussian`` without hits.
    """
    reduced = reduce(method, scene.means, scene.scales, scene.quats, scene.opacities, scene.sh_dc, scene.sh_rest,
                     count, pen_size=config.pen_size, max_iterations=config.max_iterations,
                     appearance=config.appearance, seed=config.seed, cost=config.cost, hits=hits)
    normals = None if reduced.kept is None or scene.normals is None else scene.normals[reduced.kept]
    return GaussianScene(scene.scene_id, "", reduced.means, reduced.scales, reduced.quats, reduced.opacities,
                         reduced.sh_dc, reduced.sh_rest, normals)


def _scene_tensors(scene: GaussianScene, device: torch.device) -> dict[str, torch.Tensor]:
    return scene_tensors(scene.means, scene.scales, scene.quats, scene.opacities, scene.sh_dc, scene.sh_rest, device)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def _quality(images: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Mean psnr (dB) and ssim over views of renders clamped to [0, 1]."""
    a, b = images.clamp(0, 1), reference.clamp(0, 1)
    return (float(np.mean([float(psnr(x, y)) for x, y in zip(a, b, strict=True)])),
            float(np.mean([float(ssim(x, y)) for x, y in zip(a, b, strict=True)])))


def side_by_side_png(rows: dict[str, np.ndarray]) -> bytes:
    """PNG bytes of labelled uint8 ``[H, W, 3]`` images of equal size in one row (label above each)."""
    images = list(rows.values())
    height, width = images[0].shape[:2]
    canvas = Image.new("RGB", (width * len(images), height + 14), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, image) in enumerate(rows.items()):
        canvas.paste(Image.fromarray(image), (i * width, 14))
        draw.text((i * width + 2, 1), label, fill="black")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


@task(name="reduce-gaussians", retries=1, retry_delay_seconds=2)
def reduce_scene(scene_uri: str, ratio: float, store: str, run_id: str, config: GaussianReductionConfig) -> ItemResult:
    """Reduce one scene to ``ratio`` of its Gaussians by every configured method and measure each result.

    Returns the item's :class:`ItemResult`: table ``gaussian_reduction`` (one row per method x fine-tuned
    False/True), failure rows, and ``artifacts["preview"]``, the uri of the side-by-side PNG.
    """
    logger = task_logger(__name__)
    try:
        scene = read_scene(scene_uri, follow_symlinks=config.follow_symlinks)
    except InputError as error:
        item_id = item_id_of(error.item_id, ratio)
        return ItemResult(item_id, failures=[failure_row(run_id, item_id, scene_uri, "read", error)])
    item_id = item_id_of(scene.scene_id, ratio)
    result = ItemResult(item_id, {"gaussian_reduction": []})
    rows = result.tables["gaussian_reduction"]
    fingerprint = config.fingerprint(scene.sha256, ratio)
    item_store = ItemStore(store, run_id, item_id)
    if item_store.is_complete(fingerprint):
        return ItemResult(item_id, {"gaussian_reduction": item_store.completed_rows()},
                          item_store.completed_failures(), skipped=True,
                          artifacts={"preview": f"{item_store.uri}/preview.png"})
    count = max(1, int(round(ratio * len(scene))))
    item_store.begin(fingerprint, {"scene_id": scene.scene_id, "source_uri": scene.uri, "source_sha256": scene.sha256,
                                   "ratio": ratio, "n_in": len(scene), "n_out": count, "config": config.model_dump(),
                                   "pipeline_version": PIPELINE_VERSION})
    device = resolve_device(config.device)
    eval_cameras = [c.to(device) for c in orbit_cameras(scene.means, n_views=config.views, width=config.resolution,
                                                        height=config.resolution, weights=scene.opacities)]
    train_cameras = [c.to(device) for c in orbit_cameras(scene.means, n_views=config.train_views,
                                                         width=config.resolution, height=config.resolution, seed=1,
                                                         weights=scene.opacities)]
    original = _scene_tensors(scene, device)
    reference = render_views(original, eval_cameras)
    targets = render_views(original, train_cameras) if config.finetune_steps else None
    # LightGaussian's global significance counts the pixels of the training views each original contributes to
    hits = (hit_counts(original["means"], original["quats"], original["scales"], original["opacities"],
                       train_cameras).cpu().numpy() if "lightgaussian" in config.methods else None)
    item_store.write_array("renders/original", _to_uint8(reference))
    logger.info("%s: %d -> %d Gaussians on %s, %d methods, %dx%d renders", item_id, len(scene), count, device,
                len(config.methods), config.resolution, config.resolution)
    common = {"run_id": run_id, "item_id": item_id, "scene_id": scene.scene_id, "ratio": ratio, "n_in": len(scene),
              "n_out": count, "resolution": config.resolution, "views": config.views, "device": str(device)}
    previews = {"original": _to_uint8(reference[:1])[0]}
    for method in config.methods:
        try:
            started = time.perf_counter()
            reduced = reduce_with(method, scene, count, config, hits)
            seconds = time.perf_counter() - started
            write_scene(reduced, f"{item_store.uri}/ply/{method}.ply")
            params = _scene_tensors(reduced, device)
            images = render_views(params, eval_cameras)
            item_store.write_array(f"renders/{method}", _to_uint8(images))
            quality = _quality(images, reference)
            rows.append({**common, "method": method, "fine_tuned": False, "finetune_steps": 0,
                                   "psnr": quality[0], "ssim": quality[1], "seconds": seconds})
            line = f"{method}: psnr {quality[0]:.2f} ssim {quality[1]:.4f} ({seconds:.1f} s)"
            previews[method] = _to_uint8(images[:1])[0]
            if config.finetune_steps:
                tuned = finetune_appearance(params, train_cameras, targets,
                                            FineTuneConfig(steps=config.finetune_steps, seed=config.seed))
                params = {**params, "sh_dc": tuned.sh_dc, "sh_rest": tuned.sh_rest, "opacities": tuned.opacities}
                images = render_views(params, eval_cameras)
                item_store.write_array(f"renders/{method}-finetuned", _to_uint8(images))
                quality = _quality(images, reference)
                rows.append({**common, "method": method, "fine_tuned": True,
                                       "finetune_steps": config.finetune_steps, "psnr": quality[0],
                                       "ssim": quality[1], "seconds": seconds + tuned.seconds})
                write_scene(GaussianScene(scene.scene_id, "", reduced.means, reduced.scales, reduced.quats,
                                          tuned.opacities.cpu().numpy(), tuned.sh_dc.cpu().numpy(),
                                          tuned.sh_rest.cpu().numpy(), reduced.normals),
                            f"{item_store.uri}/ply/{method}-finetuned.ply")
                line += f"; fine-tuned psnr {quality[0]:.2f} ssim {quality[1]:.4f} ({tuned.seconds:.1f} s)"
                previews[f"{method} ft"] = _to_uint8(images[:1])[0]
            report_progress(logger, "%s: %s", item_id, line)
        except (ValueError, RuntimeError) as error:
            result.failures.append(failure_row(run_id, item_id, scene_uri, method, error))
            logger.warning("%s: %s failed: %s: %s", item_id, method, type(error).__name__, error)
    result.artifacts["preview"] = item_store.write_file("preview.png", side_by_side_png(previews))
    item_store.finish(rows, result.failures)
    return result
