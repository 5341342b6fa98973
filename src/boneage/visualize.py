"""Drawing: heat maps over radiographs (the report, the service's page, ``boneage explain``)
and the figures every plot of the package is drawn on.

NumPy, OpenCV and matplotlib only: drawing needs no network, so the report and the service
draw an overlay in the light install too, and the training curves (:mod:`boneage.engine`)
and the evaluation plots (:mod:`boneage.evaluation`) share one figure and file format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from matplotlib import colormaps

from boneage.fileutils import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Resolution of every PNG figure the package writes.
FIGURE_DPI = 120

#: Heat-map methods (``boneage explain --method``): Grad-CAM, and exact class activation maps.
HEATMAP_METHODS = ("gradcam", "cam")
#: Opacity of the heat map where the influence is highest.
MAX_ALPHA = 0.6
#: Longest side, in pixels, at which overlays are drawn: full-resolution radiographs (2-3k px)
#: add nothing visible at report size and cost hundreds of MB as float RGBA.
OVERLAY_MAX_SIDE = 1024


def display_size(shape: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``(width, height)`` of an image of ``shape`` (H, W) shrunk so that no side exceeds
    ``max_side``, aspect ratio kept; its own size when it already fits (never enlarged)."""
    h, w = shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return w, h
    return max(1, int(round(w * scale))), max(1, int(round(h * scale)))


def fit_for_display(image: np.ndarray, heatmap: np.ndarray, max_side: int):
    """The image and the map at one size, no side over ``max_side``, aspect ratio kept."""
    if heatmap.shape != image.shape:
        heatmap = cv2.resize(heatmap, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    size = display_size(image.shape, max_side)
    if size != (image.shape[1], image.shape[0]):
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        heatmap = cv2.resize(heatmap, size, interpolation=cv2.INTER_AREA)
    return image, heatmap


def overlay_rgb(image: np.ndarray, heatmap: np.ndarray, *, max_side: int = OVERLAY_MAX_SIDE) -> np.ndarray:
    """The radiograph in gray with the heat map blended over it, as an (H, W, 3) uint8 array.

    The result has the image's aspect ratio (shrunk so that no side exceeds ``max_side``);
    the map is resized to the image first if their shapes differ. Same colours and opacity
    as :func:`boneage.evaluation.gradcam.overlay_heatmap`.
    """
    image = np.asarray(image, dtype=np.float32)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if image.ndim != 2 or heatmap.ndim != 2:
        raise ValueError(f"image and heatmap must be 2-D, got shapes {image.shape} and {heatmap.shape}")
    image, heatmap = fit_for_display(image, heatmap, max_side)
    gray = np.clip(image, 0.0, 1.0)[..., None]
    heat = np.clip(heatmap, 0.0, 1.0)
    colour = colormaps["turbo"](heat)[..., :3].astype(np.float32)
    alpha = (MAX_ALPHA * np.sqrt(heat))[..., None]
    return np.round(255.0 * ((1.0 - alpha) * gray + alpha * colour)).astype(np.uint8)


def new_figure(width: float = 6.4, height: float = 4.8) -> Figure:
    """A matplotlib figure of ``width`` x ``height`` inches with its own Agg canvas (no pyplot:
    no global state, safe in threads and servers)."""
    # Here, not at the top: matplotlib's figure machinery takes ~0.2 s to import, which a
    # prediction (that draws at most an overlay) need not pay.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically and release the figure."""
    out = Path(path)
    try:
        # Not tempfile.mkstemp: its 0600 mode would carry over to the final PNG, whereas a
        # plain exclusive open honours the user's umask like any other written file.
        with atomic_path(out) as tmp, open(tmp, "xb") as fh:
            fig.savefig(fh, format="png", dpi=FIGURE_DPI)
    finally:
        fig.clear()
    return out
