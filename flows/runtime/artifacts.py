"""Prefect UI artifacts of the flows: a progress bar while a run works, tables, and pictures as markdown.

Every artifact has a key (lowercase letters, digits, dashes) so it shows on the UI's Artifacts page with its
history across runs; the flow run's page lists the artifacts of that run. Pictures are PNGs embedded as
``data:image/png;base64`` URIs in a markdown artifact (the Prefect API stores no binary artifacts); the PNG
file's location, when it has one, is printed under the picture.

Keys per flow (``<flow>`` is ``geometry-images``, ``autodecoder``, ``encode-shapes``, ``gaussian-reduction``):
``<flow>-progress`` (progress, percent of items done), ``<flow>-summary`` (table), ``<flow>-report``
(markdown), and a picture: ``geometry-images-preview``, ``autodecoder-plots``, ``encode-shapes-plots``,
``gaussian-reduction-renders``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any, ClassVar
from uuid import UUID

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

__all__ = [
    "Progress",
    "figure_png",
    "geometry_image_rgb",
    "normal_map_rgb",
    "image_grid_png",
    "picture_markdown",
    "publish_pictures",
    "rate_distortion_png",
    "table_records",
]


class Progress:
    """A keyed progress artifact of the current flow run: 0 % when created, ``done / total`` after each item.

    Args:
        key: artifact key, e.g. ``"geometry-images-progress"``.
        total: number of items the run works on (0 shows 100 % at once).
        description: shown next to the bar in the UI.

    Every update is also passed to the callables in :attr:`listeners` as ``(description, done, total, items)``,
    ``items`` the ids of the items that finished since the last update when the caller knows them (the command
    line's progress, :class:`flows.runtime.console.ItemProgress`).
    """

    listeners: ClassVar[list[Callable[[str, int, int, list[str]], None]]] = []

    def __init__(self, key: str, total: int, description: str) -> None:
        self.total = total
        self.description = description
        self.artifact_id: UUID = create_progress_artifact(
            progress=0.0 if total else 100.0, key=key, description=f"{description}: 0/{total} items"
        )
        self._tell(0, [])

    def update(self, done: int, items: list[str] | None = None) -> None:
        """Set the bar to ``100 * done / total`` percent; ``items``: ids of the items finished since the last call."""
        percent = 100.0 * done / self.total if self.total else 100.0
        update_progress_artifact(self.artifact_id, percent,
                                 description=f"{self.description}: {done}/{self.total} items")
        self._tell(done, items or [])

    def _tell(self, done: int, items: list[str]) -> None:
        for listener in list(self.listeners):
            listener(self.description, done, self.total, items)


def table_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``frame`` as JSON-safe dicts for ``create_table_artifact`` (NaN and NA become None)."""
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def geometry_image_rgb(geometry_image: np.ndarray) -> np.ndarray:
    """Classic geometry-image picture: channels x, y, z min-max normalised to red, green, blue.

    Args:
        geometry_image: ``[3, H, W]`` positions or quantised codes (any real dtype).

    Returns:
        ``[H, W, 3]`` uint8.

    Raises:
        ValueError: if the array is not ``[3, H, W]``.
    """
    image = np.asarray(geometry_image, dtype=np.float64)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"geometry image must be [3, H, W], got {image.shape}")
    low = image.min(axis=(1, 2), keepdims=True)
    span = np.maximum(image.max(axis=(1, 2), keepdims=True) - low, 1e-12)
    return np.rint(255 * (image - low) / span).astype(np.uint8).transpose(1, 2, 0)


def normal_map_rgb(geometry_image: np.ndarray) -> np.ndarray:
    """Normal map of a geometry image: unit normals of the grid surface (cross product of the central differences
    along u and v) mapped from ``[-1, 1]`` to ``[0, 255]``. Shows the surface detail a restoration recovers.

    Args:
        geometry_image: ``[3, H, W]`` float positions (``H, W >= 2``).

    Returns:
        ``[H, W, 3]`` uint8.

    Raises:
        ValueError: if the array is not ``[3, H, W]`` with ``H, W >= 2``.
    """
    image = np.asarray(geometry_image, dtype=np.float64)
    if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[1:]) < 2:
        raise ValueError(f"geometry image must be [3, H, W] with H, W >= 2, got {image.shape}")
    normals = np.cross(np.gradient(image, axis=2), np.gradient(image, axis=1), axis=0)
    normals /= np.maximum(np.linalg.norm(normals, axis=0, keepdims=True), 1e-12)
    return np.rint(127.5 * (normals + 1.0)).astype(np.uint8).transpose(1, 2, 0)


