"""otcore.device: device strings resolve to torch devices; an unusable CUDA request fails with a typed error."""

from __future__ import annotations

import pytest
import torch

from otcore.device import resolve_device
from otcore.errors import DeviceUnavailableError


def test_cpu_and_auto_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_picks_cuda_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_explicit_cuda_without_cuda_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
            resolve_device(name)
    assert issubclass(DeviceUnavailableError, RuntimeError)  # tasks' RuntimeError handling still catches it


def test_cuda_index_beyond_the_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(DeviceUnavailableError, match="only 2 CUDA device"):
        resolve_device("cuda:2")


def test_unknown_device_string_raises() -> None:
    with pytest.raises(RuntimeError):
        resolve_device("gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_cuda_device_resolves() -> None:
    device = resolve_device("cuda")
    assert torch.zeros(1, device=device).device.type == "cuda"
