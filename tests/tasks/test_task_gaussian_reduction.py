"""The Gaussian-reduction task without Prefect (``.fn``) on the bundled donut scene: counts, measured renders, the
preview written through storage, and a re-run that reuses the stored result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect.logging import disable_run_logger

from storage.gaussians import read_scene
from tasks.gaussian_reduction import GaussianReductionConfig, reduce_scene

DONUT = Path(__file__).resolve().parents[2] / "data" / "samples" / "gaussians" / "donut-8k.ply"
SMALL = GaussianReductionConfig(methods=["random", "top_opacity", "lightgaussian", "ghap-euclidean"], resolution=32,
                                views=2, train_views=2, finetune_steps=0, device="cpu")


def test_reduce_scene_measures_each_method_and_is_resumable(tmp_path: Path) -> None:
    with disable_run_logger():
        result = reduce_scene.fn(str(DONUT), 0.1, str(tmp_path), "run", SMALL)
        rows = result.rows("gaussian_reduction")
        assert result.item_id == "donut-8k--r0.1" and result.failures == [] and not result.skipped
        assert [r["method"] for r in rows] == ["random", "top_opacity", "lightgaussian", "ghap-euclidean"]
        assert all(r["n_out"] == round(0.1 * r["n_in"]) and not r["fine_tuned"] for r in rows)
        assert all(np.isfinite(r["psnr"]) and r["psnr"] > 10 and 0 < r["ssim"] <= 1 for r in rows)
        # lightgaussian ranks by training-view hit counts: it keeps a different subset than the most opaque
        kept = {m: read_scene(f"{tmp_path}/run/donut-8k--r0.1/ply/{m}.ply") for m in ("top_opacity", "lightgaussian")}
        assert not np.array_equal(kept["top_opacity"].means, kept["lightgaussian"].means)
        preview = Path(result.artifacts["preview"])
        assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        again = reduce_scene.fn(str(DONUT), 0.1, str(tmp_path), "run", SMALL)
    assert again.skipped and again.rows("gaussian_reduction") == rows and again.artifacts == result.artifacts


def test_unreadable_scene_is_a_read_failure(tmp_path: Path) -> None:
    bad = tmp_path / "broken.ply"
    bad.write_bytes(b"ply\nformat ascii 1.0\nend_header\n")
    with disable_run_logger():
        result = reduce_scene.fn(str(bad), 0.5, str(tmp_path / "store"), "run", SMALL)
    assert result.item_id == "broken--r0.5" and [f["stage"] for f in result.failures] == ["read"]
    assert result.tables == {} and result.artifacts == {}