def image_grid_png(tiles: dict[str, np.ndarray], columns: int = 4, size: int = 160) -> bytes:
    """PNG bytes of labelled ``[H, W, 3]`` uint8 tiles in a grid, each scaled to ``size`` x ``size`` pixels.

    Raises:
        ValueError: if ``tiles`` is empty.
    """
    if not tiles:
        raise ValueError("no tiles to draw")
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    label_height = 14
    canvas = Image.new("RGB", (columns * size, rows * (size + label_height)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, tile) in enumerate(tiles.items()):
        x, y = (i % columns) * size, (i // columns) * (size + label_height)
        canvas.paste(Image.fromarray(np.asarray(tile, dtype=np.uint8)).resize((size, size), Image.NEAREST),
                     (x, y + label_height))
        draw.text((x + 2, y + 1), label[: size // 6], fill="black")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def figure_png(figure) -> bytes:
    """PNG bytes of a matplotlib figure (closed afterwards)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def picture_markdown(title: str, pictures: dict[str, bytes], locations: dict[str, str] | None = None) -> str:
    """Markdown with each PNG embedded as a data URI under a ``###`` heading (and its location, if given)."""
    parts = [f"# {title}"]
    for name, png in pictures.items():
        data = base64.b64encode(png).decode()
        where = f"\n\n`{locations[name]}`" if locations and name in locations else ""
        parts.append(f"### {name}\n![{name}](data:image/png;base64,{data}){where}")
    return "\n\n".join(parts)


def publish_pictures(key: str, title: str, pictures: dict[str, bytes], description: str,
                     locations: dict[str, str] | None = None) -> None:
    """Create the markdown artifact ``key`` holding ``pictures`` (see :func:`picture_markdown`)."""
    markdown = picture_markdown(title, pictures, locations) if pictures else f"# {title}\n\nno pictures"
    create_markdown_artifact(key=key, markdown=markdown, description=description)


def rate_distortion_png(frame: pd.DataFrame, title: str = "") -> bytes:
    """Rate–distortion plot: bytes (log) against Hausdorff and against Chamfer-L2 (log), one curve per mesh x method.

    Every point is a marker; the curve joins the Pareto-optimal ones (no point of that mesh and method has fewer
    bytes and a lower error), so settings that mix levels and qualities read as one front.

    Args:
        frame: one row per point, columns ``mesh``, ``method``, ``stored_bytes``, ``hausdorff``, ``chamfer_l2``
            (distances in unit-bbox-diagonal units). Colour encodes the mesh, line style and marker the method.
        title: figure title.

    Returns:
        PNG bytes.

    Raises:
        ValueError: if ``frame`` is empty.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if frame.empty:
        raise ValueError("no rate-distortion points to plot")
    meshes, methods = sorted(frame["mesh"].unique()), sorted(frame["method"].unique())
    colours = {mesh: plt.get_cmap("tab10")(i % 10) for i, mesh in enumerate(meshes)}
    styles = {method: ("-", "--", ":", "-.")[i % 4] + "osd^vx*"[i % 7] for i, method in enumerate(methods)}
    figure, axes = plt.subplots(1, 2, figsize=(12, 5.5), layout="constrained")
    for (mesh, method), curve in frame.groupby(["mesh", "method"]):
        curve = curve.sort_values(["stored_bytes", "hausdorff", "chamfer_l2"])
        for axis, metric in zip(axes, ("hausdorff", "chamfer_l2"), strict=True):
            front = curve[curve[metric] < curve[metric].cummin().shift(fill_value=np.inf)]
            axis.plot(curve["stored_bytes"], curve[metric], marker=styles[method][-1], color=colours[mesh],
                      markersize=3, alpha=0.35, linestyle="none")
            axis.plot(front["stored_bytes"], front[metric], styles[method], color=colours[mesh], markersize=4,
                      linewidth=1.2, label=f"{mesh} {method}")
    for axis, label in zip(axes, ("Hausdorff", "Chamfer-L2"), strict=True):
        axis.set(xscale="log", yscale="log", xlabel="bytes", ylabel=f"{label} (unit bbox diagonal)")
        axis.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        figure.suptitle(title)
    return figure_png(figure)
