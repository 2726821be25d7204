"""Where a task's torch work runs: the GPU when the worker has one (docs/architecture.md: GPU workers where present)."""

from __future__ import annotations

import torch

from otcore.errors import DeviceUnavailableError

__all__ = ["resolve_device"]


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``; otherwise ``torch.device(device)``.

    Raises:
        RuntimeError: if ``device`` is not a device string torch understands (e.g. ``"gpu"``).
        DeviceUnavailableError: if ``device`` names a CUDA device this process cannot use (no CUDA, or an index
            at or above ``torch.cuda.device_count()``).
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(f"device {device!r} requested but CUDA is not available to this process")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return resolved
