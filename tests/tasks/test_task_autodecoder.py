"""The autodecoder tasks without Prefect (``.fn``) on the bundled horse-gallop frames: a tiny training run writes
its tables and model, a re-run reuses them, and encoding with the trained decoder measures every shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect.logging import disable_run_logger

from tasks.autodecoder import AutodecoderConfig, encode_collection, load_model, train_autodecoder

HORSES = Path(__file__).resolve().parents[2] / "data" / "samples" / "consistent" / "horse-gallop"
TINY = AutodecoderConfig(point_source="surface", samples=512, latent_size=4, patches=4, points_per_shape=128,
                         shapes_per_step=3, chamfer_epochs=1, qaad_epochs=1, leaf_size=64, device="cpu")


def test_train_then_encode_with_the_trained_decoder(tmp_path: Path) -> None:
    with disable_run_logger():
        trained = train_autodecoder.fn(str(HORSES), "neuralqaad", str(tmp_path), "run", TINY)
        assert trained.item_id == "horse-gallop--neuralqaad" and trained.failures == [] and not trained.skipped
        [model] = trained.rows("autodecoder_models")
        shapes = trained.rows("autodecoder_shapes")
        assert model["shapes"] == len(shapes) == 3 and model["points"] == 512 and model["epochs"] == 2
        assert model["dataset_floats"] == 3 * 512 * 3 and model["latent_floats"] == 3 * 4
        assert model["compression_ratio"] == model["dataset_floats"] / (model["network_floats"] + 12)
        assert np.isfinite(model["mean_em_kd"]) and model["mean_em_kd"] > 0
        assert {r["epoch"] for r in trained.rows("autodecoder_epochs")} == {0, 1}
        again = train_autodecoder.fn(str(HORSES), "neuralqaad", str(tmp_path), "run", TINY)
        assert again.skipped and again.rows("autodecoder_models") == [model]
        decoder, centre, scale = load_model(str(tmp_path), "run", trained.item_id)
        assert decoder.latents.shape == (3, 4) and centre.shape == (3,) and scale > 0
        encoded = encode_collection.fn(str(HORSES), str(tmp_path), "run", trained.item_id, str(tmp_path), "encode",
                                       TINY, chamfer_steps=2, qaad_steps=2)
    rows = encoded.rows("autodecoder_shapes")
    assert encoded.item_id == "horse-gallop--encoded" and len(rows) == 3 and encoded.failures == []
    assert all(r["variant"] == "encoded" and np.isfinite(r["em_kd"]) for r in rows)
