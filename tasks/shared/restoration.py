"""How a stored pyramid level becomes a full-resolution geometry image: bilinear upsampling, or the trained
restoration network of a model file (:mod:`otcore.mesh.neural_restoration`, :mod:`storage.models`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from otcore.mesh.geometry_image import restore_level
from otcore.mesh.neural_restoration import RestorationConfig, RestorationNetwork, restore_neural
from storage.models import ModelFileError, read_model

__all__ = ["Restoration", "BILINEAR", "MODEL_FORMAT", "load_restoration", "network_tensors"]

MODEL_FORMAT = "brenier-restoration"


@dataclass(frozen=True)
class Restoration:
    """A way to restore levels. ``restore(level_image [3, h, w] float32, resolution) -> [3, R, R] float32``.

    Attributes:
        name: ``"bilinear"`` or ``"neural"`` (the ``restore`` column of the rate_distortion table).
        model_bytes, model_sha256: the model file's size and content hash (None for bilinear).
    """

    name: str
    restore: Callable[[np.ndarray, int], np.ndarray]
    model_bytes: int | None = None
    model_sha256: str | None = None


BILINEAR = Restoration("bilinear", restore_level)


def network_tensors(network: RestorationNetwork) -> dict[str, np.ndarray]:
    """The network's weights as named float32 arrays (what a model file stores)."""
    return {name: value.detach().cpu().float().numpy() for name, value in network.state_dict().items()}


@functools.lru_cache(maxsize=4)
def load_restoration(uri: str) -> Restoration:
    """The neural :class:`Restoration` of a model file written by ``brenier train-restoration``.

    Cached per process: every task of a worker restoring with the same file loads it once.

    Raises:
        storage.models.ModelFileError: the file is missing, not a restoration model, or fails its content hash.
    """
    tensors, metadata, size = read_model(uri, MODEL_FORMAT)
    try:
        network = RestorationNetwork(RestorationConfig(**metadata["network"]))
        network.load_state_dict({name: torch.from_numpy(np.asarray(value, dtype=np.float32))
                                 for name, value in tensors.items()})
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ModelFileError(uri, f"tensors do not fit the recorded network config ({error})") from error
    network.eval()
    return Restoration("neural", functools.partial(restore_neural, network), size, metadata["content_sha256"])
