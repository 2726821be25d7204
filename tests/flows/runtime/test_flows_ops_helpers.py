"""Fast tests of the operations helpers: the UI pictures (flows/runtime/artifacts.py) and the server plumbing
(flows/runtime/prefect_server.py) that need no Prefect server."""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import time

import numpy as np
import psutil
import pytest
from PIL import Image

from flows.runtime.artifacts import geometry_image_rgb, image_grid_png, picture_markdown
from flows.runtime.prefect_server import free_port, is_healthy, prefect_api, prefect_home, stop_process_tree


def test_geometry_image_rgb_maps_each_axis_range_to_a_colour_channel() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 9, 7)) * np.array([1.0, 10.0, 0.01])[:, None, None]
    rgb = geometry_image_rgb(image)
    assert rgb.shape == (9, 7, 3) and rgb.dtype == np.uint8
    for c in range(3):  # per-channel min -> 0, max -> 255, order kept
        assert rgb[..., c].min() == 0 and rgb[..., c].max() == 255
        assert np.all(np.diff(rgb[..., c].ravel()[np.argsort(image[c].ravel())].astype(int)) >= 0)
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        geometry_image_rgb(np.zeros((9, 7, 3)))


def test_image_grid_and_picture_markdown_round_trip() -> None:
    tiles = {f"t{i}": np.full((5, 5, 3), 40 * i, dtype=np.uint8) for i in range(5)}
    png = image_grid_png(tiles, columns=2, size=32)
    image = Image.open(io.BytesIO(png))
    assert image.size == (2 * 32, 3 * (32 + 14))  # 5 tiles in 2 columns: 3 rows, a label strip above each
    markdown = picture_markdown("title", {"grid": png}, {"grid": "s3://bucket/grid.png"})
    encoded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", markdown).group(1)
    assert base64.b64decode(encoded) == png and "`s3://bucket/grid.png`" in markdown
    with pytest.raises(ValueError):
        image_grid_png({})


def test_configured_server_is_used_as_is_and_the_environment_restored(monkeypatch, tmp_path) -> None:
    from prefect.settings import PREFECT_API_URL

    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens: prefect_api must not check or start anything
    monkeypatch.setenv("PREFECT_API_URL", url)
    monkeypatch.setenv("BRENIER_PREFECT_HOME", str(tmp_path / "home"))
    children = psutil.Process().children(recursive=True)
    with prefect_api() as api:
        assert api == url and PREFECT_API_URL.value() == url
        assert psutil.Process().children(recursive=True) == children
    assert os.environ["PREFECT_API_URL"] == url and not is_healthy(url)
    assert not (tmp_path / "home" / "prefect.db").exists()


def test_prefect_home_order(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("BRENIER_PREFECT_HOME", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    assert prefect_home() == tmp_path / "prefect"
    monkeypatch.setenv("BRENIER_PREFECT_HOME", str(tmp_path / "brenier"))
    assert prefect_home() == tmp_path / "brenier" and prefect_home(tmp_path / "given") == tmp_path / "given"


def test_stop_process_tree_stops_every_descendant() -> None:
    # A parent in its own session with two children, one of which ignores SIGTERM (needs the SIGKILL).
    parent = subprocess.Popen(["bash", "-c", "sleep 300 & (trap '' TERM; sleep 300) & wait"], start_new_session=True)
    tree = psutil.Process(parent.pid)
    for _ in range(100):
        if len(tree.children(recursive=True)) >= 2:
            break
        time.sleep(0.05)
    members = [tree, *tree.children(recursive=True)]
    assert len(members) >= 3
    stop_process_tree(parent.pid, timeout=2)
    parent.wait(timeout=10)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in members)
