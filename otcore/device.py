"""Where a task's torch work runs: the GPU when the worker has one (DESIGN.md: GPU workers where present)."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``; otherwise ``torch.device(device)``.

    Raises:
        RuntimeError: if ``device`` is not a device string torch understands (e.g. ``"gpu"``).
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
